//! One client connection: the handshake, then a loop that reads frames, runs their methods,
//! and writes what they produce. Writing happens on a task of its own, so a client that is slow
//! to read never stops this loop from reading (and a client that writes while it is not
//! reading cannot deadlock against us).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::{channel, connection, parse_class, AMQPClass};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};
use wharf_core::VHost;
use wharf_store::{Durable, SyncWatermark};

use crate::channel::Channel;
use crate::codec::{self, RawFrame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE};
use crate::error::{AmqpError, Scope};
use crate::users::{Permission, Resource, User};
use crate::Shared;

/// Things that happen off the read path and come back to the connection loop: deliveries
/// from the engine, and confirms (or tx.commit-ok) once the store says the data is durable.
pub(crate) enum Event {
    Delivery { channel: u16, serial: u64, consumer_tag: Arc<str>, event: wharf_core::ConsumerEvent },
    Durable { channel: u16, serial: u64, then: AfterDurable, ok: bool },
}

/// What to send when a publish (or a transaction) is durable.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AfterDurable {
    Confirm(u64),
    CommitOk,
}

/// A wait for durability, settled in publish order by the connection loop. `durable: None`
/// means the publish was refused (a publisher nack).
pub(crate) struct DurableJob {
    pub channel: u16,
    pub serial: u64,
    pub durable: Option<Durable>,
    pub then: AfterDurable,
}

/// What every channel of a connection shares.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub vhost: Arc<VHost>,
    pub connection_id: u64,
    pub user: Arc<User>,
    pub frame_max: u32,
    /// Pending output; handed to the writer after each batch of work.
    pub out: Vec<u8>,
    pub events: mpsc::UnboundedSender<Event>,
    /// Waits for durability, oldest first; the loop settles them as the store's watermark
    /// moves, with no task in between (a hop per confirm batch was most of the latency left
    /// after the disk's).
    pub durable_jobs: VecDeque<DurableJob>,
    /// The client understands a server-sent basic.cancel.
    pub cancel_notify: bool,
    /// This connection has published: the publisher alarm applies to it.
    pub published: bool,
}

impl Ctx {
    pub fn method(&mut self, channel: u16, method: AMQPClass) {
        codec::write_method(&mut self.out, channel, method);
    }

    /// The user's permission for `name` in this connection's vhost (403 ACCESS_REFUSED).
    pub fn check(&self, permission: Permission, kind: Resource, name: &str) -> Result<(), AmqpError> {
        self.user.check(self.vhost.name(), permission, kind, name).map_err(AmqpError::access_refused)
    }
}

/// Why the handshake ended without a session.
enum Refused {
    /// The socket closed or failed; nothing more to say.
    Gone,
    /// Close with this error (then wait briefly for close-ok).
    Error(AmqpError),
    /// Close the socket without a word (wrong protocol header: we already answered it).
    Silently,
}

