//! `wharf bench sns`: Publish to a topic with N SQS subscriptions (raw delivery) over keep-alive
//! HTTP/1.1, with and without a filter policy on every subscription, against one or more
//! endpoints in turn (wharf and a peer such as moto_server) with the same settings.
//!
//! Publishes/s and Publish latency are measured at the client. Deliveries/s is how much the
//! subscribed queues grew during the measured window (ApproximateNumberOfMessages before and
//! after, summed over the queues), so it counts copies the server really stored. Every
//! published message matches the filter, so both scenarios deliver the same number of copies
//! and the difference is the cost of evaluating the policies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use super::http::{parse_endpoint, Connection};
use super::{tool_runtime, ToolScheduling};

#[derive(Args, Debug)]
pub struct SnsArgs {
    /// Endpoint serving SNS and SQS, e.g. http://127.0.0.1:9324 (repeatable; measured in turn).
    #[arg(long = "endpoint", value_name = "URL", required = true)]
    pub endpoints: Vec<String>,
    /// A peer measured after the endpoints with the same settings (e.g. moto_server's URL).
    #[arg(long, value_name = "URL")]
    pub peer_endpoint: Option<String>,
    /// SQS queues subscribed to the topic.
    #[arg(long, default_value_t = 10)]
    pub subscriptions: usize,
    /// Concurrent publishers, each on its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Measured seconds per endpoint and scenario.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// How the kernel schedules the tool's threads (see `ToolScheduling`).
    #[arg(long, value_enum, default_value_t)]
    pub tool_scheduling: ToolScheduling,
}

const POLICY: &str = r#"{"kind": ["bench"], "size": [{"numeric": [">=", 0]}]}"#;

enum Api {
    /// SNS Query form post.
    Sns,
    /// SQS JSON 1.0 with this action.
    Sqs(&'static str),
}

/// Neither wharf (by default) nor moto verifies signatures; both read the credential scope's
/// service and region from this header, as from an SDK.
fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// The SNS and SQS calls of the bench, on the benches' HTTP/1.1 client.
struct Client {
    connection: Connection,
    sns_authorization: String,
    sqs_authorization: String,
}

impl Client {
    fn new(connection: Connection) -> Client {
        Client {
            connection,
            sns_authorization: authorization("sns"),
            sqs_authorization: authorization("sqs"),
        }
    }

    async fn call(&mut self, api: &Api, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let answer = match api {
            Api::Sns => {
                let headers = [
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", self.sns_authorization.as_str()),
                ];
                self.connection.post(&headers, body).await?
            }
            Api::Sqs(action) => {
                let target = format!("AmazonSQS.{action}");
                let headers = [
                    ("Content-Type", "application/x-amz-json-1.0"),
                    ("X-Amz-Target", target.as_str()),
                    ("Authorization", self.sqs_authorization.as_str()),
                ];
                self.connection.post(&headers, body).await?
            }
        };
        Ok((answer.status, answer.body))
    }

