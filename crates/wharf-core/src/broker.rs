//! The broker: vhosts, definitions persistence, recovery at start-up, the timer loop and
//! shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};
use wharf_store::{Durable, QueueId, QueueLog, RecordId, Store};

use crate::clock::{ms, Clock};
use crate::error::{CoreError, ObjectKind, Result};
use crate::queue::{Queue, QueueStats};
use crate::routing::{Binding, ExchangeKind};
use crate::settings::{ExchangeSettings, QueueKind, QueueSettings};
use crate::vhost::{is_builtin, VHost};

/// The default vhost; it always exists.
pub const DEFAULT_VHOST: &str = "/";

/// Version of the definitions document this code writes and reads.
const DEFINITIONS_VERSION: u32 = 1;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Longest the run loop sleeps between ticks, whatever the next deadline.
    pub max_tick_interval: Duration,
    /// How often the run loop asks queue logs for stragglers to move forward.
    pub compaction_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_tick_interval: Duration::from_millis(250),
            compaction_interval: Duration::from_secs(30),
        }
    }
}

/// A record to settle once another write (its replacement) is durable.
struct PendingSettle {
    log: Arc<dyn QueueLog>,
    record: RecordId,
    durable: Durable,
}

/// What every vhost and queue shares: the store, the clock, and broker-wide bookkeeping.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: BrokerConfig,
    /// Serialises definition changes with their saves, so the saved document's order is the
    /// order of the changes. Outermost lock.
    pub(crate) defs_lock: Mutex<()>,
    shutting_down: AtomicBool,
    pending: Mutex<Vec<PendingSettle>>,
    /// Earliest deadline any queue announced; the run loop sleeps until it.
    next_wakeup: AtomicU64,
    wake: Notify,
    next_queue_id: AtomicU64,
    next_consumer_id: AtomicU64,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn next_queue_id(&self) -> QueueId {
        self.next_queue_id.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn next_consumer_id(&self) -> u64 {
        self.next_consumer_id.fetch_add(1, Ordering::SeqCst)
    }

    /// A queue set a timer at `at`: wake the run loop if that is sooner than it planned.
    pub(crate) fn hint_deadline(&self, at: u64) {
        if at < self.next_wakeup.fetch_min(at, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Settle `record` once `durable` resolves (at once if it already has). This is how
    /// "durable in the new place before settled in the old" is kept without blocking.
    pub(crate) fn settle_after(&self, log: Arc<dyn QueueLog>, record: RecordId, durable: Durable) {
        if durable.is_done() {
            if let Err(e) = log.settle(record) {
                warn!("settling a moved record: {e}");
            }
        } else {
            self.pending.lock().push(PendingSettle { log, record, durable });
        }
    }

    /// Settle the pending records whose replacements are durable now.
    fn settle_ready(&self, all: bool) {
        let ready: Vec<PendingSettle> = {
            let mut pending = self.pending.lock();
            let (done, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *pending).into_iter().partition(|p| all || p.durable.is_done());
            *pending = waiting;
            done
        };
        for p in ready {
            if !p.durable.is_done() {
                // Still not durable at shutdown: leave the old copy; after a restart the
                // message may exist twice, never zero times.
                continue;
            }
            if let Err(e) = p.log.settle(p.record) {
                warn!("settling a moved record: {e}");
            }
        }
    }
}

/// A queue that recovery found damaged, for /health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedQueue {
    pub vhost: String,
    pub queue: String,
    pub reason: String,
}

/// Per-queue statistics for /metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMetrics {
    pub vhost: String,
    pub queue: String,
    pub kind: QueueKind,
    pub durable: bool,
    pub stats: QueueStats,
}

// ---- the definitions document ------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct DefinitionsDoc {
    version: u32,
    next_queue_id: u64,
    vhosts: Vec<VHostDoc>,
    /// Documents front ends keep with the engine's definitions (SNS topics and subscriptions),
    /// by name, saved and loaded as they are. Absent in documents written before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    extensions: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct VHostDoc {
    name: String,
    exchanges: Vec<ExchangeDoc>,
    queues: Vec<QueueDoc>,
    bindings: Vec<BindingDoc>,
}

#[derive(Serialize, Deserialize)]
struct ExchangeDoc {
    name: String,
    kind: ExchangeKind,
    settings: ExchangeSettings,
}

