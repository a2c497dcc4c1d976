//! `wharf bench amqp`: AMQP 0-9-1 throughput against wharf and a peer broker (RabbitMQ) in the
//! same run. The client is lean on purpose — frames are written pre-encoded and pipelined, and
//! deliveries are counted from the frame bytes without parsing them — because on a small machine
//! it shares the cores with the broker; it reports its own CPU share so the reader can judge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use anyhow::{bail, Context};
use bytes::BytesMut;
use clap::{Args, ValueEnum};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_amqp::codec::{self, RawFrame, FRAME_METHOD};

use super::sqs::{micros, own_cpu_seconds, percentiles};
use super::{tool_runtime, ToolScheduling};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 16-byte transient messages, 1 producer, 1 consumer, no confirms, auto-ack.
    Transient,
    /// 1 KiB persistent messages on a durable queue, publisher confirms (100 in flight),
    /// manual acks with prefetch 100; also confirm latency.
    Durable,
    /// One producer to a fanout exchange with 10 bound queues, one consumer each.
    Fanout,
}

#[derive(Args, Debug)]
pub struct AmqpArgs {
    /// wharf's AMQP address.
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub endpoint: SocketAddr,
    /// A peer broker measured the same way in the same run (e.g. RabbitMQ).
    #[arg(long)]
    pub peer_endpoint: Option<SocketAddr>,
    /// Scenarios to run, in order [default: all three].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Seconds per scenario and endpoint.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value = "guest")]
    pub user: String,
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// How the kernel schedules the tool's threads (see `ToolScheduling`).
    #[arg(long, value_enum, default_value_t)]
    pub tool_scheduling: ToolScheduling,
}

/// Most messages a producer may be ahead of its consumers: the measure is throughput end to
/// end, not how fast a broker can buffer.
const MAX_BACKLOG: u64 = 50_000;
const FRAME_MAX: u32 = 131_072;

struct Measured {
    delivered_per_sec: f64,
    confirm_ms: Option<(f64, f64, f64)>,
    tool_cpu_share: f64,
}

pub fn run(args: AmqpArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        vec![Scenario::Transient, Scenario::Durable, Scenario::Fanout]
    } else {
        args.scenarios.clone()
    };
    // The tool itself runs on one thread: it must not take both cores from the broker.
    let (runtime, tool) = tool_runtime(1, args.tool_scheduling)?;
    println!("wharf bench amqp: {} s per scenario and endpoint, {tool}", args.seconds);
    for scenario in scenarios {
        let mut rows = Vec::new();
        let mut endpoints = vec![("wharf", args.endpoint)];
        if let Some(peer) = args.peer_endpoint {
            endpoints.push(("peer", peer));
        }
        for (name, addr) in endpoints {
            let measured = runtime
                .block_on(measure(scenario, addr, &args))
                .with_context(|| format!("{scenario:?} against {name} ({addr})"))?;
            rows.push((name, addr, measured));
        }
        println!("{scenario:?}:");
        for (name, addr, m) in &rows {
            let confirms = match m.confirm_ms {
                Some((p50, p99, max)) => {
                    format!("  confirm p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms")
                }
                None => String::new(),
            };
            println!(
                "  {name:5} {addr}: {:>9.0} deliveries/s{confirms}  (tool CPU {:.0}% of one core)",
                m.delivered_per_sec,
                100.0 * m.tool_cpu_share
            );
        }
        if let [(_, _, ours), (_, _, peer)] = &rows[..] {
            println!("  wharf / peer: {:.2}x", ours.delivered_per_sec / peer.delivered_per_sec.max(1.0));
        }
    }
    Ok(())
}

