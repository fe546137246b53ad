//! Trade-id sets: which trades a symbol's level 1 has counted, numeric ids
//! as sorted inclusive ranges, others in a hash set.

use super::*;

/// A raw trade id as carried in candles: numeric ids without allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RawId {
    Num(u64),
    Text(String),
}

impl RawId {
    pub(super) fn parse(id: &str) -> RawId {
        match numeric_id(id) {
            Some(n) => RawId::Num(n),
            None => RawId::Text(id.to_owned()),
        }
    }

    /// Overwrites `self` with `id`, reusing a text buffer where there is one.
    pub(super) fn assign(&mut self, id: IdRef<'_>) {
        match (self, id) {
            (slot, IdRef::Num(n)) => *slot = RawId::Num(n),
            (RawId::Text(buf), IdRef::Text(text)) => {
                buf.clear();
                buf.push_str(text);
            }
            (slot, IdRef::Text(text)) => *slot = RawId::Text(text.to_owned()),
        }
    }

    pub(super) fn from_ref(id: IdRef<'_>) -> RawId {
        match id {
            IdRef::Num(n) => RawId::Num(n),
            IdRef::Text(text) => RawId::Text(text.to_owned()),
        }
    }

    pub(super) fn render(&self) -> String {
        match self {
            RawId::Num(n) => n.to_string(),
            RawId::Text(text) => text.clone(),
        }
    }
}

/// A borrowed trade id: numeric where the text is the canonical form of a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdRef<'a> {
    Num(u64),
    Text(&'a str),
}

impl<'a> IdRef<'a> {
    pub(super) fn of(id: &'a str) -> IdRef<'a> {
        match numeric_id(id) {
            Some(n) => IdRef::Num(n),
            None => IdRef::Text(id),
        }
    }
}

/// `Some(n)` if `id` is exactly the decimal rendering of `n` (no sign, no leading
/// zeros), so that the number renders back to the same text.
pub(super) fn numeric_id(id: &str) -> Option<u64> {
    let bytes = id.as_bytes();
    if bytes.is_empty()
        || (bytes.len() > 1 && bytes[0] == b'0')
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    id.parse().ok()
}

/// The trade ids of a symbol's retained windows: numeric ids as sorted,
/// disjoint, non-adjacent inclusive ranges; other ids with their window start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct TradeIdSet {
    pub(super) ranges: Vec<(u64, u64)>,
    #[serde(serialize_with = "serialize_sorted")]
    pub(super) text: HashMap<String, Millis>,
}

pub(super) fn serialize_sorted<S: serde::Serializer>(
    map: &HashMap<String, Millis>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let sorted: BTreeMap<&String, &Millis> = map.iter().collect();
    sorted.serialize(serializer)
}

impl TradeIdSet {
    pub(super) fn contains(&self, id: IdRef<'_>) -> bool {
        match id {
            IdRef::Num(n) => {
                let idx = self.ranges.partition_point(|r| r.0 <= n);
                idx > 0 && self.ranges[idx - 1].1 >= n
            }
            IdRef::Text(text) => self.text.contains_key(text),
        }
    }

    pub(super) fn insert(&mut self, id: IdRef<'_>, window_start: Millis) {
        match id {
            IdRef::Num(n) => self.insert_num(n),
            IdRef::Text(text) => {
                self.text.insert(text.to_owned(), window_start);
            }
        }
    }

    pub(super) fn insert_num(&mut self, n: u64) {
        if let Some(last) = self.ranges.last_mut() {
            if n > last.1 {
                if n == last.1 + 1 {
                    last.1 = n;
                } else {
                    self.ranges.push((n, n));
                }
                return;
            }
        } else {
            self.ranges.push((n, n));
            return;
        }
        let idx = self.ranges.partition_point(|r| r.0 <= n);
        if idx > 0 && self.ranges[idx - 1].1 >= n {
            return;
        }
        let joins_left = idx > 0 && self.ranges[idx - 1].1 + 1 == n;
        let joins_right = idx < self.ranges.len() && n + 1 == self.ranges[idx].0;
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[idx - 1].1 = self.ranges[idx].1;
                self.ranges.remove(idx);
            }
            (true, false) => self.ranges[idx - 1].1 = n,
            (false, true) => self.ranges[idx].0 = n,
            (false, false) => self.ranges.insert(idx, (n, n)),
        }
    }

    /// Forgets numeric ids below `floor` (`None`: all) and text ids of evicted windows.
    pub(super) fn prune(&mut self, floor: Option<u64>, p: &Params, wm: Millis) {
        match floor {
            None => self.ranges.clear(),
            Some(floor) => {
                self.ranges.retain(|r| r.1 >= floor);
                if let Some(first) = self.ranges.first_mut() {
                    first.0 = first.0.max(floor);
                }
            }
        }
        self.text.retain(|_, start| !p.evictable(*start, wm));
    }

    pub(super) fn len(&self) -> usize {
        self.ranges.len() + self.text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn duplicate_trades_count_once() {
        let base = trade(7, T0 + 100, "1", "2", Side::Buy);
        let mut text_id = base.clone();
        text_id.trade_id = "abc".to_owned();
        for (name, input, expected) in [
            (
                "same id twice in an open window",
                vec![base.clone(), base.clone()],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "same id with other values (replica) counts once",
                vec![
                    base.clone(),
                    Trade {
                        price: dec("9"),
                        ..base.clone()
                    },
                ],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "duplicate after the window closed",
                vec![
                    base.clone(),
                    trade(8, T0 + 5_000, "1", "1", Side::Buy),
                    base.clone(),
                ],
                vec![Outcome::Accepted, Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "text ids",
                vec![text_id.clone(), text_id.clone()],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
        ] {
            let mut engine = level1();
            let (outcomes, mut out) = run_trades(&mut engine, &input);
            engine.finish(&mut out);
            assert_eq!(outcomes, expected, "{name}");
            assert_eq!(out[0].volume, dec("2"), "{name}");
            assert_eq!(out[0].trade_count, 1, "{name}");
            assert!(out.iter().all(|c| c.revision == 0), "{name}");
        }
    }

    #[test]
    fn trade_id_ranges_stay_compact() {
        let mut set = TradeIdSet::default();
        for n in [5, 6, 7, 10, 9, 1, 3, 2, 8, 4] {
            set.insert(IdRef::Num(n), 0);
        }
        assert_eq!(set.ranges, vec![(1, 10)]);
        set.insert(IdRef::Num(20), 0);
        set.insert(IdRef::Num(15), 0);
        assert_eq!(set.ranges, vec![(1, 10), (15, 15), (20, 20)]);
        for (n, expected) in [
            (0, false),
            (1, true),
            (10, true),
            (11, false),
            (15, true),
            (20, true),
            (21, false),
        ] {
            assert_eq!(set.contains(IdRef::Num(n)), expected, "{n}");
        }
        assert_eq!(
            IdRef::of("0123"),
            IdRef::Text("0123"),
            "leading zeros stay text"
        );
        assert_eq!(IdRef::of("0"), IdRef::Num(0));
        let p = Params::new(Interval::S1, LevelConfig::TRADES_DEFAULT).expect("params");
        set.prune(Some(9), &p, T0);
        assert_eq!(set.ranges, vec![(9, 10), (15, 15), (20, 20)]);
    }
}
