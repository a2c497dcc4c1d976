//! Queues: ordered messages, pull leases (SQS), push leases (consumers), timers, FIFO groups,
//! deduplication, limits and dead-lettering.
//!
//! One `parking_lot::Mutex` guards a queue's whole state. Store appends happen under it, so a
//! queue's log order is its sequence order. Nothing here ever holds the lock across an
//! `.await`, and nothing that holds it takes a vhost or broker lock: work that must reach other
//! objects (dead-letter publishing, kicking queues waiting for channel credit, auto-delete) is
//! collected into [`Effects`] and done after the lock is released.
//!
//! Per message the engine keeps one [`Entry`] (see `entry_is_small` for its size). For
//! messages in the store, the body, headers and ids are read back from the log on delivery;
//! only in-memory messages (transient, or in non-durable queues) keep their body here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tracing::{error, warn};
use wharf_store::{Durable, QueueId, QueueLog, RecordId, RecoveryReport, StoreError};

use crate::broker::Shared;
use crate::clock::ms;
use crate::consumer::{CancelReason, ChannelCredit, Consumer, ConsumerEvent, ConsumerOptions};
use crate::deadletter::{add_x_death, DeathReason};
use crate::error::{CoreError, ObjectKind, Result};
use crate::message::Message;
use crate::ready::{GroupSlot, ReadyIndex};
use crate::record::{self, MessageId, StoredMessage};
use crate::settings::{
    DedupScope, Overflow, QueueKind, QueueSettings, DEDUP_WINDOW_MS, MAX_DELAY_MS, MAX_VISIBILITY_MS,
};
use crate::vhost::VHost;

// ---- public types ----------------------------------------------------------------------------

/// Per-message options of a send.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Per-message delay (SQS DelaySeconds). Not allowed on FIFO queues. None = queue default.
    pub delay: Option<Duration>,
    /// Required on FIFO queues; on standard queues stored and returned (SQS fair queues).
    pub group_id: Option<String>,
    /// FIFO deduplication id. Ignored on standard queues.
    pub dedup_id: Option<String>,
    /// SQS system attributes from the sender (SenderId, AWSTraceHeader, ...).
    pub system_attributes: BTreeMap<String, String>,
    /// MD5 of the body, when the front end that accepted the message computed it (SQS
    /// answers with it); kept with the message so a receive does not compute it again.
    pub body_md5: Option<[u8; 16]>,
}

/// The result of a send.
#[derive(Clone, Debug)]
pub struct Sent {
    pub message_id: MessageId,
    /// Strictly increasing per queue, also across restarts (SQS SequenceNumber).
    pub sequence_number: u64,
    /// A FIFO duplicate inside the deduplication window: nothing was stored and the id and
    /// sequence number are the original's.
    pub duplicate_of_earlier: bool,
    /// The deduplication id used (the body's SHA-256 with content-based deduplication).
    pub dedup_id: Option<String>,
    /// Resolves when the message is on disk (already done for in-memory messages).
    pub durable: Durable,
}

/// A pull receive (SQS ReceiveMessage).
#[derive(Clone, Debug)]
pub struct ReceiveRequest {
    /// 1..=10.
    pub max: usize,
    /// Lease length; None = the queue's visibility timeout.
    pub visibility: Option<Duration>,
    /// Long-poll wait; None = the queue's receive wait.
    pub wait: Option<Duration>,
}

impl Default for ReceiveRequest {
    fn default() -> Self {
        ReceiveRequest { max: 1, visibility: None, wait: None }
    }
}

/// Names one lease of one message: the queue, the message's queue-local sequence number, and
/// the lease generation (the message's receive count when it was leased). Front ends encode it
/// into their receipt handle or map it to a delivery tag.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    pub queue: QueueId,
    pub seq: u64,
    pub generation: u32,
}

impl Receipt {
    fn check(queue: u64, seq: u64, generation: u32) -> u32 {
        // FNV-1a: not security, just enough that a mangled handle is rejected, not misread.
        let mut h: u32 = 0x811c_9dc5;
        for b in queue.to_le_bytes().iter().chain(&seq.to_le_bytes()).chain(&generation.to_le_bytes()) {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    }

    /// A 48-character hex token. (Written digit by digit: `format!` with padding was a
    /// visible share of a batched SQS receive.)
    pub fn encode(&self) -> String {
        let check = Self::check(self.queue, self.seq, self.generation);
        let mut token = String::with_capacity(48);
        for (value, digits) in
            [(self.queue, 16), (self.seq, 16), (u64::from(self.generation), 8), (u64::from(check), 8)]
        {
            for shift in (0..digits).rev() {
                token.push(char::from(HEX_DIGITS[((value >> (shift * 4)) & 0xf) as usize]));
            }
        }
        token
    }

    /// Parse [`Receipt::encode`]'s output; anything else is `ReceiptHandleInvalid`.
    pub fn decode(s: &str) -> Result<Receipt> {
        let bad = || CoreError::ReceiptHandleInvalid;
        let bytes = s.as_bytes();
        if bytes.len() != 48 {
            return Err(bad());
        }
        let field = |range: std::ops::Range<usize>| {
            bytes[range].iter().try_fold(0u64, |acc, &b| {
                let digit = char::from(b).to_digit(16)?;
                Some(acc << 4 | u64::from(digit))
            })
        };
        let queue = field(0..16).ok_or_else(bad)?;
        let seq = field(16..32).ok_or_else(bad)?;
        let generation = field(32..40).ok_or_else(bad)? as u32;
        let check = field(40..48).ok_or_else(bad)? as u32;
        if check != Self::check(queue, seq, generation) {
            return Err(bad());
        }
        Ok(Receipt { queue, seq, generation })
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A delivered message: a lease until it is settled.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The lease: SQS receipt handle, or the push lease the front end maps to a delivery tag.
    pub receipt: Receipt,
    pub message_id: MessageId,
    pub sequence_number: u64,
    pub message: Message,
    /// Delivered before (AMQP redelivered flag).
    pub redelivered: bool,
    /// SQS ApproximateReceiveCount (this delivery included).
    pub receive_count: u32,
    pub sent_ms: u64,
    pub first_receive_ms: u64,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub system_attributes: BTreeMap<String, String>,
    /// The queue this message was redriven from after too many receives (SQS
    /// `DeadLetterQueueSourceArn`), while it is in that queue's dead-letter queue.
    pub dead_letter_source: Option<String>,
    /// MD5 of the body, if the sender's front end kept one (see [`SendOptions::body_md5`]).
    pub body_md5: Option<[u8; 16]>,
}

/// The result of settling a lease.
#[derive(Clone, Debug)]
pub struct Settled {
    /// False when the receipt was stale (the message was received again since, or is gone):
    /// SQS answers success and the message stays.
    pub deleted: bool,
    /// Resolves when the settlement is on disk.
    pub durable: Durable,
}

/// Counters of one queue. The `_total` counters are monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Body bytes of every message in the queue.
    pub bytes: u64,
    pub consumers: u64,
    pub enqueued_total: u64,
    pub delivered_total: u64,
    pub acked_total: u64,
    pub expired_total: u64,
    pub dead_lettered_total: u64,
}

impl QueueStats {
    /// Messages in the queue in any state.
    pub fn messages(&self) -> u64 {
        self.ready + self.in_flight + self.delayed
    }
}

// ---- per-message state -----------------------------------------------------------------------

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
enum State {
    Ready,
    Delayed,
    InFlight,
    /// Between two states inside one operation.
    Detached,
    /// Settled; a tombstone until it reaches the front of the deque or the deque is compacted.
    Removed,
}

const IN_MEMORY: u8 = 1;
const REDELIVERED: u8 = 2;

/// What the engine keeps per message. Kept small on purpose: see `entry_is_small`.
struct Entry {
    seq: u64,
    sent_ms: u64,
    /// Delayed: when the delay ends. InFlight: the visibility deadline (u64::MAX: held until
    /// settled, i.e. push leases and basic.get).
    until_ms: u64,
    /// Where the record lives (unused for in-memory messages).
    record: RecordId,
    /// Rarely needed fields, allocated only for messages that need one.
    extra: Option<Box<Extra>>,
    /// Body bytes.
    size: u32,
    receive_count: u32,
    group: GroupSlot,
    state: State,
    priority: u8,
    flags: u8,
}

#[derive(Default)]
struct Extra {
    /// The whole message, for in-memory messages.
    body: Option<Box<StoredMessage>>,
    /// Per-message expiry (AMQP expiration, or kept from a move).
    expires_at_ms: Option<u64>,
    first_receive_ms: u64,
    /// When the current lease began (for SQS's 12-hour cap).
    lease_start_ms: u64,
    /// The consumer holding the current push lease (0 = none).
    consumer: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Visibility,
    Delay,
    Expire,
}

/// Timers are lazily invalidated: a popped timer only acts if the entry is still in the state
/// (and has the deadline) it was set for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: u64,
    seq: u64,
    kind: TimerKind,
}

struct DedupEntry {
    id: MessageId,
    seq: u64,
    at: u64,
}

struct Slot {
    id: u64,
    prefetch: u32,
    no_ack: bool,
    exclusive: bool,
    priority: i32,
    channel: Option<Arc<ChannelCredit>>,
    tx: mpsc::UnboundedSender<ConsumerEvent>,
    unacked: BTreeSet<u64>,
    /// Leases of this consumer whose messages [`Queue::purge_all`] removed: settling one is a
    /// no-op, not an error (the consumer could not have known).
    purged: HashSet<u64>,
    stopped: bool,
}

#[derive(Default)]
struct Counts {
    ready: u64,
    delayed: u64,
    in_flight: u64,
    /// Bytes of ready + delayed messages (what max-length-bytes limits).
    queued_bytes: u64,
    bytes: u64,
}

#[derive(Default)]
struct Totals {
    enqueued: u64,
    delivered: u64,
    acked: u64,
    expired: u64,
    dead_lettered: u64,
}

#[derive(Copy, Clone)]
enum LeaseKind {
    /// SQS receive: visible again after this many ms.
    Pull(u64),
    /// basic.get: held until settled.
    Held,
    /// A consumer's lease.
    Push(u64),
}

