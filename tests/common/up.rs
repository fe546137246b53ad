//! `tickfetch up --simulate --no-stack` run from a test against the shared
//! test stack with the test's own names, its stdout collected.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickfetch::config::Config;

/// A base port with 30 free ports above it (`tickfetch up --port-base`).
pub fn free_base() -> u16 {
    loop {
        let base = 20_000 + (rand::random::<u16>() % 20_000);
        let free = (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

/// Any free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `tickfetch up`, its stdout collected line by line.
pub struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Up {
    pub fn start(config: &Config, dir: &Path, port_base: u16) -> Up {
        let path = super::write_config(config);
        let mut child = Command::new(super::binary("tickfetch"))
            .args([
                "up",
                "--simulate",
                "--no-stack",
                "--no-screen",
                "--sim-rate",
                "5",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--config")
            .arg(&path)
            .args(["--port-base", &port_base.to_string()])
            .env_remove("TICKFETCH_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tickfetch up starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[up] {line}");
                sink.lock().expect("lines").push(line);
            }
        });
        Up {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until `up` has started its children and printed where they
    /// are; returns every `/metrics` port it printed, its own included.
    pub fn metrics_ports(&mut self) -> BTreeSet<u16> {
        let started = Instant::now();
        while !self.text().contains("Ctrl-C stops everything") {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("up exited with {status}:\n{}", self.text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "up did not list its children within 60 s:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // "up: http://127.0.0.1:B/readyz ..., /metrics" and
        // "up: NAME pid N http://127.0.0.1:P/metrics /readyz".
        self.text()
            .lines()
            .filter(|l| l.contains("/metrics"))
            .filter_map(|l| {
                let rest = l.split("http://127.0.0.1:").nth(1)?;
                rest.split('/').next()?.parse().ok()
            })
            .collect()
    }

    pub fn child_pids(&self) -> Vec<i32> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| {
                let rest = l.split(" pid ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// SIGINT, as Ctrl-C; waits for `up` to exit and checks that it stopped
    /// every child.
    pub fn interrupt(mut self) -> String {
        let pids = self.child_pids();
        assert!(pids.len() >= 8, "children listed:\n{}", self.text());
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "up did not stop:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let text = self.text();
        assert!(status.success(), "up exited with {status}:\n{text}");
        assert!(text.ends_with("up: stopped"), "{text}");
        for pid in pids {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            assert!(!alive, "child {pid} still runs after up stopped:\n{text}");
        }
        eprintln!(
            "up stopped every child {:.1} s after SIGINT",
            started.elapsed().as_secs_f64()
        );
        text
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in self.child_pids() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
