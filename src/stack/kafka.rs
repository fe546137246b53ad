//! The stack's broker: Apache Kafka as one KRaft node (broker and controller in
//! one JVM), run from the `org.apache.kafka:kafka_2.13` jars on Maven Central.
//!
//! [`ensure_kafka`] finds `java` (installing a JRE with apt-get when it is
//! missing) and the broker's jars in the cache ([`cache_dir`], outside the
//! repository): on the first run it writes a small pom there and lets Maven copy
//! the broker and its dependencies into one folder, which later runs reuse.
//! [`broker_command`] writes `server.properties` and the log4j2 config under the
//! stack directory, formats the storage once (`kafka.tools.StorageTool format
//! --standalone`), and returns the `kafka.Kafka` command. The ports live in
//! `server.properties`: a broker started again on the same data dir keeps them
//! (the controller's address is part of the formatted quorum).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{find_program, run_install, StackError};

/// The Apache Kafka release the stack runs.
pub const KAFKA_VERSION: &str = "4.4.0";
/// The log4j2 release used as the broker's logging backend.
pub const LOG4J_VERSION: &str = "2.25.3";
/// The JVM main class, also how `stack down` recognises the broker's process.
pub const MAIN_CLASS: &str = "kafka.Kafka";
/// The broker's heap: enough for a one-node dev broker under the benchmarks.
const HEAP: &[&str] = &["-Xms512m", "-Xmx1g"];

const POM_TEMPLATE: &str = include_str!("kafka-broker.pom.xml");

/// `java` and the broker's classpath.
#[derive(Debug, Clone)]
pub struct KafkaInstall {
    pub java: PathBuf,
    /// The folder holding every jar the broker needs.
    pub libs: PathBuf,
}

impl KafkaInstall {
    /// The classpath, as the JVM reads it (`DIR/*`: every jar in the folder).
    fn classpath(&self) -> String {
        format!("{}/*", self.libs.display())
    }

    fn java(&self) -> Command {
        let mut cmd = Command::new(&self.java);
        cmd.arg("-cp").arg(self.classpath());
        cmd
    }
}

/// Where downloaded tools are kept between runs: `$TICKFETCH_CACHE`, else
/// `$XDG_CACHE_HOME/tickfetch`, else `~/.cache/tickfetch`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TICKFETCH_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tickfetch");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/tickfetch"))
        .unwrap_or_else(|| std::env::temp_dir().join("tickfetch-cache"))
}