/// What a message moved from another queue keeps (see [`Queue::accept_moved`]).
pub(crate) struct Moved {
    id: MessageId,
    sent_ms: u64,
    expires_at_ms: Option<u64>,
    dead_letter_source: Option<String>,
}

/// Where a dead-lettered message goes, decided under the lock from the queue's settings.
#[derive(Clone, Debug)]
enum Target {
    Queue(String),
    Exchange { name: String, routing_key: Option<String> },
}

pub(crate) struct DeadLetter {
    msg: StoredMessage,
    reason: DeathReason,
    /// The old record, settled once the new copies are durable.
    record: Option<RecordId>,
    target: Target,
    at_ms: u64,
}

/// Work an operation must do after releasing the queue lock.
#[derive(Default)]
pub(crate) struct Effects {
    dead: Vec<DeadLetter>,
    kick: Vec<Arc<Queue>>,
    /// Something became ready: wake long-polling receivers.
    wake: bool,
    auto_delete: bool,
    /// Earliest timer set by this operation, so the broker's run loop can wake for it.
    earliest_timer: Option<u64>,
}

// ---- the queue ------------------------------------------------------------------------------

pub struct Queue {
    name: String,
    vhost_name: String,
    id: QueueId,
    shared: Arc<Shared>,
    vhost: Weak<VHost>,
    log: Option<Arc<dyn QueueLog>>,
    /// Copies of settings that never change after creation, read without the state lock: the
    /// SQS front end asks for them on every call, where the lock only collided with sends and
    /// receives holding it (most of the batched SQS path's lock waits; throughput moved within
    /// noise without them, as the waits moved to the next lock).
    kind: QueueKind,
    exclusive_owner: Option<crate::OwnerId>,
    /// The settings as last installed, the same `Arc` the state holds. Every SQS call reads
    /// them; under the state lock those reads collided with sends and receives, and a
    /// collision spins and yields the thread (a third of the unbatched path's lock waits).
    settings: Mutex<Arc<QueueSettings>>,
    state: Mutex<QueueState>,
    /// Long-polling receivers wait here.
    waiters: Notify,
}

pub(crate) struct QueueState {
    name: String,
    id: QueueId,
    me: Weak<Queue>,
    log: Option<Arc<dyn QueueLog>>,
    settings: Arc<QueueSettings>,
    entries: VecDeque<Entry>,
    tombstones: usize,
    ready: ReadyIndex,
    timers: BinaryHeap<Reverse<Timer>>,
    dedup: HashMap<String, DedupEntry>,
    dedup_order: VecDeque<(u64, String)>,
    consumers: Vec<Slot>,
    rr_next: usize,
    next_seq: u64,
    /// Queued entries before this sequence number were found unexpired-or-in-flight by the
    /// head sweep; the sweep resumes here instead of rescanning in-flight messages.
    sweep_from: u64,
    counts: Counts,
    totals: Totals,
    last_used_ms: u64,
    had_consumer: bool,
    deleted: bool,
    closed_for_shutdown: bool,
    damaged: Option<String>,
}

/// The push-lease owner that marks a message being moved by [`Queue::move_to`] (consumer ids
/// count up from 1 and never reach it). Pull-lease operations refuse such a message, as they
/// refuse a consumer's.
const MOVING: u64 = u64::MAX;

/// SQS's in-flight limit for standard queues.
pub const MAX_IN_FLIGHT: u64 = 120_000;

/// Sequence numbers start from the clock in microseconds, so they keep increasing across
/// restarts even when every message was acked (nothing in the log to continue from), and stay
/// below 2^56 (the ready index uses the top byte for priority) for a few thousand years.
fn first_seq(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1000).clamp(1, 1 << 55)
}

fn dedup_key(scope: DedupScope, group: &str, id: &str) -> String {
    match scope {
        DedupScope::Queue => id.to_owned(),
        DedupScope::MessageGroup => format!("{group}\u{0}{id}"),
    }
}

