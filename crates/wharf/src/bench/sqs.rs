//! `wharf bench sqs`: SendMessage → ReceiveMessage → DeleteMessage loops over keep-alive
//! HTTP/1.1 connections speaking the SQS JSON 1.0 protocol, against one or more endpoints in
//! turn (wharf and a peer such as moto_server) with the same settings, printed side by side.
//!
//! The client is deliberately lean — one connection per worker on the benches' own HTTP/1.1
//! client ([`super::http`]), requests built once, responses parsed only for the fields the loop
//! needs — because on the project's 2-core machine the tool shares the cores with the server it
//! measures. It reports its own CPU time so a reader can see how much of the machine the load
//! itself took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::{parse_endpoint, Answer, Connection};
use super::{tool_runtime, ToolScheduling};

#[derive(Args, Debug)]
pub struct SqsArgs {
    /// SQS endpoint to measure, e.g. http://127.0.0.1:9324 (repeatable; measured in turn).
    #[arg(long = "endpoint", value_name = "URL", required = true)]
    pub endpoints: Vec<String>,
    /// A peer measured after the endpoints with the same settings, e.g. moto_server's URL; the
    /// table then ends with the ratio first endpoint ÷ peer.
    #[arg(long, value_name = "URL")]
    pub peer_endpoint: Option<String>,
    /// Concurrent workers, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per call: 1 uses SendMessage/ReceiveMessage/DeleteMessage; 2–10 use
    /// SendMessageBatch, ReceiveMessage with MaxNumberOfMessages, DeleteMessageBatch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub batch: u8,
    /// Measured seconds per endpoint.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of load before measuring starts (connections warm, queue indexes sized).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Threads of the tool's own runtime. One (the default) runs every worker on the calling
    /// thread (tokio's current-thread runtime), which keeps the tool off the server's core as
    /// much as a load generator can be and costs the least per call.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How the kernel schedules the tool's threads (see `ToolScheduling`).
    #[arg(long, value_enum, default_value_t)]
    pub tool_scheduling: ToolScheduling,
}

pub fn run(args: SqsArgs) -> anyhow::Result<()> {
    let mut targets: Vec<(String, String)> =
        args.endpoints.iter().map(|e| ("endpoint".to_owned(), e.clone())).collect();
    if let Some(peer) = &args.peer_endpoint {
        targets.push(("peer".to_owned(), peer.clone()));
    }
    let (runtime, tool) = tool_runtime(args.threads, args.tool_scheduling)?;
    let mode = if args.batch == 1 {
        "SendMessage -> ReceiveMessage -> DeleteMessage".to_owned()
    } else {
        format!("SendMessageBatch({0}) -> ReceiveMessage(Max {0}) -> DeleteMessageBatch", args.batch)
    };
    println!(
        "wharf bench sqs: {mode}; {} connections, {} B bodies, {} s warm-up + {} s measured per endpoint, {tool}",
        args.connections, args.size, args.warmup, args.seconds
    );
    let mut reports = Vec::new();
    for (role, endpoint) in &targets {
        let report = runtime
            .block_on(measure(&args, endpoint))
            .with_context(|| format!("benchmark against {endpoint}"))?;
        println!("  {role} {endpoint}: {:.0} msg/s", report.messages_per_second());
        reports.push((role.clone(), endpoint.clone(), report));
    }
    print_table(&args, &mut reports);
    Ok(())
}

/// One endpoint's measured window.
struct Report {
    measured: Duration,
    /// Every worker's figures added up.
    totals: WorkerResult,
    /// CPU seconds (user + system) this process used in the window.
    tool_cpu: f64,
}

impl Report {
    fn messages_per_second(&self) -> f64 {
        self.totals.messages as f64 / self.measured.as_secs_f64()
    }
}

/// Neither wharf (by default) nor moto verifies signatures, but both read the credential
/// scope (sender id, region) from this header, as from a real SDK.
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/sqs/aws4_request, \
                             SignedHeaders=host;x-amz-target, Signature=0";

