//! Secured services of a test's own: certificates made at test time with
//! `openssl`, an Apache Kafka broker with a SASL_SSL listener and SCRAM
//! users, an etcd with client TLS and authentication, and SecantusDB with
//! SCRAM authentication. Each is stopped (and its files removed) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(what: &str, command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn wait_listening(what: &str, port: u16, log: &Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then SIGKILL after 10 s; reaped.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client
/// certificate, all PEM, under `dir`.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("cert dir");
        let path = |name: &str| dir.join(name);
        let openssl = |what: &str, args: &[&str]| {
            run(what, Command::new("openssl").current_dir(dir).args(args));
        };
        openssl(
            "making the test CA",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=tickfetch test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        std::fs::write(
            path("leaf.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("extensions");
        for (name, cn) in [("server", "localhost"), ("client", "tickfetch-client")] {
            openssl(
                "making a key and request",
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                "signing a certificate",
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        Certs {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
        }
    }
}

/// One Apache Kafka node (KRaft) whose clients' listener is SASL_SSL with
/// SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; the controller and inter-broker
/// listeners stay plaintext on loopback.
pub struct SecureKafka {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl SecureKafka {
    /// Starts it with the SCRAM users `(mechanism, user, password)` and the
    /// PLAIN users `(user, password)`.
    pub fn start(
        dir: &Path,
        certs: &Certs,
        users: &[(&str, &str, &str)],
        plain: &[(&str, &str)],
    ) -> SecureKafka {
        let install = tickfetch::stack::kafka::ensure_kafka().expect("Apache Kafka installed");
        let home = dir.join("kafka");
        let data = home.join("data");
        std::fs::create_dir_all(&data).expect("kafka dir");
        let keystore = home.join("server-keystore.pem");
        let key = std::fs::read_to_string(&certs.server_key).expect("server key");
        let cert = std::fs::read_to_string(&certs.server_cert).expect("server cert");
        std::fs::write(&keystore, format!("{key}{cert}")).expect("keystore");
        let (plaintext, controller, port) = (free_port(), free_port(), free_port());
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        let plain_users: String = plain
            .iter()
            .map(|(user, password)| format!(" user_{user}=\"{password}\""))
            .collect();
        let plain = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};"
        );
        let properties = home.join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{port}
advertised.listeners=PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller},SASL_SSL://localhost:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
",
                keystore = keystore.display(),
                data = data.display(),
            ),
        )
        .expect("server.properties");
        let log4j = home.join("log4j2.yaml");
        std::fs::write(&log4j, tickfetch::stack::kafka::LOG4J2_YAML).expect("log4j");
        let java = || {
            let mut command = Command::new(&install.java);
            command
                .arg("-cp")
                .arg(format!("{}/*", install.libs.display()));
            command
        };
        let mut format = java();
        format.args([
            "kafka.tools.StorageTool",
            "format",
            "-t",
            "tickfetch-secure-test-0",
            "-c",
        ]);
        format.arg(&properties).arg("--standalone");
        for (mechanism, user, password) in users {
            format
                .arg("--add-scram")
                .arg(format!("{mechanism}=[name={user},password={password}]"));
        }
        run("formatting the secured broker's storage", &mut format);
        let log = home.join("kafka.log");
        let out = std::fs::File::create(&log).expect("kafka log");
        let child = java()
            .args(["-Xms256m", "-Xmx768m", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("kafka.Kafka")
            .arg(&properties)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("kafka starts");
        let kafka = SecureKafka {
            child: Some(child),
            port,
            log,
        };
        wait_listening("the secured broker", port, &kafka.log);
        kafka
    }

    /// `localhost:PORT`: the name in the server certificate.
    pub fn bootstrap(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SecureKafka {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// etcd serving clients over TLS only, asking for their certificates
/// (`--client-cert-auth`), with authentication enabled: user `root` and a
/// user whose role may read and write one key prefix only.
pub struct SecureEtcd {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl SecureEtcd {
    pub async fn start(
        dir: &Path,
        certs: &Certs,
        user: &str,
        password: &str,
        prefix: &str,
    ) -> SecureEtcd {
        let etcd = tickfetch::stack::ensure_etcd().expect("etcd installed");
        let home = dir.join("etcd");
        std::fs::create_dir_all(&home).expect("etcd dir");
        let (port, peer) = (free_port(), free_port());
        let client = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let log = home.join("etcd.log");
        let out = std::fs::File::create(&log).expect("etcd log");
        let child = Command::new(etcd)
            .args(["--name", "secure", "--data-dir"])
            .arg(home.join("data"))
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
                &format!("secure={peer}"),
                "--client-cert-auth",
            ])
            .arg("--trusted-ca-file")
            .arg(&certs.ca)
            .arg("--cert-file")
            .arg(&certs.server_cert)
            .arg("--key-file")
            .arg(&certs.server_key)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("etcd starts");
        let secured = SecureEtcd {
            child: Some(child),
            port,
            log,
        };
        wait_listening("the secured etcd", port, &secured.log);
        secured.provision(certs, user, password, prefix).await;
        secured
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Users and roles, then `auth enable`, over the TLS connection.
    async fn provision(&self, certs: &Certs, user: &str, password: &str, prefix: &str) {
        use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
        let read = |p: &Path| std::fs::read(p).expect("cert file");
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&certs.ca)))
            .identity(Identity::from_pem(
                read(&certs.client_cert),
                read(&certs.client_key),
            ));
        let mut client = etcd_client::Client::connect(
            [self.endpoint()],
            Some(ConnectOptions::new().with_tls(tls)),
        )
        .await
        .expect("etcd over TLS");
        let root_password = format!("{password}-root");
        client
            .user_add("root", root_password, None)
            .await
            .expect("root");
        client.role_add("root").await.expect("root role");
        client
            .user_grant_role("root", "root")
            .await
            .expect("root role");
        client.user_add(user, password, None).await.expect("user");
        client.role_add(user).await.expect("role");
        client
            .role_grant_permission(user, Permission::read_write(prefix).with_prefix())
            .await
            .expect("permission");
        client.user_grant_role(user, user).await.expect("grant");
        client.auth_enable().await.expect("auth enable");
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// SecantusDB over TLS with `--auth` (SCRAM-SHA-256): the user is created
/// on a first start without auth, which is then restarted with it.
pub struct AuthMongo {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    ca: PathBuf,
}

impl AuthMongo {
    pub async fn start(dir: &Path, certs: &Certs, user: &str, password: &str) -> AuthMongo {
        let secantus = tickfetch::stack::ensure_secantus().expect("SecantusDB installed");
        let home = dir.join("mongodb");
        std::fs::create_dir_all(home.join("data")).expect("mongodb dir");
        let port = free_port();
        let log = home.join("mongodb.log");
        let start = |auth: bool| {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("mongodb log");
            let mut command = Command::new(&secantus);
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--storage-path")
                .arg(home.join("data"))
                .arg("--tls-cert-file")
                .arg(&certs.server_cert)
                .arg("--tls-key-file")
                .arg(&certs.server_key);
            if auth {
                command.arg("--auth");
            }
            command
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("SecantusDB starts")
        };
        let mut first = Some(start(false));
        wait_listening("SecantusDB", port, &log);
        {
            let client = mongodb::Client::with_uri_str(format!(
                "mongodb://127.0.0.1:{port}/?tls=true&tlsCAFile={}",
                certs.ca.display()
            ))
            .await
            .expect("mongodb");
            client
                .database("admin")
                .run_command(mongodb::bson::doc! {
                    "createUser": user,
                    "pwd": password,
                    "roles": ["root"],
                })
                .await
                .expect("createUser");
            client.shutdown().await;
        }
        kill(&mut first);
        // Its port is free again once the process is gone.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "SecantusDB did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mongo = AuthMongo {
            child: Some(start(true)),
            port,
            log,
            ca: certs.ca.clone(),
        };
        wait_listening("SecantusDB with --auth", port, &mongo.log);
        mongo
    }

    pub fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?authSource=admin&tls=true&tlsCAFile={}",
            self.port,
            self.ca.display()
        )
    }
}

impl Drop for AuthMongo {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
