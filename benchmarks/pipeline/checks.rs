//! The checks that make a fast wrong run fail: trades exactly once, candles
//! equal to the offline engine's, MongoDB equal to the topics.

use super::*;

/// Every simulated trade read once per feed, in order, and no gap marker.
pub(crate) fn check_trades(want: &BTreeMap<String, Vec<String>>, seen: &Seen) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, ids) in want {
        let got: Vec<&str> = seen
            .trades
            .get(key)
            .map(|t| t.iter().map(|t| t.trade_id.as_str()).collect())
            .unwrap_or_default();
        // From the first trade read: those sent before its subscription was
        // in place were never offered to the worker.
        let start = got
            .first()
            .and_then(|first| ids.iter().position(|id| id == first))
            .unwrap_or(ids.len());
        let expected: Vec<&str> = ids[start..].iter().map(String::as_str).collect();
        if got != expected {
            let unique: HashSet<&str> = got.iter().copied().collect();
            errors.push(format!(
                "{key}: {} trades read, {} expected ({} duplicates, {} missing)",
                got.len(),
                expected.len(),
                got.len() - unique.len(),
                expected.iter().filter(|id| !unique.contains(*id)).count()
            ));
        }
    }
    if seen.gaps > 0 {
        errors.push(format!("{} gap markers on the trades topic", seen.gaps));
    }
    errors
}

/// The engine's offline candles of every feed, from its trades in topic
/// order, per interval and (key, open time).
pub(crate) fn offline(
    config: &Config,
    seen: &Seen,
) -> BTreeMap<Interval, HashMap<(String, Millis), Candle>> {
    let engine = PipelineConfig {
        trades: level_config(config, Interval::S1),
        candles: level_config(config, Interval::S5),
    };
    let mut built: BTreeMap<Interval, HashMap<(String, Millis), Candle>> = BTreeMap::new();
    let mut out = Vec::new();
    for trades in seen.trades.values() {
        let mut pipeline = CandlePipeline::new(&STAGES, engine).expect("engine");
        for trade in trades {
            pipeline.on_trade(trade, &mut out).expect("in-order trade");
        }
        pipeline.finish(&mut out).expect("finish");
        for candle in out.drain(..) {
            built
                .entry(candle.interval)
                .or_default()
                .insert((candle.key(), candle.open_time), candle);
        }
    }
    built
}

/// Every candle read equals the offline one (quiet candles after the last
/// trade's window excepted), and none is missing up to the last window read.
pub(crate) fn check_candles(
    config: &Config,
    seen: &Seen,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let built = offline(config, seen);
    let mut errors = Vec::new();
    let mut checked = BTreeMap::new();
    for interval in STAGES {
        let empty = HashMap::new();
        let read = seen.candles.get(&interval).unwrap_or(&empty);
        let want = built.get(&interval).unwrap_or(&empty);
        let mut last_built: HashMap<&str, Millis> = HashMap::new();
        for (key, open) in want.keys() {
            let last = last_built.entry(key.as_str()).or_insert(*open);
            *last = (*last).max(*open);
        }
        let mut last_read: HashMap<&str, Millis> = HashMap::new();
        let (mut equal, mut wrong) = (0, 0);
        for ((key, open), candle) in read {
            let last = last_read.entry(key.as_str()).or_insert(*open);
            *last = (*last).max(*open);
            match want.get(&(key.clone(), *open)) {
                Some(expected) if expected == candle => equal += 1,
                Some(expected) => {
                    wrong += 1;
                    if wrong <= 3 {
                        errors.push(format!(
                            "{interval} {key} @{open}: read {candle:?}, built {expected:?}"
                        ));
                    }
                }
                None if candle.status == CandleStatus::Quiet
                    && last_built.get(key.as_str()).is_some_and(|l| open > l) => {}
                None => {
                    wrong += 1;
                    if wrong <= 3 {
                        errors.push(format!(
                            "{interval} {key} @{open}: read {candle:?}, built none"
                        ));
                    }
                }
            }
        }
        let missing = want
            .iter()
            .filter(|((key, open), _)| {
                last_read.get(key.as_str()).is_some_and(|l| open <= l)
                    && !read.contains_key(&(key.clone(), *open))
            })
            .count();
        if wrong > 0 || missing > 0 {
            errors.push(format!(
                "{interval}: {wrong} candles differ from the offline ones, {missing} missing"
            ));
        }
        checked.insert(interval.to_string(), equal);
    }
    (checked, errors)
}

/// MongoDB holds every candle of the stored intervals that the topics hold,
/// equal (waiting for the sink to catch up).
pub(crate) async fn check_stored(
    config: &Config,
    settings: &Settings,
    seen: &Seen,
    dir: &Path,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut checked = BTreeMap::new();
    let mut errors = Vec::new();
    let client = match config.mongodb.client_options().await {
        Ok(options) => match mongodb::Client::with_options(options) {
            Ok(client) => client,
            Err(e) => return (checked, vec![format!("mongodb: {e}")]),
        },
        Err(e) => return (checked, vec![format!("mongodb: {e}")]),
    };
    let db = client.database(&config.mongodb.database);
    for interval in &settings.sink_intervals {
        let Some(read) = seen.candles.get(interval) else {
            continue;
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut equal, mut differ) = (0, read.len());
        while Instant::now() < deadline {
            let mut stored: HashMap<(String, Millis), Candle> = HashMap::new();
            for exchange in [Exchange::Binance, Exchange::Okx] {
                let query = CandleQuery {
                    exchange,
                    symbol: None,
                    interval: *interval,
                    from: Millis::MIN,
                    to: Millis::MAX,
                };
                match query::candles(&db, &query).await {
                    Ok(candles) => {
                        stored.extend(candles.into_iter().map(|c| ((c.key(), c.open_time), c)))
                    }
                    Err(e) => errors.push(format!("{interval}: reading MongoDB: {e}")),
                }
            }
            equal = read
                .iter()
                .filter(|(key, candle)| stored.get(*key) == Some(*candle))
                .count();
            differ = read.len() - equal;
            if differ == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if differ > 0 {
            errors.push(format!(
                "{interval}: {differ} of {} candles not stored as the topic holds them (sink log in {})",
                read.len(),
                dir.display()
            ));
        }
        checked.insert(interval.to_string(), equal);
    }
    (checked, errors)
}
