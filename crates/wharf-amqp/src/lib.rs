//! AMQP 0-9-1, RabbitMQ's protocol, over the wharf engine. Queues and exchanges are the
//! engine's: a queue declared here is the queue SQS sees under the same name in its vhost.
//!
//! - `codec`: frames on the wire (amq-protocol parses and writes method payloads).
//! - `connection`: handshake, the frame loop, heartbeats, the writer and confirmer tasks.
//! - `channel`: every channel method, publish content assembly, deliveries, acks, confirms,
//!   transactions.
//! - `convert`: field tables, properties and queue arguments to engine values.
//! - `error`: reply codes and RabbitMQ's reply texts.
//! - `users`: who may log in.

mod channel;
pub mod codec;
mod connection;
mod convert;
mod error;
mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use wharf_core::Broker;

pub use error::{AmqpError, Scope};
pub use users::{hash_password, Permission, PermissionSpec, Resource, User, UserSpec, Users};

/// Limits and defaults of the AMQP listener; each is documented in the crate README.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// Largest frame, overhead included, offered in connection.tune (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Most channels per connection offered in connection.tune (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, in seconds; 0 disables (RabbitMQ: 60).
    pub heartbeat: u16,
    /// A client must finish the handshake (header to connection.open) within this.
    pub handshake_timeout: Duration,
    /// Largest message body accepted (RabbitMQ 4: 16 MiB).
    pub max_message_size: u32,
    /// How long a delivery may stay unacked before its channel is closed with 406, as
    /// RabbitMQ's `consumer_timeout` (default 30 minutes; None: no limit). A queue's
    /// `x-consumer-timeout` overrides it.
    pub consumer_timeout: Option<Duration>,
    /// Above this many bytes of queued message bodies (all queues, all vhosts), connections
    /// that publish are blocked (connection.blocked, and their sockets are not read) until the
    /// total falls below 90% of it. None: never.
    pub queued_bytes_high_watermark: Option<u64>,
    pub users: Users,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            queued_bytes_high_watermark: None,
            users: Users::guest_only(),
        }
    }
}

pub(crate) struct Shared {
    pub broker: Arc<Broker>,
    pub config: AmqpConfig,
    next_connection_id: AtomicU64,
    /// True while queued bytes are above the high watermark: publishers are blocked.
    pub alarm: watch::Receiver<bool>,
}

impl Shared {
    /// An owner id for exclusive queues, unique for the life of the process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serve AMQP 0-9-1 on `listener` until `shutdown` resolves; then every connection is closed
/// with 320 CONNECTION_FORCED, as RabbitMQ does when it stops.
pub async fn serve<L>(
    mut listener: L,
    broker: Arc<Broker>,
    config: AmqpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let (alarm_tx, alarm) = watch::channel(false);
    let watermark = config.queued_bytes_high_watermark;
    let shared = Arc::new(Shared { broker, config, next_connection_id: AtomicU64::new(1), alarm });
    let monitor =
        watermark.map(|high| tokio::spawn(watch_queued_bytes(shared.broker.clone(), high, alarm_tx)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer) = listener.accept() => {
                connections.spawn(connection::run(stream, peer, shared.clone(), stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    let _ = stop_tx.send(true);
    if let Some(monitor) = monitor {
        monitor.abort();
    }
    // Each connection sends connection.close and waits a moment for close-ok.
    let _ = tokio::time::timeout(Duration::from_secs(4), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// How often the queued bytes are summed for the publisher alarm.
const ALARM_CHECK: Duration = Duration::from_millis(100);

/// Raise the alarm above `high` queued bytes, clear it below 90% of `high`, as RabbitMQ's
/// memory alarm does for its watermark.
async fn watch_queued_bytes(broker: Arc<Broker>, high: u64, alarm: watch::Sender<bool>) {
    let low = high / 10 * 9;
    loop {
        tokio::time::sleep(ALARM_CHECK).await;
        let queued: u64 = broker.queue_stats().iter().map(|q| q.stats.bytes).sum();
        alarm.send_if_modified(|raised| {
            let next = if *raised { queued >= low } else { queued > high };
            if next != *raised {
                tracing::warn!(queued, high, "publisher alarm {}", if next { "raised" } else { "cleared" });
            }
            std::mem::replace(raised, next) != next
        });
    }
}