fn sha256_hex(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Queue {
    pub(crate) fn new(
        name: &str,
        vhost_name: &str,
        id: QueueId,
        settings: QueueSettings,
        log: Option<Arc<dyn QueueLog>>,
        shared: Arc<Shared>,
        vhost: Weak<VHost>,
    ) -> Arc<Queue> {
        let now = shared.clock.now_ms();
        let settings = Arc::new(settings);
        Arc::new_cyclic(|me| Queue {
            name: name.to_owned(),
            vhost_name: vhost_name.to_owned(),
            id,
            shared,
            vhost,
            log: log.clone(),
            kind: settings.kind,
            exclusive_owner: settings.exclusive_owner,
            settings: Mutex::new(settings.clone()),
            waiters: Notify::new(),
            state: Mutex::new(QueueState {
                name: name.to_owned(),
                id,
                me: me.clone(),
                log,
                ready: ReadyIndex::new(settings.kind == QueueKind::Fifo),
                settings,
                entries: VecDeque::new(),
                tombstones: 0,
                timers: BinaryHeap::new(),
                dedup: HashMap::new(),
                dedup_order: VecDeque::new(),
                consumers: Vec::new(),
                rr_next: 0,
                next_seq: first_seq(now),
                sweep_from: 0,
                counts: Counts::default(),
                totals: Totals::default(),
                last_used_ms: now,
                had_consumer: false,
                deleted: false,
                closed_for_shutdown: false,
                damaged: None,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn vhost_name(&self) -> &str {
        &self.vhost_name
    }

    /// The store's id of this queue (also part of every [`Receipt`]).
    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn settings(&self) -> Arc<QueueSettings> {
        self.settings.lock().clone()
    }

    pub fn kind(&self) -> QueueKind {
        self.kind
    }

    /// The connection this exclusive queue belongs to.
    pub fn exclusive_owner(&self) -> Option<crate::OwnerId> {
        self.exclusive_owner
    }

    /// Why the queue is closed, if its log was found damaged.
    pub fn damage(&self) -> Option<String> {
        self.state.lock().damaged.clone()
    }

    pub(crate) fn mark_damaged(&self, reason: String) {
        self.state.lock().damaged = Some(reason);
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.state.lock();
        QueueStats {
            ready: st.counts.ready,
            in_flight: st.counts.in_flight,
            delayed: st.counts.delayed,
            bytes: st.counts.bytes,
            consumers: st.consumers.iter().filter(|c| !c.stopped).count() as u64,
            enqueued_total: st.totals.enqueued,
            delivered_total: st.totals.delivered,
            acked_total: st.totals.acked,
            expired_total: st.totals.expired,
            dead_lettered_total: st.totals.dead_lettered,
        }
    }

    /// Run `f` on the locked state after evaluating due timers; then dispatch to consumers,
    /// release the lock and do the collected effects.
    fn with_state<R>(&self, f: impl FnOnce(&mut QueueState, u64, &mut Effects) -> Result<R>) -> Result<R> {
        let now = self.shared.clock.now_ms();
        let mut fx = Effects::default();
        let result = {
            let mut st = self.state.lock();
            if st.deleted {
                return Err(CoreError::not_found(ObjectKind::Queue, &self.name));
            }
            if let Some(reason) = &st.damaged {
                return Err(CoreError::QueueDamaged { queue: self.name.clone(), reason: reason.clone() });
            }
            st.process_due(now, &mut fx);
            let r = f(&mut st, now, &mut fx);
            st.dispatch(now, &mut fx);
            if st.counts.ready == 0 {
                fx.wake = false;
            }
            st.gc();
            r
        };
        self.finish(fx);
        result
    }

    fn finish(&self, fx: Effects) {
        if fx.wake {
            self.waiters.notify_waiters();
        }
        if let Some(at) = fx.earliest_timer {
            self.shared.hint_deadline(at);
        }
        for dl in fx.dead {
            self.route_dead_letter(dl);
        }
        for q in fx.kick {
            q.kick();
        }
        if fx.auto_delete {
            // Bind `me` first: a guard in an `if let` scrutinee would live through the block
            // and the vhost would find this queue's lock held.
            let me = self.state.lock().me.upgrade();
            if let (Some(vhost), Some(me)) = (self.vhost.upgrade(), me) {
                vhost.auto_delete_queue(&me);
            }
        }
    }

    /// Send a message into this queue.
    pub fn send(&self, message: Message, opts: SendOptions) -> Result<Sent> {
        if self.shared.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        self.with_state(|st, now, fx| st.send(message, opts, now, fx, None))
    }

    /// Several sends (SQS SendMessageBatch) under one lock and, on a standard queue with room
    /// for them all, one store write. One result per message, in order; an error for the whole
    /// call (the queue is gone, damaged or shutting down) is the outer one.
    pub fn send_batch(&self, items: Vec<(Message, SendOptions)>) -> Result<Vec<Result<Sent>>> {
        if self.shared.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        self.with_state(|st, now, fx| Ok(st.send_batch(items, now, fx)))
    }

    /// Enqueue a message moved from another queue (SQS redrive): it keeps its id and original
    /// sent time (retention counts from it), and its dead-letter source; size and
    /// deduplication rules do not apply again.
    pub(crate) fn accept_moved(&self, msg: StoredMessage) -> Result<Sent> {
        let moved = Some(Moved {
            id: msg.id,
            sent_ms: msg.sent_ms,
            expires_at_ms: msg.expires_at_ms,
            dead_letter_source: msg.dead_letter_source,
        });
        let opts = SendOptions {
            delay: None,
            group_id: msg.group_id,
            dedup_id: msg.dedup_id,
            system_attributes: msg.system_attributes,
            body_md5: msg.body_md5,
        };
        self.with_state(|st, now, fx| st.send(msg.message, opts, now, fx, moved))
    }

    /// Pull up to `req.max` messages, waiting up to the long-poll time for the first one. Returns
    /// at once when messages are available, and the moment one is sent or becomes visible while
    /// waiting. Returns empty when the wait ends or the broker shuts down.
    pub async fn receive(&self, req: ReceiveRequest) -> Result<Vec<Delivery>> {
        if req.max == 0 || req.max > 10 {
            return Err(CoreError::InvalidArgument(format!(
                "MaxNumberOfMessages must be between 1 and 10, got {}",
                req.max
            )));
        }
        // From the settings snapshot: the state's lock is the one every send and delete takes.
        let (default_visibility, default_wait) = {
            let settings = self.settings();
            (settings.visibility_timeout_ms, settings.receive_wait_ms)
        };
        let visibility = req.visibility.map(ms).unwrap_or(default_visibility);
        if visibility > MAX_VISIBILITY_MS {
            return Err(CoreError::InvalidArgument(format!(
                "visibility timeout {visibility} ms exceeds the maximum of {MAX_VISIBILITY_MS} ms"
            )));
        }
        let wait = req.wait.map(ms).unwrap_or(default_wait);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        loop {
            // Register interest before looking, so a message sent between the look and the
            // wait still wakes us.
            let notified = self.waiters.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.try_receive(req.max, visibility)?;
            if !got.is_empty() || self.shared.is_shutting_down() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            // Sleep until the wait ends or the queue's next timer (a delay ending, a lease
            // expiring) is due by the engine's clock, whichever is first.
            let mut nap = deadline - now;
            if let Some(at) = self.next_deadline() {
                let clock_now = self.shared.clock.now_ms();
                nap = nap.min(Duration::from_millis(at.saturating_sub(clock_now).max(1)));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// The non-waiting part of [`Queue::receive`].
    pub fn try_receive(&self, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>> {
        self.with_state(|st, now, fx| {
            st.last_used_ms = now;
            // SQS: standard queues refuse receives past ~120,000 messages in flight (FIFO
            // queues just stop handing out more, which group locking already does).
            if st.settings.kind == QueueKind::Standard && st.counts.in_flight >= MAX_IN_FLIGHT {
                return Err(CoreError::QueueFull(st.name.clone()));
            }
            let mut out = Vec::new();
            let mut prefer = None;
            while out.len() < max {
                match st.lease_next(now, LeaseKind::Pull(visibility_ms), prefer, fx) {
                    Ok(Some((d, group))) => {
                        out.push(d);
                        if group > 0 {
                            prefer = Some(group);
                        }
                    }
                    Ok(None) => break,
                    // Hand out what was leased; the error shows up on the next call if lasting.
                    Err(e) if out.is_empty() => return Err(e),
                    Err(e) => {
                        warn!(queue = %st.name, "receive stopped early: {e}");
                        break;
                    }
                }
            }
            st.totals.delivered += out.len() as u64;
            Ok(out)
        })
    }

    /// AMQP basic.get: one message, leased until settled with [`Queue::delete`] (ack) or
    /// [`Queue::nack`]; with `no_ack` it is settled at once.
    pub fn get(&self, no_ack: bool) -> Result<Option<Delivery>> {
        self.with_state(|st, now, fx| {
            st.last_used_ms = now;
            let Some((d, _)) = st.lease_next(now, LeaseKind::Held, None, fx)? else {
                return Ok(None);
            };
            st.totals.delivered += 1;
            if no_ack {
                if let Some(idx) = st.find(d.receipt.seq) {
                    let rec = st.remove(idx, fx);
                    st.settle(rec);
                    st.totals.acked += 1;
                }
            }
            Ok(Some(d))
        })
    }

    /// SQS DeleteMessage / ack of a pull lease. A stale receipt (the message was received
    /// again since, or is already gone) succeeds without deleting, as SQS documents; a receipt
    /// that is not this queue's is `ReceiptHandleInvalid`.
    pub fn delete(&self, receipt: Receipt) -> Result<Settled> {
        self.delete_batch(&[receipt])?.pop().expect("one result per receipt")
    }

    /// [`Queue::delete`] for several receipts (SQS DeleteMessageBatch) under one lock, settling
    /// their records with one store call. One result per receipt, in order; an error for the
    /// whole call (the queue is gone or damaged) is the outer one.
    pub fn delete_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<Settled>>> {
        self.with_state(|st, _now, fx| {
            let mut results = Vec::with_capacity(receipts.len());
            // (index in `results`, record) of each message deleted here.
            let mut records = Vec::new();
            for receipt in receipts {
                let result = st.check_receipt(*receipt).map(|()| {
                    let stale = Settled { deleted: false, durable: Durable::done() };
                    let Some(idx) = st.find(receipt.seq) else { return stale };
                    if receipt.generation == 0 || st.entries[idx].receive_count != receipt.generation {
                        return stale;
                    }
                    if let Some(rec) = st.remove(idx, fx) {
                        records.push((results.len(), rec));
                    }
                    st.totals.acked += 1;
                    Settled { deleted: true, durable: Durable::done() }
                });
                results.push(result);
            }
            let ids: Vec<RecordId> = records.iter().map(|(_, rec)| *rec).collect();
            for ((i, _), durable) in records.iter().zip(st.settle_batch(&ids)) {
                if let Ok(settled) = &mut results[*i] {
                    settled.durable = durable;
                }
            }
            Ok(results)
        })
    }

    /// SQS ChangeMessageVisibility: the lease now ends `timeout` from now (0 = visible now).
    /// A lease cannot last past 12 hours from when it began.
    pub fn change_visibility(&self, receipt: Receipt, timeout: Duration) -> Result<()> {
        let timeout = ms(timeout);
        if timeout > MAX_VISIBILITY_MS {
            return Err(CoreError::InvalidArgument(format!(
                "visibility timeout {timeout} ms exceeds the maximum of {MAX_VISIBILITY_MS} ms"
            )));
        }
        self.with_state(|st, now, fx| {
            st.check_receipt(receipt)?;
            let idx = st.pull_lease(receipt)?;
            let start = st.entries[idx].extra.as_ref().map_or(now, |x| x.lease_start_ms);
            if now.saturating_add(timeout) > start.saturating_add(MAX_VISIBILITY_MS) {
                return Err(CoreError::InvalidArgument(
                    "a message's visibility cannot be extended past 12 hours from its receive".into(),
                ));
            }
            if timeout == 0 {
                st.return_entry(idx, now, fx);
            } else {
                let at = now.saturating_add(timeout);
                st.entries[idx].until_ms = at;
                st.push_timer(Timer { at, seq: receipt.seq, kind: TimerKind::Visibility }, fx);
            }
            Ok(())
        })
    }

    /// Give back a pull or basic.get lease (`requeue`) or dead-letter it (reason `rejected`).
    pub fn nack(&self, receipt: Receipt, requeue: bool) -> Result<()> {
        self.with_state(|st, now, fx| {
            st.check_receipt(receipt)?;
            let idx = st.pull_lease(receipt)?;
            if requeue {
                st.return_entry(idx, now, fx);
            } else {
                st.dead_letter(idx, DeathReason::Rejected, now, fx);
            }
            Ok(())
        })
    }

    /// Remove every ready and delayed message; leased ones stay until settled or expired
    /// (AMQP queue.purge: RabbitMQ purges only ready messages). Returns how many.
    pub fn purge(&self) -> Result<u64> {
        self.with_state(|st, _now, fx| Ok(st.purge(false, fx)))
    }

    /// Remove every message, leased ones included (SQS PurgeQueue). Returns how many.
    ///
    /// A receipt of a purged pull lease then behaves as for any deleted message: `delete`
    /// succeeds without deleting, `change_visibility` and `nack` are `MessageNotInflight`. A
    /// push consumer's purged leases stop counting against its prefetch (and channel credit) at
    /// once, and acking or nacking one later through its [`Consumer`] is a harmless no-op
    /// (`Settled { deleted: false }`), so an AMQP client is not failed for an unknown tag.
    pub fn purge_all(&self) -> Result<u64> {
        self.with_state(|st, _now, fx| Ok(st.purge(true, fx)))
    }

    /// Move up to `max` ready messages, in queue order, to `dest` (SQS message move tasks).
    /// Returns how many moved; 0 when none is ready.
    ///
    /// A moved message keeps its MessageId, sent time (so its retention clock), per-message
    /// expiry, group and deduplication ids, headers, properties and system attributes; its
    /// receive count starts again at 0 and its dead-letter source is dropped (it is no longer
    /// a dead letter). Each message is durable in `dest` before its record here is settled
    /// (settled by `tick` once the copy's `Durable` resolves): a crash in between leaves it in
    /// both queues, never in neither. While being copied a message counts as in flight, and
    /// a message `dest` refuses (deleted, full with reject-publish) goes back to its place;
    /// the error is returned if nothing moved, else on the next call.
    pub fn move_to(&self, dest: &Queue, max: usize) -> Result<usize> {
        if dest.id == self.id {
            return Err(CoreError::InvalidArgument("a queue cannot move messages to itself".into()));
        }
        self.move_out(max, Some(dest), None)
    }

    /// Like [`Queue::move_to`], but each message goes back to the queue it was redriven from
    /// (its `dead_letter_source`; SQS move tasks without a destination). A message without one
    /// goes to `fallback`; with no fallback either, or when its source queue no longer exists,
    /// it stays and the move stops there (`InvalidArgument` / `NotFound` if nothing moved).
    pub fn move_to_sources(&self, fallback: Option<&Queue>, max: usize) -> Result<usize> {
        self.move_out(max, None, fallback)
    }

    fn move_out(&self, max: usize, dest: Option<&Queue>, fallback: Option<&Queue>) -> Result<usize> {
        // 1. Under the lock: take ready messages out of the ready index, marked as moving.
        let taken: Vec<(u64, StoredMessage)> = self.with_state(|st, now, fx| {
            let mut out = Vec::new();
            let mut prefer = None;
            while out.len() < max {
                let Some((seq, group)) = st.ready.pop_next(prefer) else { break };
                let Some(idx) = st.find(seq) else {
                    st.ready.in_flight_done(group);
                    continue;
                };
                st.detach(idx, true, fx);
                st.attach(idx, State::InFlight, fx);
                if st.expiry_at(&st.entries[idx]) <= now {
                    st.expire(idx, now, fx);
                    continue;
                }
                let msg = match st.load(idx) {
                    Ok(m) => m,
                    Err(e) => {
                        st.detach(idx, false, fx);
                        st.attach(idx, State::Ready, fx);
                        if out.is_empty() {
                            return Err(e);
                        }
                        break;
                    }
                };
                let e = &mut st.entries[idx];
                e.until_ms = u64::MAX;
                e.extra.get_or_insert_with(Box::default).consumer = MOVING;
                if group > 0 {
                    prefer = Some(group);
                }
                out.push((seq, msg));
            }
            Ok(out)
        })?;
        if taken.is_empty() {
            return Ok(0);
        }
        // 2. No lock held: copy each into its destination, in order, until one fails.
        let vhost = self.vhost.upgrade();
        let mut copied: Vec<(u64, Durable)> = Vec::with_capacity(taken.len());
        let mut failure = None;
        let seqs: Vec<u64> = taken.iter().map(|(seq, _)| *seq).collect();
        for (seq, mut msg) in taken {
            let source = msg.dead_letter_source.take();
            let found;
            let target: &Queue = match (dest, source) {
                (Some(d), _) => d,
                (None, Some(name)) => {
                    match vhost.as_ref().ok_or(CoreError::ShuttingDown).and_then(|v| v.queue(&name)) {
                        Ok(q) => {
                            found = q;
                            &found
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                (None, None) => match fallback {
                    Some(f) => f,
                    None => {
                        failure = Some(CoreError::InvalidArgument(format!(
                            "message {} has no recorded source queue to move back to",
                            msg.id
                        )));
                        break;
                    }
                },
            };
            if target.id == self.id {
                failure = Some(CoreError::InvalidArgument("a queue cannot move messages to itself".into()));
                break;
            }
            match target.accept_moved(msg) {
                Ok(sent) => copied.push((seq, sent.durable)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // 3. Under the lock again: drop the copied ones (their records settle once the copies
        // are durable) and put the others back in their place. A message removed meanwhile
        // (purged, or deleted with an old receipt) was settled by whoever removed it.
        let moved = copied.len();
        let _ = self.with_state(|st, now, fx| {
            let moving = |st: &QueueState, seq: u64| {
                st.find(seq).filter(|&i| {
                    let e = &st.entries[i];
                    e.state == State::InFlight && e.extra.as_ref().is_some_and(|x| x.consumer == MOVING)
                })
            };
            for (seq, durable) in copied {
                if let Some(idx) = moving(st, seq) {
                    if let (Some(rec), Some(log)) = (st.remove(idx, fx), st.log.clone()) {
                        self.shared.settle_after(log, rec, durable);
                    }
                }
            }
            for &seq in &seqs[moved..] {
                if let Some(idx) = moving(st, seq) {
                    st.return_moving(idx, now, fx);
                }
            }
            Ok(())
        });
        match failure {
            Some(e) if moved == 0 => Err(e),
            Some(e) => {
                warn!(queue = %self.name, "move stopped after {moved} message(s): {e}");
                Ok(moved)
            }
            None => Ok(moved),
        }
    }

    /// Register a push consumer.
    pub fn consume(&self, opts: ConsumerOptions) -> Result<Consumer> {
        if self.shared.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.shared.next_consumer_id();
        let tag = opts.tag.clone();
        let me = self.with_state(|st, now, _fx| {
            let active: Vec<&Slot> = st.consumers.iter().filter(|c| !c.stopped).collect();
            if active.iter().any(|c| c.exclusive) {
                return Err(CoreError::ResourceLocked(format!(
                    "queue '{}' has an exclusive consumer",
                    st.name
                )));
            }
            if opts.exclusive && !active.is_empty() {
                return Err(CoreError::ResourceLocked(format!(
                    "queue '{}' already has consumers; cannot consume exclusively",
                    st.name
                )));
            }
            st.consumers.push(Slot {
                id,
                prefetch: opts.prefetch,
                no_ack: opts.no_ack,
                exclusive: opts.exclusive,
                priority: opts.priority,
                channel: opts.channel,
                tx,
                unacked: BTreeSet::new(),
                purged: HashSet::new(),
                stopped: false,
            });
            st.had_consumer = true;
            st.last_used_ms = now;
            st.me.upgrade().ok_or(CoreError::ShuttingDown)
        })?;
        Ok(Consumer { queue: me, id, tag, rx })
    }

    pub(crate) fn consumer_settle(
        &self,
        consumer: u64,
        lease: Receipt,
        nack: Option<bool>,
    ) -> Result<Settled> {
        self.with_state(|st, now, fx| {
            st.check_receipt(lease)?;
            let slot = st.consumers.iter_mut().find(|c| c.id == consumer);
            let held = slot.as_ref().is_some_and(|c| c.unacked.contains(&lease.seq));
            if !held && slot.is_some_and(|c| c.purged.remove(&lease.seq)) {
                // Purged while leased (`purge_all`): already gone, nothing to settle.
                return Ok(Settled { deleted: false, durable: Durable::done() });
            }
            let idx = st.find(lease.seq).filter(|_| held).ok_or(CoreError::MessageNotInflight)?;
            if st.entries[idx].receive_count != lease.generation {
                return Err(CoreError::MessageNotInflight);
            }
            match nack {
                None => {
                    let rec = st.remove(idx, fx);
                    st.totals.acked += 1;
                    return Ok(Settled { deleted: true, durable: st.settle(rec) });
                }
                Some(true) => st.return_entry(idx, now, fx),
                Some(false) => st.dead_letter(idx, DeathReason::Rejected, now, fx),
            }
            Ok(Settled { deleted: false, durable: Durable::done() })
        })
    }

    pub(crate) fn stop_consumer(&self, consumer: u64) {
        let mut st = self.state.lock();
        if let Some(c) = st.consumers.iter_mut().find(|c| c.id == consumer) {
            c.stopped = true;
        }
    }

    pub(crate) fn consumer_unacked(&self, consumer: u64) -> usize {
        self.state.lock().consumers.iter().find(|c| c.id == consumer).map_or(0, |c| c.unacked.len())
    }

    /// The consumer is gone: requeue what it held (redelivered), maybe auto-delete the queue.
    pub(crate) fn remove_consumer(&self, consumer: u64) {
        let now = self.shared.clock.now_ms();
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            let Some(pos) = st.consumers.iter().position(|c| c.id == consumer) else { return };
            let held: Vec<u64> = st.consumers[pos].unacked.iter().copied().collect();
            for seq in held {
                if let Some(idx) = st.find(seq) {
                    st.return_entry(idx, now, &mut fx);
                }
            }
            if let Some(pos) = st.consumers.iter().position(|c| c.id == consumer) {
                let slot = st.consumers.remove(pos);
                // return_entry released each lease's credit; anything left is bookkeeping drift.
                if let Some(ch) = &slot.channel {
                    fx.kick.extend(ch.release(slot.unacked.len() as u32));
                }
                if st.rr_next > pos {
                    st.rr_next -= 1;
                }
            }
            st.last_used_ms = now;
            if st.settings.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted {
                fx.auto_delete = true;
            }
            if !st.deleted && st.damaged.is_none() {
                st.dispatch(now, &mut fx);
            }
            if st.counts.ready == 0 {
                fx.wake = false;
            }
            st.gc();
        }
        self.finish(fx);
    }

    /// Re-run dispatch (channel credit freed up elsewhere).
    pub(crate) fn kick(&self) {
        let _ = self.with_state(|_, _, _| Ok(()));
    }

    /// Evaluate due timers now (called by `Broker::tick`).
    pub(crate) fn tick(&self) {
        let _ = self.with_state(|_, _, _| Ok(()));
    }

    /// Whether x-expires says the queue should be deleted now.
    pub(crate) fn expired_unused(&self, now: u64) -> bool {
        let st = self.state.lock();
        !st.deleted
            && st.consumers.is_empty()
            && st.settings.expires_ms.is_some_and(|x| now >= st.last_used_ms.saturating_add(x))
    }

    /// Mark used (a redeclare counts, for x-expires).
    pub fn touch(&self) {
        let now = self.shared.clock.now_ms();
        self.state.lock().last_used_ms = now;
    }

    /// The earliest moment something in this queue is due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.state.lock().next_deadline()
    }

    /// The queue was deleted: cancel consumers, wake receivers, forget messages. Returns how
    /// many messages it held.
    pub(crate) fn close(&self, reason: CancelReason) -> u64 {
        let mut kicks = Vec::new();
        let count = {
            let mut st = self.state.lock();
            if st.deleted {
                return 0;
            }
            st.deleted = true;
            let count = st.counts.ready + st.counts.delayed + st.counts.in_flight;
            for slot in st.consumers.drain(..) {
                let _ = slot.tx.send(ConsumerEvent::Cancelled(reason.clone()));
                if let Some(ch) = &slot.channel {
                    kicks.extend(ch.release(slot.unacked.len() as u32));
                }
            }
            st.entries = VecDeque::new();
            st.timers = BinaryHeap::new();
            st.dedup = HashMap::new();
            st.dedup_order = VecDeque::new();
            st.ready = ReadyIndex::new(false);
            st.counts = Counts::default();
            st.tombstones = 0;
            count
        };
        self.waiters.notify_waiters();
        for q in kicks {
            q.kick();
        }
        count
    }

    /// Broker shutdown: consumers are told, long polls return empty.
    pub(crate) fn shutdown(&self) {
        {
            let mut st = self.state.lock();
            if !st.closed_for_shutdown {
                st.closed_for_shutdown = true;
                for slot in &st.consumers {
                    let _ = slot.tx.send(ConsumerEvent::Cancelled(CancelReason::ShuttingDown));
                }
            }
            for slot in &mut st.consumers {
                slot.stopped = true;
            }
        }
        self.waiters.notify_waiters();
    }

    pub(crate) fn consumer_count(&self) -> usize {
        self.state.lock().consumers.iter().filter(|c| !c.stopped).count()
    }

    pub(crate) fn message_count(&self) -> u64 {
        let st = self.state.lock();
        st.counts.ready + st.counts.delayed + st.counts.in_flight
    }

    pub(crate) fn log(&self) -> Option<&Arc<dyn QueueLog>> {
        self.log.as_ref()
    }

    /// Change mutable settings (SQS SetQueueAttributes). `kind`, `durable`, exclusivity,
    /// auto-delete and max priority are fixed at creation. Persisted for durable queues.
    pub fn update_settings(&self, f: impl FnOnce(&mut QueueSettings)) -> Result<QueueSettings> {
        self.try_update_settings(|s| {
            f(s);
            Ok::<(), CoreError>(())
        })
    }

    /// Validate and apply in one step: `f` edits a copy of the settings and may refuse with an
    /// error of its own (any `E` a `CoreError` converts into, so a front end can keep its own
    /// error codes); then the engine validates the result. Only if both pass are the new
    /// settings installed (and persisted); otherwise nothing changes. Returns the settings
    /// installed.
    ///
    /// Atomic with respect to every other definitions change: `f` runs under the broker's
    /// definitions lock, on the settings as they are at that moment. It may read other queues
    /// (their settings, stats), but must not change definitions (declare, delete, update
    /// settings): that would deadlock.
    pub fn try_update_settings<E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut QueueSettings) -> Result<(), E>,
    ) -> Result<QueueSettings, E> {
        let vhost = self.vhost.upgrade().ok_or(CoreError::ShuttingDown)?;
        vhost.update_queue_settings(self, f)
    }

    /// Install settings already validated by the vhost (under the definitions lock), which
    /// refuses changes to the immutable ones this queue keeps copies of.
    pub(crate) fn set_settings(&self, new: Arc<QueueSettings>) -> Result<()> {
        debug_assert!(new.kind == self.kind && new.exclusive_owner == self.exclusive_owner);
        self.with_state(|st, _now, _fx| {
            st.settings = new;
            // Under the state lock, so the snapshot and the state never disagree for long and
            // two updates cannot install in the opposite order.
            *self.settings.lock() = st.settings.clone();
            Ok(())
        })
    }

    /// Move live records that pin old segments to the log's tail (same message id and
    /// sequence number), then settle the old copies once the new ones are durable.
    pub fn compact(&self) -> Result<usize> {
        let Some(log) = self.log.clone() else { return Ok(0) };
        let stragglers: HashSet<RecordId> = log.stragglers().into_iter().collect();
        if stragglers.is_empty() {
            return Ok(0);
        }
        let mut moved = 0;
        let mut st = self.state.lock();
        if st.deleted || st.damaged.is_some() {
            return Ok(0);
        }
        for idx in 0..st.entries.len() {
            let e = &st.entries[idx];
            if e.state == State::Removed || e.flags & IN_MEMORY != 0 || !stragglers.contains(&e.record) {
                continue;
            }
            let old = e.record;
            let mut msg = record::decode(Bytes::from(log.read(old)?))?;
            msg.receive_count = e.receive_count;
            msg.first_receive_ms = e.extra.as_ref().map_or(0, |x| x.first_receive_ms);
            let (new, durable) = log.append(&record::encode(&msg))?;
            st.entries[idx].record = new;
            self.shared.settle_after(log.clone(), old, durable);
            moved += 1;
        }
        Ok(moved)
    }

    /// Rebuild a durable queue from its log. Records that do not decode, and damage the store
    /// reports, open the queue closed.
    pub(crate) fn recover(&self) -> Result<RecoveryReport> {
        let Some(log) = self.log.clone() else { return Ok(RecoveryReport::default()) };
        let now = self.shared.clock.now_ms();
        let mut metas = Vec::new();
        let mut undecodable = 0u64;
        let mut first_bad = None;
        let mut report = log.recover(&mut |rid, bytes| match record::decode_meta(bytes) {
            Ok(m) => metas.push((m, rid)),
            Err(e) => {
                undecodable += 1;
                first_bad.get_or_insert_with(|| format!("record {rid:?}: {e}"));
            }
        })?;
        if let Some(bad) = first_bad {
            let msg = format!("{undecodable} record(s) could not be decoded, first {bad}");
            report.damage = Some(match report.damage.take() {
                Some(d) => format!("{d}; {msg}"),
                None => msg,
            });
        }
        // Compaction re-appends records, so log order is not sequence order; a crash between
        // a re-append and the old copy's settle leaves both: keep the newer copy.
        metas.sort_unstable_by_key(|(m, rid)| (m.seq, *rid));
        let mut duplicates = Vec::new();
        let mut st = self.state.lock();
        let mut fx = Effects::default();
        let fifo = st.settings.kind == QueueKind::Fifo;
        let max_priority = st.settings.max_priority.unwrap_or(0);
        let count = metas.len();
        for i in 0..count {
            let (m, rid) = &metas[i];
            if metas.get(i + 1).is_some_and(|(next, _)| next.seq == m.seq) {
                duplicates.push(*rid);
                continue;
            }
            let group = if fifo { st.ready.join_group(m.group_id.as_deref().unwrap_or("")) } else { 0 };
            let extra = (m.expires_at_ms.is_some() || m.first_receive_ms != 0).then(|| {
                Box::new(Extra {
                    expires_at_ms: m.expires_at_ms,
                    first_receive_ms: m.first_receive_ms,
                    ..Extra::default()
                })
            });
            st.entries.push_back(Entry {
                seq: m.seq,
                sent_ms: m.sent_ms,
                until_ms: m.delay_until_ms,
                record: *rid,
                extra,
                size: m.body_len,
                receive_count: m.receive_count,
                group,
                state: State::Detached,
                priority: m.priority.min(max_priority),
                flags: if m.receive_count > 0 { REDELIVERED } else { 0 },
            });
            let idx = st.entries.len() - 1;
            st.counts.bytes += u64::from(m.body_len);
            if m.delay_until_ms > now {
                st.attach(idx, State::Delayed, &mut fx);
                st.push_timer(Timer { at: m.delay_until_ms, seq: m.seq, kind: TimerKind::Delay }, &mut fx);
            } else {
                st.attach(idx, State::Ready, &mut fx);
            }
            if let Some(at) = m.expires_at_ms {
                st.push_timer(Timer { at, seq: m.seq, kind: TimerKind::Expire }, &mut fx);
            }
            if fifo && m.sent_ms.saturating_add(DEDUP_WINDOW_MS) > now {
                if let Some(d) = &m.dedup_id {
                    let key = dedup_key(st.settings.dedup_scope, m.group_id.as_deref().unwrap_or(""), d);
                    st.dedup.insert(key.clone(), DedupEntry { id: m.id, seq: m.seq, at: m.sent_ms });
                    st.dedup_order.push_back((m.sent_ms, key));
                }
            }
            st.next_seq = st.next_seq.max(m.seq.saturating_add(1));
        }
        st.dedup_order.make_contiguous().sort_by_key(|(at, _)| *at);
        st.damaged = report.damage.clone();
        drop(st);
        for rid in duplicates {
            if let Err(e) = log.settle(rid) {
                warn!(queue = %self.name, "settling a duplicate record after recovery: {e}");
            }
        }
        if let Some(at) = fx.earliest_timer {
            self.shared.hint_deadline(at);
        }
        Ok(report)
    }

    /// Deliver a dead-lettered message to its target, then settle the old record once every
    /// new copy is durable (nothing is lost if we crash in between: it is in both queues).
    fn route_dead_letter(&self, dl: DeadLetter) {
        let DeadLetter { mut msg, reason, record, target, at_ms } = dl;
        let vhost = self.vhost.upgrade();
        let durable: Option<Durable> = match (&target, &vhost) {
            (Target::Queue(name), Some(vhost)) => {
                let moved = match vhost.queue(name) {
                    Ok(q) if q.id != self.id => q.accept_moved(StoredMessage {
                        dead_letter_source: Some(self.name.clone()),
                        ..msg.clone()
                    }),
                    Ok(_) => Err(CoreError::InvalidArgument("a queue cannot redrive to itself".into())),
                    Err(e) => Err(e),
                };
                match moved {
                    Ok(sent) => Some(sent.durable),
                    Err(e) => {
                        // Never drop a message for want of its DLQ: keep it here instead.
                        warn!(queue = %self.name, dlq = %name, "redrive failed ({e}); message kept in its queue");
                        match self.accept_moved(msg) {
                            Ok(sent) => Some(sent.durable),
                            Err(e) => {
                                error!(queue = %self.name, "could not keep a message that failed redrive: {e}; it stays in the log");
                                return;
                            }
                        }
                    }
                }
            }
            (Target::Exchange { name, routing_key }, Some(vhost)) => {
                let original_expiration = msg.message.properties.expiration_ms;
                add_x_death(
                    &mut msg.message.headers,
                    &self.name,
                    reason,
                    &msg.message.exchange,
                    &msg.message.routing_key,
                    at_ms,
                    if reason == DeathReason::Expired { original_expiration } else { None },
                );
                if reason == DeathReason::Expired {
                    // RabbitMQ drops the per-message TTL so the copy does not expire at once.
                    msg.message.properties.expiration_ms = None;
                }
                let key = routing_key.clone().unwrap_or_else(|| msg.message.routing_key.clone());
                let opts = SendOptions {
                    delay: None,
                    group_id: msg.group_id,
                    dedup_id: None,
                    system_attributes: msg.system_attributes,
                    body_md5: msg.body_md5,
                };
                vhost.publish_dead_letter(name, &key, msg.message, opts, &self.name)
            }
            (_, None) => None,
        };
        let (Some(rec), Some(log)) = (record, self.log.clone()) else { return };
        match durable {
            Some(d) => self.shared.settle_after(log, rec, d),
            None => {
                if let Err(e) = log.settle(rec) {
                    warn!(queue = %self.name, "settling a dead-lettered record: {e}");
                }
            }
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("vhost", &self.vhost_name).field("name", &self.name).finish()
    }
}

// ---- state machine ------------------------------------------------------------------------

impl QueueState {
    fn find(&self, seq: u64) -> Option<usize> {
        let idx = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        (self.entries[idx].state != State::Removed).then_some(idx)
    }

    fn check_receipt(&self, r: Receipt) -> Result<()> {
        if r.queue != self.id || r.seq >= self.next_seq {
            return Err(CoreError::ReceiptHandleInvalid);
        }
        Ok(())
    }

    /// The entry leased under `r` by a pull receive or basic.get.
    fn pull_lease(&self, r: Receipt) -> Result<usize> {
        let idx = self.find(r.seq).ok_or(CoreError::MessageNotInflight)?;
        let e = &self.entries[idx];
        let pushed = e.extra.as_ref().is_some_and(|x| x.consumer != 0);
        if e.state != State::InFlight || e.receive_count != r.generation || pushed {
            return Err(CoreError::MessageNotInflight);
        }
        Ok(idx)
    }

    fn queued(&self) -> u64 {
        self.counts.ready + self.counts.delayed
    }

    fn expiry_at(&self, e: &Entry) -> u64 {
        let mut at = e.sent_ms.saturating_add(self.settings.retention_ms);
        if let Some(ttl) = self.settings.message_ttl_ms {
            at = at.min(e.sent_ms.saturating_add(ttl));
        }
        if let Some(x) = e.extra.as_ref().and_then(|x| x.expires_at_ms) {
            at = at.min(x);
        }
        at
    }

    fn push_timer(&mut self, t: Timer, fx: &mut Effects) {
        fx.earliest_timer = Some(fx.earliest_timer.map_or(t.at, |e| e.min(t.at)));
        self.timers.push(Reverse(t));
    }

    /// Take an entry out of its state's bookkeeping (counts, ready index, FIFO lock, consumer
    /// credit). `unindexed`: the ready index already dropped it (it was just popped).
    fn detach(&mut self, idx: usize, unindexed: bool, fx: &mut Effects) {
        let e = &self.entries[idx];
        let (seq, priority, group, size) = (e.seq, e.priority, e.group, u64::from(e.size));
        match e.state {
            State::Ready => {
                if !unindexed {
                    self.ready.remove(seq, priority, group);
                }
                self.counts.ready = self.counts.ready.saturating_sub(1);
                self.counts.queued_bytes = self.counts.queued_bytes.saturating_sub(size);
            }
            State::Delayed => {
                self.counts.delayed = self.counts.delayed.saturating_sub(1);
                self.counts.queued_bytes = self.counts.queued_bytes.saturating_sub(size);
            }
            State::InFlight => {
                self.counts.in_flight = self.counts.in_flight.saturating_sub(1);
                self.ready.in_flight_done(group);
                let consumer = e.extra.as_ref().map_or(0, |x| x.consumer);
                if consumer != 0 {
                    if let Some(slot) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                        if slot.unacked.remove(&seq) && !slot.no_ack {
                            if let Some(ch) = &slot.channel {
                                fx.kick.extend(ch.release(1));
                            }
                        }
                    }
                    if let Some(x) = self.entries[idx].extra.as_mut() {
                        x.consumer = 0;
                    }
                }
            }
            State::Detached | State::Removed => {}
        }
        self.entries[idx].state = State::Detached;
    }

    /// Put a detached entry into `state`. Ready entries join the ready index (at their
    /// original position, since the index is ordered by sequence number).
    fn attach(&mut self, idx: usize, state: State, fx: &mut Effects) {
        let e = &mut self.entries[idx];
        e.state = state;
        let size = u64::from(e.size);
        match state {
            State::Ready => {
                e.until_ms = 0;
                let (seq, priority, group) = (e.seq, e.priority, e.group);
                self.ready.insert(seq, priority, group);
                // A message back behind the head sweep's cursor must still be swept.
                self.sweep_from = self.sweep_from.min(seq);
                self.counts.ready += 1;
                self.counts.queued_bytes += size;
                fx.wake = true;
            }
            State::Delayed => {
                self.counts.delayed += 1;
                self.counts.queued_bytes += size;
            }
            State::InFlight => self.counts.in_flight += 1,
            State::Detached | State::Removed => {}
        }
    }

    /// Drop an entry from the queue; returns its record if it has one to settle.
    fn remove(&mut self, idx: usize, fx: &mut Effects) -> Option<RecordId> {
        self.detach(idx, false, fx);
        let e = &mut self.entries[idx];
        e.state = State::Removed;
        e.extra = None;
        let group = e.group;
        let record = (e.flags & IN_MEMORY == 0).then_some(e.record);
        self.counts.bytes = self.counts.bytes.saturating_sub(u64::from(e.size));
        self.tombstones += 1;
        self.ready.leave_group(group);
        record
    }

    /// Settle a removed message's record (a no-op for in-memory messages).
    fn settle(&self, record: Option<RecordId>) -> Durable {
        let (Some(rec), Some(log)) = (record, &self.log) else { return Durable::done() };
        self.settled(rec, log.settle(rec))
    }

    /// [`QueueState::settle`] for several records, with one store call.
    fn settle_batch(&self, records: &[RecordId]) -> Vec<Durable> {
        let Some(log) = &self.log else { return vec![Durable::done(); records.len()] };
        records
            .iter()
            .zip(log.settle_batch(records))
            .map(|(&rec, settled)| self.settled(rec, settled))
            .collect()
    }

    /// The promise of one settle. A record the store no longer holds cannot come back, so that
    /// is settled. Any other failure is the caller's to report (an SQS delete answers an
    /// error, not success): the message is gone from memory but may come back after a
    /// restart, at least once and never lost.
    fn settled(&self, rec: RecordId, settled: wharf_store::Result<Durable>) -> Durable {
        match settled {
            Ok(durable) => durable,
            Err(StoreError::NoSuchRecord(_)) => Durable::done(),
            Err(e) => {
                warn!(queue = %self.name, "settling record {rec:?}: {e}");
                Durable::failed(&e)
            }
        }
    }

    /// Read a message back (from the store, or memory) with its current system fields.
    fn load(&self, idx: usize) -> Result<StoredMessage> {
        let e = &self.entries[idx];
        let mut m = match e.extra.as_ref().and_then(|x| x.body.as_ref()) {
            Some(b) => (**b).clone(),
            None => {
                let log =
                    self.log.as_ref().ok_or_else(|| CoreError::Corrupt("message body missing".into()))?;
                record::decode(Bytes::from(log.read(e.record)?))?
            }
        };
        m.receive_count = e.receive_count;
        m.first_receive_ms = e.extra.as_ref().map_or(0, |x| x.first_receive_ms);
        Ok(m)
    }

    fn dead_letter_target(&self, reason: DeathReason) -> Option<Target> {
        match reason {
            DeathReason::MaxReceives => {
                self.settings.redrive.as_ref().map(|r| Target::Queue(r.dead_letter_queue.clone()))
            }
            _ => self.settings.dead_letter_exchange.as_ref().map(|x| Target::Exchange {
                name: x.clone(),
                routing_key: self.settings.dead_letter_routing_key.clone(),
            }),
        }
    }

    /// Remove an entry and send it to its dead-letter target (or drop it if there is none).
    fn dead_letter(&mut self, idx: usize, reason: DeathReason, now: u64, fx: &mut Effects) {
        match self.dead_letter_target(reason) {
            None => {
                let rec = self.remove(idx, fx);
                self.settle(rec);
            }
            Some(target) => {
                let loaded = self.load(idx);
                let in_memory = self.entries[idx].flags & IN_MEMORY != 0;
                let rec = self.remove(idx, fx);
                match loaded {
                    Ok(msg) => {
                        self.totals.dead_lettered += 1;
                        fx.dead.push(DeadLetter {
                            msg,
                            reason,
                            record: if in_memory { None } else { rec },
                            target,
                            at_ms: now,
                        });
                    }
                    Err(e) => {
                        // Without its bytes it cannot move; its record is left unsettled so it
                        // comes back after a restart rather than vanishing.
                        error!(queue = %self.name, "cannot read a message to dead-letter it: {e}");
                    }
                }
            }
        }
    }

    fn expire(&mut self, idx: usize, now: u64, fx: &mut Effects) {
        self.totals.expired += 1;
        self.dead_letter(idx, DeathReason::Expired, now, fx);
    }

    /// A lease ended without an ack: back to ready at its original position (redelivered),
    /// unless it expired meanwhile or went past the delivery limit.
    fn return_entry(&mut self, idx: usize, now: u64, fx: &mut Effects) {
        let e = &self.entries[idx];
        if self.expiry_at(e) <= now {
            self.expire(idx, now, fx);
            return;
        }
        if self.settings.delivery_limit.is_some_and(|limit| e.receive_count > limit) {
            self.dead_letter(idx, DeathReason::DeliveryLimit, now, fx);
            return;
        }
        self.detach(idx, false, fx);
        self.entries[idx].flags |= REDELIVERED;
        self.attach(idx, State::Ready, fx);
    }

    fn process_due(&mut self, now: u64, fx: &mut Effects) {
        while let Some(&Reverse(t)) = self.timers.peek() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            let Some(idx) = self.find(t.seq) else { continue };
            let e = &self.entries[idx];
            match t.kind {
                TimerKind::Visibility => {
                    if e.state == State::InFlight && e.until_ms == t.at {
                        self.return_entry(idx, now, fx);
                    }
                }
                TimerKind::Delay => {
                    if e.state == State::Delayed && e.until_ms == t.at {
                        self.detach(idx, false, fx);
                        self.attach(idx, State::Ready, fx);
                    }
                }
                TimerKind::Expire => {
                    if matches!(e.state, State::Ready | State::Delayed) && self.expiry_at(e) <= now {
                        self.expire(idx, now, fx);
                    }
                }
            }
        }
        // Retention and queue TTL grow with the sequence number, so expired messages are at
        // the head. In-flight ones are skipped (they are checked when they come back).
        let mut i = self.entries.partition_point(|e| e.seq < self.sweep_from);
        while i < self.entries.len() {
            let e = &self.entries[i];
            match e.state {
                State::Ready | State::Delayed => {
                    if self.expiry_at(e) > now {
                        self.sweep_from = e.seq;
                        break;
                    }
                    self.expire(i, now, fx);
                }
                State::InFlight | State::Detached | State::Removed => {}
            }
            i += 1;
        }
        if i >= self.entries.len() {
            self.sweep_from = self.next_seq;
        }
        while let Some((at, _)) = self.dedup_order.front() {
            if at.saturating_add(DEDUP_WINDOW_MS) > now {
                break;
            }
            if let Some((at, key)) = self.dedup_order.pop_front() {
                if self.dedup.get(&key).is_some_and(|d| d.at == at) {
                    self.dedup.remove(&key);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        if self.deleted || self.damaged.is_some() {
            return None;
        }
        let mut next = self.timers.peek().map(|Reverse(t)| t.at);
        let mut consider = |at: u64| next = Some(next.map_or(at, |n: u64| n.min(at)));
        if let Some((at, _)) = self.dedup_order.front() {
            consider(at.saturating_add(DEDUP_WINDOW_MS));
        }
        let head = self.entries.partition_point(|e| e.seq < self.sweep_from);
        if let Some(e) = self.entries.range(head..).find(|e| matches!(e.state, State::Ready | State::Delayed))
        {
            consider(self.expiry_at(e));
        }
        if let Some(x) = self.settings.expires_ms {
            if self.consumers.is_empty() {
                consider(self.last_used_ms.saturating_add(x));
            }
        }
        next
    }

    /// Drop tombstones: from the front always, everywhere once they are most of the deque.
    fn gc(&mut self) {
        while self.entries.front().is_some_and(|e| e.state == State::Removed) {
            self.entries.pop_front();
            self.tombstones = self.tombstones.saturating_sub(1);
        }
        if self.tombstones > 1024 && self.tombstones * 2 > self.entries.len() {
            self.entries.retain(|e| e.state != State::Removed);
            self.tombstones = 0;
        }
        let cap = self.entries.capacity();
        if cap > 4096 && self.entries.len() < cap / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    /// A message taken by a move that did not happen: back to ready at its place, unchanged
    /// (no redelivered flag: nobody received it).
    fn return_moving(&mut self, idx: usize, now: u64, fx: &mut Effects) {
        if self.expiry_at(&self.entries[idx]) <= now {
            self.expire(idx, now, fx);
            return;
        }
        self.detach(idx, false, fx);
        self.attach(idx, State::Ready, fx);
    }

    /// Remove ready and delayed messages, and with `leased` in-flight ones too.
    fn purge(&mut self, leased: bool, fx: &mut Effects) -> u64 {
        let mut n = 0;
        for idx in 0..self.entries.len() {
            let e = &self.entries[idx];
            match e.state {
                State::Ready | State::Delayed => {}
                State::InFlight if leased => {
                    let (seq, owner) = (e.seq, e.extra.as_ref().map_or(0, |x| x.consumer));
                    if let Some(slot) = self.consumers.iter_mut().find(|c| owner != 0 && c.id == owner) {
                        slot.purged.insert(seq);
                    }
                }
                _ => continue,
            }
            let rec = self.remove(idx, fx);
            self.settle(rec);
            n += 1;
        }
        n
    }

    /// The oldest queued (ready or delayed) message: the one drop-head drops.
    fn oldest_queued(&self) -> Option<usize> {
        self.entries.iter().position(|e| matches!(e.state, State::Ready | State::Delayed))
    }

    fn over_limit(&self, size: u64) -> bool {
        self.settings.max_length.is_some_and(|m| self.queued() + 1 > m)
            || self.settings.max_length_bytes.is_some_and(|m| self.counts.queued_bytes + size > m)
    }

    /// The body's size, if the queue takes a message that big (moved messages always fit).
    fn check_size(&self, message: &Message, moved: bool) -> Result<u32> {
        let size = message.body.len();
        if !moved && size > self.settings.max_message_size as usize {
            return Err(CoreError::MessageTooLarge { size, limit: self.settings.max_message_size as usize });
        }
        u32::try_from(size).map_err(|_| CoreError::MessageTooLarge { size, limit: u32::MAX as usize })
    }

    /// The delay a new message gets: its own, or the queue's.
    fn delay_ms(&self, delay: Option<Duration>, moved: bool) -> Result<u64> {
        let delay_ms = match (moved, delay) {
            (true, _) => 0,
            (false, Some(d)) => ms(d),
            (false, None) => self.settings.delay_ms,
        };
        if delay_ms > MAX_DELAY_MS {
            return Err(CoreError::InvalidArgument(format!(
                "delay {delay_ms} ms exceeds the maximum of {MAX_DELAY_MS} ms"
            )));
        }
        Ok(delay_ms)
    }

    /// The stored form of a new message (its sequence number is set when it is admitted).
    #[allow(clippy::too_many_arguments)]
    fn new_stored(
        &self,
        message: Message,
        system_attributes: BTreeMap<String, String>,
        body_md5: Option<[u8; 16]>,
        group_id: Option<String>,
        dedup_id: Option<String>,
        delay_ms: u64,
        now: u64,
        moved: Option<Moved>,
    ) -> StoredMessage {
        let (id, sent_ms, moved_expiry, dead_letter_source) = match moved {
            Some(m) => (m.id, m.sent_ms, m.expires_at_ms, m.dead_letter_source),
            None => (MessageId::random(), now, None, None),
        };
        let expires_at_ms = match message.properties.expiration_ms {
            Some(ttl) => Some(now.saturating_add(ttl)),
            None => moved_expiry,
        };
        let priority =
            self.settings.max_priority.map_or(0, |m| message.properties.priority.unwrap_or(0).min(m));
        StoredMessage {
            id,
            seq: 0,
            sent_ms,
            expires_at_ms,
            delay_until_ms: if delay_ms > 0 { now.saturating_add(delay_ms) } else { 0 },
            receive_count: 0,
            first_receive_ms: 0,
            priority,
            group_id,
            dedup_id,
            system_attributes,
            dead_letter_source,
            body_md5,
            message,
        }
    }

    /// `moved`: what a message moved from another queue keeps.
    fn send(
        &mut self,
        message: Message,
        opts: SendOptions,
        now: u64,
        fx: &mut Effects,
        moved: Option<Moved>,
    ) -> Result<Sent> {
        let size32 = self.check_size(&message, moved.is_some())?;
        let size = size32 as usize;
        let fifo = self.settings.kind == QueueKind::Fifo;
        let group_id = opts.group_id.filter(|g| !g.is_empty());
        let mut dedup_id = None;
        let mut dedup_key_new = None;
        if fifo && moved.is_none() {
            let Some(group) = group_id.as_deref() else {
                return Err(CoreError::InvalidArgument(
                    "MessageGroupId is required for messages sent to a FIFO queue".into(),
                ));
            };
            if opts.delay.is_some() {
                return Err(CoreError::InvalidArgument(
                    "per-message delay is not supported on FIFO queues; set the queue's delay instead".into(),
                ));
            }
            let id = match opts.dedup_id.filter(|d| !d.is_empty()) {
                Some(d) => d,
                None if self.settings.content_based_dedup => sha256_hex(&message.body),
                None => {
                    return Err(CoreError::InvalidArgument(
                        "the queue should either have content-based deduplication enabled or \
                         MessageDeduplicationId provided explicitly"
                            .into(),
                    ))
                }
            };
            let key = dedup_key(self.settings.dedup_scope, group, &id);
            if let Some(d) = self.dedup.get(&key) {
                if d.at.saturating_add(DEDUP_WINDOW_MS) > now {
                    return Ok(Sent {
                        message_id: d.id,
                        sequence_number: d.seq,
                        duplicate_of_earlier: true,
                        dedup_id: Some(id),
                        durable: Durable::done(),
                    });
                }
            }
            dedup_id = Some(id);
            dedup_key_new = Some(key);
        } else if fifo {
            dedup_id = opts.dedup_id;
        }
        let is_moved = moved.is_some();
        let delay_ms = self.delay_ms(opts.delay, is_moved)?;
        let mut stored = self.new_stored(
            message,
            opts.system_attributes,
            opts.body_md5,
            group_id,
            dedup_id.clone(),
            delay_ms,
            now,
            moved,
        );

        if self.over_limit(size as u64) {
            match self.settings.overflow {
                Overflow::RejectPublish => return Err(CoreError::QueueFull(self.name.clone())),
                Overflow::RejectPublishDlx => {
                    self.dead_letter_new(stored, now, fx);
                    return Err(CoreError::QueueFull(self.name.clone()));
                }
                Overflow::DropHead => {
                    while self.over_limit(size as u64) {
                        let Some(idx) = self.oldest_queued() else { break };
                        self.dead_letter(idx, DeathReason::MaxLen, now, fx);
                    }
                    if self.over_limit(size as u64) {
                        // It cannot fit even alone (max-length 0, or bigger than the byte
                        // limit): it is the head, and it is dropped.
                        stored.seq = self.next_seq;
                        self.next_seq += 1;
                        let sent = Sent {
                            message_id: stored.id,
                            sequence_number: stored.seq,
                            duplicate_of_earlier: false,
                            dedup_id,
                            durable: Durable::done(),
                        };
                        self.totals.enqueued += 1;
                        self.dead_letter_new(stored, now, fx);
                        return Ok(sent);
                    }
                }
            }
        }

        stored.seq = self.next_seq;
        let persist = self.log.is_some() && stored.message.properties.persistent;
        let (record, durable) = match (&self.log, persist) {
            (Some(log), true) => log.append(&record::encode(&stored))?,
            _ => (RecordId { segment: 0, offset: 0 }, Durable::done()),
        };
        Ok(self.admit(stored, record, durable, persist, now, fx, dedup_key_new, is_moved))
    }

    /// Several sends under one lock. A standard queue with a store and room for them all writes
    /// them with one store append; anything else (FIFO deduplication, overflow rules, transient
    /// messages) goes one by one. One result per message, in order.
    fn send_batch(
        &mut self,
        items: Vec<(Message, SendOptions)>,
        now: u64,
        fx: &mut Effects,
    ) -> Vec<Result<Sent>> {
        let bytes: u64 = items.iter().map(|(m, _)| m.body.len() as u64).sum();
        let one_write = self.settings.kind == QueueKind::Standard
            && self.log.is_some()
            && items.iter().all(|(m, _)| m.properties.persistent)
            && self.settings.max_length.is_none_or(|m| self.queued() + items.len() as u64 <= m)
            && self.settings.max_length_bytes.is_none_or(|m| self.counts.queued_bytes + bytes <= m);
        if !one_write {
            return items.into_iter().map(|(m, o)| self.send(m, o, now, fx, None)).collect();
        }
        let mut results: Vec<Result<StoredMessage>> = Vec::with_capacity(items.len());
        let mut seq = self.next_seq;
        for (message, opts) in items {
            let prepared = self.check_size(&message, false).and_then(|_| {
                let delay_ms = self.delay_ms(opts.delay, false)?;
                let group_id = opts.group_id.filter(|g| !g.is_empty());
                let mut stored = self.new_stored(
                    message,
                    opts.system_attributes,
                    opts.body_md5,
                    group_id,
                    None,
                    delay_ms,
                    now,
                    None,
                );
                stored.seq = seq;
                seq += 1;
                Ok(stored)
            });
            results.push(prepared);
        }
        let encoded: Vec<Vec<u8>> = results.iter().flatten().map(record::encode).collect();
        let records: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let log = self.log.clone().expect("checked above");
        match log.append_batch(&records) {
            Ok((ids, durable)) => {
                let mut ids = ids.into_iter();
                results
                    .into_iter()
                    .map(|r| {
                        let stored = r?;
                        let record = ids.next().expect("one record id per message written");
                        Ok(self.admit(stored, record, durable.clone(), true, now, fx, None, false))
                    })
                    .collect()
            }
            Err(e) => results.into_iter().map(|r| r.and_then(|_| Err(e.for_each_write().into()))).collect(),
        }
    }

    /// Put a new message (already in the log, if `persist`) into the queue. `stored.seq` must be
    /// the queue's next sequence number.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        stored: StoredMessage,
        record: RecordId,
        durable: Durable,
        persist: bool,
        now: u64,
        fx: &mut Effects,
        dedup_key_new: Option<String>,
        is_moved: bool,
    ) -> Sent {
        debug_assert_eq!(stored.seq, self.next_seq);
        let seq = stored.seq;
        let (id, sent_ms, expires_at_ms, priority) =
            (stored.id, stored.sent_ms, stored.expires_at_ms, stored.priority);
        let size = stored.message.body.len();
        let dedup_id = stored.dedup_id.clone();
        let fifo = self.settings.kind == QueueKind::Fifo;
        self.next_seq += 1;
        let group = if fifo { self.ready.join_group(stored.group_id.as_deref().unwrap_or("")) } else { 0 };
        let delay_until = stored.delay_until_ms;
        let extra = if !persist {
            Some(Box::new(Extra { expires_at_ms, body: Some(Box::new(stored)), ..Extra::default() }))
        } else if expires_at_ms.is_some() {
            Some(Box::new(Extra { expires_at_ms, ..Extra::default() }))
        } else {
            None
        };
        self.entries.push_back(Entry {
            seq,
            sent_ms,
            until_ms: delay_until,
            record,
            extra,
            size: size as u32,
            receive_count: 0,
            group,
            state: State::Detached,
            priority,
            flags: if persist { 0 } else { IN_MEMORY },
        });
        let idx = self.entries.len() - 1;
        self.counts.bytes += size as u64;
        if delay_until > now {
            self.attach(idx, State::Delayed, fx);
            self.push_timer(Timer { at: delay_until, seq, kind: TimerKind::Delay }, fx);
        } else {
            self.attach(idx, State::Ready, fx);
        }
        // Moved messages can be older than the queue's head; a timer catches their expiry.
        let expiry = self.expiry_at(&self.entries[idx]);
        if expires_at_ms.is_some() || is_moved {
            self.push_timer(Timer { at: expiry, seq, kind: TimerKind::Expire }, fx);
        }
        if let Some(key) = dedup_key_new {
            self.dedup.insert(key.clone(), DedupEntry { id, seq, at: now });
            self.dedup_order.push_back((now, key));
        }
        self.totals.enqueued += 1;
        Sent { message_id: id, sequence_number: seq, duplicate_of_earlier: false, dedup_id, durable }
    }

    /// Dead-letter a message that never entered the queue (overflow).
    fn dead_letter_new(&mut self, msg: StoredMessage, now: u64, fx: &mut Effects) {
        if let Some(target) = self.dead_letter_target(DeathReason::MaxLen) {
            self.totals.dead_lettered += 1;
            fx.dead.push(DeadLetter { msg, reason: DeathReason::MaxLen, record: None, target, at_ms: now });
        }
    }

    /// Lease the next deliverable message, dropping or dead-lettering expired ones and
    /// redriving those past the receive limit on the way. Returns the delivery and its group.
    fn lease_next(
        &mut self,
        now: u64,
        kind: LeaseKind,
        prefer: Option<GroupSlot>,
        fx: &mut Effects,
    ) -> Result<Option<(Delivery, GroupSlot)>> {
        loop {
            let Some((seq, group)) = self.ready.pop_next(prefer) else { return Ok(None) };
            let Some(idx) = self.find(seq) else {
                // The index named a message the queue does not have; undo the group lock.
                self.ready.in_flight_done(group);
                continue;
            };
            // Popped: account it in flight at once (its FIFO group already counts it).
            self.detach(idx, true, fx);
            self.attach(idx, State::InFlight, fx);
            if self.expiry_at(&self.entries[idx]) <= now {
                self.expire(idx, now, fx);
                continue;
            }
            let receives = self.entries[idx].receive_count;
            if self.settings.redrive.as_ref().is_some_and(|r| receives >= r.max_receive_count) {
                self.dead_letter(idx, DeathReason::MaxReceives, now, fx);
                continue;
            }
            let stored = match self.load(idx) {
                Ok(m) => m,
                Err(e) => {
                    self.detach(idx, false, fx);
                    self.attach(idx, State::Ready, fx);
                    return Err(e);
                }
            };
            let e = &mut self.entries[idx];
            e.receive_count = e.receive_count.saturating_add(1);
            let redelivered = e.flags & REDELIVERED != 0 || e.receive_count > 1;
            let x = e.extra.get_or_insert_with(Box::default);
            if x.first_receive_ms == 0 {
                x.first_receive_ms = now;
            }
            x.lease_start_ms = now;
            let first_receive_ms = x.first_receive_ms;
            match kind {
                LeaseKind::Pull(visibility) => {
                    x.consumer = 0;
                    e.until_ms = now.saturating_add(visibility);
                    let at = e.until_ms;
                    self.push_timer(Timer { at, seq, kind: TimerKind::Visibility }, fx);
                }
                LeaseKind::Held => {
                    x.consumer = 0;
                    e.until_ms = u64::MAX;
                }
                LeaseKind::Push(consumer) => {
                    x.consumer = consumer;
                    e.until_ms = u64::MAX;
                }
            }
            let e = &self.entries[idx];
            let delivery = Delivery {
                receipt: Receipt { queue: self.id, seq, generation: e.receive_count },
                message_id: stored.id,
                sequence_number: seq,
                message: stored.message,
                redelivered,
                receive_count: e.receive_count,
                sent_ms: stored.sent_ms,
                first_receive_ms,
                group_id: stored.group_id,
                dedup_id: stored.dedup_id,
                system_attributes: stored.system_attributes,
                dead_letter_source: stored.dead_letter_source,
                body_md5: stored.body_md5,
            };
            return Ok(Some((delivery, group)));
        }
    }

    /// Which consumer gets the next message: the single active one, or the highest-priority
    /// consumer with credit, round-robin among equals.
    fn pick_consumer(&self, blocked: &[bool]) -> Option<usize> {
        let has_credit =
            |c: &Slot| !c.stopped && (c.no_ack || c.prefetch == 0 || c.unacked.len() < c.prefetch as usize);
        if self.settings.single_active_consumer {
            let active = self.consumers.iter().position(|c| !c.stopped)?;
            return (has_credit(&self.consumers[active]) && !blocked[active]).then_some(active);
        }
        let n = self.consumers.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let ci = (self.rr_next + k) % n;
            let c = &self.consumers[ci];
            if blocked[ci] || !has_credit(c) {
                continue;
            }
            if best.is_none_or(|b| c.priority > self.consumers[b].priority) {
                best = Some(ci);
            }
        }
        best
    }

    /// Push ready messages to consumers with credit.
    fn dispatch(&mut self, now: u64, fx: &mut Effects) {
        if self.consumers.is_empty() || self.deleted || self.closed_for_shutdown {
            return;
        }
        let mut blocked = vec![false; self.consumers.len()];
        while self.counts.ready > 0 {
            let Some(ci) = self.pick_consumer(&blocked) else { break };
            let (id, no_ack, channel) = {
                let c = &self.consumers[ci];
                (c.id, c.no_ack, c.channel.clone())
            };
            if self.consumers[ci].tx.is_closed() {
                self.consumers[ci].stopped = true;
                continue;
            }
            let credited = match (&channel, no_ack) {
                (Some(ch), false) => {
                    if !ch.try_acquire() {
                        ch.wait(self.me.clone());
                        blocked[ci] = true;
                        continue;
                    }
                    true
                }
                _ => false,
            };
            match self.lease_next(now, LeaseKind::Push(id), None, fx) {
                Ok(Some((d, _))) => {
                    let seq = d.receipt.seq;
                    self.totals.delivered += 1;
                    self.rr_next = ci + 1;
                    if no_ack {
                        if let Some(idx) = self.find(seq) {
                            let rec = self.remove(idx, fx);
                            self.settle(rec);
                            self.totals.acked += 1;
                        }
                        let _ = self.consumers[ci].tx.send(ConsumerEvent::Delivery(Box::new(d)));
                    } else {
                        self.consumers[ci].unacked.insert(seq);
                        // The receiver lives as long as the Consumer, whose drop requeues this.
                        let _ = self.consumers[ci].tx.send(ConsumerEvent::Delivery(Box::new(d)));
                    }
                }
                Ok(None) | Err(_) => {
                    if let (true, Some(ch)) = (credited, &channel) {
                        fx.kick.extend(ch.release(1));
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn entry_size() -> usize {
    std::mem::size_of::<Entry>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_garbage() {
        let r = Receipt { queue: 7, seq: 1_700_000_000_000_123, generation: 3 };
        assert_eq!(Receipt::decode(&r.encode()).expect("decodes"), r);
        assert!(Receipt::decode("").is_err());
        assert!(Receipt::decode("zz").is_err());
        let mut s = r.encode();
        s.replace_range(20..21, if &s[20..21] == "0" { "1" } else { "0" });
        assert!(matches!(Receipt::decode(&s), Err(CoreError::ReceiptHandleInvalid)));
        assert!(Receipt::decode(&"é".repeat(24)).is_err());
        // Handles issued before a restart or an upgrade still decode: the layout is fixed.
        let r = Receipt { queue: u64::MAX, seq: 0xabc, generation: u32::MAX };
        let check = Receipt::check(r.queue, r.seq, r.generation);
        let expected = format!("{:016x}{:016x}{:08x}{check:08x}", r.queue, r.seq, r.generation);
        assert_eq!(r.encode(), expected);
        assert_eq!(Receipt::decode(&expected.to_uppercase()).expect("any hex case"), r);
        assert!(Receipt::decode(&expected.replace('a', "+")).is_err());
    }

    #[test]
    fn entry_is_small() {
        // The per-message cost of a durable queue: this entry plus about 18 bytes in the
        // ready index (standard) or 8 (FIFO lane), and VecDeque slack.
        let size = entry_size();
        println!("size_of::<Entry>() = {size} bytes");
        assert!(size <= 64, "Entry grew to {size} bytes");
    }
}