pub(crate) async fn run<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_task = tokio::spawn(write_loop(writer, out_rx));
    let mut rbuf = BytesMut::with_capacity(64 * 1024);

    let timeout = shared.config.handshake_timeout;
    let handshake = tokio::time::timeout(timeout, handshake(&mut reader, &mut rbuf, &out_tx, &shared, peer));
    let session = match handshake.await {
        Ok(Ok(session)) => session,
        Ok(Err(Refused::Error(e))) => {
            debug!(%peer, "AMQP handshake refused: {e}");
            let _ = out_tx.send(close_frame(&e));
            drop(out_tx);
            let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
            return;
        }
        Ok(Err(Refused::Gone | Refused::Silently)) => {
            drop(out_tx);
            let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
            return;
        }
        Err(_) => {
            debug!(%peer, "AMQP handshake timed out after {timeout:?}");
            drop(out_tx);
            writer_task.abort();
            return;
        }
    };
    info!(%peer, user = %session.user.name(), vhost = %session.vhost.name(), "AMQP connection open");

    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        ctx: Ctx {
            shared: shared.clone(),
            vhost: session.vhost,
            connection_id: shared.next_connection_id(),
            user: session.user,
            frame_max: session.frame_max,
            out: Vec::new(),
            events: events_tx,
            durable_jobs: VecDeque::new(),
            cancel_notify: session.cancel_notify,
            published: false,
        },
        channel_max: session.channel_max,
        channels: HashMap::new(),
        next_serial: 1,
        closing: None,
        closed: false,
    };

    let heartbeat = Duration::from_secs(u64::from(session.heartbeat));
    let mut ticker =
        tokio::time::interval(if heartbeat.is_zero() { Duration::from_secs(3600) } else { heartbeat / 2 });
    ticker.tick().await;
    // Consumer timeouts are checked once a second, as RabbitMQ does (roughly).
    let mut timeouts = tokio::time::interval(Duration::from_secs(1));
    let mut last_read = Instant::now();
    let mut wrote_since_tick = false;
    let mut alarm = shared.alarm.clone();
    // connection.blocked was sent and not yet undone by connection.unblocked.
    let mut told_blocked = false;
    // The store's watermark, once a publish waits on it.
    let mut watermark = None;

    loop {
        // A publisher under the alarm is not read from: TCP pushes back on it, as RabbitMQ does.
        let blocked = *alarm.borrow() && conn.ctx.published;
        tokio::select! {
            read = reader.read_buf(&mut rbuf), if !blocked => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => last_read = Instant::now(),
                }
                conn.on_input(&mut rbuf);
            }
            Some(event) = events_rx.recv() => {
                conn.on_event(event);
                // Deliveries come in bursts; write them out together.
                for _ in 0..256 {
                    match events_rx.try_recv() {
                        Ok(event) => conn.on_event(event),
                        Err(_) => break,
                    }
                }
            }
            () = watermark_moved(&mut watermark), if !conn.ctx.durable_jobs.is_empty() => {}
            _ = ticker.tick() => {
                if blocked {
                    // Not reading is our doing: the client is not silent.
                    last_read = Instant::now();
                }
                if !heartbeat.is_zero() {
                    if last_read.elapsed() > heartbeat * 2 {
                        info!(%peer, "missed heartbeats from client, timeout: {}s", heartbeat.as_secs());
                        break;
                    }
                    if !wrote_since_tick {
                        codec::write_heartbeat(&mut conn.ctx.out);
                    }
                }
                wrote_since_tick = false;
            }
            _ = timeouts.tick(), if conn.closing.is_none() => conn.check_consumer_timeouts(),
            Ok(()) = alarm.changed() => {
                let raised = *alarm.borrow_and_update();
                if session.blocked_notify && raised != told_blocked {
                    told_blocked = raised;
                    let method = if raised {
                        connection::AMQPMethod::Blocked(connection::Blocked { reason: "low on memory".into() })
                    } else {
                        connection::AMQPMethod::Unblocked(connection::Unblocked {})
                    };
                    conn.ctx.method(0, AMQPClass::Connection(method));
                }
            }
            _ = stop.changed(), if conn.closing.is_none() => {
                let e = AmqpError::connection_forced("broker forced connection closure with reason 'shutdown'");
                conn.close_connection(e);
            }
        }
        conn.settle_durable_jobs(&mut watermark);
        if !conn.ctx.out.is_empty() {
            wrote_since_tick = true;
            if out_tx.send(std::mem::take(&mut conn.ctx.out)).is_err() {
                break;
            }
        }
        // After the output above, so a close-ok (or our close) is on its way out first.
        if conn.closed || conn.closing.is_some_and(|deadline| Instant::now() > deadline) {
            break;
        }
    }
    conn.shutdown();
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    info!(%peer, "AMQP connection closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut chunk) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            chunk.extend_from_slice(&more);
        }
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Resolves when the store's watermark moves (never while there is none to watch, or once the
/// store is gone: the jobs are then settled by the watermark's final state).
async fn watermark_moved(watermark: &mut Option<watch::Receiver<SyncWatermark>>) {
    let moved = match watermark {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !moved {
        std::future::pending::<()>().await;
    }
}

fn close_frame(e: &AmqpError) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_method(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        })),
    );
    out
}

struct Session {
    vhost: Arc<VHost>,
    user: Arc<User>,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    cancel_notify: bool,
    blocked_notify: bool,
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    frame_max: u32,
) -> Result<RawFrame, Refused> {
    loop {
        match codec::split_frame(rbuf, frame_max) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(Refused::Error(AmqpError::frame_error(e.0))),
        }
        match reader.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(Refused::Gone),
            Ok(_) => {}
        }
    }
}

