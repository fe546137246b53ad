//! The deployment files under `deploy/` against what they run: the Kubernetes
//! manifests (`deploy/kubernetes/*.yaml`), the systemd units and their example
//! config and secrets (`deploy/systemd/`), and the `Dockerfile`. Needs no
//! service: it runs the package's own binaries with `--help` and loads the
//! configuration through `tickfetch::config::ConfigLoader`.
//!
//! For every container and every `ExecStart=` it checks that
//! - the binary is one of the package's (`src/bin/*.rs`) and every `--flag`
//!   it is given is in that binary's `--help`, with a value where the flag
//!   takes one; the binary also accepts the whole command line (run with
//!   `--help` appended, so that clap parses every value and nothing starts);
//! - the config it is given (`--config` resolved to the ConfigMap or the
//!   example file, `--set`, `TICKFETCH__SECTION__KEY` variables, each of which
//!   must name a config key) loads without error;
//! - its `telemetry.http_addr` is on the binary's port of the scheme (coord
//!   9401, ingest 9402, sink 9403, rollup 9411-9414 by stage), and in
//!   Kubernetes not on loopback, with the liveness probe on `/healthz` and the
//!   readiness probe on `/readyz` at that port;
//! - rollup stages and the sink run in consumer-group mode, a drained worker
//!   is restarted, a stop leaves time for a drain;
//!
//! and that the manifests hang together: namespaces, selectors, the Secret,
//! ConfigMap and Service they refer to, `$(VAR)` references, one image.
//! Every problem found is reported, each naming its file and object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_yaml_ng::Value;
use tickfetch::config::{Config, ConfigLoader};

/// The package's binaries with the paths cargo built them at.
const BINARIES: &[(&str, &str)] = &[
    ("tickfetch", env!("CARGO_BIN_EXE_tickfetch")),
    ("tickfetch-coord", env!("CARGO_BIN_EXE_tickfetch-coord")),
    ("tickfetch-exsim", env!("CARGO_BIN_EXE_tickfetch-exsim")),
    ("tickfetch-ingest", env!("CARGO_BIN_EXE_tickfetch-ingest")),
    ("tickfetch-rollup", env!("CARGO_BIN_EXE_tickfetch-rollup")),
    ("tickfetch-sink", env!("CARGO_BIN_EXE_tickfetch-sink")),
];

/// Flags a binary applies as a string config override (`src/bin/*.rs`):
/// binary, flag, config key.
const FLAG_KEYS: &[(&str, &str, &str)] = &[("tickfetch-ingest", "worker-id", "cluster.worker_id")];

/// Stages of `tickfetch-rollup`.
const STAGES: [&str; 4] = ["1s", "5s", "1m", "5m"];

/// Where the binaries are installed: the Dockerfile copies them there and the
/// units run them from there.
const INSTALL_DIR: &str = "/usr/local/bin";

/// The telemetry port scheme (`telemetry.http_addr = "auto"`), from the code.
fn scheme_port(binary: &str, stage: Option<&str>) -> Option<u16> {
    use tickfetch::app::ports;
    match (binary, stage) {
        ("tickfetch", _) => Some(ports::UP),
        ("tickfetch-coord", _) => Some(ports::COORD),
        ("tickfetch-ingest", _) => Some(ports::INGEST),
        ("tickfetch-sink", _) => Some(ports::SINK),
        ("tickfetch-rollup", Some(stage)) => stage
            .parse::<tickfetch::model::Interval>()
            .ok()
            .map(ports::rollup),
        _ => None,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Files of `dir` whose name ends with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Fails with every problem found.
fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// The binaries and their flags.

/// The package's binaries: the file stems of `src/bin/*.rs`.
fn package_binaries() -> BTreeSet<String> {
    files(&repo().join("src/bin"), &[".rs"])
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
        .collect()
}

/// One binary's long flags from its `--help`: name → whether it takes a value.
#[derive(Debug)]
struct Help {
    exe: PathBuf,
    flags: BTreeMap<String, bool>,
}

/// Runs `exe --help` and reads the option lines (`  -c, --config <CONFIG>`,
/// `      --no-rebalance`).
fn help_of(exe: &Path) -> Result<Help, String> {
    let out = Command::new(exe)
        .arg("--help")
        .output()
        .map_err(|e| format!("running {} --help: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --help failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut flags = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        while let Some(word) = words.next() {
            let word = word.trim_end_matches(',');
            if let Some(rest) = word.strip_prefix("--") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                let takes_value = rest[name.len()..].starts_with("=<")
                    || rest[name.len()..].starts_with('<')
                    || words.peek().is_some_and(|next| next.starts_with('<'));
                flags.insert(name, takes_value);
                break;
            }
        }
    }
    if flags.is_empty() {
        return Err(format!("no flags found in {} --help", exe.display()));
    }
    Ok(Help {
        exe: exe.to_path_buf(),
        flags,
    })
}

/// Each binary's help, read once.
fn helps() -> &'static BTreeMap<String, Result<Help, String>> {
    static HELPS: OnceLock<BTreeMap<String, Result<Help, String>>> = OnceLock::new();
    HELPS.get_or_init(|| {
        BINARIES
            .iter()
            .map(|(name, exe)| (name.to_string(), help_of(Path::new(exe))))
            .collect()
    })
}

