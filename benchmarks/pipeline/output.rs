//! The results as markdown and SVG.

use super::*;

pub(crate) fn markdown(report: &Report) -> String {
    let mut md = format!(
        "# Pipeline benchmark\n\n{}; {}; {} symbols (half Binance, half OKX), {} s measured after {} s warm-up per rate; sink intervals {:?}.\n\n",
        report.machine,
        report.date,
        report.settings.symbols,
        report.settings.measure_secs,
        report.settings.warm_secs,
        report
            .settings
            .sink_intervals
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
    );
    for run in &report.runs {
        md.push_str(&format!(
            "## {} trades/s offered: {:.0} trades/s read (load average {:.1} → {:.1}), {}\n\n| latency | samples | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n",
            run.offered_trades_per_second,
            run.trades_per_second_read,
            run.load_average.0,
            run.load_average.1,
            if run.errors.is_empty() {
                "result correct".to_string()
            } else {
                format!("**result wrong**: {}", run.errors.join("; "))
            }
        ));
        let ms = |v: f64| {
            if v.is_finite() {
                format!("{v:.0} ms")
            } else {
                "–".to_string()
            }
        };
        for l in run.latency.iter().chain(&run.bucketed) {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                l.measure,
                l.samples,
                ms(l.p50_ms),
                ms(l.p99_ms),
                ms(l.p999_ms),
                ms(l.max_ms)
            ));
        }
        md.push_str("\n| throughput | per second |\n|---|---|\n");
        for t in &run.throughput {
            md.push_str(&format!("| {} | {:.0} |\n", t.what, t.per_second));
        }
        md.push_str("\n| process | CPU (100 % = one core) | peak RSS |\n|---|---|---|\n");
        for u in &run.usage {
            md.push_str(&format!(
                "| {} | {:.0} % | {:.0} MB |\n",
                u.process, u.cpu_percent, u.peak_rss_mb
            ));
        }
        md.push_str(&format!(
            "\nChecked: candles equal to the engine's offline ones {:?}; stored in MongoDB {:?}.\n\n",
            run.candles_checked, run.stored_checked
        ));
    }
    if let Some(b) = &report.backlog {
        md.push_str(&format!(
            "## Baselines and peers on the same trades: a backlog of {} trades ({} records with watermarks) over {} symbols, read from its start\n\n| system | trades/s | seconds (from start / working) | CPU s | trades per CPU-second | peak RSS | candles compared / differing / not emitted |\n|---|---|---|---|---|---|---|\n",
            b.trades, b.records, b.symbols
        ));
        for r in &b.runs {
            md.push_str(&format!(
                "| {} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} | {:.0} MB | {} / {} / {} |\n",
                r.system,
                r.trades_per_second,
                r.seconds_from_start,
                r.seconds_working,
                r.cpu_seconds,
                r.trades_per_cpu_second,
                r.peak_rss_mb,
                r.candles_compared,
                r.candles_differing,
                r.candles_not_emitted
            ));
        }
        let rate = |prefix: &str| {
            b.runs
                .iter()
                .find(|r| r.system.starts_with(prefix))
                .map(|r| r.trades_per_second)
        };
        if let (Some(eos), Some(alo), Some(floor)) = (
            rate("tickfetch 1s stage (exactly-once)"),
            rate("tickfetch 1s stage (at-least-once)"),
            rate("floor:"),
        ) {
            md.push_str(&format!(
                "\nThe exactly-once stage at {:.2}× the floor (target ≥ 0.9×); at-least-once at {:.2}× exactly-once.\n",
                eos / floor.max(1e-9),
                alo / eos.max(1e-9)
            ));
        }
        for r in &b.runs {
            md.push_str(&format!("\n- {}: {}", r.system, r.note));
        }
        if !b.errors.is_empty() {
            md.push_str(&format!("\n\nErrors: {}", b.errors.join("; ")));
        }
        md.push('\n');
    }
    md
}

/// A line chart of each latency's p99 against the offered rate, as SVG.
pub(crate) fn svg(report: &Report) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 40.0, 260.0);
    let series: Vec<(String, Vec<(f64, f64)>)> = {
        let mut by_measure: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for run in &report.runs {
            for l in run.latency.iter().chain(&run.bucketed) {
                if l.measure.contains("commit (") || !l.p99_ms.is_finite() {
                    continue;
                }
                by_measure
                    .entry(l.measure.clone())
                    .or_default()
                    .push((run.offered_trades_per_second, l.p99_ms));
            }
        }
        by_measure.into_iter().collect()
    };
    let max_x = report
        .runs
        .iter()
        .map(|r| r.offered_trades_per_second)
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |v: f64| left + v / max_x * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - bottom - top);
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"13\">p99 latency against offered trades/s ({})</text>\n",
        report.machine
    );
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    ));
    for i in 0..=4 {
        let v = max_y * i as f64 / 4.0;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0} ms</text>\n",
            left - 5.0,
            y(v) + 4.0
        ));
    }
    for run in &report.runs {
        let v = run.offered_trades_per_second;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.0}/s</text>\n",
            x(v),
            h - bottom + 18.0
        ));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (a, b) in points {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n",
                x(*a),
                y(*b)
            ));
        }
        let ly = top + 16.0 * i as f64;
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            w - right + 10.0,
            ly,
            w - right + 25.0,
            ly + 9.0,
            name.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    out.push_str("</svg>\n");
    out
}
