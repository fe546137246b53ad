//! `tickfetch-exsim`: the exchange simulator as a process. Parses flags,
//! starts the simulator, prints where it listens as `KEY=VALUE` lines on
//! stdout, and runs until Ctrl-C (see `tickfetch::exsim`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tickfetch::config::LogFormat;
use tickfetch::exsim::{
    parse_duration, ConnectionRules, GenerateConfig, ReplayConfig, ReplayStart, SimConfig,
    Simulator, Source, HISTORY_CAPACITY,
};
use tickfetch::ingest::venues::Feed;
use tickfetch::model::Exchange;
use tickfetch::{shutdown, telemetry};

/// Simulate exchange trade websockets and REST endpoints on loopback.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-exsim", version, about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "TICKFETCH_EXSIM_LISTEN")]
    listen: SocketAddr,
    /// Exchanges to simulate, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "binance,upbit,coinbase,bybit,okx"
    )]
    exchanges: Vec<Exchange>,
    /// Binance's websocket ping interval.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Binance closes a connection whose pong is later than this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pong_deadline: Duration,
    /// Binance closes every connection at this age.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    max_connection_age: Duration,
    /// Binance's incoming messages per second (0: no limit).
    #[arg(long, default_value_t = 5)]
    max_incoming_per_second: u32,
    /// Do not close idle connections (OKX after 30 s, Upbit after 120 s).
    #[arg(long)]
    no_idle_timeouts: bool,
    /// Trades kept per symbol (and series) for REST and /control/history.
    #[arg(long, default_value_t = HISTORY_CAPACITY)]
    history: usize,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Generate trades: a seeded random walk, `rate` orders per second per exchange.
    Generate {
        /// Taker orders per second per exchange (0: only on POST /control/generate).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Symbols per exchange.
        #[arg(long, default_value_t = 3)]
        symbols: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fills per order, at most (Binance aggTrade / OKX trades aggregate them).
        #[arg(long, default_value_t = 1)]
        max_fills: u32,
    },
    /// Replay recordings (files, or directories searched for *.jsonl).
    Replay {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// 1: recorded pace; 10: ten times faster; 0: as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// When each exchange's replay starts.
        #[arg(long, value_enum, default_value_t = StartArg::FirstSubscriber)]
        start: StartArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StartArg {
    Immediately,
    FirstSubscriber,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?} (text or json)")),
    }
}

/// `binance:aggTrade` → `BINANCE_AGGTRADE`.
fn key(feed: Feed) -> String {
    format!("{}_{}", feed.exchange(), feed.name())
        .to_ascii_uppercase()
        .replace('-', "_")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init_logging(args.log_format);
    let source = match args.mode {
        Mode::Generate {
            rate,
            symbols,
            seed,
            max_fills,
        } => Source::Generate(GenerateConfig {
            rate_per_second: rate,
            symbols_per_exchange: symbols,
            seed,
            max_fills,
            symbols: BTreeMap::new(),
            first_ids: BTreeMap::new(),
            instruments: BTreeMap::new(),
        }),
        Mode::Replay {
            paths,
            speed,
            start,
        } => Source::Replay(ReplayConfig {
            paths,
            speed,
            start: match start {
                StartArg::Immediately => ReplayStart::Immediately,
                StartArg::FirstSubscriber => ReplayStart::FirstSubscriber,
            },
        }),
    };
    let config = SimConfig {
        listen: args.listen,
        exchanges: args.exchanges,
        source,
        rules: ConnectionRules {
            ping_interval: args.ping_interval,
            pong_deadline: args.pong_deadline,
            max_connection_age: args.max_connection_age,
            max_incoming_per_second: (args.max_incoming_per_second > 0)
                .then_some(args.max_incoming_per_second),
            idle_timeouts: !args.no_idle_timeouts,
            idle_timeout_override: None,
        },
        history_capacity: args.history,
    };
    let signals = shutdown::on_signals()?;
    let mut sim = Simulator::start_with_shutdown(config, signals).await?;

    let mut lines = vec![
        format!("SIM_ADDR={}", sim.addr()),
        format!("SIM_HTTP_URL={}", sim.http_url()),
        format!("SIM_CONTROL_URL={}", sim.control_url()),
    ];
    for exchange in sim.exchanges() {
        let name = exchange.as_str().to_ascii_uppercase();
        lines.push(format!("{name}_WS_URL={}", sim.ws_url(exchange)));
        lines.push(format!("{name}_WS_BASE={}", sim.ws_base(exchange)));
        lines.push(format!("{name}_REST_URL={}", sim.rest_url(exchange)));
        lines.push(format!(
            "{name}_SYMBOLS={}",
            sim.symbols(exchange)?.join(",")
        ));
        for feed in Feed::ALL.into_iter().filter(|f| f.exchange() == exchange) {
            lines.push(format!("{}_WS_URL={}", key(feed), sim.feed_ws_url(feed)));
        }
    }
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()?;
    drop(stdout);
    sim.stopped().await?;
    Ok(())
}