/// A command line as a deployment file gives it, placeholders resolved.
#[derive(Debug, Default)]
struct Invocation {
    /// `file: object` for messages.
    origin: String,
    binary: String,
    args: Vec<String>,
    /// The process environment the file gives it.
    env: Vec<(String, String)>,
    /// `--config` resolved to a file in this repository.
    config_file: Option<PathBuf>,
    /// In Kubernetes the kubelet probes the pod IP: no loopback address.
    probed_from_outside: bool,
}

/// What a checked invocation runs with.
#[derive(Debug)]
struct Checked {
    stage: Option<String>,
    config: Config,
    /// The port of its telemetry endpoint.
    port: Option<u16>,
    /// `--config` path as given.
    config_arg: Option<String>,
    flags: BTreeSet<String>,
}

/// The flags an invocation passes, with their values: `--a b`, `--a=b`.
fn parse_flags(inv: &Invocation, help: &Help) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut args = inv.args.iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!(
                "argument {arg:?} is not a long flag (deployment files use long flags only; \
                 the server binaries take no positional arguments)"
            ));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        let Some(&takes_value) = help.flags.get(name) else {
            return Err(format!(
                "{} has no flag --{name} (its --help lists: --{})",
                inv.binary,
                help.flags.keys().cloned().collect::<Vec<_>>().join(", --")
            ));
        };
        let value = match (takes_value, inline) {
            (true, Some(value)) => Some(value),
            (true, None) => match args.next() {
                Some(value) if !value.starts_with("--") => Some(value.clone()),
                _ => return Err(format!("--{name} needs a value")),
            },
            (false, Some(_)) => return Err(format!("--{name} takes no value")),
            (false, None) => None,
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Host and port of a `host:port` address (`[v6]:port` too).
fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port.parse().ok()?,
    ))
}

/// Checks one invocation; returns what it runs with, or its problems.
fn check_invocation(inv: &Invocation) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let fail = |problems: Vec<String>| -> Vec<String> {
        problems
            .into_iter()
            .map(|p| format!("{}: {p}", inv.origin))
            .collect()
    };
    if !package_binaries().contains(&inv.binary) {
        return Err(fail(vec![format!(
            "runs {:?}, which is not one of the package's binaries (src/bin/*.rs: {})",
            inv.binary,
            package_binaries()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        )]));
    }
    let help = match helps().get(&inv.binary) {
        Some(Ok(help)) => help,
        Some(Err(e)) => return Err(fail(vec![e.clone()])),
        None => {
            return Err(fail(vec![format!(
                "{} is not in tests/deploy.rs's BINARIES: add it",
                inv.binary
            )]))
        }
    };
    let flags = match parse_flags(inv, help) {
        Ok(flags) => flags,
        Err(e) => return Err(fail(vec![e])),
    };

    // The binary parses the whole command line (values included) and stops at
    // --help before it starts anything.
    match Command::new(&help.exe)
        .args(&inv.args)
        .arg("--help")
        .env_clear()
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "{} refuses its command line {:?}: {}",
            inv.binary,
            inv.args,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!("running {}: {e}", inv.binary)),
    }

    let value_of = |name: &str| {
        flags
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let stage = value_of("stage").into_iter().next();
    if inv.binary == "tickfetch-rollup" {
        match &stage {
            Some(s) if STAGES.contains(&s.as_str()) => {}
            other => problems.push(format!("--stage {other:?} is not one of {STAGES:?}")),
        }
    }

    // Every TICKFETCH__SECTION__KEY names a config key.
    for (name, value) in &inv.env {
        if let Some(rest) = name.strip_prefix(tickfetch::config::ENV_PREFIX) {
            let key = rest.to_ascii_lowercase().replace("__", ".");
            // Alone, through the loader's own mapping (no process environment).
            let loaded = ConfigLoader::new()
                .env(vec![(name.clone(), value.clone())])
                .load();
            if let Err(e) = loaded {
                problems.push(format!(
                    "environment variable {name} (config key `{key}`) does not load: {e}"
                ));
            }
        }
    }

    // The whole configuration as the process loads it: file, environment, flags.
    let config_arg = value_of("config").into_iter().next();
    if config_arg.is_some() && inv.config_file.is_none() {
        problems.push(format!(
            "--config {config_arg:?} names no file of this repository"
        ));
    }
    let mut loader = ConfigLoader::new()
        .env(inv.env.clone())
        .file(inv.config_file.as_deref());
    let mut assignments = value_of("set");
    // Flags the binary turns into a config override after the --set ones.
    for (binary, flag, key) in FLAG_KEYS {
        if inv.binary == *binary {
            for value in value_of(flag) {
                assignments.push(format!("{key}={value:?}"));
            }
        }
    }
    for assignment in assignments {
        loader = match loader.set(&assignment) {
            Ok(loader) => loader,
            Err(e) => {
                problems.push(format!("--set {assignment}: {e}"));
                return Err(fail(problems));
            }
        };
    }
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => {
            problems.push(format!("its configuration does not load: {e}"));
            return Err(fail(problems));
        }
    };

    // Its telemetry endpoint: the scheme's port, reachable by the prober.
    let expected = scheme_port(&inv.binary, stage.as_deref());
    let addr = config.telemetry.http_addr.as_str();
    let port = if addr.is_empty() {
        if inv.probed_from_outside {
            problems.push("telemetry.http_addr is empty: nothing to probe".into());
        }
        None
    } else if addr == "auto" {
        if inv.probed_from_outside {
            problems.push(
                "telemetry.http_addr is \"auto\" (127.0.0.1): the kubelet probes the pod IP; \
                 give it 0.0.0.0:PORT"
                    .into(),
            );
        }
        expected
    } else {
        match split_addr(addr) {
            None => {
                problems.push(format!("telemetry.http_addr {addr:?} is not host:port"));
                None
            }
            Some((host, port)) => {
                if Some(port) != expected {
                    problems.push(format!(
                        "telemetry.http_addr {addr:?}: port {port}, but {}{} has port {expected:?} \
                         in the scheme",
                        inv.binary,
                        stage
                            .as_deref()
                            .map(|s| format!(" --stage {s}"))
                            .unwrap_or_default()
                    ));
                }
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if inv.probed_from_outside && loopback {
                    problems.push(format!(
                        "telemetry.http_addr {addr:?} is loopback: the kubelet probes the pod IP"
                    ));
                }
                Some(port)
            }
        }
    };

    // Consumer-group mode: several instances share the partitions.
    if inv.binary == "tickfetch-rollup" && !value_of("partitions").is_empty() {
        problems.push("a deployed stage runs in its consumer group: no --partitions".into());
    }
    if inv.binary == "tickfetch-sink" && flags.iter().any(|(n, _)| n == "all-partitions") {
        problems.push("a deployed sink runs in its consumer group: no --all-partitions".into());
    }

    if problems.is_empty() {
        Ok(Checked {
            stage,
            config,
            port,
            config_arg,
            flags: flags.into_iter().map(|(n, _)| n).collect(),
        })
    } else {
        Err(fail(problems))
    }
}

