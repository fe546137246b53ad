//! `tickfetch stack`: a second `up` reuses what runs, a taken port is refused
//! with a clear message, and `down` leaves no process behind.

use std::path::PathBuf;
use std::process::Command;

fn tickfetch(args: &[&str]) -> std::process::Output {
    Command::new(PathBuf::from(env!("CARGO_BIN_EXE_tickfetch")))
        .args(args)
        .output()
        .expect("run tickfetch")
}

#[test]
fn up_twice_reuses_taken_ports_are_refused_down_stops_everything() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-logs")
        .join(format!("stack-{}", std::process::id()));
    let dir_arg = dir.to_str().expect("utf-8 path");
    let first = tickfetch(&["stack", "up", "--dir", dir_arg]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let env = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(env.contains("KAFKA_BOOTSTRAP=127.0.0.1:"), "{env}");
    assert_eq!(
        std::fs::read_to_string(dir.join("stack.env")).expect("stack.env"),
        env
    );

    let second = tickfetch(&["stack", "up", "--dir", dir_arg]);
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        env,
        "the running services are reused"
    );

    let state = tickfetch::stack::read_state(&dir).expect("state");
    assert_eq!(state.services.len(), 3);
    let kafka_port = state
        .services
        .iter()
        .find(|s| s.name == "kafka")
        .expect("kafka")
        .port;

    // Another stack asking for a port that is in use is told so.
    let other = dir.with_extension("other");
    let taken = tickfetch(&[
        "stack",
        "up",
        "--dir",
        other.to_str().expect("utf-8"),
        "--kafka-port",
        &kafka_port.to_string(),
    ]);
    assert!(!taken.status.success());
    let message = String::from_utf8_lossy(&taken.stderr);
    assert!(
        message.contains(&format!("port {kafka_port}")) && message.contains("taken"),
        "{message}"
    );
    let _ = tickfetch(&["stack", "down", "--dir", other.to_str().expect("utf-8")]);

    let status = tickfetch(&["stack", "status", "--dir", dir_arg]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    let down = tickfetch(&["stack", "down", "--dir", dir_arg]);
    assert!(down.status.success());
    for service in &state.services {
        assert!(
            !tickfetch::stack::process_matches(service.pid, &service.program),
            "{} (pid {}) still runs after down",
            service.name,
            service.pid
        );
    }
    assert!(!dir.join("stack.env").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
