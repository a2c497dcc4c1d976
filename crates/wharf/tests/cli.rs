//! The `wharf` binary as a user meets it: start-up block, flags, config file, admin endpoints,
//! clean shutdown, and one clear line for every way start-up can fail.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use wharf::process::{free_port, ServerProcess};

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");
const START: Duration = Duration::from_secs(30);

fn start(args: &[&str]) -> ServerProcess {
    let mut server = ServerProcess::spawn(Path::new(BINARY), args).expect("spawn wharf");
    server.wait_started(START).expect("wharf starts");
    server
}

fn run(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).env_remove("WHARF_CONFIG").output().expect("run wharf")
}

/// A failed start: non-zero exit, exactly one line on stderr, containing `needle`.
fn assert_fails_with_one_line(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure, got {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].contains(needle), "expected '{needle}' in: {}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Connections are counted by the server's accept loop, a moment after the client connects.
fn wait_for_metric(server: &ServerProcess, sample: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.metric(sample).unwrap();
        if got == Some(want) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{sample} is {got:?}, expected {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn startup_block_health_metrics_and_clean_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let server = start(&["--data-dir", dir]);

    let block = &server.startup_block;
    assert!(block.starts_with(&format!("wharf {}", env!("CARGO_PKG_VERSION"))), "{block}");
    assert!(block.contains(&format!("data directory  {dir}")), "{block}");
    assert!(block.contains("fsync always"), "{block}");
    assert!(block.contains(&format!("admin           http://{}", server.admin)), "{block}");
    assert!(block.contains(&format!("sqs             http://{}", server.http)), "{block}");
    assert!(block.contains("account 000000000000"), "{block}");
    assert!(block.contains(&format!("amqp            amqp://{}", server.amqp)), "{block}");
    // Front ends that are not built yet must not appear.
    for absent in ["stomp", "mqtt"] {
        assert!(!block.to_lowercase().contains(absent), "{absent} in {block}");
    }

    let (status, body) = server.get("/health").unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ready");
    assert_eq!(health["damaged_queues"].as_array().map(Vec::len), Some(0));

    let (status, metrics) = server.get("/metrics").unwrap();
    assert_eq!(status, 200);
    for name in [
        "wharf_store_bytes_on_disk",
        "wharf_store_fsyncs_total",
        "wharf_store_fsync_seconds_total",
        "wharf_store_persistent 1",
        "# TYPE wharf_queue_messages_ready gauge",
        "# TYPE wharf_connections gauge",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    // Open SQS connections are counted while they are open.
    let sqs_connections = "wharf_connections{protocol=\"sqs\"}";
    assert_eq!(server.metric(sqs_connections).unwrap(), Some(0.0));
    let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(server.http).unwrap()).collect();
    wait_for_metric(&server, sqs_connections, 3.0);
    drop(clients);
    wait_for_metric(&server, sqs_connections, 0.0);

    let status = server.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "SIGTERM should exit 0, got {status:?}");
    // The lock is released on exit: a second start on the same directory works.
    let again = start(&["--data-dir", dir]);
    assert!(again.terminate(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn config_file_declares_queues_and_exchanges() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("wharf.toml");
    std::fs::write(
        &config,
        r#"
        fsync = "interval"
        fsync_interval_ms = 20

        [[queue]]
        name = "orders"
        visibility_timeout = 60

        [[queue]]
        name = "payments.fifo"
        kind = "fifo"
        content_based_deduplication = true

        [[exchange]]
        name = "events"
        type = "fanout"

        [[binding]]
        exchange = "events"
        queue = "orders"
        "#,
    )
    .unwrap();
    let dir = data.path().join("data");
    let server = start(&["--config", config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert!(
        server.startup_block.contains("fsync interval (fdatasync every 20 ms)"),
        "{}",
        server.startup_block
    );
    for queue in ["orders", "payments.fifo"] {
        let sample = format!("wharf_queue_messages_ready{{vhost=\"/\",queue=\"{queue}\"}}");
        assert_eq!(server.metric(&sample).unwrap(), Some(0.0), "{queue} not declared");
    }
    assert!(server.terminate(Duration::from_secs(10)).unwrap().success());

    // Declared queues are durable definitions: they are there after a restart without the file.
    let server = start(&["--data-dir", dir.to_str().unwrap()]);
    assert!(server.startup_block.contains("recovered       2 queues"), "{}", server.startup_block);
    assert!(server.terminate(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn in_memory_mode_says_so() {
    let server = start(&["--in-memory"]);
    assert!(server.startup_block.contains("in memory"), "{}", server.startup_block);
    assert_eq!(server.metric("wharf_store_persistent").unwrap(), Some(0.0));
    assert!(server.terminate(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn bad_flag_is_one_line_and_exit_2() {
    let output = run(&["serve", "--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
    assert_fails_with_one_line(&output, "--no-such-flag");
    // Front ends that do not exist yet have no flag.
    for flag in ["--stomp", "--mqtt"] {
        assert_fails_with_one_line(&run(&["serve", flag, "127.0.0.1:5672"]), flag);
    }
    assert_fails_with_one_line(&run(&["serve", "--account-id", "12"]), "12 digits");
    assert_fails_with_one_line(&run(&["serve", "--fsync", "sometimes"]), "sometimes");
}

#[test]
fn unreadable_or_invalid_config_is_one_line() {
    assert_fails_with_one_line(&run(&["serve", "--config", "/no/such/file.toml"]), "/no/such/file.toml");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[queue]]\nname = \"q\"\nvisibilty_timeout = 5\n").unwrap();
    assert_fails_with_one_line(&run(&["serve", "--config", config.to_str().unwrap()]), "visibilty_timeout");
    std::fs::write(&config, "[[queue]]\nname = \"q\"\nvisibility_timeout = 99999\n").unwrap();
    let data = dir.path().join("data");
    assert_fails_with_one_line(
        &run(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ]),
        "visibility_timeout = 99999",
    );
}

#[test]
fn occupied_port_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let free = format!("127.0.0.1:{}", free_port().unwrap());
    let dir = data.path().to_str().unwrap();
    let output = run(&["serve", "--data-dir", dir, "--admin", &addr, "--http", &free]);
    assert_fails_with_one_line(&output, &format!("cannot listen on {addr} for admin"));
    let output = run(&["serve", "--data-dir", dir, "--admin", &free, "--http", &addr]);
    assert_fails_with_one_line(&output, &format!("cannot listen on {addr} for SQS"));
    let free2 = format!("127.0.0.1:{}", free_port().unwrap());
    let output = run(&["serve", "--data-dir", dir, "--admin", &free, "--http", &free2, "--amqp", &addr]);
    assert_fails_with_one_line(&output, &format!("cannot listen on {addr} for AMQP"));
}

#[test]
fn locked_data_directory_is_one_line() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let first = start(&["--data-dir", dir]);
    let admin = format!("127.0.0.1:{}", free_port().unwrap());
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let output = run(&["serve", "--data-dir", dir, "--admin", &admin, "--http", &http]);
    assert_fails_with_one_line(&output, "locked by another wharf");
    assert!(first.terminate(Duration::from_secs(10)).unwrap().success());
}

/// The AWS benches run end to end against a real server: every call answered, nothing counted
/// as an error, and the figures the tables report are there.
#[test]
fn sqs_and_sns_benches_measure_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&["--data-dir", data.path().to_str().unwrap()]);
    let endpoint = format!("http://{}", server.http);
    let short = ["--seconds", "1", "--warmup", "0", "--connections", "4"];

    // The tool runs batch-scheduled unless asked otherwise, and says which policy it ran under.
    for (batch, scheduling, policy) in
        [("1", None, "SCHED_BATCH"), ("10", Some("normal"), "SCHED_OTHER"), ("10", None, "SCHED_BATCH")]
    {
        let mut args = vec!["bench", "sqs", "--endpoint", &endpoint, "--batch", batch];
        args.extend(short);
        if let Some(scheduling) = scheduling {
            args.extend(["--tool-scheduling", scheduling]);
        }
        let output = run(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.lines().next().unwrap_or_default().ends_with(&format!("under {policy}")), "{stdout}");
        let moved: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("messages/s end to end"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no messages/s line:\n{stdout}"));
        assert!(moved > 0.0, "{stdout}");
        assert!(stdout.contains("empty receives / errors / reconnects"), "{stdout}");
        assert!(!stdout.contains("first error"), "{stdout}");
    }

    let mut args = vec!["bench", "sns", "--endpoint", &endpoint, "--subscriptions", "2"];
    args.extend(short);
    let output = run(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with(&format!("| endpoint {endpoint}")))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        // | endpoint | filter | publishes/s | deliveries/s | p50 | p99 | errors |
        let publishes: f64 = row[3].parse().unwrap();
        let deliveries: f64 = row[4].parse().unwrap();
        assert!(publishes > 0.0 && deliveries > 0.0, "{stdout}");
        assert_eq!(row[7], "0", "{stdout}");
    }
}