// ---------------------------------------------------------------------------
// Kubernetes.

/// Every YAML document under deploy/kubernetes, with its file name.
fn manifests() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/kubernetes");
    let mut docs = Vec::new();
    for path in files(&dir, &[".yaml", ".yml"]) {
        let text = read(&path);
        for (i, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = <Value as serde::Deserialize>::deserialize(document).unwrap_or_else(|e| {
                panic!("{} document {}: not valid YAML: {e}", path.display(), i + 1)
            });
            if !value.is_null() {
                docs.push((file_name(&path), value));
            }
        }
    }
    assert!(!docs.is_empty(), "no manifests in {}", dir.display());
    docs
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path).as_str()
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    path.iter()
        .fold(value, |v, key| v.get(*key).unwrap_or(&NULL))
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar_text(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A scalar as text (numbers and booleans too).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `kind/name` of a document.
fn object_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        str_at(doc, &["kind"]).unwrap_or("?"),
        str_at(doc, &["metadata", "name"]).unwrap_or("?")
    )
}

/// Kinds whose objects live in a namespace.
fn namespaced(kind: &str) -> bool {
    !matches!(
        kind,
        "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "PersistentVolume" | "StorageClass"
    )
}

/// Resolves `$(VAR)` the way the kubelet does in command and args: a variable
/// the container does not define stays literal, which is a mistake here.
fn expand_k8s(arg: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        if start > 0 && rest[..start].ends_with('$') {
            // `$$(X)` is an escaped `$(X)`.
            out.pop();
            out.push_str("$(");
            rest = &rest[start + 2..];
            continue;
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            return Err(format!("unclosed $( in {arg:?}"));
        };
        let name = &after[..end];
        match env.iter().find(|(k, _)| k == name) {
            Some((_, value)) => out.push_str(value),
            None => {
                return Err(format!(
                    "{arg:?} refers to $({name}), which the container's env does not define"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn kubernetes_manifests_match_the_binaries_and_the_config() {
    let docs = manifests();
    let mut problems = Vec::new();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-kubernetes");
    std::fs::create_dir_all(&tmp).expect("temp dir under target/");

    // Objects by kind and name.
    let find = |kind: &str, name: &str| {
        docs.iter().find(|(_, d)| {
            str_at(d, &["kind"]) == Some(kind) && str_at(d, &["metadata", "name"]) == Some(name)
        })
    };
    if find("Namespace", "tickfetch").is_none() {
        problems.push("no Namespace tickfetch".to_string());
    }
    for (file, doc) in &docs {
        let kind = str_at(doc, &["kind"]).unwrap_or_default();
        if str_at(doc, &["apiVersion"]).is_none() || kind.is_empty() {
            problems.push(format!("{file}: a document without apiVersion or kind"));
            continue;
        }
        if str_at(doc, &["metadata", "name"]).is_none() {
            problems.push(format!("{file}: {kind} without metadata.name"));
        }
        if namespaced(kind) && str_at(doc, &["metadata", "namespace"]) != Some("tickfetch") {
            problems.push(format!(
                "{file}: {} is not in namespace tickfetch",
                object_name(doc)
            ));
        }
    }

    // The ConfigMaps' TOML files load on their own.
    for (file, doc) in docs
        .iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some("ConfigMap"))
    {
        for (key, value) in labels(at(doc, &["data"])) {
            if !key.ends_with(".toml") {
                continue;
            }
            let path = tmp.join(format!(
                "{}-{key}",
                str_at(doc, &["metadata", "name"]).unwrap_or("configmap")
            ));
            std::fs::write(&path, value).expect("write a ConfigMap file under target/");
            if let Err(e) = ConfigLoader::new().env(vec![]).file(Some(&path)).load() {
                problems.push(format!("{file}: {} key {key}: {e}", object_name(doc)));
            }
        }
    }

    let mut deployed: Vec<(String, Checked)> = Vec::new();
    let mut images = BTreeSet::new();
    for (file, doc) in &docs {
        let kind = str_at(doc, &["kind"]).unwrap_or_default();
        let name = object_name(doc);
        let spec = at(doc, &["spec"]);
        match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" => {}
            "Job" | "CronJob" | "Pod" | "ReplicaSet" => {
                problems.push(format!(
                    "{file}: {name}: tests/deploy.rs does not check {kind}s yet: teach it"
                ));
                continue;
            }
            "Service" => {
                let selector = labels(at(spec, &["selector"]));
                let selected: Vec<&Value> = docs
                    .iter()
                    .map(|(_, d)| at(d, &["spec", "template"]))
                    .filter(|t| {
                        let l = labels(at(t, &["metadata", "labels"]));
                        !selector.is_empty() && selector.iter().all(|(k, v)| l.get(k) == Some(v))
                    })
                    .collect();
                if selected.is_empty() {
                    problems.push(format!("{file}: {name} selects no pod template"));
                }
                for port in seq(at(spec, &["ports"])) {
                    let target = at(port, &["targetPort"]);
                    let target = if target.is_null() {
                        at(port, &["port"])
                    } else {
                        target
                    };
                    let declared = selected.iter().any(|t| {
                        seq(at(t, &["spec", "containers"])).iter().any(|c| {
                            seq(at(c, &["ports"])).iter().any(|p| {
                                at(p, &["containerPort"]) == target || at(p, &["name"]) == target
                            })
                        })
                    });
                    if !declared {
                        problems.push(format!(
                            "{file}: {name} targets port {:?}, which no selected container declares",
                            scalar_text(target)
                        ));
                    }
                }
                continue;
            }
            _ => continue,
        }
        let template = at(spec, &["template"]);
        let pod = at(template, &["spec"]);
        let selector = labels(at(spec, &["selector", "matchLabels"]));
        let template_labels = labels(at(template, &["metadata", "labels"]));
        if selector.is_empty()
            || selector
                .iter()
                .any(|(k, v)| template_labels.get(k) != Some(v))
        {
            problems.push(format!(
                "{file}: {name}: selector {selector:?} does not match the template's labels \
                 {template_labels:?}"
            ));
        }
        if kind == "StatefulSet" {
            let service = str_at(spec, &["serviceName"]).unwrap_or_default();
            if find("Service", service).is_none() {
                problems.push(format!(
                    "{file}: {name}: serviceName {service:?} names no Service"
                ));
            }
        }

        // Volumes: ConfigMaps by volume name.
        let mut config_maps: BTreeMap<String, String> = BTreeMap::new();
        for volume in seq(at(pod, &["volumes"])) {
            let volume_name = str_at(volume, &["name"]).unwrap_or_default().to_string();
            if let Some(cm) = str_at(volume, &["configMap", "name"]) {
                if find("ConfigMap", cm).is_none() {
                    problems.push(format!(
                        "{file}: {name}: volume {volume_name} names no ConfigMap {cm:?}"
                    ));
                }
                config_maps.insert(volume_name.clone(), cm.to_string());
            }
            if let Some(secret) = str_at(volume, &["secret", "secretName"]) {
                if find("Secret", secret).is_none() {
                    problems.push(format!(
                        "{file}: {name}: volume {volume_name} names no Secret {secret:?}"
                    ));
                }
            }
        }

        let pod_name = format!("{}-0", str_at(doc, &["metadata", "name"]).unwrap_or("pod"));
        let containers = seq(at(pod, &["containers"]))
            .iter()
            .chain(seq(at(pod, &["initContainers"])));
        for container in containers {
            let container_name = str_at(container, &["name"]).unwrap_or("?");
            let origin = format!("{file}: {name} container {container_name}");
            if let Some(image) = str_at(container, &["image"]) {
                images.insert(image.to_string());
            }
            if !at(container, &["envFrom"]).is_null() {
                problems.push(format!("{origin}: envFrom is not checked by tests/deploy.rs: list the variables under env"));
            }

            // The environment, as the kubelet gives it.
            let mut env: Vec<(String, String)> = Vec::new();
            for var in seq(at(container, &["env"])) {
                let var_name = str_at(var, &["name"]).unwrap_or_default().to_string();
                let value = if let Some(value) = scalar_text(at(var, &["value"])) {
                    match expand_k8s(&value, &env) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("{origin}: env {var_name}: {e}"));
                            continue;
                        }
                    }
                } else if let Some(path) = str_at(var, &["valueFrom", "fieldRef", "fieldPath"]) {
                    match path {
                        "metadata.name" => pod_name.clone(),
                        "metadata.namespace" => "tickfetch".into(),
                        "status.podIP" | "status.hostIP" => "192.0.2.10".into(),
                        "spec.nodeName" => "node-1".into(),
                        other => {
                            problems.push(format!(
                                "{origin}: env {var_name}: fieldRef {other} not known to tests/deploy.rs"
                            ));
                            continue;
                        }
                    }
                } else if !at(var, &["valueFrom", "secretKeyRef"]).is_null()
                    || !at(var, &["valueFrom", "configMapKeyRef"]).is_null()
                {
                    let (source_kind, reference) =
                        if at(var, &["valueFrom", "secretKeyRef"]).is_null() {
                            ("ConfigMap", at(var, &["valueFrom", "configMapKeyRef"]))
                        } else {
                            ("Secret", at(var, &["valueFrom", "secretKeyRef"]))
                        };
                    let source = str_at(reference, &["name"]).unwrap_or_default();
                    let key = str_at(reference, &["key"]).unwrap_or_default();
                    let Some((_, object)) = find(source_kind, source) else {
                        problems.push(format!(
                            "{origin}: env {var_name}: no {source_kind} {source:?}"
                        ));
                        continue;
                    };
                    // A Secret's stringData is its value; data is base64, so
                    // stands in as a placeholder of the right type (a string).
                    let value = labels(at(object, &["stringData"]))
                        .get(key)
                        .cloned()
                        .or_else(|| {
                            labels(at(object, &["data"])).get(key).map(|v| {
                                if source_kind == "ConfigMap" {
                                    v.clone()
                                } else {
                                    "\"secret\"".to_string()
                                }
                            })
                        });
                    match value {
                        Some(value) => value,
                        None => {
                            problems.push(format!(
                                "{origin}: env {var_name}: {source_kind} {source} has no key {key:?}"
                            ));
                            continue;
                        }
                    }
                } else {
                    problems.push(format!(
                        "{origin}: env {var_name}: a value tests/deploy.rs does not know"
                    ));
                    continue;
                };
                env.push((var_name, value));
            }

            // The command line.
            let command: Vec<String> = seq(at(container, &["command"]))
                .iter()
                .chain(seq(at(container, &["args"])))
                .filter_map(scalar_text)
                .collect();
            let Some((program, args)) = command.split_first() else {
                problems.push(format!(
                    "{origin}: no command: the image has no entrypoint, name the binary"
                ));
                continue;
            };
            let mut expanded = Vec::new();
            for arg in args {
                match expand_k8s(arg, &env) {
                    Ok(arg) => expanded.push(arg),
                    Err(e) => {
                        // The kubelet passes it on literally.
                        problems.push(format!("{origin}: {e}"));
                        expanded.push(arg.clone());
                    }
                }
            }
            let binary = program.rsplit('/').next().unwrap_or(program).to_string();

            // --config must be a file of a mounted ConfigMap.
            let config_arg = expanded
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| expanded.get(i + 1))
                .cloned()
                .or_else(|| {
                    expanded
                        .iter()
                        .find_map(|a| a.strip_prefix("--config=").map(String::from))
                });
            let mut config_file = None;
            if let Some(config_arg) = &config_arg {
                let path = Path::new(config_arg);
                let mounted = seq(at(container, &["volumeMounts"])).iter().find(|m| {
                    str_at(m, &["mountPath"]).map(Path::new) == path.parent()
                        && str_at(m, &["subPath"]).is_none()
                });
                let config_map = mounted
                    .and_then(|m| str_at(m, &["name"]))
                    .and_then(|v| config_maps.get(v));
                let key = file_name(path);
                match config_map.and_then(|cm| find("ConfigMap", cm)) {
                    Some((_, cm)) => match labels(at(cm, &["data"])).get(&key) {
                        Some(text) => {
                            let local = tmp.join(format!(
                                "{}-{}-{key}",
                                pod_name, container_name
                            ));
                            std::fs::write(&local, text)
                                .expect("write a ConfigMap file under target/");
                            config_file = Some(local);
                        }
                        None => problems.push(format!(
                            "{origin}: --config {config_arg}: the ConfigMap mounted there has no key {key}"
                        )),
                    },
                    None => problems.push(format!(
                        "{origin}: --config {config_arg}: no ConfigMap is mounted at {}",
                        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
                    )),
                }
            }

            let invocation = Invocation {
                origin: origin.clone(),
                binary: binary.clone(),
                args: expanded,
                env,
                config_file,
                probed_from_outside: true,
            };
            let checked = match check_invocation(&invocation) {
                Ok(checked) => checked,
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            };
            if checked.config_arg.is_none() {
                problems.push(format!(
                    "{origin}: no --config: mount the ConfigMap and pass its file"
                ));
            }

            // Probes and ports on the telemetry endpoint.
            let declared: Vec<(Option<String>, Option<u16>)> = seq(at(container, &["ports"]))
                .iter()
                .map(|p| {
                    (
                        str_at(p, &["name"]).map(String::from),
                        at(p, &["containerPort"])
                            .as_u64()
                            .and_then(|n| u16::try_from(n).ok()),
                    )
                })
                .collect();
            let port = checked.port;
            if port.is_some() && !declared.iter().any(|(_, p)| *p == port) {
                problems.push(format!(
                    "{origin}: declares no containerPort {port:?} (its telemetry.http_addr {})",
                    checked.config.telemetry.http_addr
                ));
            }
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = at(container, &[probe, "httpGet"]);
                if get.is_null() {
                    problems.push(format!("{origin}: no {probe}.httpGet"));
                    continue;
                }
                if str_at(get, &["path"]) != Some(path) {
                    problems.push(format!(
                        "{origin}: {probe} path {:?}, not {path}",
                        str_at(get, &["path"])
                    ));
                }
                let probe_port = match at(get, &["port"]) {
                    Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Value::String(named) => declared
                        .iter()
                        .find(|(n, _)| n.as_deref() == Some(named.as_str()))
                        .and_then(|(_, p)| *p),
                    _ => None,
                };
                if probe_port.is_none() || probe_port != port {
                    problems.push(format!(
                        "{origin}: {probe} on port {probe_port:?}, but telemetry.http_addr is {:?}",
                        checked.config.telemetry.http_addr
                    ));
                }
            }
            if let Some(annotated) =
                str_at(template, &["metadata", "annotations", "prometheus.io/port"])
            {
                if annotated.parse::<u16>().ok() != port {
                    problems.push(format!(
                        "{origin}: prometheus.io/port {annotated} is not the telemetry port {port:?}"
                    ));
                }
            }
            for part in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    if at(container, &["resources", part, resource]).is_null() {
                        problems.push(format!("{origin}: no resources.{part}.{resource}"));
                    }
                }
            }

            // Shape of each stage's workload.
            let replicas = at(spec, &["replicas"]).as_u64();
            let grace = at(pod, &["terminationGracePeriodSeconds"])
                .as_u64()
                .unwrap_or(30);
            match binary.as_str() {
                "tickfetch-coord" => {
                    if kind != "Deployment" || replicas != Some(2) {
                        problems.push(format!(
                            "{origin}: the masters are a Deployment of 2 replicas"
                        ));
                    }
                    if !checked.flags.contains("id") {
                        problems.push(format!("{origin}: each master needs --id (its pod name)"));
                    }
                }
                "tickfetch-ingest" => {
                    if kind != "StatefulSet" || replicas != Some(3) {
                        problems.push(format!(
                            "{origin}: the workers are a StatefulSet of 3 replicas"
                        ));
                    }
                    if checked.config.cluster.worker_id != pod_name {
                        problems.push(format!(
                            "{origin}: cluster.worker_id is {:?}, not the pod name ({pod_name})",
                            checked.config.cluster.worker_id
                        ));
                    }
                    if grace < 60 {
                        problems.push(format!(
                            "{origin}: terminationGracePeriodSeconds {grace}: a drain needs 60"
                        ));
                    }
                }
                _ => {}
            }
            deployed.push((binary, checked));
        }
    }

    if images.len() != 1 {
        problems.push(format!("the containers use several images: {images:?}"));
    }
    for needed in ["tickfetch-coord", "tickfetch-ingest", "tickfetch-sink"] {
        let count = deployed.iter().filter(|(b, _)| b == needed).count();
        if count != 1 {
            problems.push(format!("{needed} runs in {count} containers, not 1"));
        }
    }
    for stage in STAGES {
        let count = deployed
            .iter()
            .filter(|(b, c)| b == "tickfetch-rollup" && c.stage.as_deref() == Some(stage))
            .count();
        if count != 1 {
            problems.push(format!(
                "rollup stage {stage} runs in {count} containers, not 1"
            ));
        }
    }
    report("deploy/kubernetes", &problems);
}

