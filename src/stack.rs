//! The local stack: Apache Kafka (one KRaft node), etcd and a MongoDB
//! wire-protocol server (SecantusDB) on loopback, for development, tests and the
//! demo.
//!
//! `tickfetch stack up` installs what is missing (a JRE and Maven with
//! `apt-get`, the broker's jars through Maven into a cache outside the
//! repository, see [`kafka`]; `apt-get` for etcd, `pip` for SecantusDB), starts
//! each service on a free loopback port with its data under the stack
//! directory, waits until each answers its own protocol, and writes the
//! addresses to `DIR/stack.env` (`KAFKA_BOOTSTRAP`, `ETCD_ENDPOINTS`,
//! `MONGODB_URI`) and the pids to `DIR/stack.json`. A second `up` reuses
//! services that still answer and starts again, on the same ports and data,
//! those that died (a broker restart keeps its log). `down` stops exactly the
//! processes listed in `stack.json` (checking each pid still runs the program it
//! started), first with SIGTERM, then SIGKILL.
//!
//! etcd's data lives in memory (`/dev/shm`, linked from `DIR/etcd`) unless
//! asked otherwise: on one machine its disk is shared with the broker and
//! MongoDB, and an fsync stuck behind their writes for seconds holds up
//! every lease refresh past its patience (etcd's hardware guide wants a disk
//! of its own for the same reason).

pub mod kafka;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a service may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` waits after SIGTERM before SIGKILL (the broker's controlled
/// shutdown takes a few seconds).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors of the local stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("installing {tool} failed (`{command}` exited with {status}); see its output above")]
    Install {
        tool: &'static str,
        command: String,
        status: String,
    },
    #[error("{service} did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    Start {
        service: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("port {port} for {service} is taken by another process; pick another with --{service}-port or stop that process")]
    PortTaken { service: &'static str, port: u16 },
    #[error("stack state file {path} is unreadable: {message}")]
    State { path: PathBuf, message: String },
    /// etcd's data was in memory and is gone (a reboot), while the broker's
    /// log, whose records carry epochs from it, is still there.
    #[error("etcd's data in {target} (linked from {link}) is gone, a reboot clears /dev/shm; the trades topic's records carry epochs from that etcd, so a new one would fence every new record: remove the stack directory to start afresh")]
    EtcdDataLost { link: PathBuf, target: PathBuf },
}

impl StackError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
        let what = what.into();
        move |source| StackError::Io { what, source }
    }
}

/// Options of `stack up`.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where data, logs, `stack.env` and `stack.json` live.
    pub dir: PathBuf,
    /// Fixed ports; a free one is picked where `None`.
    pub kafka_port: Option<u16>,
    pub etcd_port: Option<u16>,
    pub mongodb_port: Option<u16>,
    /// etcd's data in `/dev/shm` (when there is one) rather than under
    /// `DIR/etcd` on the disk the other services share.
    pub etcd_in_memory: bool,
}

impl StackOptions {
    /// Defaults: free ports (the broker's earlier ones when its data dir exists).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kafka_port: None,
            etcd_port: None,
            mongodb_port: None,
            etcd_in_memory: true,
        }
    }
}

/// One started service, as recorded in `stack.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub pid: i32,
    pub port: u16,
    /// A substring of the process command line, checked before signalling the pid.
    pub program: String,
    pub log: PathBuf,
    /// What runs, e.g. `Apache Kafka 4.4.0`.
    #[serde(default)]
    pub version: String,
}

/// What `stack.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StackState {
    pub services: Vec<ServiceRecord>,
}

/// The addresses of a running stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackEnv {
    pub kafka_bootstrap: String,
    pub etcd_endpoints: String,
    pub mongodb_uri: String,
}

impl StackEnv {
    /// `KEY=VALUE` lines, as written to `stack.env`.
    pub fn to_env_lines(&self) -> String {
        format!(
            "KAFKA_BOOTSTRAP={}\nETCD_ENDPOINTS={}\nMONGODB_URI={}\n",
            self.kafka_bootstrap, self.etcd_endpoints, self.mongodb_uri
        )
    }

    /// Reads `KEY=VALUE` lines back.
    pub fn parse(text: &str) -> Option<StackEnv> {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        Some(StackEnv {
            kafka_bootstrap: get("KAFKA_BOOTSTRAP")?,
            etcd_endpoints: get("ETCD_ENDPOINTS")?,
            mongodb_uri: get("MONGODB_URI")?,
        })
    }
}