#[derive(Serialize, Deserialize)]
struct QueueDoc {
    name: String,
    id: QueueId,
    settings: QueueSettings,
}

#[derive(Serialize, Deserialize)]
struct BindingDoc {
    source: String,
    binding: Binding,
}

// ---- the broker ----------------------------------------------------------------------------

pub struct Broker {
    shared: Arc<Shared>,
    vhosts: RwLock<BTreeMap<String, Arc<VHost>>>,
    /// See [`Broker::extension`]. Changed only under the definitions lock.
    extensions: Mutex<BTreeMap<String, serde_json::Value>>,
    me: Weak<Broker>,
}

impl Broker {
    /// Load definitions, recover every durable queue's messages, and return ready to serve.
    /// A queue whose log is damaged is opened closed (see [`Broker::damaged_queues`]).
    pub fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: BrokerConfig) -> Result<Arc<Broker>> {
        let doc = match store.load_definitions()? {
            Some(bytes) => {
                let doc: DefinitionsDoc = serde_json::from_slice(&bytes)
                    .map_err(|e| CoreError::Corrupt(format!("definitions document: {e}")))?;
                if doc.version != DEFINITIONS_VERSION {
                    return Err(CoreError::Corrupt(format!(
                        "definitions document version {} is not {DEFINITIONS_VERSION}",
                        doc.version
                    )));
                }
                Some(doc)
            }
            None => None,
        };
        let store_ids: BTreeSet<QueueId> = store.queue_ids()?.into_iter().collect();
        // Never reuse an id: not one in the document, not one with a log on disk.
        let next_id = [doc.as_ref().map_or(1, |d| d.next_queue_id), store_ids.last().map_or(1, |m| m + 1), 1]
            .into_iter()
            .max()
            .unwrap_or(1);
        let shared = Arc::new(Shared {
            store: store.clone(),
            clock,
            config,
            defs_lock: Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            next_wakeup: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            next_queue_id: AtomicU64::new(next_id),
            next_consumer_id: AtomicU64::new(1),
        });
        let extensions = doc.as_ref().map(|d| d.extensions.clone()).unwrap_or_default();
        let broker = Arc::new_cyclic(|me| Broker {
            shared: shared.clone(),
            vhosts: RwLock::new(BTreeMap::new()),
            extensions: Mutex::new(extensions),
            me: me.clone(),
        });
        broker.insert_vhost(DEFAULT_VHOST);
        let mut known_ids = BTreeSet::new();
        if let Some(doc) = doc {
            for vd in doc.vhosts {
                let vhost = broker.insert_vhost(&vd.name);
                for ex in vd.exchanges {
                    if let Err(e) = vhost.restore_exchange(&ex.name, ex.kind, ex.settings) {
                        warn!(vhost = %vd.name, exchange = %ex.name, "cannot restore exchange: {e}");
                    }
                }
                for q in vd.queues {
                    known_ids.insert(q.id);
                    vhost.restore_queue(&q.name, q.id, q.settings);
                }
                for b in vd.bindings {
                    if let Err(e) = vhost.restore_binding(&b.source, b.binding) {
                        warn!(vhost = %vd.name, exchange = %b.source, "cannot restore binding: {e}");
                    }
                }
            }
        }
        for orphan in store_ids.difference(&known_ids) {
            // A crash between creating a log and saving its definition, or a lost document:
            // left alone for inspection, and its id is never reused.
            warn!(queue_id = orphan, "queue log without a definition; left untouched");
        }
        {
            let _defs = shared.defs_lock.lock();
            broker.save_definitions()?;
        }
        let damaged = broker.damaged_queues().len();
        info!(vhosts = broker.vhosts().len(), damaged_queues = damaged, "engine ready");
        Ok(broker)
    }

    fn insert_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_owned())
            .or_insert_with(|| VHost::new(name, self.me.clone(), self.shared.clone()))
            .clone()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.shared.store.clone()
    }

    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>> {
        self.vhosts.read().get(name).cloned().ok_or_else(|| CoreError::not_found(ObjectKind::VHost, name))
    }

    /// Create a vhost; `AlreadyExists` if it does.
    pub fn create_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        if name.is_empty() {
            return Err(CoreError::InvalidArgument("vhost name is empty".into()));
        }
        let _defs = self.shared.defs_lock.lock();
        let vhost = {
            let mut vhosts = self.vhosts.write();
            if vhosts.contains_key(name) {
                return Err(CoreError::AlreadyExists { kind: ObjectKind::VHost, name: name.to_owned() });
            }
            let v = VHost::new(name, self.me.clone(), self.shared.clone());
            vhosts.insert(name.to_owned(), v.clone());
            v
        };
        self.save_definitions()?;
        Ok(vhost)
    }

    /// Delete a vhost and everything in it. The default vhost cannot be deleted.
    pub fn delete_vhost(&self, name: &str) -> Result<()> {
        if name == DEFAULT_VHOST {
            return Err(CoreError::AccessRefused("the default vhost cannot be deleted".into()));
        }
        let vhost = {
            let _defs = self.shared.defs_lock.lock();
            let v = self
                .vhosts
                .write()
                .remove(name)
                .ok_or_else(|| CoreError::not_found(ObjectKind::VHost, name))?;
            self.save_definitions()?;
            v
        };
        for q in vhost.queues() {
            q.close(crate::consumer::CancelReason::QueueDeleted);
            if q.log().is_some() {
                if let Err(e) = self.shared.store.remove_queue(q.id()) {
                    warn!(vhost = %name, queue = %q.name(), "removing log: {e}");
                }
            }
        }
        Ok(())
    }

    pub fn vhosts(&self) -> Vec<String> {
        self.vhosts.read().keys().cloned().collect()
    }

    fn all_queues(&self) -> Vec<(Arc<VHost>, Arc<Queue>)> {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        vhosts.into_iter().flat_map(|v| v.queues().into_iter().map(move |q| (v.clone(), q))).collect()
    }

    /// Queues that recovery found damaged (opened closed), for /health.
    pub fn damaged_queues(&self) -> Vec<DamagedQueue> {
        self.all_queues()
            .into_iter()
            .filter_map(|(v, q)| {
                q.damage().map(|reason| DamagedQueue {
                    vhost: v.name().to_owned(),
                    queue: q.name().to_owned(),
                    reason,
                })
            })
            .collect()
    }

    /// Per-queue statistics for /metrics.
    pub fn queue_stats(&self) -> Vec<QueueMetrics> {
        self.all_queues()
            .into_iter()
            .map(|(v, q)| {
                let settings = q.settings();
                QueueMetrics {
                    vhost: v.name().to_owned(),
                    queue: q.name().to_owned(),
                    kind: settings.kind,
                    durable: settings.is_persisted(),
                    stats: q.stats(),
                }
            })
            .collect()
    }

    /// Alias of [`Broker::queue_stats`].
    pub fn metrics(&self) -> Vec<QueueMetrics> {
        self.queue_stats()
    }

    /// A front end's own document kept with the definitions (`None` if never saved). Front
    /// ends whose objects have no engine shape (SNS topics and subscriptions) keep them here,
    /// so they are as durable as queues and saved in the same file.
    pub fn extension(&self, name: &str) -> Option<serde_json::Value> {
        self.extensions.lock().get(name).cloned()
    }

    /// Replace the document `name` and save the definitions; returns once it is on disk.
    /// `Value::Null` removes it.
    pub fn save_extension(&self, name: &str, doc: serde_json::Value) -> Result<()> {
        let _defs = self.shared.defs_lock.lock();
        {
            let mut ext = self.extensions.lock();
            if doc.is_null() {
                ext.remove(name);
            } else {
                ext.insert(name.to_owned(), doc);
            }
        }
        self.save_definitions()
    }

    /// Write the whole definitions document. The caller holds the definitions lock.
    pub(crate) fn save_definitions(&self) -> Result<()> {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        let mut doc = DefinitionsDoc {
            version: DEFINITIONS_VERSION,
            next_queue_id: self.shared.next_queue_id.load(Ordering::SeqCst),
            vhosts: Vec::new(),
            extensions: self.extensions.lock().clone(),
        };
        for v in vhosts {
            let st = v.state.read();
            let mut vd = VHostDoc {
                name: v.name().to_owned(),
                exchanges: Vec::new(),
                queues: Vec::new(),
                bindings: Vec::new(),
            };
            let durable_queues: BTreeSet<&str> = st
                .queues
                .iter()
                .filter(|(_, q)| q.settings().is_persisted())
                .map(|(n, _)| n.as_str())
                .collect();
            for (name, q) in &st.queues {
                if durable_queues.contains(name.as_str()) {
                    vd.queues.push(QueueDoc {
                        name: name.clone(),
                        id: q.id(),
                        settings: QueueSettings::clone(&q.settings()),
                    });
                }
            }
            for (name, ex) in &st.exchanges {
                if !ex.settings.durable {
                    continue;
                }
                if !is_builtin(name) {
                    vd.exchanges.push(ExchangeDoc {
                        name: name.clone(),
                        kind: ex.kind,
                        settings: ex.settings.clone(),
                    });
                }
                for b in ex.router.bindings() {
                    let dest_durable = match &b.destination {
                        crate::routing::Destination::Queue(q) => durable_queues.contains(q.as_str()),
                        crate::routing::Destination::Exchange(e) => {
                            st.exchanges.get(e).is_some_and(|x| x.settings.durable)
                        }
                    };
                    if dest_durable {
                        vd.bindings.push(BindingDoc { source: name.clone(), binding: b.clone() });
                    }
                }
            }
            doc.vhosts.push(vd);
        }
        let bytes =
            serde_json::to_vec(&doc).map_err(|e| CoreError::Corrupt(format!("encoding definitions: {e}")))?;
        self.shared.store.save_definitions(&bytes)?;
        Ok(())
    }

    /// Process every due timer now: visibility expiries, delays, TTL and retention, queue
    /// expiry, the dedup window; settle records whose replacements became durable; wake
    /// waiters. Tests call it after moving a `ManualClock`.
    pub fn tick(&self) {
        let now = self.shared.clock.now_ms();
        self.shared.next_wakeup.store(u64::MAX, Ordering::SeqCst);
        for (vhost, q) in self.all_queues() {
            q.tick();
            if q.expired_unused(now) {
                vhost.delete_if_current(&q, "unused for longer than its x-expires");
                continue;
            }
            if let Some(at) = q.next_deadline() {
                self.shared.next_wakeup.fetch_min(at, Ordering::SeqCst);
            }
        }
        self.shared.settle_ready(false);
    }

    /// Move straggler records forward in every durable queue's log; returns how many moved.
    pub fn compact(&self) -> usize {
        let mut moved = 0;
        for (_, q) in self.all_queues() {
            match q.compact() {
                Ok(n) => moved += n,
                Err(e) => warn!(queue = %q.name(), "compaction: {e}"),
            }
        }
        moved
    }

    /// The background task: tick when the next deadline comes (at least every
    /// `max_tick_interval`), compact now and then, until shutdown.
    pub async fn run(self: Arc<Self>) {
        let clock = self.shared.clock.clone();
        let mut last_compaction = clock.now_ms();
        let compaction_every = ms(self.shared.config.compaction_interval);
        let max_nap = self.shared.config.max_tick_interval;
        while !self.shared.is_shutting_down() {
            self.tick();
            let now = clock.now_ms();
            if now.saturating_sub(last_compaction) >= compaction_every {
                let moved = self.compact();
                if moved > 0 {
                    info!(records = moved, "compaction moved straggler records forward");
                }
                last_compaction = now;
            }
            let next = self.shared.next_wakeup.load(Ordering::SeqCst);
            let nap =
                Duration::from_millis(next.saturating_sub(now)).clamp(Duration::from_millis(1), max_nap);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    /// Stop: long polls return empty, consumers get a cancel, new sends are refused; then the
    /// store is flushed and moved records settled.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        for (_, q) in self.all_queues() {
            q.shutdown();
        }
        self.shared.wake.notify_one();
        if let Err(e) = self.shared.store.flush() {
            warn!("flushing the store at shutdown: {e}");
        }
        self.shared.settle_ready(true);
        info!("engine stopped");
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }
}

/// The binary spawns `run` on a multi-threaded runtime: it must stay `Send`.
#[allow(dead_code)]
fn run_is_send(b: Arc<Broker>) -> impl std::future::Future<Output = ()> + Send + 'static {
    b.run()
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("vhosts", &self.vhosts()).finish()
    }
}