// ---------------------------------------------------------------------------
// systemd.

/// A unit file: `(section, key, value)` in order, continuation lines joined.
fn parse_unit(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not key=value: {raw:?}", number + 1));
        };
        if section.is_empty() {
            return Err(format!("line {}: a key before any [section]", number + 1));
        }
        entries.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    if !pending.is_empty() {
        return Err("the file ends in a continuation line".into());
    }
    Ok(entries)
}

/// Expands the specifiers a unit here may use: `%i`/`%I` (instance), `%H`
/// (host name), `%%`.
fn expand_specifiers(value: &str, instance: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') | Some('I') => out.push_str(instance),
            Some('H') => out.push_str("host-a"),
            Some('%') => out.push('%'),
            other => {
                return Err(format!(
                    "specifier %{} in {value:?} is not expanded by tests/deploy.rs: teach it",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

/// Splits a command line the way systemd does: whitespace separates words,
/// single and double quotes group (and are removed), `\` escapes in double
/// quotes and outside quotes.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => match chars.next() {
                Some(escaped) => word.push(escaped),
                None => return Err(format!("trailing backslash in {line:?}")),
            },
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
        if !word.is_empty() {
            in_word = true;
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in {line:?}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// An `EnvironmentFile=`: `KEY=VALUE` lines, `#` comments, quotes removed.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", number + 1));
        };
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        vars.push((key.trim().to_string(), unquoted.to_string()));
    }
    Ok(vars)
}

/// `30`, `30s`, `1min 30s`, `500ms` in seconds.
fn systemd_seconds(value: &str) -> Option<f64> {
    if value == "infinity" {
        return Some(f64::INFINITY);
    }
    let mut total = 0.0;
    for part in value.split_whitespace() {
        let digits: String = part
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let number: f64 = digits.parse().ok()?;
        let unit = &part[digits.len()..];
        total += number
            * match unit {
                "" | "s" | "sec" | "second" | "seconds" => 1.0,
                "ms" | "msec" => 0.001,
                "m" | "min" | "minute" | "minutes" => 60.0,
                "h" | "hr" | "hour" | "hours" => 3600.0,
                _ => return None,
            };
    }
    Some(total)
}

/// The example instances each template unit is checked with.
fn instances(unit: &str) -> Vec<&'static str> {
    if unit.starts_with("tickfetch-rollup@") {
        STAGES.to_vec()
    } else if unit.contains("@.") {
        vec!["worker-1"]
    } else {
        vec![""]
    }
}

