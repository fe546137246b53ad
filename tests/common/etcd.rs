//! An etcd of a test's own, for faults the shared one must not see: kill -9,
//! restarts on the same data dir, compaction.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A private etcd process, killed and its data removed on drop.
pub struct PrivateEtcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivateEtcd {
    /// Starts one under `target/test-logs/<tag>/etcd` and waits until it answers.
    pub fn start(tag: &str) -> PrivateEtcd {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-logs")
            .join(super::unique(tag));
        std::fs::create_dir_all(&dir).expect("etcd test dir");
        let mut etcd = PrivateEtcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A config for this etcd under a root prefix of its own.
    pub fn etcd_config(&self) -> tickfetch::config::EtcdConfig {
        tickfetch::config::EtcdConfig {
            endpoints: vec![self.endpoint()],
            prefix: format!("/test/{}", super::unique("private")),
            epochs: true,
            ..Default::default()
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same ports and data dir; waits until it answers.
    pub fn restart(&mut self) {
        self.kill9();
        let etcd = tickfetch::stack::ensure_etcd().expect("etcd installed");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let child = tickfetch::stack::etcd_command(
            &etcd,
            &self.dir.join("data"),
            self.client_port,
            self.peer_port,
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("etcd starts");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "private etcd did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes everything under the test's root prefix: leaves etcd as the test
/// found it.
pub async fn remove_prefix(config: &tickfetch::config::EtcdConfig) {
    let mut raw = etcd_client::Client::connect(config.endpoints.clone(), None)
        .await
        .expect("etcd");
    let root = format!("{}/", config.prefix.trim_end_matches('/'));
    raw.delete(root, Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("clean up etcd");
}