/// The next method of the handshake, which must be on channel 0.
async fn read_method<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    frame_max: u32,
) -> Result<connection::AMQPMethod, Refused> {
    loop {
        let frame = read_frame(reader, rbuf, frame_max).await?;
        match (frame.kind, frame.channel) {
            (FRAME_HEARTBEAT, 0) => continue,
            (FRAME_METHOD, 0) => {}
            _ => {
                return Err(Refused::Error(AmqpError::unexpected_frame(
                    "only connection methods on channel 0 are allowed during the handshake",
                )))
            }
        }
        return match parse_class(&frame.payload[..]) {
            Ok((_, AMQPClass::Connection(method))) => Ok(method),
            Ok(_) => Err(Refused::Error(AmqpError::command_invalid("expected a connection method"))),
            Err(_) => Err(Refused::Error(AmqpError::syntax_error("malformed method frame"))),
        };
    }
}

fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props.insert("product".into(), text("wharf"));
    props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), text("Rust"));
    props.insert("cluster_name".into(), text("wharf"));
    props.insert("information".into(), text("one small, durable message server: SQS, SNS and AMQP 0-9-1"));
    props
}

/// (username, password) from a SASL response.
fn credentials(mechanism: &str, response: &[u8]) -> Result<(String, String), AmqpError> {
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|b| *b == 0);
            let (_, user, pass) = (parts.next(), parts.next(), parts.next());
            match (user, pass, parts.next()) {
                (Some(user), Some(pass), None) => Ok((
                    String::from_utf8_lossy(user).into_owned(),
                    String::from_utf8_lossy(pass).into_owned(),
                )),
                _ => Err(AmqpError::access_refused("malformed PLAIN response")),
            }
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut table = Vec::with_capacity(response.len() + 4);
            table.extend_from_slice(&(response.len() as u32).to_be_bytes());
            table.extend_from_slice(response);
            let parsed = parse_field_table(&table[..])
                .map_err(|_| AmqpError::access_refused("malformed AMQPLAIN response"))?
                .1;
            let field = |k: &str| parsed.inner().get(k).and_then(crate::convert::text);
            match (field("LOGIN"), field("PASSWORD")) {
                (Some(user), Some(pass)) => Ok((user, pass)),
                _ => Err(AmqpError::access_refused("AMQPLAIN response without LOGIN and PASSWORD")),
            }
        }
        other => Err(AmqpError::command_invalid(format!("unknown authentication mechanism '{other}'"))),
    }
}

async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    shared: &Arc<Shared>,
    peer: SocketAddr,
) -> Result<Session, Refused> {
    while rbuf.len() < 8 {
        match reader.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(Refused::Gone),
            Ok(_) => {}
        }
    }
    if &rbuf[..8] != codec::PROTOCOL_HEADER {
        // The spec's answer to a header we do not speak: ours, then close.
        let _ = out.send(codec::PROTOCOL_HEADER.to_vec());
        return Err(Refused::Silently);
    }
    let _ = rbuf.split_to(8);
    let config = &shared.config;
    let send = |method: connection::AMQPMethod| {
        let mut buf = Vec::new();
        codec::write_method(&mut buf, 0, AMQPClass::Connection(method));
        let _ = out.send(buf);
    };
    send(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    }));
    let connection::AMQPMethod::StartOk(start_ok) = read_method(reader, rbuf, FRAME_MIN_SIZE).await? else {
        return Err(Refused::Error(AmqpError::command_invalid("expected connection.start-ok")));
    };
    let capability = |name: &str| {
        let caps = start_ok.client_properties.inner().get("capabilities");
        matches!(caps, Some(AMQPValue::FieldTable(t)) if matches!(t.inner().get(name), Some(AMQPValue::Boolean(true))))
    };
    let mechanism = start_ok.mechanism.as_str().to_owned();
    let (user, password) = credentials(&mechanism, start_ok.response.as_bytes()).map_err(Refused::Error)?;
    let user = match config.users.authenticate(&user, &password, peer.ip()) {
        Ok(user) => user,
        Err(reason) => {
            info!(%peer, %user, "AMQP login refused: {reason}");
            let e = AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ));
            // Clients that do not announce authentication_failure_close expect the socket to just
            // close (the 0-9-1 way); the others get the reason.
            return Err(if capability("authentication_failure_close") {
                Refused::Error(e)
            } else {
                Refused::Silently
            });
        }
    };
    send(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat: config.heartbeat,
    }));
    let connection::AMQPMethod::TuneOk(tune) = read_method(reader, rbuf, FRAME_MIN_SIZE).await? else {
        return Err(Refused::Error(AmqpError::command_invalid("expected connection.tune-ok")));
    };
    let frame_max = match tune.frame_max {
        0 => config.frame_max,
        n if n < FRAME_MIN_SIZE => {
            return Err(Refused::Error(AmqpError::not_allowed(format!(
                "frame_max={n} < {FRAME_MIN_SIZE} min size"
            ))))
        }
        n if n > config.frame_max => {
            return Err(Refused::Error(AmqpError::not_allowed(format!(
                "frame_max={n} > {} max size",
                config.frame_max
            ))))
        }
        n => n,
    };
    let channel_max = match tune.channel_max {
        0 => config.channel_max,
        n if n > config.channel_max => {
            return Err(Refused::Error(AmqpError::not_allowed(format!(
                "channel_max={n} > {} max",
                config.channel_max
            ))))
        }
        n => n,
    };
    let connection::AMQPMethod::Open(open) = read_method(reader, rbuf, frame_max).await? else {
        return Err(Refused::Error(AmqpError::command_invalid("expected connection.open")));
    };
    let vhost_name = open.virtual_host.as_str();
    let vhost = shared
        .broker
        .vhost(vhost_name)
        .map_err(|_| Refused::Error(AmqpError::not_allowed(format!("vhost {vhost_name} not found"))))?;
    if !user.may_open_vhost(vhost_name) {
        return Err(Refused::Error(AmqpError::not_allowed(format!(
            "access to vhost '{vhost_name}' refused for user '{}'",
            user.name()
        ))));
    }
    send(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    Ok(Session {
        vhost,
        user,
        frame_max,
        channel_max,
        heartbeat: tune.heartbeat,
        cancel_notify: capability("consumer_cancel_notify"),
        blocked_notify: capability("connection.blocked"),
    })
}