/// A deploy/systemd file standing for the installed `/etc/tickfetch/...` one:
/// `tickfetch.toml` is itself, `secrets.env` is `secrets.env.example`.
fn systemd_example(installed: &str) -> Option<PathBuf> {
    let name = file_name(Path::new(installed));
    let dir = repo().join("deploy/systemd");
    [dir.join(&name), dir.join(format!("{name}.example"))]
        .into_iter()
        .find(|p| p.is_file())
}

#[test]
fn systemd_units_match_the_binaries_and_the_config() {
    let dir = repo().join("deploy/systemd");
    let mut problems = Vec::new();
    let units = files(&dir, &[".service"]);
    let names: BTreeSet<String> = units.iter().map(|p| file_name(p)).collect();
    for expected in [
        "tickfetch-coord.service",
        "tickfetch-ingest@.service",
        "tickfetch-rollup@.service",
        "tickfetch-sink.service",
    ] {
        if !names.contains(expected) {
            problems.push(format!("no {expected}"));
        }
    }
    let mut stages_seen = BTreeSet::new();
    for path in &units {
        let unit = file_name(path);
        let entries = match parse_unit(&read(path)) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(format!("{unit}: {e}"));
                continue;
            }
        };
        let service = |key: &str| -> Vec<&str> {
            entries
                .iter()
                .filter(|(s, k, _)| s == "Service" && k == key)
                .map(|(_, _, v)| v.as_str())
                .collect()
        };
        let one = |key: &str| service(key).last().copied();
        // The unit's own binary: the file name up to `@` or `.service`.
        let unit_binary = unit
            .trim_end_matches(".service")
            .trim_end_matches('@')
            .to_string();

        // Hardening and stopping.
        for (key, wanted) in [
            ("KillSignal", "SIGTERM"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
        ] {
            if one(key) != Some(wanted) {
                problems.push(format!("{unit}: {key}={:?}, not {wanted}", one(key)));
            }
        }
        if one("DynamicUser") != Some("yes") && one("User").is_none() {
            problems.push(format!(
                "{unit}: runs as root (no DynamicUser=yes nor User=)"
            ));
        }
        match one("TimeoutStopSec").map(systemd_seconds) {
            Some(Some(s)) if s >= 30.0 => {}
            other => problems.push(format!(
                "{unit}: TimeoutStopSec {other:?}: a drain needs at least 30 s"
            )),
        }
        let restart = one("Restart").unwrap_or("no");
        let restart_ok = if unit_binary == "tickfetch-ingest" {
            // A drained worker exits 0 and must come back.
            restart == "always"
        } else {
            matches!(restart, "always" | "on-failure" | "on-abnormal")
        };
        if !restart_ok {
            problems.push(format!(
                "{unit}: Restart={restart} (a drained worker exits 0 and needs Restart=always; \
                 stages restart at least on failure)"
            ));
        }

        for instance in instances(&unit) {
            let origin = if instance.is_empty() {
                unit.clone()
            } else {
                unit.replace("@.", &format!("@{instance}."))
            };
            let expand = |value: &str| expand_specifiers(value, instance);

            // Environment= and EnvironmentFile=, in systemd's order (files win).
            let mut env: Vec<(String, String)> = Vec::new();
            for value in service("Environment") {
                match expand(value).and_then(|v| split_words(&v)) {
                    Ok(words) => {
                        for word in words {
                            match word.split_once('=') {
                                Some((k, v)) => env.push((k.to_string(), v.to_string())),
                                None => problems
                                    .push(format!("{origin}: Environment {word:?} is not K=V")),
                            }
                        }
                    }
                    Err(e) => problems.push(format!("{origin}: Environment: {e}")),
                }
            }
            for value in service("EnvironmentFile") {
                let installed = value.trim_start_matches('-');
                match systemd_example(installed) {
                    Some(example) => match parse_env_file(&read(&example)) {
                        Ok(vars) => env.extend(vars),
                        Err(e) => problems.push(format!("{}: {e}", example.display())),
                    },
                    None => problems.push(format!(
                        "{origin}: EnvironmentFile {installed} has no example in deploy/systemd"
                    )),
                }
            }
            // Later assignments win.
            let mut merged: Vec<(String, String)> = Vec::new();
            for (k, v) in env {
                merged.retain(|(existing, _)| *existing != k);
                merged.push((k, v));
            }

            let exec = service("ExecStart");
            if exec.len() != 1 {
                problems.push(format!("{origin}: {} ExecStart= lines, not 1", exec.len()));
                continue;
            }
            let words = match expand(exec[0]).and_then(|v| split_words(&v)) {
                Ok(words) => words,
                Err(e) => {
                    problems.push(format!("{origin}: ExecStart: {e}"));
                    continue;
                }
            };
            let Some((program, args)) = words.split_first() else {
                problems.push(format!("{origin}: empty ExecStart"));
                continue;
            };
            let program = program.trim_start_matches(['@', '-', ':', '+', '!']);
            let binary = program.rsplit('/').next().unwrap_or(program).to_string();
            if Path::new(program).parent() != Some(Path::new(INSTALL_DIR)) {
                problems.push(format!(
                    "{origin}: runs {program}, not from {INSTALL_DIR} (where the Dockerfile and the \
                     docs install the binaries)"
                ));
            }
            if binary != unit_binary {
                problems.push(format!("{origin}: runs {binary}, not {unit_binary}"));
            }
            let config_arg = args
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| args.get(i + 1))
                .cloned();
            let config_file = config_arg.as_deref().and_then(systemd_example);
            let invocation = Invocation {
                origin: origin.clone(),
                binary: binary.clone(),
                args: args.to_vec(),
                env: merged,
                config_file,
                probed_from_outside: false,
            };
            match check_invocation(&invocation) {
                Ok(checked) => {
                    if checked.config_arg.is_none() {
                        problems.push(format!(
                            "{origin}: no --config /etc/tickfetch/tickfetch.toml"
                        ));
                    }
                    if binary == "tickfetch-ingest" && checked.config.cluster.worker_id != instance
                    {
                        problems.push(format!(
                            "{origin}: cluster.worker_id is {:?}, not the instance name",
                            checked.config.cluster.worker_id
                        ));
                    }
                    if let Some(stage) = checked.stage {
                        if stage != instance {
                            problems
                                .push(format!("{origin}: --stage {stage}, not the instance name"));
                        }
                        stages_seen.insert(stage);
                    }
                }
                Err(found) => problems.extend(found),
            }
        }
    }
    if stages_seen.len() != STAGES.len() {
        problems.push(format!(
            "the rollup stages the units run: {stages_seen:?}, not {STAGES:?}"
        ));
    }
    report("deploy/systemd", &problems);
}