async fn measure(scenario: Scenario, addr: SocketAddr, args: &AmqpArgs) -> anyhow::Result<Measured> {
    let run = format!("bench-{}-{}", std::process::id(), started_nanos());
    let duration = Duration::from_secs(args.seconds);
    let connect = || Client::connect(addr, &args.user, &args.password);
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (queues, exchange, durable, body_size) = match scenario {
        Scenario::Transient => (vec![run.clone()], String::new(), false, 16),
        Scenario::Durable => (vec![run.clone()], String::new(), true, 1024),
        Scenario::Fanout => ((0..10).map(|i| format!("{run}-{i}")).collect(), run.clone(), false, 16),
    };

    let mut setup = connect().await?;
    if !exchange.is_empty() {
        setup.declare_exchange(&exchange).await?;
    }
    for q in &queues {
        setup.declare_queue(q, durable).await?;
        if !exchange.is_empty() {
            setup.bind(q, &exchange).await?;
        }
    }
    let mut consumers = Vec::new();
    for q in &queues {
        let mut c = connect().await?;
        c.consume(q, !durable, if durable { 100 } else { 0 }).await?;
        let (delivered, stop) = (delivered.clone(), stop.clone());
        consumers.push(tokio::spawn(async move { c.count_deliveries(&delivered, &stop, durable).await }));
    }
    let fanout = queues.len() as u64;
    let mut producer = connect().await?;
    let routing_key = if exchange.is_empty() { queues[0].clone() } else { String::new() };
    let latencies =
        producer.produce(&exchange, &routing_key, body_size, durable, duration, &delivered, fanout).await?;
    let elapsed = started.elapsed();
    let total = delivered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        c.abort();
    }
    let tool_cpu = own_cpu_seconds() - cpu_before;
    for q in &queues {
        setup.delete_queue(q).await?;
    }
    if !exchange.is_empty() {
        setup
            .call(AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                exchange: exchange.as_str().into(),
                if_unused: false,
                nowait: false,
            })))
            .await?;
    }
    let mut latencies = latencies;
    Ok(Measured {
        delivered_per_sec: total as f64 / elapsed.as_secs_f64(),
        confirm_ms: if durable { percentiles(&mut latencies) } else { None },
        tool_cpu_share: tool_cpu / elapsed.as_secs_f64(),
    })
}

