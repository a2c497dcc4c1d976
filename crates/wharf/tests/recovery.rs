//! Store faults seen through the real server: a write torn by a crash is cut off silently; a
//! flipped byte in the middle of a queue's log opens that queue closed and reports it on
//! /health, while the rest of the server starts and serves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wharf::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

/// Fill `queue` with `count` durable messages (two producers) and exit cleanly.
fn load(data_dir: &Path, queue: &str, count: u64) {
    let status = Command::new(BINARY)
        .args(["bench", "load", "--producers", "2", "--delete-every", "0", "--queue", queue])
        .arg("--messages")
        .arg((count / 2).to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run load");
    assert!(status.success());
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data_dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "seg") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn start(data_dir: &Path) -> ServerProcess {
    let mut server =
        ServerProcess::spawn(Path::new(BINARY), &["--data-dir", data_dir.to_str().unwrap()]).unwrap();
    server.wait_started(Duration::from_secs(60)).unwrap();
    server
}

fn ready(server: &ServerProcess, queue: &str) -> Option<f64> {
    server.metric(&format!("wharf_queue_messages_ready{{vhost=\"/\",queue=\"{queue}\"}}")).unwrap()
}

#[test]
fn torn_tail_is_cut_and_everything_before_it_served() {
    let data = tempfile::tempdir().unwrap();
    load(data.path(), "torn", 200);
    let segs = segments(data.path());
    assert_eq!(segs.len(), 1, "{segs:?}");
    // Cut into the last record, as a crash in the middle of its write would.
    let file = std::fs::OpenOptions::new().write(true).open(&segs[0]).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 5).unwrap();
    drop(file);

    let server = start(data.path());
    let (status, health) = server.get("/health").unwrap();
    assert_eq!(status, 200);
    assert!(health.contains("\"ready\""), "a torn tail is normal, not damage: {health}");
    assert_eq!(ready(&server, "torn"), Some(199.0));
    assert!(server.terminate(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn flipped_byte_opens_that_queue_closed_and_the_server_still_starts() {
    let data = tempfile::tempdir().unwrap();
    load(data.path(), "healthy", 100);
    let healthy_segments = segments(data.path());
    load(data.path(), "damaged", 200);
    let damaged_segment = segments(data.path())
        .into_iter()
        .find(|s| !healthy_segments.contains(s))
        .expect("segment of the second queue");
    let mut bytes = std::fs::read(&damaged_segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&damaged_segment, &bytes).unwrap();

    let server = start(data.path());
    let (status, body) = server.get("/health").unwrap();
    assert_eq!(status, 200, "degraded still serves: {body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    let damaged = health["damaged_queues"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{body}");
    assert_eq!(damaged[0]["queue"], "damaged");
    assert!(!damaged[0]["reason"].as_str().unwrap().is_empty());
    // The healthy queue is unaffected.
    assert_eq!(ready(&server, "healthy"), Some(100.0));
    assert!(server.terminate(Duration::from_secs(10)).unwrap().success());
    // The damaged file is left as it was, for inspection.
    assert_eq!(std::fs::read(&damaged_segment).unwrap(), bytes);
}