// ---------------------------------------------------------------------------
// The example config and the image.

#[test]
fn example_config_and_secrets_load() {
    let dir = repo().join("deploy/systemd");
    let toml = dir.join("tickfetch.toml");
    let config = ConfigLoader::new()
        .env(vec![])
        .file(Some(&toml))
        .load()
        .unwrap_or_else(|e| panic!("{}: {e}", toml.display()));
    assert!(
        config.cluster.worker_id.is_empty(),
        "{}: the shared file must not set cluster.worker_id (each worker has its own)",
        toml.display()
    );
    let secrets = dir.join("secrets.env.example");
    let vars = parse_env_file(&read(&secrets)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        vars.iter().any(|(k, _)| k == "TICKFETCH__MONGODB__URI"),
        "{} gives no TICKFETCH__MONGODB__URI",
        secrets.display()
    );
    let config = ConfigLoader::new()
        .env(vars)
        .file(Some(&toml))
        .load()
        .unwrap_or_else(|e| panic!("{} with {}: {e}", toml.display(), secrets.display()));
    assert!(
        config.mongodb.uri.starts_with("mongodb://"),
        "{}",
        config.mongodb.uri
    );
}

#[test]
fn dockerfile_installs_every_deployed_binary() {
    let path = repo().join("deploy/Dockerfile");
    let text = read(&path);
    let mut problems = Vec::new();
    if !text.contains(&format!("{INSTALL_DIR}/")) {
        problems.push(format!("does not install into {INSTALL_DIR}"));
    }
    if !text.contains("cargo build --release") {
        problems.push("does not build with cargo build --release".into());
    }
    for binary in package_binaries() {
        if !text.contains(&format!("target/release/{binary}\n"))
            && !text.contains(&format!("target/release/{binary} "))
        {
            problems.push(format!("does not copy target/release/{binary}"));
        }
    }
    report(&path.display().to_string(), &problems);
}

