//! Crash tests: `kill -9` the real binary while it writes, restart, and check the durability
//! contract — every message it reported accepted is there with identical body, headers and
//! properties; nothing it reported settled came back; nothing is duplicated.
//!
//! The load goes through `wharf bench load` (the engine on a real data directory, the same code
//! `wharf serve` runs); protocol front ends will add their own loads here as they arrive.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::bench::load::expected_message;
use wharf::process::ServerProcess;
use wharf_core::clock::SystemClock;
use wharf_core::queue::ReceiveRequest;
use wharf_core::{Broker, BrokerConfig};
use wharf_store::file::{FileStore, FileStoreOptions};

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");
const QUEUE: &str = "crash";

#[derive(Default)]
struct Ledger {
    /// message id -> (producer, n)
    accepted: HashMap<String, (u32, u64)>,
    settled: HashSet<String>,
    /// Deletes announced but maybe not finished when the process died.
    deleting: HashSet<String>,
}

/// Run `wharf bench load`, read its lines until it has reported enough, then SIGKILL it and
/// take every line it managed to print before dying.
fn load_then_kill(data_dir: &Path, first_producer: u32, want_accepted: usize, ledger: &mut Ledger) {
    let mut child = Command::new(BINARY)
        .args(["bench", "load", "--queue", QUEUE, "--producers", "4", "--delete-every", "3"])
        .arg("--first-producer")
        .arg(first_producer.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wharf bench load");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut accepted_this_round = 0;
    let mut settled_this_round = 0;
    let record = |line: &str, ledger: &mut Ledger| -> (usize, usize) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["accepted", id, producer, n] => {
                let entry = (producer.parse().expect("producer"), n.parse().expect("n"));
                assert!(ledger.accepted.insert((*id).to_owned(), entry).is_none(), "id reused: {line}");
                (1, 0)
            }
            ["deleting", id] => {
                ledger.deleting.insert((*id).to_owned());
                (0, 0)
            }
            ["settled", id] => {
                ledger.settled.insert((*id).to_owned());
                (0, 1)
            }
            _ => panic!("unexpected load output: {line}"),
        }
    };
    while accepted_this_round < want_accepted || settled_this_round < 50 {
        assert!(Instant::now() < deadline, "load too slow: {accepted_this_round} accepted");
        let line = lines.next().expect("load ended early").expect("read line");
        let (a, s) = record(&line, ledger);
        accepted_this_round += a;
        settled_this_round += s;
    }
    // Mid-write: producers and the deleter are running flat out.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Lines already in the pipe were printed before the kill, so they are promises too.
    for line in lines {
        let line = line.expect("read line");
        if !line.is_empty() {
            record(&line, ledger);
        }
    }
}

/// Everything in the queue after a restart, by message id, read through the engine.
fn contents(data_dir: &Path) -> HashMap<String, wharf_core::message::Message> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = FileStore::open(data_dir, FileStoreOptions::default()).expect("open store");
        let broker =
            Broker::open(store, Arc::new(SystemClock), BrokerConfig::default()).expect("open broker");
        let queue = broker.vhost("/").unwrap().queue(QUEUE).expect("queue survived");
        let mut found = HashMap::new();
        loop {
            let request = ReceiveRequest { max: 10, visibility: Some(Duration::from_secs(3600)), wait: None };
            let batch = queue.receive(request).await.expect("receive");
            if batch.is_empty() {
                break;
            }
            for delivery in batch {
                let id = delivery.message_id.to_string();
                assert!(found.insert(id.clone(), delivery.message).is_none(), "message {id} delivered twice");
            }
        }
        broker.shutdown();
        found
    })
}

fn check(ledger: &Ledger, found: &HashMap<String, wharf_core::message::Message>) {
    let mut missing = Vec::new();
    for (id, (producer, n)) in &ledger.accepted {
        if ledger.settled.contains(id) {
            assert!(!found.contains_key(id), "settled message {id} came back");
            continue;
        }
        match found.get(id) {
            None if ledger.deleting.contains(id) => {} // its delete may have become durable
            None => missing.push(id.clone()),
            Some(message) => {
                let expected = expected_message(*producer, *n);
                assert_eq!(message.body, expected.body, "body of {id}");
                assert_eq!(message.headers, expected.headers, "headers of {id}");
                assert_eq!(message.properties, expected.properties, "properties of {id}");
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} accepted messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn kill_9_mid_write_loses_nothing_accepted_and_resurrects_nothing_settled() {
    let data = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();

    for round in 0..3u32 {
        load_then_kill(data.path(), round * 100, 1500, &mut ledger);

        // The real server starts on the crashed directory and reports the queue.
        let mut server =
            ServerProcess::spawn(Path::new(BINARY), &["--data-dir", data.path().to_str().unwrap()]).unwrap();
        server.wait_started(Duration::from_secs(60)).unwrap();
        let (status, health) = server.get("/health").unwrap();
        assert_eq!(status, 200, "{health}");
        assert!(health.contains("\"ready\""), "{health}");
        let ready = server
            .metric(&format!("wharf_queue_messages_ready{{vhost=\"/\",queue=\"{QUEUE}\"}}"))
            .unwrap()
            .expect("queue in /metrics");
        let live = ledger.accepted.len() - ledger.settled.len();
        assert!(
            ready >= live as f64,
            "round {round}: /metrics shows {ready} ready, {live} accepted and unsettled"
        );
        assert!(server.terminate(Duration::from_secs(30)).unwrap().success());

        check(&ledger, &contents(data.path()));
    }
    assert!(ledger.settled.len() >= 150, "the test must have settled messages to check");
}