const KAFKA: &str = "kafka";
const ETCD: &str = "etcd";
const MONGODB: &str = "mongodb";

fn state_path(dir: &Path) -> PathBuf {
    dir.join("stack.json")
}

/// Reads `DIR/stack.json` (an empty state when there is none).
///
/// # Errors
/// When the file exists but cannot be read or parsed.
pub fn read_state(dir: &Path) -> Result<StackState, StackError> {
    let path = state_path(dir);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| StackError::State {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StackState::default()),
        Err(source) => Err(StackError::Io {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

fn write_state(dir: &Path, state: &StackState) -> Result<(), StackError> {
    let path = state_path(dir);
    let text = serde_json::to_string_pretty(state).map_err(|e| StackError::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    fs::write(&path, text).map_err(StackError::io(format!("writing {}", path.display())))
}

/// Installs what is missing, starts (or reuses) the three services and writes
/// `stack.env`.
///
/// # Errors
/// An install that fails, a port taken by another process, or a service that
/// does not answer in time (with the tail of its log).
pub async fn up(options: &StackOptions) -> Result<StackEnv, StackError> {
    let dir = absolute(&options.dir)?;
    fs::create_dir_all(dir.join("logs"))
        .map_err(StackError::io(format!("creating {}", dir.display())))?;
    let mut state = read_state(&dir)?;
    // Forget services that no longer run.
    state
        .services
        .retain(|s| process_matches(s.pid, &s.program));

    let broker = kafka::ensure_kafka()?;
    let etcd = ensure_etcd()?;
    let secantus = ensure_secantus()?;

    // A broker started before under this dir keeps its ports: the controller's
    // address is part of its formatted quorum, and clients know the other.
    let previous = kafka::configured_ports(&dir);
    let kafka_port = options.kafka_port.or(previous.map(|(client, _)| client));
    let kafka = ensure_service(&dir, &mut state, KAFKA, kafka_port, |port, dir| {
        // The controller's address is part of the formatted quorum: keep it.
        let controller = match previous {
            Some((_, controller)) => controller,
            None => free_port()?,
        };
        let cmd = kafka::broker_command(&broker, dir, port, controller)?;
        Ok((
            cmd,
            kafka::MAIN_CLASS.to_string(),
            format!("Apache Kafka {}", kafka::KAFKA_VERSION),
        ))
    })?;
    let etcd_port = ensure_service(&dir, &mut state, ETCD, options.etcd_port, |port, dir| {
        let data = etcd_data_dir(dir, options.etcd_in_memory)?;
        let cmd = etcd_command(&etcd, &data, port, free_port()?);
        Ok((cmd, "etcd".to_string(), program_version(&etcd)))
    })?;
    let mongo_port = ensure_service(
        &dir,
        &mut state,
        MONGODB,
        options.mongodb_port,
        |port, dir| {
            let data = dir.join("mongodb");
            fs::create_dir_all(&data).map_err(StackError::io("creating mongodb data dir"))?;
            let mut cmd = Command::new(&secantus);
            cmd.args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
            ])
            .arg(&data);
            Ok((cmd, "secantusd".to_string(), "SecantusDB".to_string()))
        },
    )?;
    write_state(&dir, &state)?;

    let env = StackEnv {
        kafka_bootstrap: format!("127.0.0.1:{kafka}"),
        etcd_endpoints: format!("127.0.0.1:{etcd_port}"),
        mongodb_uri: format!("mongodb://127.0.0.1:{mongo_port}"),
    };
    wait_ready(&state).await?;
    let env_path = dir.join("stack.env");
    fs::write(&env_path, env.to_env_lines())
        .map_err(StackError::io(format!("writing {}", env_path.display())))?;
    Ok(env)
}

/// Where the stack's etcd keeps its data: `DIR/etcd` as it is when it exists
/// (a directory, or the link to memory made before; an error when its target
/// is gone: see [`StackError::EtcdDataLost`]); else, `in_memory` and with a
/// `/dev/shm`, a fresh directory there linked from `DIR/etcd`; else
/// `DIR/etcd` on disk.
fn etcd_data_dir(dir: &Path, in_memory: bool) -> Result<PathBuf, StackError> {
    let link = dir.join("etcd");
    if let Ok(target) = fs::read_link(&link) {
        if !target.is_dir() {
            return Err(StackError::EtcdDataLost { link, target });
        }
        return Ok(link);
    }
    let shm = Path::new("/dev/shm");
    if link.exists() || !in_memory || !shm.is_dir() {
        return Ok(link);
    }
    // Named after the stack directory, so that two stacks never share one.
    let hash = dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let target = shm.join(format!("tickfetch-etcd-{hash:016x}"));
    // A new stack: whatever an earlier one under the same name left goes.
    let _ = fs::remove_dir_all(&target);
    fs::create_dir_all(&target)
        .map_err(StackError::io(format!("creating {}", target.display())))?;
    std::os::unix::fs::symlink(&target, &link).map_err(StackError::io(format!(
        "linking {} to {}",
        link.display(),
        target.display()
    )))?;
    Ok(link)
}

/// A one-member etcd on loopback: data in `data`, clients on `client_port`,
/// its peer (raft) listener on `peer_port`. Also what tests use for an etcd
/// of their own.
pub fn etcd_command(etcd: &Path, data: &Path, client_port: u16, peer_port: u16) -> Command {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(etcd);
    cmd.args(["--name", "tickfetch", "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("tickfetch={peer}"),
            "--log-level",
            "warn",
        ]);
    cmd
}

/// Starts `name` unless a recorded process still runs; returns its port.
fn ensure_service(
    dir: &Path,
    state: &mut StackState,
    name: &'static str,
    wanted_port: Option<u16>,
    build: impl FnOnce(u16, &Path) -> Result<(Command, String, String), StackError>,
) -> Result<u16, StackError> {
    if let Some(existing) = state.services.iter().find(|s| s.name == name) {
        match wanted_port {
            Some(port) if port != existing.port => {
                return Err(StackError::PortTaken {
                    service: name,
                    port: existing.port,
                })
            }
            _ => return Ok(existing.port),
        }
    }
    let port = match wanted_port {
        Some(port) => {
            if TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Err(StackError::PortTaken {
                    service: name,
                    port,
                });
            }
            port
        }
        None => free_port()?,
    };
    let (mut cmd, program, version) = build(port, dir)?;
    let log = dir.join("logs").join(format!("{name}.log"));
    let out =
        fs::File::create(&log).map_err(StackError::io(format!("creating {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(StackError::io(format!("opening {}", log.display())))?;
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: survives the CLI's exit, and `down` signals the group.
        .process_group(0);
    let child = cmd.spawn().map_err(|e| StackError::Start {
        service: name.to_string(),
        reason: format!("cannot run {:?}: {e}", cmd.get_program()),
        log: log.clone(),
        tail: String::new(),
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // The child is left running on purpose; `down` reaps it by pid.
    drop(child);
    state.services.push(ServiceRecord {
        name: name.to_string(),
        pid,
        port,
        program,
        log,
        version,
    });
    Ok(port)
}

async fn wait_ready(state: &StackState) -> Result<(), StackError> {
    let deadline = Instant::now() + START_TIMEOUT;
    for service in &state.services {
        loop {
            let last_error = match check_service(&service.name, service.port).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if !process_matches(service.pid, &service.program) {
                return Err(start_error(service, "the process exited".into()));
            }
            if Instant::now() > deadline {
                return Err(start_error(
                    service,
                    format!("no answer within {START_TIMEOUT:?}: {last_error}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// Why a service does not answer (yet); the text is its client's own.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the broker lists no brokers yet")]
    NoBrokers,
    #[error(transparent)]
    Etcd(Box<etcd_client::Error>),
    #[error(transparent)]
    MongoDb(#[from] mongodb::error::Error),
    /// The blocking Kafka check panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl From<etcd_client::Error> for CheckError {
    fn from(error: etcd_client::Error) -> Self {
        CheckError::Etcd(Box::new(error))
    }
}

/// Asks a service on `port` a question in its own protocol.
async fn check_service(name: &str, port: u16) -> Result<(), CheckError> {
    let addr = format!("127.0.0.1:{port}");
    match name {
        KAFKA => check_kafka(&addr).await,
        ETCD => check_etcd(&addr).await,
        _ => check_mongodb(&format!("mongodb://{addr}")).await,
    }
}

fn start_error(record: &ServiceRecord, reason: String) -> StackError {
    StackError::Start {
        service: record.name.clone(),
        reason,
        log: record.log.clone(),
        tail: tail(&record.log, 20),
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = fs::File::open(path) else {
        return String::from("(no log)");
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn check_kafka(bootstrap: &str) -> Result<(), CheckError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(2))?;
        if metadata.brokers().is_empty() {
            return Err(CheckError::NoBrokers);
        }
        Ok(())
    })
    .await?
}

async fn check_etcd(endpoints: &str) -> Result<(), CheckError> {
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_string).collect();
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let mut client = etcd_client::Client::connect(endpoints, Some(options)).await?;
    client.status().await?;
    Ok(())
}

async fn check_mongodb(uri: &str) -> Result<(), CheckError> {
    let mut options = mongodb::options::ClientOptions::parse(uri).await?;
    options.server_selection_timeout = Some(Duration::from_secs(2));
    options.connect_timeout = Some(Duration::from_secs(2));
    let client = mongodb::Client::with_options(options)?;
    client
        .database("admin")
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await?;
    Ok(())
}

/// What `stack status` reports for one service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub name: String,
    pub pid: i32,
    pub port: u16,
    pub running: bool,
    pub answering: bool,
    /// What runs, e.g. `Apache Kafka 4.4.0`.
    pub version: String,
}

/// The recorded services, whether their processes run and whether they answer.
///
/// # Errors
/// When `stack.json` is unreadable.
pub async fn status(dir: &Path) -> Result<Vec<ServiceStatus>, StackError> {
    let state = read_state(dir)?;
    let mut out = Vec::new();
    for s in &state.services {
        let running = process_matches(s.pid, &s.program);
        let answering = running && check_service(&s.name, s.port).await.is_ok();
        out.push(ServiceStatus {
            name: s.name.clone(),
            pid: s.pid,
            port: s.port,
            running,
            answering,
            version: s.version.clone(),
        });
    }
    Ok(out)
}

/// Stops exactly the processes `stack.json` lists and removes `stack.env`.
/// Returns the names of the services stopped.
///
/// # Errors
/// When `stack.json` is unreadable.
pub fn down(dir: &Path) -> Result<Vec<String>, StackError> {
    let state = read_state(dir)?;
    let mut stopped = Vec::new();
    for service in &state.services {
        if stop_process(service.pid, &service.program) {
            stopped.push(service.name.clone());
        }
    }
    let _ = fs::remove_file(state_path(dir));
    let _ = fs::remove_file(dir.join("stack.env"));
    Ok(stopped)
}

/// Stops one service of a running stack (for fault tests: broker restarts).
///
/// # Errors
/// When `stack.json` is unreadable or the service is not recorded.
pub fn stop_service(dir: &Path, name: &str, hard: bool) -> Result<(), StackError> {
    let mut state = read_state(dir)?;
    let Some(index) = state.services.iter().position(|s| s.name == name) else {
        return Err(StackError::State {
            path: state_path(dir),
            message: format!("no service {name} recorded"),
        });
    };
    let service = state.services.remove(index);
    if hard {
        let _ = signal_group(service.pid, nix::sys::signal::Signal::SIGKILL);
        wait_gone(service.pid, &service.program, STOP_TIMEOUT);
    } else {
        stop_process(service.pid, &service.program);
    }
    write_state(dir, &state)
}

fn stop_process(pid: i32, program: &str) -> bool {
    use nix::sys::signal::Signal;
    if !process_matches(pid, program) {
        return false;
    }
    let _ = signal_group(pid, Signal::SIGTERM);
    if !wait_gone(pid, program, STOP_TIMEOUT) {
        let _ = signal_group(pid, Signal::SIGKILL);
        wait_gone(pid, program, STOP_TIMEOUT);
    }
    true
}

fn signal_group(pid: i32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    // The service leads its own process group (see `ensure_service`).
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal)
        .or_else(|_| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal))
}

fn wait_gone(pid: i32, program: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Reap it if it is our child (stop_service from a test harness).
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if !process_matches(pid, program) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether `pid` runs and its command line mentions `program` (so a recycled pid
/// is never signalled). A zombie counts as gone.
pub fn process_matches(pid: i32, program: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat.is_empty()
        || stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).contains(program))
        .unwrap_or(false)
}

fn free_port() -> Result<u16, StackError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(StackError::io("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(StackError::io("finding a free port"))
}

fn absolute(path: &Path) -> Result<PathBuf, StackError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(StackError::io("reading the current directory"))
}

/// Finds `program` on PATH or in the given extra directories.
fn find_program(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn run_install(tool: &'static str, program: &str, args: &[&str]) -> Result<(), StackError> {
    eprintln!(
        "tickfetch stack: installing {tool}: {program} {}",
        args.join(" ")
    );
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| StackError::Install {
            tool,
            command: format!("{program} {}", args.join(" ")),
            status: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::Install {
            tool,
            command: format!("{program} {}", args.join(" ")),
            status: status.to_string(),
        })
    }
}

/// The first line `program --version` prints, e.g. `etcd Version: 3.4.30`.
fn program_version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The etcd server binary, installed from Debian's `etcd-server` when missing.
///
/// # Errors
/// When apt-get fails.
pub fn ensure_etcd() -> Result<PathBuf, StackError> {
    if let Some(path) = find_program("etcd", &[]) {
        return Ok(path);
    }
    let _ = run_install("etcd", "apt-get", &["update", "-qq"]);
    run_install("etcd", "apt-get", &["install", "-y", "-qq", "etcd-server"])?;
    find_program("etcd", &[PathBuf::from("/usr/bin")]).ok_or_else(|| StackError::Install {
        tool: "etcd",
        command: "apt-get install etcd-server".into(),
        status: "finished, but no etcd binary found".into(),
    })
}

/// The SecantusDB server script, installed with pip when missing.
///
/// # Errors
/// When pip fails.
pub fn ensure_secantus() -> Result<PathBuf, StackError> {
    if let Some(path) = find_program("secantusd-py", &[]) {
        return Ok(path);
    }
    run_install(
        "SecantusDB",
        "python3",
        &["-m", "pip", "install", "--quiet", "SecantusDB"],
    )?;
    let user_bin = std::env::var_os("HOME")
        .map(|h| vec![PathBuf::from(h).join(".local/bin")])
        .unwrap_or_default();
    find_program("secantusd-py", &user_bin).ok_or_else(|| StackError::Install {
        tool: "SecantusDB",
        command: "pip install SecantusDB".into(),
        status: "finished, but no secantusd-py on PATH".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_data_lives_in_memory_and_its_loss_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tickfetch-etcd-data-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        // On disk when asked.
        assert_eq!(
            etcd_data_dir(&dir, false).expect("on disk"),
            dir.join("etcd")
        );
        assert!(!dir.join("etcd").exists());
        if !Path::new("/dev/shm").is_dir() {
            return; // nothing to link to
        }
        let data = etcd_data_dir(&dir, true).expect("in memory");
        let target = fs::read_link(&data).expect("a link");
        assert!(
            target.starts_with("/dev/shm") && target.is_dir(),
            "{target:?}"
        );
        fs::write(target.join("member"), b"x").expect("write");
        // The same stack again: the same data.
        assert_eq!(etcd_data_dir(&dir, true).expect("again"), data);
        assert!(target.join("member").exists());
        // A reboot clears /dev/shm: refused, with what to do.
        fs::remove_dir_all(&target).expect("clear");
        let err = etcd_data_dir(&dir, true).expect_err("lost");
        assert!(
            err.to_string().contains("remove the stack directory"),
            "{err}"
        );
        // A plain DIR/etcd (made on disk before) is used as it is.
        fs::remove_file(&data).expect("unlink");
        fs::create_dir_all(&data).expect("plain dir");
        assert_eq!(etcd_data_dir(&dir, true).expect("plain"), data);
        assert!(fs::read_link(&data).is_err(), "not linked");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_lines_round_trip() {
        let env = StackEnv {
            kafka_bootstrap: "127.0.0.1:1".into(),
            etcd_endpoints: "127.0.0.1:2".into(),
            mongodb_uri: "mongodb://127.0.0.1:3".into(),
        };
        assert_eq!(StackEnv::parse(&env.to_env_lines()), Some(env));
        assert_eq!(StackEnv::parse("KAFKA_BOOTSTRAP=x\n"), None);
    }

    #[test]
    fn a_recycled_pid_is_not_ours() {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        assert!(!process_matches(me, "no-such-program-name-xyz"));
        assert!(!process_matches(0, ""));
    }
}
