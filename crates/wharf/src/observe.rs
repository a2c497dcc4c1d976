//! The bridge between the engine and everything around it in the binary: opening the broker
//! the same way for `serve` and the load programs, declaring what the config file asks for,
//! and turning engine and store state into the admin listener's snapshot.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use parking_lot::Mutex;
use wharf_admin::{DamagedQueue, Health, HealthStatus, Observe, QueueSample, Snapshot, StoreSample};
use wharf_core::clock::SystemClock;
use wharf_core::routing::{Binding, Destination, ExchangeKind};
use wharf_core::settings::ExchangeSettings;
use wharf_core::{Broker, BrokerConfig};
use wharf_store::Store;

use crate::config::Settings;
use crate::connections::ConnectionGauge;

/// Open the engine on a store: loads definitions and recovers every queue.
pub fn open_broker(store: Arc<dyn Store>) -> anyhow::Result<Arc<Broker>> {
    Broker::open(store, Arc::new(SystemClock), BrokerConfig::default()).context("cannot open the engine")
}

/// Declare the config file's queues, then exchanges, then bindings (so order in the file does
/// not matter). Idempotent; a mismatch with what exists is an error naming the object.
pub fn declare_from_config(broker: &Broker, settings: &Settings) -> anyhow::Result<()> {
    for name in &settings.vhosts {
        vhost(broker, name)?;
    }
    for decl in &settings.queues {
        let vhost = vhost(broker, &decl.vhost)?;
        vhost
            .declare_queue(&decl.name, decl.to_settings()?)
            .with_context(|| format!("cannot declare queue '{}'", decl.name))?;
    }
    for decl in &settings.exchanges {
        let vhost = vhost(broker, &decl.vhost)?;
        let kind: ExchangeKind = decl.kind.parse().with_context(|| format!("exchange '{}'", decl.name))?;
        let exchange_settings = ExchangeSettings { durable: decl.durable, ..ExchangeSettings::default() };
        vhost
            .declare_exchange(&decl.name, kind, exchange_settings)
            .with_context(|| format!("cannot declare exchange '{}'", decl.name))?;
    }
    for decl in &settings.bindings {
        let vhost = vhost(broker, &decl.vhost)?;
        let binding = Binding {
            destination: Destination::Queue(decl.queue.clone()),
            routing_key: decl.routing_key.clone(),
            arguments: Default::default(),
        };
        vhost
            .bind(&decl.exchange, binding)
            .with_context(|| format!("cannot bind queue '{}' to exchange '{}'", decl.queue, decl.exchange))?;
    }
    Ok(())
}

fn vhost(broker: &Broker, name: &str) -> anyhow::Result<Arc<wharf_core::VHost>> {
    match broker.vhost(name) {
        Ok(vhost) => Ok(vhost),
        Err(_) => broker.create_vhost(name).with_context(|| format!("cannot create vhost '{name}'")),
    }
}

/// (queues, messages) across every vhost, for the start-up block.
pub fn queue_totals(broker: &Broker) -> (usize, u64) {
    let queues = broker.queue_stats();
    let messages = queues.iter().map(|q| q.stats.ready + q.stats.in_flight + q.stats.delayed).sum();
    (queues.len(), messages)
}

/// What the admin listener reads. The broker arrives after recovery; until then /health says
/// "starting" and /metrics reports the store alone.
pub struct ServerState {
    store: Arc<dyn Store>,
    broker: OnceLock<Arc<Broker>>,
    status: Mutex<HealthStatus>,
    started: Instant,
    /// Open connections per protocol front end that is listening.
    connections: Mutex<Vec<(&'static str, ConnectionGauge)>>,
}

impl ServerState {
    pub fn new(store: Arc<dyn Store>, started: Instant) -> Self {
        ServerState {
            store,
            broker: OnceLock::new(),
            status: Mutex::new(HealthStatus::Starting),
            started,
            connections: Mutex::new(Vec::new()),
        }
    }

    /// The open-connection gauge of `protocol`, reported on /metrics from now on.
    pub fn connections(&self, protocol: &'static str) -> ConnectionGauge {
        let gauge = ConnectionGauge::default();
        self.connections.lock().push((protocol, gauge.clone()));
        gauge
    }

    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    pub fn set_status(&self, status: HealthStatus) {
        *self.status.lock() = status;
    }
}

impl Observe for ServerState {
    fn health(&self) -> Health {
        let damaged_queues: Vec<DamagedQueue> = self
            .broker
            .get()
            .map(|b| b.damaged_queues())
            .unwrap_or_default()
            .into_iter()
            .map(|d| DamagedQueue { vhost: d.vhost, queue: d.queue, reason: d.reason })
            .collect();
        let mut status = *self.status.lock();
        if status == HealthStatus::Ready && !damaged_queues.is_empty() {
            status = HealthStatus::Degraded;
        }
        Health {
            status,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            damaged_queues,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let queues = self
            .broker
            .get()
            .map(|b| b.queue_stats())
            .unwrap_or_default()
            .into_iter()
            .map(|q| QueueSample {
                vhost: q.vhost,
                queue: q.queue,
                ready: q.stats.ready,
                in_flight: q.stats.in_flight,
                delayed: q.stats.delayed,
                consumers: q.stats.consumers,
                enqueued_total: q.stats.enqueued_total,
                delivered_total: q.stats.delivered_total,
                acked_total: q.stats.acked_total,
                expired_total: q.stats.expired_total,
                dead_lettered_total: q.stats.dead_lettered_total,
            })
            .collect();
        let stats = self.store.stats();
        Snapshot {
            queues,
            connections: self
                .connections
                .lock()
                .iter()
                .map(|(protocol, gauge)| (*protocol, gauge.load(std::sync::atomic::Ordering::Relaxed)))
                .collect(),
            store: StoreSample {
                persistent: self.store.is_persistent(),
                bytes_on_disk: stats.bytes_on_disk,
                fsyncs_total: stats.fsyncs,
                sync_rounds_total: stats.sync_rounds,
                fsync_seconds_total: stats.fsync_seconds_total,
                fsync_seconds_max: stats.fsync_seconds_max,
                records_appended_total: stats.records_appended,
                records_settled_total: stats.records_settled,
                segments_deleted_total: stats.segments_deleted,
                segments_reused_total: stats.segments_reused,
            },
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}