/// One connection with channel 1 open.
struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    out: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut c = Client { stream, rbuf: BytesMut::with_capacity(1 << 20), out: Vec::new() };
        c.stream.write_all(codec::PROTOCOL_HEADER).await?;
        c.expect_method(0).await?; // connection.start
        let mut client_properties = FieldTable::default();
        let mut caps = FieldTable::default();
        caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
        client_properties.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let response = format!("\0{user}\0{password}");
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongString::from(response.as_bytes()),
                locale: "en_US".into(),
            })),
        )
        .await?;
        match c.expect_method(0).await? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(_)) => {}
            other => bail!("expected connection.tune, got {other:?}"),
        }
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: FRAME_MAX,
                heartbeat: 0,
            })),
        )
        .await?;
        c.call_on(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await?;
        c.call(AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))).await?;
        Ok(c)
    }

    async fn send(&mut self, channel: u16, method: AMQPClass) -> anyhow::Result<()> {
        codec::write_method(&mut self.out, channel, method);
        self.flush().await
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn frame(&mut self) -> anyhow::Result<RawFrame> {
        read_frame(&mut self.stream, &mut self.rbuf).await
    }

    async fn expect_method(&mut self, channel: u16) -> anyhow::Result<AMQPClass> {
        loop {
            let frame = self.frame().await?;
            if frame.kind != FRAME_METHOD || frame.channel != channel {
                continue;
            }
            let method = amq_protocol::protocol::parse_class(&frame.payload[..])
                .map_err(|_| anyhow::anyhow!("malformed method from the broker"))?
                .1;
            if let AMQPClass::Channel(channel::AMQPMethod::Close(c)) = &method {
                bail!("channel closed by the broker: {} {}", c.reply_code, c.reply_text);
            }
            if let AMQPClass::Connection(connection::AMQPMethod::Close(c)) = &method {
                bail!("connection closed by the broker: {} {}", c.reply_code, c.reply_text);
            }
            return Ok(method);
        }
    }

    async fn call_on(&mut self, channel: u16, method: AMQPClass) -> anyhow::Result<AMQPClass> {
        self.send(channel, method).await?;
        self.expect_method(channel).await
    }

    async fn call(&mut self, method: AMQPClass) -> anyhow::Result<AMQPClass> {
        self.call_on(1, method).await
    }

    async fn declare_exchange(&mut self, name: &str) -> anyhow::Result<()> {
        self.call(AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: name.into(),
            kind: "fanout".into(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        })))
        .await
        .map(drop)
    }

    async fn declare_queue(&mut self, name: &str, durable: bool) -> anyhow::Result<()> {
        self.call(AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })))
        .await
        .map(drop)
    }

    async fn bind(&mut self, queue_name: &str, exchange_name: &str) -> anyhow::Result<()> {
        self.call(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: queue_name.into(),
            exchange: exchange_name.into(),
            routing_key: "".into(),
            nowait: false,
            arguments: FieldTable::default(),
        })))
        .await
        .map(drop)
    }

    async fn delete_queue(&mut self, name: &str) -> anyhow::Result<()> {
        self.call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: name.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))
        .await
        .map(drop)
    }

    async fn consume(&mut self, queue_name: &str, no_ack: bool, prefetch: u16) -> anyhow::Result<()> {
        if prefetch > 0 {
            self.call(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })))
            .await?;
        }
        self.call(AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue_name.into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })))
        .await
        .map(drop)
    }

    /// Count basic.deliver frames from their first bytes; with manual acks, ack everything
    /// read so far with one `multiple` ack per read.
    async fn count_deliveries(
        mut self,
        delivered: &AtomicU64,
        stop: &AtomicBool,
        ack: bool,
    ) -> anyhow::Result<()> {
        let mut last_tag = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("the broker closed the consumer connection");
            }
            let mut count = 0;
            while let Some(frame) =
                codec::split_frame(&mut self.rbuf, FRAME_MAX).map_err(|e| anyhow::anyhow!(e.0))?
            {
                // class 60 (basic), method 60 (deliver): consumer-tag (short string), then the tag.
                let p = &frame.payload;
                if frame.kind == FRAME_METHOD && p.len() > 5 && p[..4] == [0, 60, 0, 60] {
                    count += 1;
                    let tag_at = 5 + usize::from(p[4]);
                    if let Some(bytes) = p.get(tag_at..tag_at + 8) {
                        last_tag = u64::from_be_bytes(bytes.try_into().unwrap_or_default());
                    }
                }
            }
            delivered.fetch_add(count, Ordering::Relaxed);
            if ack && count > 0 {
                self.send(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: last_tag,
                        multiple: true,
                    })),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Publish for `duration`: pipelined batches (transient) or with at most 100 unconfirmed
    /// (durable). Returns confirm latencies in µs.
    #[allow(clippy::too_many_arguments)]
    async fn produce(
        &mut self,
        exchange_name: &str,
        routing_key: &str,
        body_size: usize,
        durable: bool,
        duration: Duration,
        delivered: &AtomicU64,
        fanout: u64,
    ) -> anyhow::Result<Vec<u32>> {
        let properties = basic::AMQPProperties::default().with_delivery_mode(if durable { 2 } else { 1 });
        let mut one = Vec::new();
        codec::write_method(
            &mut one,
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange_name.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        );
        codec::write_content(&mut one, 1, properties, &vec![b'x'; body_size], FRAME_MAX);
        let deadline = Instant::now() + duration;
        let mut published = 0u64;
        let mut latencies = Vec::new();
        if !durable {
            let batch: Vec<u8> = one.repeat(256);
            while Instant::now() < deadline {
                if published.saturating_sub(delivered.load(Ordering::Relaxed) / fanout) > MAX_BACKLOG {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                self.stream.write_all(&batch).await?;
                published += 256;
            }
            return Ok(latencies);
        }
        self.call(AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }))).await?;
        let mut sent_at = std::collections::VecDeque::new(); // (seq, when), seq from 1
        let mut next_seq = 1u64;
        while Instant::now() < deadline {
            while sent_at.len() < 100 {
                self.out.extend_from_slice(&one);
                sent_at.push_back((next_seq, Instant::now()));
                next_seq += 1;
            }
            self.flush().await?;
            // Wait for at least one confirm; take every frame already read.
            loop {
                let frame = self.frame().await?;
                if frame.kind != FRAME_METHOD {
                    continue;
                }
                let (tag, multiple, ack) = match amq_protocol::protocol::parse_class(&frame.payload[..]) {
                    Ok((_, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))) => {
                        (a.delivery_tag, a.multiple, true)
                    }
                    Ok((_, AMQPClass::Basic(basic::AMQPMethod::Nack(n)))) => {
                        (n.delivery_tag, n.multiple, false)
                    }
                    _ => continue,
                };
                if !ack {
                    bail!("the broker refused publish {tag} (nack)");
                }
                let now = Instant::now();
                while let Some(&(seq, at)) = sent_at.front() {
                    if seq > tag || (!multiple && seq != tag) {
                        break;
                    }
                    latencies.push(micros(now - at));
                    sent_at.pop_front();
                }
                if self.rbuf.is_empty() {
                    break;
                }
            }
        }
        Ok(latencies)
    }
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, rbuf: &mut BytesMut) -> anyhow::Result<RawFrame> {
    loop {
        if let Some(frame) = codec::split_frame(rbuf, FRAME_MAX).map_err(|e| anyhow::anyhow!(e.0))? {
            return Ok(frame);
        }
        if reader.read_buf(rbuf).await? == 0 {
            bail!("the broker closed the connection");
        }
    }
}

/// A per-run suffix for queue names, so runs never collide with each other's leftovers.
fn started_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