    async fn ok(&mut self, api: Api, body: String) -> anyhow::Result<Vec<u8>> {
        let (status, answer) = self.call(&api, body.as_bytes()).await?;
        if status != 200 {
            let host = &self.connection.endpoint().host;
            bail!("{host} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(answer)
    }

    async fn sqs(&mut self, action: &'static str, input: Value) -> anyhow::Result<Value> {
        let answer = self.ok(Api::Sqs(action), input.to_string()).await?;
        serde_json::from_slice(&answer).with_context(|| format!("{action} answer"))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

struct Setup {
    topic: String,
    queues: Vec<String>,
}

async fn setup(c: &mut Client, args: &SnsArgs, filtered: bool) -> anyhow::Result<Setup> {
    let name = format!("wharf-bench-{}-{}", std::process::id(), unique_suffix());
    let answer = c
        .ok(Api::Sns, form(&[("Action", "CreateTopic"), ("Version", "2010-03-31"), ("Name", &name)]))
        .await?;
    let topic = xml_text(&String::from_utf8_lossy(&answer), "TopicArn")
        .context("CreateTopic: no TopicArn")?
        .to_owned();
    let mut queues = Vec::new();
    for i in 0..args.subscriptions {
        let out = c.sqs("CreateQueue", json!({"QueueName": format!("{name}-{i}")})).await?;
        let url = out["QueueUrl"].as_str().context("QueueUrl")?.to_owned();
        let attrs =
            c.sqs("GetQueueAttributes", json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]})).await?;
        let arn = attrs["Attributes"]["QueueArn"].as_str().context("QueueArn")?.to_owned();
        let mut params = vec![
            ("Action", "Subscribe"),
            ("Version", "2010-03-31"),
            ("TopicArn", topic.as_str()),
            ("Protocol", "sqs"),
            ("Endpoint", arn.as_str()),
            ("Attributes.entry.1.key", "RawMessageDelivery"),
            ("Attributes.entry.1.value", "true"),
        ];
        if filtered {
            params.push(("Attributes.entry.2.key", "FilterPolicy"));
            params.push(("Attributes.entry.2.value", POLICY));
        }
        c.ok(Api::Sns, form(&params)).await?;
        queues.push(url);
    }
    Ok(Setup { topic, queues })
}

async fn queued(c: &mut Client, queues: &[String]) -> anyhow::Result<u64> {
    let mut total = 0;
    for url in queues {
        let out = c
            .sqs(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]}),
            )
            .await?;
        total += out["Attributes"]["ApproximateNumberOfMessages"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

struct Report {
    /// Publishes answered 200 that started and ended inside the measured window.
    publishes: u64,
    /// Copies the queues gained between the two counts, and the seconds between them; `None`
    /// when the counts took so long that too little of the window lay between them (a slow
    /// peer under load).
    deliveries: Option<(u64, f64)>,
    /// The measured window.
    seconds: f64,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn measure(args: &SnsArgs, url: &str, filtered: bool) -> anyhow::Result<Report> {
    let endpoint = parse_endpoint(url)?;
    let mut control = Client::new(Connection::new(endpoint.clone()));
    let s = setup(&mut control, args, filtered).await?;
    let message: String = (0..args.size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let publish = Arc::new(
        form(&[
            ("Action", "Publish"),
            ("Version", "2010-03-31"),
            ("TopicArn", &s.topic),
            ("Message", &message),
            ("MessageAttributes.entry.1.Name", "kind"),
            ("MessageAttributes.entry.1.Value.DataType", "String"),
            ("MessageAttributes.entry.1.Value.StringValue", "bench"),
            ("MessageAttributes.entry.2.Name", "size"),
            ("MessageAttributes.entry.2.Value.DataType", "Number"),
            ("MessageAttributes.entry.2.Value.StringValue", &args.size.to_string()),
        ])
        .into_bytes(),
    );
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop_at = measure_from + Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..args.connections.max(1) {
        let mut c = Client::new(Connection::new(endpoint.clone()));
        let body = publish.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut n, mut errors, mut lat, mut first) = (0u64, 0u64, Vec::new(), None);
            while !stop.load(Ordering::Relaxed) && Instant::now() < stop_at {
                let t = Instant::now();
                let r = c.call(&Api::Sns, &body).await;
                let measured = t >= measure_from && Instant::now() <= stop_at;
                match r {
                    Ok((200, _)) if measured => {
                        n += 1;
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Ok((200, _)) => {}
                    Ok((status, b)) => {
                        errors += 1;
                        first.get_or_insert(format!("{status}: {}", String::from_utf8_lossy(&b)));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
            }
            (n, errors, lat, first)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = queued(&mut control, &s.queues).await?;
    let counted_from = Instant::now();
    tokio::time::sleep_until(stop_at.into()).await;
    let counted_until = Instant::now();
    let after = queued(&mut control, &s.queues).await?;
    stop.store(true, Ordering::Relaxed);
    // Each count is a series of calls the server answers among the publishes; the copies are
    // counted over the time between the end of the first and the start of the second.
    let between = counted_until.saturating_duration_since(counted_from).as_secs_f64();
    let mut report = Report {
        publishes: 0,
        deliveries: (between >= args.seconds as f64 / 2.0).then(|| (after.saturating_sub(before), between)),
        seconds: args.seconds as f64,
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for w in workers {
        let (n, errors, lat, first) = w.await.context("publisher panicked")?;
        report.publishes += n;
        report.errors += errors;
        report.latencies_us.extend(lat);
        if report.first_error.is_none() {
            report.first_error = first;
        }
    }
    // Leave nothing behind on a durable server.
    let _ = control
        .ok(Api::Sns, form(&[("Action", "DeleteTopic"), ("Version", "2010-03-31"), ("TopicArn", &s.topic)]))
        .await;
    for url in &s.queues {
        let _ = control.sqs("DeleteQueue", json!({"QueueUrl": url})).await;
    }
    Ok(report)
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

pub fn run(args: SnsArgs) -> anyhow::Result<()> {
    let mut targets: Vec<(&str, String)> = args.endpoints.iter().map(|e| ("endpoint", e.clone())).collect();
    if let Some(peer) = &args.peer_endpoint {
        targets.push(("peer", peer.clone()));
    }
    // Every publisher on this thread, as `bench sqs` does by default.
    let (runtime, tool) = tool_runtime(1, args.tool_scheduling)?;
    println!(
        "wharf bench sns: Publish to a topic with {} SQS subscriptions (raw delivery); {} connections, {} B messages, \
         {} s warm-up + {} s measured per endpoint and scenario, {tool}",
        args.subscriptions, args.connections, args.size, args.warmup, args.seconds
    );
    println!(
        "| endpoint | filter policy | publishes/s | deliveries/s | Publish p50 ms | Publish p99 ms | errors |\n|---|---|---|---|---|---|---|"
    );
    for (role, url) in &targets {
        for filtered in [false, true] {
            let mut r = runtime
                .block_on(measure(&args, url, filtered))
                .with_context(|| format!("benchmark against {url}"))?;
            r.latencies_us.sort_unstable();
            println!(
                "| {role} {url} | {} | {:.0} | {} | {:.2} | {:.2} | {} |",
                if filtered { "on every subscription" } else { "none" },
                r.publishes as f64 / r.seconds,
                r.deliveries.map_or(
                    "- (counting took most of the window)".to_owned(),
                    |(copies, seconds)| format!("{:.0}", copies as f64 / seconds)
                ),
                percentile(&r.latencies_us, 0.50),
                percentile(&r.latencies_us, 0.99),
                r.errors,
            );
            if let Some(e) = r.first_error {
                println!("  first error: {e}");
            }
        }
    }
    Ok(())
}
