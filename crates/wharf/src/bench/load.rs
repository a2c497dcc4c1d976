//! `wharf bench load`: durable sends (and some deletes) through the engine on a real data
//! directory, one output line per message once it is durable. The crash test `kill -9`s this
//! program and then checks that every line it printed still holds; `bench recovery` uses
//! [`preload`] to fill a data directory.
//!
//! Messages are a pure function of (producer, number), so a checker can rebuild exactly what
//! each accepted message must look like.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use wharf_core::message::{AttributeValue, HeaderValue, Headers, Message, Properties};
use wharf_core::queue::{Queue, ReceiveRequest, SendOptions};
use wharf_core::settings::QueueSettings;
use wharf_core::Broker;
use wharf_store::FsyncMode;

use crate::config::Storage;

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "load")]
    pub queue: String,
    /// Concurrent producers; producer ids start at `--first-producer`.
    #[arg(long, default_value_t = 4)]
    pub producers: u32,
    #[arg(long, default_value_t = 0)]
    pub first_producer: u32,
    /// Messages per producer (0 = until killed).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Receive messages and delete every Nth one (0 = never receive).
    #[arg(long, default_value_t = 3)]
    pub delete_every: u64,
}

/// The message producer `p` sends as its `n`th: a body of varying length and content, typed
/// headers of several kinds, and properties — everything a restart must give back unchanged.
pub fn expected_message(producer: u32, n: u64) -> Message {
    let len = ((u64::from(producer) * 7919 + n * 104_729) % 3000 + 1) as usize;
    let seed = u64::from(producer) << 32 | n;
    let body: Vec<u8> =
        (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 131) % 251) as u8).collect();
    let mut headers = Headers::new();
    headers.insert("producer".into(), HeaderValue::U32(producer));
    headers.insert("n".into(), HeaderValue::I64(n as i64));
    headers.insert("label".into(), HeaderValue::String(format!("p{producer}-m{n}")));
    headers.insert(
        "price".into(),
        HeaderValue::Attribute {
            data_type: "Number.cents".into(),
            value: AttributeValue::String(format!("{n}.50")),
        },
    );
    headers.insert("blob".into(), HeaderValue::Bytes(Bytes::from(seed.to_be_bytes().to_vec())));
    Message {
        body: Bytes::from(body),
        headers,
        properties: Properties {
            content_type: Some("application/octet-stream".into()),
            persistent: true,
            correlation_id: Some(format!("c-{producer}-{n}")),
            ..Properties::default()
        },
        exchange: String::new(),
        routing_key: String::new(),
    }
}

fn open(data_dir: &Path) -> anyhow::Result<(Arc<dyn wharf_store::Store>, Arc<Broker>)> {
    let store = crate::serve::open_store(&Storage::Disk {
        dir: data_dir.to_owned(),
        fsync: FsyncMode::Always,
        group_commit_wait_percent: 0,
    })?;
    let broker = crate::observe::open_broker(store.clone())?;
    Ok((store, broker))
}

fn declare(broker: &Broker, queue: &str) -> anyhow::Result<Arc<Queue>> {
    let vhost = broker.vhost("/").context("default vhost")?;
    let (queue, _) = vhost.declare_queue(queue, QueueSettings::durable()).context("declare queue")?;
    Ok(queue)
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let (store, broker) = open(&args.data_dir)?;
        let queue = declare(&broker, &args.queue)?;
        let background = tokio::spawn(broker.clone().run());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for producer in args.first_producer..args.first_producer + args.producers {
            let queue = queue.clone();
            let limit = args.messages;
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while limit == 0 || n < limit {
                    let sent = queue.send(expected_message(producer, n), SendOptions::default())?;
                    sent.durable.wait().await?;
                    // Printed only after the message is durable: the crash test holds us to it.
                    println!("accepted {} {producer} {n}", sent.message_id);
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        if args.delete_every > 0 {
            let queue = queue.clone();
            let every = args.delete_every;
            let total = args.messages * u64::from(args.producers);
            tasks.push(tokio::spawn(async move {
                let mut received = 0u64;
                while total == 0 || received < total {
                    let request = ReceiveRequest {
                        max: 10,
                        visibility: Some(Duration::from_secs(3600)),
                        wait: Some(Duration::from_millis(200)),
                    };
                    let deliveries = queue.receive(request).await?;
                    if deliveries.is_empty() && total != 0 {
                        break;
                    }
                    for delivery in deliveries {
                        received += 1;
                        if received.is_multiple_of(every) {
                            // Announced first: if the process dies between here and "settled",
                            // the message may or may not be gone, and the checker allows both.
                            println!("deleting {}", delivery.message_id);
                            queue.delete(delivery.receipt)?.durable.wait().await?;
                            println!("settled {}", delivery.message_id);
                        }
                    }
                }
                anyhow::Ok(received)
            }));
        }
        let mut sent = 0;
        for task in tasks {
            sent += task.await.context("load task panicked")??;
        }
        background.abort();
        broker.shutdown();
        store.flush()?;
        let _ = std::io::stdout().flush();
        eprintln!("load: {sent} operations in {:.1} s", started.elapsed().as_secs_f64());
        anyhow::Ok(())
    })
}

/// Fill `data_dir` with `count` durable messages of `size` bytes in `queue`, as fast as group
/// commit allows (many sends in flight, each awaited for durability).
pub fn preload(data_dir: &Path, queue: &str, count: u64, size: usize) -> anyhow::Result<()> {
    const IN_FLIGHT: u64 = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let (store, broker) = open(data_dir)?;
        let queue = declare(&broker, queue)?;
        let body = Bytes::from(vec![b'x'; size]);
        let mut tasks = Vec::new();
        for lane in 0..IN_FLIGHT {
            let queue = queue.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = lane;
                while n < count {
                    let mut message = Message::new(body.clone());
                    message.properties.persistent = true;
                    queue.send(message, SendOptions::default())?.durable.wait().await?;
                    n += IN_FLIGHT;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await.context("preload task panicked")??;
        }
        broker.shutdown();
        store.flush()?;
        anyhow::Ok(())
    })
}