// ---------------------------------------------------------------------------
// The checks' own parsers.

#[test]
fn the_parsers_read_what_systemd_and_clap_write() {
    assert_eq!(
        split_words(r#"/bin/x --set 'a.b="c d"' "e f" g\ h"#).expect("words"),
        ["/bin/x", "--set", r#"a.b="c d""#, "e f", "g h"]
    );
    assert_eq!(
        expand_specifiers("--worker-id %i --x %%i", "w1").expect("expand"),
        "--worker-id w1 --x %i"
    );
    assert!(expand_specifiers("%C/cache", "w1").is_err());
    assert_eq!(systemd_seconds("1min 30s"), Some(90.0));
    assert_eq!(
        expand_k8s("--id=$(POD_NAME)", &[("POD_NAME".into(), "p-0".into())]).expect("expand"),
        "--id=p-0"
    );
    assert!(expand_k8s("$(NOPE)", &[]).is_err());
    let help = helps()
        .get("tickfetch-rollup")
        .expect("tickfetch-rollup in BINARIES")
        .as_ref()
        .expect("tickfetch-rollup --help");
    assert_eq!(help.flags.get("stage"), Some(&true), "{help:?}");
    assert_eq!(help.flags.get("config"), Some(&true), "{help:?}");
    assert_eq!(help.flags.get("help"), Some(&false), "{help:?}");
    let misspelt = Invocation {
        origin: "test".into(),
        binary: "tickfetch-rollup".into(),
        args: vec!["--stages".into(), "1s".into()],
        ..Invocation::default()
    };
    let found = check_invocation(&misspelt).expect_err("--stages is no flag");
    assert!(found[0].contains("no flag --stages"), "{found:?}");
    let wrong_port = Invocation {
        origin: "test".into(),
        binary: "tickfetch-sink".into(),
        args: vec![
            "--set".into(),
            r#"telemetry.http_addr="0.0.0.0:9401""#.into(),
        ],
        probed_from_outside: true,
        ..Invocation::default()
    };
    let found = check_invocation(&wrong_port).expect_err("9401 is coord's port");
    assert!(found.iter().any(|p| p.contains("9403")), "{found:?}");
}
