//! `tickfetch`: the operator CLI. Parses flags and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickfetch::app::CommonArgs;
use tickfetch::coord::admin;
use tickfetch::model::{Exchange, Interval};

/// tickfetch operator commands.
#[derive(Debug, Parser)]
#[command(name = "tickfetch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The local stack: Apache Kafka, etcd, MongoDB wire server on loopback.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Print stored candles from MongoDB: JSON lines (a table on a terminal).
    Candles(CandlesArgs),
    /// Load an exchange trade file: straight into candles (`--out -`, JSON
    /// lines on stdout) or into the trades topic (`--to kafka`) for backfill.
    Import(ImportArgs),
    /// Raw exchange frames in (one per line), normalised trades out as JSON
    /// lines (the form `import --format trades-jsonl` reads).
    Decode {
        #[arg(long)]
        exchange: Exchange,
        /// Input file (stdin when absent).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// How far each rollup stage and the sink are behind their input topics.
    Lag {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The feeds the cluster should run (desired feeds in etcd).
    Feeds {
        #[command(subcommand)]
        action: FeedsAction,
    },
    /// Registered workers: id, version, capacity, lease age, feeds held;
    /// `workers drain ID` drains one.
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        json: bool,
    },
    /// Replace every worker, one at a time, by drain and replacement;
    /// resumable (`--status`, `--abort`).
    Rollout(RolloutArgs),
    /// Recompute a stage's candles for a range from the topic below:
    /// unchanged candles stay, changed ones get the next revision (and flow
    /// up to the parents and into MongoDB), missing ones are written.
    Replay(ReplayArgs),
    /// The whole system on the local stack: master, workers, rollup
    /// stages and sink as supervised child processes, until Ctrl-C.
    Up(UpArgs),
    /// Per feed: primary, replicas, epoch, last trade age, trades/s.
    Status {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The stage to recompute: 1s (from trades), 5s, 1m or 5m.
    #[arg(long)]
    stage: Interval,
    /// Then each parent stage up to this one over the same range (needed
    /// for ranges older than the stages' retention).
    #[arg(long)]
    through: Option<Interval>,
    /// Range start: RFC 3339 time, epoch ms, or an input-topic offset.
    #[arg(long)]
    from: String,
    /// Range end (exclusive), as --from; default: the last window the live
    /// stage has surely closed.
    #[arg(long)]
    to: Option<String>,
    /// Only these feeds, `exchange:SYMBOL`, comma separated.
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
    /// How far before the range the input is read, in seconds (the state
    /// the first windows start from).
    #[arg(long, default_value_t = 120)]
    margin_secs: u64,
    /// Compare and report; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The stack's directory (data, logs, `up`'s own files).
    #[arg(long, default_value = ".tickfetch")]
    dir: PathBuf,
    /// Feed the workers from the exchange simulator (no internet needed).
    #[arg(long)]
    simulate: bool,
    /// Orders per second per symbol the simulator makes.
    #[arg(long, default_value_t = 5.0)]
    sim_rate: f64,
    /// Use the Kafka, etcd and MongoDB of the config (or of
    /// KAFKA_BOOTSTRAP, ETCD_ENDPOINTS, MONGODB_URI) instead of starting the
    /// local stack.
    #[arg(long)]
    no_stack: bool,
    /// Feeds as `exchange:SYMBOL`, comma separated (default: BTC and ETH
    /// against USDT on Binance, Bybit, OKX; against KRW on Upbit).
    #[arg(long, value_delimiter = ',')]
    feeds: Vec<String>,
    /// The rollup stages to run (each reads the one below).
    #[arg(long, value_delimiter = ',', default_value = "1s,5s,1m,5m")]
    stages: Vec<Interval>,
    /// Run no sink.
    #[arg(long)]
    no_sink: bool,
    /// Ingest workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Hot replicas per feed.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Log lines instead of the live screen, even on a terminal.
    #[arg(long)]
    no_screen: bool,
    /// `up`'s own /metrics and /readyz port; the children's ports move with
    /// it (master +1, sink +3, stages +11..+14, workers +21, +22, ...).
    #[arg(long, default_value_t = tickfetch::app::ports::UP)]
    port_base: u16,
}

#[derive(Debug, clap::Args)]
struct RolloutArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The version every worker must report when done (`cluster.version`
    /// of the new workers).
    #[arg(long, required_unless_present_any = ["status", "abort"])]
    to_version: Option<String>,
    /// How long a replacement holds its replicas before the next drain.
    #[arg(long, default_value_t = 5)]
    warm_secs: u64,
    /// Longest wait for one worker's drain and replacement.
    #[arg(long, default_value_t = 600)]
    per_worker_secs: u64,
    /// Print the last rollout's progress.
    #[arg(long, conflicts_with = "abort")]
    status: bool,
    /// Stop the rollout in progress before its next worker.
    #[arg(long)]
    abort: bool,
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    use tickfetch::rollup::replay::{self, RangePoint, ReplayOptions};
    let config = args.common.load()?;
    tickfetch::telemetry::init_logging(config.telemetry.log_format);
    let point = |name: &str, text: &str| -> anyhow::Result<RangePoint> {
        text.parse()
            .map_err(|e| anyhow::anyhow!("--{name} {text:?}: {e}"))
    };
    let resolve = |name: &'static str, p: RangePoint| {
        let config = config.clone();
        async move {
            match p {
                RangePoint::Time(t) => Ok::<_, anyhow::Error>(t),
                RangePoint::Offset(o) => replay::time_at_offset(&config, args.stage, o)
                    .await?
                    .with_context(|| format!("--{name} {o}: no record at or after that offset")),
            }
        }
    };
    let from = resolve("from", point("from", &args.from)?).await?;
    let to = match &args.to {
        Some(text) => Some(resolve("to", point("to", text)?).await?),
        None => None,
    };
    for key in &args.symbols {
        anyhow::ensure!(
            key.split_once(':')
                .is_some_and(|(e, _)| e.parse::<Exchange>().is_ok()),
            "--symbols {key:?}: expected exchange:SYMBOL, e.g. binance:BTCUSDT"
        );
    }
    let options = ReplayOptions {
        stage: args.stage,
        through: args.through.unwrap_or(args.stage).max(args.stage),
        from,
        to,
        keys: args.symbols.iter().cloned().collect(),
        margin: std::time::Duration::from_secs(args.margin_secs),
        dry_run: args.dry_run,
    };
    for report in replay::run(&config, &options).await? {
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
            continue;
        }
        println!(
            "replay {}: {} input records, {} windows from {} to {}: {} unchanged, {} revised, {} missing written{}",
            report.stage,
            report.input_records,
            report.windows,
            report.from,
            report.to,
            report.unchanged,
            report.revised,
            report.missing,
            if args.dry_run { " (dry run: nothing written)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    use tickfetch::up::{self, UpOptions};
    let config = args.common.load()?;
    tickfetch::telemetry::init_logging(config.telemetry.log_format);
    let mut options = UpOptions::new(args.dir);
    options.start_stack = !args.no_stack;
    options.simulate = args.simulate;
    options.sim_rate = args.sim_rate;
    if !args.feeds.is_empty() {
        options.feeds = args
            .feeds
            .iter()
            .map(|f| {
                let (exchange, symbol) = f
                    .split_once(':')
                    .with_context(|| format!("--feeds {f:?}: expected exchange:SYMBOL"))?;
                let exchange: Exchange = exchange
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--feeds {f:?}: {e}"))?;
                Ok((exchange, symbol.to_string()))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    options.stages = args.stages;
    options.stages.sort();
    options.stages.dedup();
    options.sink = !args.no_sink;
    options.workers = args.workers;
    options.replicas = args.replicas;
    if args.no_screen {
        options.screen = false;
    }
    options.port_base = args.port_base;
    up::run(config, options).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
enum WorkersAction {
    /// Move the worker's feeds to others by planned handover; it exits 0
    /// once it holds none.
    Drain {
        #[command(flatten)]
        common: CommonArgs,
        /// The worker's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum FeedsAction {
    /// Add (or update) feeds: one per symbol.
    Add {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        exchange: Exchange,
        /// The exchange's own symbols, comma separated (BTCUSDT, BTC-USD…).
        #[arg(long, value_delimiter = ',', required = true)]
        symbols: Vec<String>,
        /// The exchange's stream (`trade`, `aggTrade`…); its first when absent.
        #[arg(long)]
        channel: Option<String>,
        /// Hot replicas besides the primary.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Remove feeds: the master stops them.
    Remove {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        exchange: Exchange,
        #[arg(long, value_delimiter = ',', required = true)]
        symbols: Vec<String>,
    },
    /// List the desired feeds.
    List {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long)]
    exchange: Exchange,
    /// The exchange's own symbol, e.g. XRPETH.
    #[arg(long)]
    symbol: String,
    /// binance-aggtrades-csv, binance-trades-csv or trades-jsonl.
    #[arg(long)]
    format: tickfetch::import::ImportFormat,
    /// The file (`-` for stdin).
    #[arg(long)]
    file: PathBuf,
    /// Candle intervals written with --out.
    #[arg(long, value_delimiter = ',', default_value = "1s,5s,1m,5m")]
    intervals: Vec<Interval>,
    /// Write candles as JSON lines to this file (`-` for stdout).
    #[arg(long, conflicts_with = "to")]
    out: Option<PathBuf>,
    /// Publish the trades to the trades topic instead (`kafka`).
    #[arg(long, value_parser = ["kafka"])]
    to: Option<String>,
}

#[derive(Debug, clap::Args)]
struct CandlesArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long)]
    exchange: Exchange,
    /// Every symbol when absent.
    #[arg(long)]
    symbol: Option<String>,
    #[arg(long, default_value = "1m")]
    interval: Interval,
    /// Start of open_time, inclusive: epoch ms or RFC 3339.
    #[arg(long)]
    from: String,
    /// End of open_time, exclusive: epoch ms or RFC 3339.
    #[arg(long)]
    to: String,
    /// JSON lines even on a terminal.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum StackAction {
    /// Install what is missing, start the services (or reuse running ones), print
    /// their addresses as KEY=VALUE lines and write them to DIR/stack.env.
    Up {
        /// Data, logs and state of the stack.
        #[arg(long, default_value = ".tickfetch")]
        dir: PathBuf,
        #[arg(long)]
        kafka_port: Option<u16>,
        #[arg(long)]
        etcd_port: Option<u16>,
        #[arg(long)]
        mongodb_port: Option<u16>,
        /// Keep etcd's data under DIR/etcd on disk (default: in /dev/shm,
        /// linked from DIR/etcd, clear of the disk the broker and MongoDB
        /// share).
        #[arg(long)]
        etcd_on_disk: bool,
    },
    /// Show the recorded services, whether they run and answer.
    Status {
        #[arg(long, default_value = ".tickfetch")]
        dir: PathBuf,
    },
    /// Stop exactly the processes `up` started.
    Down {
        #[arg(long, default_value = ".tickfetch")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tickfetch: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Stack { action } => stack(action).await,
        Command::Candles(args) => candles(args).await,
        Command::Import(args) => import(args).await,
        Command::Decode { exchange, file } => decode(exchange, file),
        Command::Lag { common } => {
            let config = common.load()?;
            let lags =
                tokio::task::spawn_blocking(move || tickfetch::lag::stage_lags(&config)).await??;
            println!(
                "{:<32} {:<40} {:>10} {:>10} {:>8}",
                "group", "topic", "end", "committed", "lag"
            );
            for l in lags {
                println!(
                    "{:<32} {:<40} {:>10} {:>10} {:>8}",
                    l.group,
                    l.topic,
                    l.end,
                    l.committed,
                    l.lag()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Feeds { action } => feeds(action).await,
        Command::Rollout(args) => rollout(args).await,
        Command::Up(args) => up(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Workers {
            action: Some(WorkersAction::Drain { common, id }),
            ..
        } => {
            let store = connect(&common).await?;
            admin::drain_worker(&store, &id, now_ms()).await?;
            eprintln!("worker {id} is draining");
            Ok(ExitCode::SUCCESS)
        }
        Command::Workers {
            action: None,
            common,
            json,
        } => {
            let store = connect(&common).await?;
            let rows = admin::workers(&store, now_ms()).await?;
            if !print_json(json, &rows)? {
                println!(
                    "{:<16} {:<10} {:>8} {:<22} {:>9} {:>9} {:>9} draining",
                    "id", "version", "capacity", "address", "lease_age", "primaries", "replicas"
                );
                for w in rows {
                    println!(
                        "{:<16} {:<10} {:>8} {:<22} {:>8.1}s {:>9} {:>9} {}",
                        w.id,
                        w.version,
                        w.capacity,
                        w.address,
                        w.lease_age_s,
                        w.primaries,
                        w.replicas,
                        w.draining
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { common, json } => {
            let store = connect(&common).await?;
            let rows = admin::status(&store, now_ms()).await?;
            if !print_json(json, &rows)? {
                println!(
                    "{:<28} {:<10} {:<16} {:<24} {:>10} {:>10} {:>9}",
                    "feed", "channel", "primary", "replicas", "epoch", "last_trade", "trades/s"
                );
                for f in rows {
                    println!(
                        "{:<28} {:<10} {:<16} {:<24} {:>10} {:>10} {:>9}",
                        format!("{}/{}", f.exchange, f.symbol),
                        f.channel,
                        f.primary.as_deref().unwrap_or("-"),
                        f.replicas.join(","),
                        if f.epoch == 0 {
                            "pending".to_string()
                        } else {
                            f.epoch.to_string()
                        },
                        f.last_trade_age_s
                            .map_or("-".to_string(), |a| format!("{a:.1}s")),
                        f.trades_per_s
                            .map_or("-".to_string(), |r| format!("{r:.1}")),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    use tickfetch::coord::rollout::{self, RolloutOptions};
    let store = connect(&args.common).await?;
    if args.status || args.abort {
        let record = if args.abort {
            rollout::abort(&store).await?
        } else {
            rollout::status(&store).await?
        };
        match record {
            Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
            None => println!("no rollout recorded"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = RolloutOptions {
        target_version: args.to_version.unwrap_or_default(),
        warm: std::time::Duration::from_secs(args.warm_secs),
        per_worker: std::time::Duration::from_secs(args.per_worker_secs.max(1)),
    };
    let shutdown = tickfetch::shutdown::on_signals()?;
    let record = rollout::run(&store, &options, &shutdown).await?;
    eprintln!(
        "rollout to {} done: {} workers replaced",
        record.target_version,
        record.done.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// With `--json`, prints `rows` as a JSON array and returns true; the
/// caller prints its table otherwise.
fn print_json<T: serde::Serialize>(json: bool, rows: &[T]) -> anyhow::Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    }
    Ok(json)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn connect(common: &CommonArgs) -> anyhow::Result<tickfetch::coord::store::Store> {
    let config = common.load()?;
    Ok(tickfetch::coord::store::Store::connect(&config.etcd).await?)
}

async fn feeds(action: FeedsAction) -> anyhow::Result<ExitCode> {
    match action {
        FeedsAction::Add {
            common,
            exchange,
            symbols,
            channel,
            replicas,
        } => {
            let feeds = symbols
                .iter()
                .map(|s| admin::desired_feed(exchange, channel.as_deref(), s, replicas))
                .collect::<Result<Vec<_>, _>>()?;
            let store = connect(&common).await?;
            admin::add_feeds(&store, &feeds).await?;
            eprintln!("{} feeds added", feeds.len());
        }
        FeedsAction::Remove {
            common,
            exchange,
            symbols,
        } => {
            let store = connect(&common).await?;
            for symbol in &symbols {
                admin::remove_feed(&store, exchange, symbol).await?;
            }
            eprintln!("{} feeds removed", symbols.len());
        }
        FeedsAction::List { common, json } => {
            let store = connect(&common).await?;
            let feeds = admin::list_feeds(&store).await?;
            if !print_json(json, &feeds)? {
                println!(
                    "{:<10} {:<20} {:<10} replicas",
                    "exchange", "symbol", "channel"
                );
                for f in feeds {
                    println!(
                        "{:<10} {:<20} {:<10} {}",
                        f.exchange, f.symbol, f.channel, f.replicas
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decode(exchange: Exchange, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let path = file.unwrap_or_else(|| PathBuf::from("-"));
    let input = open_input(&path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let clock = tickfetch::ingest::venues::receive_time_now();
    let report = tickfetch::ingest::decode::decode_reader(exchange, input, clock, |trade| {
        serde_json::to_writer(&mut out, &trade)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    for bad in &report.malformed {
        eprintln!("{}:{}: {}", path.display(), bad.line, bad.message);
    }
    eprintln!("{report}");
    Ok(if report.malformed_total > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn open_input(path: &std::path::Path) -> anyhow::Result<Box<dyn std::io::BufRead + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let counted = tickfetch::progress::ProgressReader::new(file, "import", size);
    Ok(Box::new(std::io::BufReader::with_capacity(
        1 << 16,
        counted,
    )))
}

/// Loads and installs `exchange`'s instrument list as the worker does (same
/// config keys, same sources), so that an imported file and the live feed
/// name a symbol alike; a list it cannot get is a warning, not an error.
async fn install_instruments(config: &tickfetch::config::Config, exchange: Exchange) {
    use tickfetch::ingest::venues::instruments;
    let sources = instruments::sources_for(&config.ingest, &[exchange]);
    let options = instruments::LoadOptions::from_config(&config.ingest);
    let loaded = instruments::load(&sources, &options).await;
    for outcome in &loaded.outcomes {
        if let Some(warning) = outcome.warning() {
            eprintln!("tickfetch: warning: {warning}");
        }
    }
    loaded.instruments.install();
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use tickfetch::import::{self, ImportError};
    let config = args.common.load()?;
    if args.format != import::ImportFormat::TradesJsonl {
        install_instruments(&config, args.exchange).await;
    }
    let input = open_input(&args.file)?;
    let file = args.file.display().to_string();
    let mut bad = 0u64;
    let mut report_error = |e: &ImportError| {
        bad += 1;
        eprintln!("{file}: {e}");
    };
    if args.to.is_some() {
        let mut publisher = tickfetch::ingest::output::publisher::TradePublisher::connect(&config)
            .await
            .context("connecting to Kafka")?;
        // Producing may wait on a full queue: on a blocking thread, not a
        // runtime worker.
        let (format, exchange, symbol) = (args.format, args.exchange, args.symbol.clone());
        let grace = config.rollup.grace_ms;
        let file = file.clone();
        let (report, publisher, failed) = tokio::task::spawn_blocking(move || {
            let mut failed = 0u64;
            let report = import::publish_from_reader(
                input,
                format,
                exchange,
                &symbol,
                Some(grace),
                &mut publisher,
                |e: &ImportError| {
                    failed += 1;
                    eprintln!("{file}: {e}");
                },
            )?;
            publisher.flush(std::time::Duration::from_secs(120))?;
            Ok::<_, anyhow::Error>((report, publisher, failed))
        })
        .await??;
        bad += failed;
        drop(publisher);
        eprintln!(
            "published {} trades and {} watermarks to {}; {bad} bad rows",
            report.trades,
            report.watermarks,
            config.topics.trades()
        );
    } else {
        let out_path = args.out.unwrap_or_else(|| PathBuf::from("-"));
        let mut out: Box<dyn Write> = if out_path.as_os_str() == "-" {
            Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
        } else {
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(&out_path)
                    .with_context(|| format!("creating {}", out_path.display()))?,
            ))
        };
        let mut write_error = None;
        let report = import::candles_from_reader(
            input,
            args.format,
            args.exchange,
            &args.symbol,
            &args.intervals,
            tickfetch::rollup::engine::PipelineConfig {
                trades: tickfetch::rollup::level::level_config(&config, Interval::S1),
                candles: tickfetch::rollup::level::level_config(&config, Interval::S5),
            },
            |candle| {
                if write_error.is_none() {
                    let written = serde_json::to_writer(&mut out, candle)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n"));
                    if let Err(e) = written {
                        write_error = Some(e);
                    }
                }
            },
            &mut report_error,
        )?;
        if let Some(e) = write_error {
            return Err(e).context("writing candles");
        }
        out.flush()?;
        eprintln!(
            "{} rows, {} trades, {} bad rows, {} duplicates, {} late corrections, {} too late, {} candles",
            report.read.rows, report.read.trades, report.read.bad_rows, report.duplicates, report.corrected, report.too_late, report.candles
        );
    }
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn candles(args: CandlesArgs) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal, Write};
    use tickfetch::sink::query::{self, CandleQuery};
    let config = args.common.load()?;
    let from = query::parse_time(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = query::parse_time(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let mut options = config.mongodb.client_options().await?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let client = mongodb::Client::with_options(options)?;
    let db = client.database(&config.mongodb.database);
    let found = query::candles(
        &db,
        &CandleQuery {
            exchange: args.exchange,
            symbol: args.symbol,
            interval: args.interval,
            from,
            to,
        },
    )
    .await
    .with_context(|| format!("reading candles from {}", config.mongodb.database))?;
    let stdout = std::io::stdout();
    let table = stdout.is_terminal() && !args.json;
    let mut out = std::io::BufWriter::new(stdout.lock());
    if table {
        writeln!(
            out,
            "{:<12} {:<6} {:<24} {:>14} {:>14} {:>14} {:>14} {:>16} {:>7} {:<8} rev",
            "symbol",
            "ivl",
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trades",
            "status"
        )?;
    }
    for c in &found {
        if table {
            let time = chrono::DateTime::from_timestamp_millis(c.open_time)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{:<12} {:<6} {:<24} {:>14} {:>14} {:>14} {:>14} {:>16} {:>7} {:<8} {}",
                c.symbol,
                c.interval,
                time,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.trade_count,
                format!("{:?}", c.status).to_lowercase(),
                c.revision
            )?;
        } else {
            serde_json::to_writer(&mut out, c)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    eprintln!("{} candles", found.len());
    Ok(ExitCode::SUCCESS)
}

async fn stack(action: StackAction) -> anyhow::Result<ExitCode> {
    use tickfetch::stack;
    match action {
        StackAction::Up {
            dir,
            kafka_port,
            etcd_port,
            mongodb_port,
            etcd_on_disk,
        } => {
            let mut options = stack::StackOptions::new(dir);
            options.kafka_port = kafka_port;
            options.etcd_port = etcd_port;
            options.mongodb_port = mongodb_port;
            options.etcd_in_memory = !etcd_on_disk;
            let env = stack::up(&options).await.context("stack up")?;
            print!("{}", env.to_env_lines());
            Ok(ExitCode::SUCCESS)
        }
        StackAction::Status { dir } => {
            let services = stack::status(&dir).await.context("stack status")?;
            if services.is_empty() {
                println!("no stack recorded in {}", dir.display());
                return Ok(ExitCode::FAILURE);
            }
            let mut healthy = true;
            for s in services {
                healthy &= s.answering;
                println!(
                    "{:<8} pid={:<8} port={:<6} {:<24} {}",
                    s.name,
                    s.pid,
                    s.port,
                    match (s.running, s.answering) {
                        (true, true) => "up",
                        (true, false) => "running, not answering",
                        _ => "not running",
                    },
                    s.version
                );
            }
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        StackAction::Down { dir } => {
            let stopped = stack::down(&dir).context("stack down")?;
            eprintln!(
                "stopped: {}",
                if stopped.is_empty() {
                    "nothing".to_string()
                } else {
                    stopped.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