/// Finds `java` and the broker's jars, installing what is missing.
///
/// # Errors
/// When apt-get or Maven fails, or leaves nothing usable behind.
pub fn ensure_kafka() -> Result<KafkaInstall, StackError> {
    let java = ensure_apt_program("java", "default-jre-headless")?;
    let home = cache_dir().join(format!("kafka-{KAFKA_VERSION}"));
    let libs = home.join("libs");
    if !libs
        .join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
        .is_file()
    {
        let mvn = ensure_apt_program("mvn", "maven")?;
        fs::create_dir_all(&home)
            .map_err(StackError::io(format!("creating {}", home.display())))?;
        let pom = home.join("pom.xml");
        let text = POM_TEMPLATE
            .replace("@KAFKA_VERSION@", KAFKA_VERSION)
            .replace("@LOG4J_VERSION@", LOG4J_VERSION);
        fs::write(&pom, text).map_err(StackError::io(format!("writing {}", pom.display())))?;
        // Into a folder of our own, renamed when complete: an interrupted or
        // concurrent download never leaves a half-filled `libs`.
        let partial = home.join(format!("libs.partial.{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        let output = format!("-DoutputDirectory={}", partial.display());
        let pom_arg = pom.display().to_string();
        run_install(
            "Apache Kafka",
            &mvn.display().to_string(),
            &[
                "-B",
                "-q",
                "-f",
                &pom_arg,
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                &output,
            ],
        )?;
        if let Err(e) = fs::rename(&partial, &libs) {
            // Another run finished first: its folder is as good as ours.
            let _ = fs::remove_dir_all(&partial);
            if !libs.is_dir() {
                return Err(StackError::Io {
                    what: format!("moving the broker's jars to {}", libs.display()),
                    source: e,
                });
            }
        }
    }
    Ok(KafkaInstall { java, libs })
}

/// `program` on PATH, else installed with apt-get from `package`.
fn ensure_apt_program(program: &'static str, package: &str) -> Result<PathBuf, StackError> {
    if let Some(path) = find_program(program, &[]) {
        return Ok(path);
    }
    let _ = run_install(program, "apt-get", &["update", "-qq"]);
    run_install(
        program,
        "apt-get",
        &["install", "-y", "-qq", "--no-install-recommends", package],
    )?;
    find_program(program, &[PathBuf::from("/usr/bin")]).ok_or_else(|| StackError::Install {
        tool: program,
        command: format!("apt-get install {package}"),
        status: format!("finished, but no {program} found"),
    })
}

/// The client and controller ports of a broker configured before under `dir`
/// (`DIR/kafka/server.properties`), if any.
pub fn configured_ports(dir: &Path) -> Option<(u16, u16)> {
    let text = fs::read_to_string(properties_path(dir)).ok()?;
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let port_of = |url: &str| url.rsplit_once(':')?.1.parse::<u16>().ok();
    let listeners = value("listeners")?;
    let mut client = None;
    let mut controller = None;
    for listener in listeners.split(',') {
        if listener.starts_with("PLAINTEXT://") {
            client = port_of(listener);
        } else if listener.starts_with("CONTROLLER://") {
            controller = port_of(listener);
        }
    }
    Some((client?, controller?))
}

fn properties_path(dir: &Path) -> PathBuf {
    dir.join("kafka").join("server.properties")
}

/// The one-node broker's settings.
fn server_properties(data: &Path, port: u16, controller: u16) -> String {
    format!(
        "# Written by `tickfetch stack up`: one KRaft node, broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
# A fresh consumer group gets its assignment at once.
group.initial.rebalance.delay.ms=0
",
        data = data.display()
    )
}

/// The broker's logging: its own INFO lines, the clients' warnings.
pub const LOG4J2_YAML: &str = "Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: \"[%d] %p %m (%c)%n\"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
";

/// Writes the broker's configuration under `DIR/kafka`, formats its storage the
/// first time, and returns the command that runs it.
///
/// # Errors
/// When the files cannot be written or the storage cannot be formatted.
pub fn broker_command(
    install: &KafkaInstall,
    dir: &Path,
    port: u16,
    controller: u16,
) -> Result<Command, StackError> {
    let home = dir.join("kafka");
    let data = home.join("data");
    fs::create_dir_all(&data).map_err(StackError::io(format!("creating {}", data.display())))?;
    let properties = properties_path(dir);
    fs::write(&properties, server_properties(&data, port, controller))
        .map_err(StackError::io(format!("writing {}", properties.display())))?;
    let log4j = home.join("log4j2.yaml");
    fs::write(&log4j, LOG4J2_YAML)
        .map_err(StackError::io(format!("writing {}", log4j.display())))?;
    if !data.join("meta.properties").is_file() {
        format_storage(install, &properties)?;
    }
    let mut cmd = install.java();
    cmd.args(HEAP)
        .args([
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
        ])
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg(MAIN_CLASS)
        .arg(&properties);
    Ok(cmd)
}

/// `kafka.tools.StorageTool format --standalone` with a new cluster id.
fn format_storage(install: &KafkaInstall, properties: &Path) -> Result<(), StackError> {
    let run = |args: &[&str]| -> Result<String, StackError> {
        let output = install
            .java()
            .arg("kafka.tools.StorageTool")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StackError::Install {
                tool: "Apache Kafka",
                command: format!("kafka.tools.StorageTool {}", args.join(" ")),
                status: e.to_string(),
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(StackError::Install {
                tool: "Apache Kafka",
                command: format!("kafka.tools.StorageTool {}", args.join(" ")),
                status: format!(
                    "{}: {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    };
    let cluster_id = run(&["random-uuid"])?.trim().to_string();
    let properties = properties.display().to_string();
    run(&[
        "format",
        "-t",
        &cluster_id,
        "-c",
        &properties,
        "--standalone",
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_back_from_the_written_properties() {
        let dir =
            std::env::temp_dir().join(format!("tickfetch-kafka-props-{}", std::process::id()));
        fs::create_dir_all(dir.join("kafka")).expect("dir");
        assert_eq!(configured_ports(&dir), None);
        fs::write(
            properties_path(&dir),
            server_properties(&dir.join("kafka/data"), 39092, 39093),
        )
        .expect("write");
        assert_eq!(configured_ports(&dir), Some((39092, 39093)));
        let _ = fs::remove_dir_all(&dir);
    }
}