struct Connection {
    ctx: Ctx,
    channel_max: u16,
    channels: HashMap<u16, Channel>,
    next_serial: u64,
    /// Set once we sent connection.close: the deadline for the client's close-ok.
    closing: Option<Instant>,
    closed: bool,
}

impl Connection {
    /// Run every whole frame in `rbuf`, until the connection is finished.
    fn on_input(&mut self, rbuf: &mut BytesMut) {
        while !self.closed {
            let frame = match codec::split_frame(rbuf, self.ctx.frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    self.close_connection(AmqpError::frame_error(e.0));
                    // Nothing after a framing error can be trusted: stop reading.
                    rbuf.clear();
                    return;
                }
            };
            if let Err(e) = self.on_frame(frame) {
                // Channel errors were handled by their channel; what comes up is the
                // connection's.
                debug_assert_eq!(e.scope, Scope::Connection);
                self.close_connection(e);
            }
        }
    }

    fn on_frame(&mut self, frame: RawFrame) -> Result<(), AmqpError> {
        if self.closing.is_some() {
            // After connection.close only close-ok (or the client's own close) matters.
            if frame.kind == FRAME_METHOD && frame.channel == 0 {
                if let Ok((_, AMQPClass::Connection(m))) = parse_class(&frame.payload[..]) {
                    if matches!(m, connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_)) {
                        self.closed = true;
                    }
                }
            }
            return Ok(());
        }
        match frame.kind {
            FRAME_HEARTBEAT if frame.channel == 0 => Ok(()),
            FRAME_HEARTBEAT => Err(AmqpError::frame_error("heartbeat frame on a channel other than 0")),
            FRAME_METHOD => {
                let method = parse_class(&frame.payload[..])
                    .map_err(|_| AmqpError::syntax_error("malformed method frame"))?
                    .1;
                if frame.channel == 0 {
                    self.on_connection_method(method)
                } else {
                    self.on_channel_method(frame.channel, method)
                }
            }
            FRAME_HEADER | FRAME_BODY if frame.channel == 0 => {
                Err(AmqpError::unexpected_frame("content frame on channel 0"))
            }
            FRAME_HEADER => {
                let header = parse_content_header(&frame.payload[..])
                    .map_err(|_| AmqpError::syntax_error("malformed content header frame"))?
                    .1;
                self.with_channel(frame.channel, |ch, ctx| ch.on_header(ctx, header))
            }
            _ => self.with_channel(frame.channel, |ch, ctx| ch.on_body(ctx, frame.payload)),
        }
    }

    fn on_connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.ctx.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.closing = Some(Instant::now());
                self.closed = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                Err(AmqpError::not_implemented("connection.update-secret is not supported"))
            }
            AMQPClass::Connection(
                connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_),
            ) => Ok(()),
            other => Err(AmqpError::command_invalid(format!(
                "unexpected method {}.{} on channel 0",
                other.get_amqp_class_id(),
                other.get_amqp_method_id()
            ))
            .during(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }

    fn on_channel_method(&mut self, id: u16, method: AMQPClass) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        if id > self.channel_max {
            return Err(AmqpError::channel_error(format!(
                "channel {id} is above the negotiated channel_max of {}",
                self.channel_max
            ))
            .during(class_id, method_id));
        }
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::channel_error(format!(
                        "second 'channel.open' seen on channel {id}"
                    ))
                    .during(class_id, method_id));
                }
                let serial = self.next_serial;
                self.next_serial += 1;
                self.channels.insert(id, Channel::new(id, serial));
                self.ctx.method(id, AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                if let Some(mut ch) = self.channels.remove(&id) {
                    ch.shutdown();
                }
                self.ctx.method(id, AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                if let Some(ch) = self.channels.get(&id) {
                    if ch.closing {
                        self.channels.remove(&id);
                    }
                }
                Ok(())
            }
            method => self.with_channel(id, |ch, ctx| ch.on_method(ctx, method)),
        }
    }

    /// Run `f` on an open channel. A channel error closes that channel; a connection error
    /// goes up. Frames for a channel that is closing are dropped, as the spec says.
    fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &mut Ctx) -> Result<(), AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(AmqpError::channel_error(format!("expected 'channel.open' on channel {id}")));
        };
        if ch.closing {
            return Ok(());
        }
        match f(ch, &mut self.ctx) {
            Err(e) if e.scope == Scope::Channel => {
                debug!(channel = id, "closing channel: {e}");
                ch.shutdown();
                ch.closing = true;
                self.ctx.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: e.code,
                        reply_text: e.reply_text().into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
                Ok(())
            }
            other => other,
        }
    }

    fn on_event(&mut self, event: Event) {
        let (channel, serial) = match &event {
            Event::Delivery { channel, serial, .. } | Event::Durable { channel, serial, .. } => {
                (*channel, *serial)
            }
        };
        match self.channels.get_mut(&channel) {
            Some(ch) if ch.serial == serial && !ch.closing => ch.on_event(&mut self.ctx, event),
            // The channel is gone: its consumers were dropped, so the engine already took back
            // what they held; a delivery still in the pipe goes back too.
            _ => {
                if let Event::Delivery { event: wharf_core::ConsumerEvent::Delivery(d), .. } = event {
                    Channel::requeue_orphan(&self.ctx, &d);
                }
            }
        }
    }

    /// Settle, oldest first, every durability wait that is over (confirms, nacks, commit-oks),
    /// then send each channel's confirms as one `multiple` ack. Stops at the first write not yet
    /// durable, keeping publish order; `watermark` is then what the loop waits on.
    fn settle_durable_jobs(&mut self, watermark: &mut Option<watch::Receiver<SyncWatermark>>) {
        if let Some(rx) = watermark.as_mut() {
            // Seen from here on: a move after this wakes the loop again.
            rx.borrow_and_update();
        }
        while let Some(job) = self.ctx.durable_jobs.front() {
            let ok = match &job.durable {
                None => false,
                Some(durable) => match durable.check() {
                    Some(result) => result.is_ok(),
                    None => {
                        if watermark.is_none() {
                            *watermark = durable.watermark();
                        }
                        break;
                    }
                },
            };
            let job = self.ctx.durable_jobs.pop_front().expect("the front job exists");
            self.on_event(Event::Durable { channel: job.channel, serial: job.serial, then: job.then, ok });
        }
        self.flush_confirms();
    }

    fn flush_confirms(&mut self) {
        for ch in self.channels.values_mut() {
            ch.flush_confirms(&mut self.ctx);
        }
    }

    fn check_consumer_timeouts(&mut self) {
        let now = Instant::now();
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            // A channel error closes just that channel; nothing here is a connection error.
            let _ = self.with_channel(id, |ch, _| ch.check_consumer_timeout(now));
        }
    }

    fn close_connection(&mut self, e: AmqpError) {
        if self.closing.is_some() {
            return;
        }
        info!("closing AMQP connection: {e}");
        for (_, mut ch) in self.channels.drain() {
            ch.shutdown();
        }
        self.ctx.out.extend_from_slice(&close_frame(&e));
        self.closing = Some(Instant::now() + Duration::from_secs(3));
    }

    /// The connection is over: give back everything its channels held, and delete its
    /// exclusive queues.
    fn shutdown(&mut self) {
        for (_, mut ch) in self.channels.drain() {
            ch.shutdown();
        }
        self.ctx.vhost.owner_closed(self.ctx.connection_id);
    }
}
