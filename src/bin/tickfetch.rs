//! `tickfetch`: the operator CLI. Parses flags and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// tickfetch operator commands.
#[derive(Debug, Parser)]
#[command(name = "tickfetch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The local stack: Kafka-API broker, etcd, MongoDB wire server on loopback.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
}

#[derive(Debug, Subcommand)]
enum StackAction {
    /// Install what is missing, start the services (or reuse running ones), print
    /// their addresses as KEY=VALUE lines and write them to DIR/stack.env.
    Up {
        /// Data, logs and state of the stack.
        #[arg(long, default_value = ".tickfetch")]
        dir: PathBuf,
        /// Broker on memory storage: faster, nothing survives a broker restart.
        #[arg(long)]
        memory: bool,
        #[arg(long)]
        kafka_port: Option<u16>,
        #[arg(long)]
        etcd_port: Option<u16>,
        #[arg(long)]
        mongodb_port: Option<u16>,
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
    }
}

async fn stack(action: StackAction) -> anyhow::Result<ExitCode> {
    use tickfetch::stack;
    match action {
        StackAction::Up {
            dir,
            memory,
            kafka_port,
            etcd_port,
            mongodb_port,
        } => {
            let mut options = stack::StackOptions::new(dir);
            options.memory = memory;
            options.kafka_port = kafka_port;
            options.etcd_port = etcd_port;
            options.mongodb_port = mongodb_port;
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
                    "{:<8} pid={:<8} port={:<6} {}",
                    s.name,
                    s.pid,
                    s.port,
                    match (s.running, s.answering) {
                        (true, true) => "up",
                        (true, false) => "running, not answering",
                        _ => "not running",
                    }
                );
            }
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        StackAction::Down { dir } => {
            let stopped = stack::down(&dir).context("stack down")?;
            eprintln!("stopped: {}", if stopped.is_empty() { "nothing".to_string() } else { stopped.join(", ") });
            Ok(ExitCode::SUCCESS)
        }
    }
}