/// One SQS JSON 1.0 call; `target` is the `X-Amz-Target` value, `AmazonSQS.<Action>` (whole,
/// so no call formats it).
async fn call(connection: &mut Connection, target: &str, body: &[u8]) -> anyhow::Result<Answer> {
    connection
        .post(
            &[
                ("Content-Type", "application/x-amz-json-1.0"),
                ("X-Amz-Target", target),
                ("Authorization", AUTHORIZATION),
            ],
            body,
        )
        .await
}

/// Batch entry ids (a batch has at most ten entries).
const ENTRY_IDS: [&str; 10] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteOne<'a> {
    queue_url: &'a str,
    receipt_handle: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteBatch<'a> {
    queue_url: &'a str,
    entries: Vec<DeleteEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteEntry<'a> {
    id: &'a str,
    receipt_handle: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueueOut {
    queue_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveOut {
    #[serde(default)]
    messages: Vec<ReceivedMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceivedMessage {
    receipt_handle: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchOut {
    #[serde(default)]
    successful: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    failed: Vec<serde::de::IgnoredAny>,
}

/// What one worker measured.
#[derive(Default)]
struct WorkerResult {
    messages: u64,
    sends: Vec<u32>,
    receives: Vec<u32>,
    deletes: Vec<u32>,
    empty_receives: u64,
    errors: u64,
    first_error: Option<String>,
    reconnects: u64,
}

impl WorkerResult {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    /// Add another worker's figures to these.
    fn absorb(&mut self, other: WorkerResult) {
        self.messages += other.messages;
        self.sends.extend(other.sends);
        self.receives.extend(other.receives);
        self.deletes.extend(other.deletes);
        self.empty_receives += other.empty_receives;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn measure(args: &SqsArgs, url: &str) -> anyhow::Result<Report> {
    let endpoint = parse_endpoint(url)?;
    let mut control = Connection::new(endpoint.clone());
    let queue_name = format!("wharf-bench-{}-{}", std::process::id(), unique_suffix());
    let answer = call(
        &mut control,
        "AmazonSQS.CreateQueue",
        json!({ "QueueName": queue_name }).to_string().as_bytes(),
    )
    .await?;
    if answer.status != 200 {
        bail!("CreateQueue answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body));
    }
    let queue_url = serde_json::from_slice::<CreateQueueOut>(&answer.body)?.queue_url;

    // Printable ASCII that JSON does not escape, so every server sees exactly `size` bytes.
    let body: String = (0..args.size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let send_request = if args.batch == 1 {
        json!({ "QueueUrl": queue_url, "MessageBody": body })
    } else {
        let entries: Vec<_> =
            (0..args.batch).map(|i| json!({ "Id": format!("m{i}"), "MessageBody": body })).collect();
        json!({ "QueueUrl": queue_url, "Entries": entries })
    };
    let send_request = Arc::new(send_request.to_string().into_bytes());
    let receive_request = Arc::new(
        json!({ "QueueUrl": queue_url, "MaxNumberOfMessages": args.batch, "WaitTimeSeconds": 0 })
            .to_string()
            .into_bytes(),
    );

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop_at = measure_from + Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        let connection = Connection::new(endpoint.clone());
        let job = Job {
            queue_url: queue_url.clone(),
            send_request: send_request.clone(),
            receive_request: receive_request.clone(),
            batch: args.batch,
            measure_from,
            stop_at,
            stop: stop.clone(),
        };
        workers.push(tokio::spawn(job.run(connection)));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = own_cpu_seconds();
    let window_started = Instant::now();
    tokio::time::sleep_until(stop_at.into()).await;
    let tool_cpu = own_cpu_seconds() - cpu_before;
    let measured = window_started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let mut totals = WorkerResult::default();
    for worker in workers {
        totals.absorb(worker.await.context("worker panicked")?);
    }
    let report = Report { measured, totals, tool_cpu };
    // Leave nothing behind on a durable server.
    let _ =
        call(&mut control, "AmazonSQS.DeleteQueue", json!({ "QueueUrl": queue_url }).to_string().as_bytes())
            .await;
    Ok(report)
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// One worker's loop and what it shares with the others.
struct Job {
    queue_url: String,
    send_request: Arc<Vec<u8>>,
    receive_request: Arc<Vec<u8>>,
    batch: u8,
    measure_from: Instant,
    stop_at: Instant,
    stop: Arc<AtomicBool>,
}

impl Job {
    async fn run(self, mut connection: Connection) -> WorkerResult {
        let mut result = WorkerResult::default();
        let (send_action, delete_action) = if self.batch == 1 {
            ("AmazonSQS.SendMessage", "AmazonSQS.DeleteMessage")
        } else {
            ("AmazonSQS.SendMessageBatch", "AmazonSQS.DeleteMessageBatch")
        };
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < self.stop_at {
            let cycle_started = Instant::now();
            let measuring = cycle_started >= self.measure_from;

            let started = Instant::now();
            match call(&mut connection, send_action, &self.send_request).await {
                Ok(a) if a.status == 200 => {
                    if self.batch > 1 {
                        if let Err(e) = check_batch(&a.body) {
                            result.error(format!("{send_action}: {e}"));
                        }
                    }
                }
                Ok(a) => {
                    result.error(format!("{send_action} {}: {}", a.status, String::from_utf8_lossy(&a.body)))
                }
                Err(e) => {
                    result.error(format!("{send_action}: {e:#}"));
                    continue;
                }
            }
            if measuring {
                result.sends.push(micros(started.elapsed()));
            }

            let started = Instant::now();
            let handles = match call(&mut connection, "AmazonSQS.ReceiveMessage", &self.receive_request).await
            {
                Ok(a) if a.status == 200 => match serde_json::from_slice::<ReceiveOut>(&a.body) {
                    Ok(out) => out.messages.into_iter().map(|m| m.receipt_handle).collect::<Vec<_>>(),
                    Err(e) => {
                        result.error(format!("AmazonSQS.ReceiveMessage answer: {e}"));
                        continue;
                    }
                },
                Ok(a) => {
                    result.error(format!(
                        "AmazonSQS.ReceiveMessage {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ));
                    continue;
                }
                Err(e) => {
                    result.error(format!("AmazonSQS.ReceiveMessage: {e:#}"));
                    continue;
                }
            };
            if measuring {
                result.receives.push(micros(started.elapsed()));
            }
            if handles.is_empty() {
                // Another worker took what this one sent; the next cycle sends again.
                result.empty_receives += u64::from(measuring);
                continue;
            }

            // Typed rather than `json!`: a map built per request took a tenth of the tool's CPU.
            let delete_request = if self.batch == 1 {
                serde_json::to_vec(&DeleteOne { queue_url: &self.queue_url, receipt_handle: &handles[0] })
            } else {
                let entries: Vec<_> = handles
                    .iter()
                    .zip(ENTRY_IDS)
                    .map(|(receipt_handle, id)| DeleteEntry { id, receipt_handle })
                    .collect();
                serde_json::to_vec(&DeleteBatch { queue_url: &self.queue_url, entries })
            }
            .expect("a request of strings serializes");
            let started = Instant::now();
            match call(&mut connection, delete_action, &delete_request).await {
                Ok(a) if a.status == 200 => {
                    let failed = if self.batch > 1 { check_batch(&a.body).err() } else { None };
                    match failed {
                        Some(e) => result.error(format!("{delete_action}: {e}")),
                        None if measuring => {
                            result.deletes.push(micros(started.elapsed()));
                            result.messages += handles.len() as u64;
                        }
                        None => {}
                    }
                }
                Ok(a) => result.error(format!(
                    "{delete_action} {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                )),
                Err(e) => result.error(format!("{delete_action}: {e:#}")),
            }
        }
        result.reconnects = connection.reconnects;
        result
    }
}

/// A batch answer with failed entries counts as an error (the whole call's messages are not
/// counted as done).
fn check_batch(body: &[u8]) -> anyhow::Result<()> {
    let out: BatchOut = serde_json::from_slice(body)?;
    if !out.failed.is_empty() {
        bail!("{} of {} entries failed", out.failed.len(), out.failed.len() + out.successful.len());
    }
    Ok(())
}

pub(super) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// User + system CPU seconds of this process so far.
pub(super) fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to an rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// p50 / p99 / max of a latency sample, in milliseconds.
pub(super) fn percentiles(samples: &mut [u32]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[index]) / 1e3
    };
    Some((at(0.50), at(0.99), f64::from(samples[samples.len() - 1]) / 1e3))
}

fn print_table(args: &SqsArgs, reports: &mut [(String, String, Report)]) {
    let (send, receive, delete) = if args.batch == 1 {
        ("SendMessage", "ReceiveMessage", "DeleteMessage")
    } else {
        ("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch")
    };
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    rows.push((
        "messages/s end to end".into(),
        reports.iter().map(|(_, _, r)| format!("{:.0}", r.messages_per_second())).collect(),
    ));
    for (name, pick) in [(send, 0usize), (receive, 1), (delete, 2)] {
        rows.push((
            format!("{name} p50 / p99 / max ms"),
            reports
                .iter_mut()
                .map(|(_, _, r)| {
                    let samples = match pick {
                        0 => &mut r.totals.sends,
                        1 => &mut r.totals.receives,
                        _ => &mut r.totals.deletes,
                    };
                    match percentiles(samples) {
                        Some((p50, p99, max)) => format!("{p50:.2} / {p99:.2} / {max:.1}"),
                        None => "-".into(),
                    }
                })
                .collect(),
        ));
    }
    rows.push((
        "calls/s".into(),
        reports
            .iter()
            .map(|(_, _, r)| {
                let calls = r.totals.sends.len() + r.totals.receives.len() + r.totals.deletes.len();
                format!("{:.0}", calls as f64 / r.measured.as_secs_f64())
            })
            .collect(),
    ));
    rows.push((
        "empty receives / errors / reconnects".into(),
        reports
            .iter()
            .map(|(_, _, r)| {
                format!("{} / {} / {}", r.totals.empty_receives, r.totals.errors, r.totals.reconnects)
            })
            .collect(),
    ));
    rows.push((
        "tool CPU (of one core)".into(),
        reports
            .iter()
            .map(|(_, _, r)| format!("{:.0}%", 100.0 * r.tool_cpu / r.measured.as_secs_f64()))
            .collect(),
    ));

    let mut header = vec![String::new()];
    header.extend(reports.iter().map(|(role, endpoint, _)| format!("{role} {endpoint}")));
    let ratio = args.peer_endpoint.is_some() && reports.len() >= 2;
    if ratio {
        header.push("first / peer".into());
        let first = reports[0].2.messages_per_second();
        let peer = reports[reports.len() - 1].2.messages_per_second();
        rows[0].1.push(if peer > 0.0 { format!("{:.1}x", first / peer) } else { "-".into() });
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (label, cells) in &rows {
        widths[0] = widths[0].max(label.chars().count());
        for (i, cell) in cells.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ")
    };
    println!();
    println!("{}", line(header.iter().map(String::as_str).collect()));
    for (label, cells) in &rows {
        let mut all = vec![label.as_str()];
        all.extend(cells.iter().map(String::as_str));
        println!("{}", line(all).trim_end());
    }
    for (role, endpoint, r) in reports.iter() {
        if let Some(e) = &r.totals.first_error {
            println!("first error from {role} {endpoint}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let (p50, p99, max) = percentiles(&mut samples).unwrap();
        assert_eq!((p50, p99, max), (50.0, 99.0, 100.0));
        assert!(percentiles(&mut []).is_none());
    }
}
