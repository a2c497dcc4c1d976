//! Push leases: consumers (AMQP basic.consume, STOMP SUBSCRIBE, MQTT subscriptions).
//!
//! A [`Consumer`] receives [`ConsumerEvent`]s through a channel. The engine only pushes while
//! the consumer has credit (prefetch, and optionally a channel-wide [`ChannelCredit`] for AMQP
//! global QoS), so the channel is bounded by credit even though it is an unbounded mpsc.
//! Dropping a consumer requeues everything it has not settled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::queue::{Delivery, Queue, Receipt, Settled};

/// How a consumer is registered.
#[derive(Clone, Debug, Default)]
pub struct ConsumerOptions {
    /// The front end's name for it (AMQP consumer tag, STOMP subscription id).
    pub tag: String,
    /// Most unsettled deliveries at once; 0 = unlimited. Ignored with `no_ack`.
    pub prefetch: u32,
    /// Deliveries are settled as they are sent (AMQP no-ack, MQTT QoS 0).
    pub no_ack: bool,
    /// No other consumer may share the queue (AMQP exclusive consume).
    pub exclusive: bool,
    /// Higher-priority consumers get messages first while they have credit (x-priority).
    pub priority: i32,
    /// A credit shared by several consumers (AMQP `basic.qos` with global = true).
    pub channel: Option<Arc<ChannelCredit>>,
}

/// Why the engine ended a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    QueueDeleted,
    ShuttingDown,
}

#[derive(Debug)]
pub enum ConsumerEvent {
    /// Boxed: a delivery is large and the channel should move a pointer.
    Delivery(Box<Delivery>),
    /// The engine cancelled the consumer (AMQP basic.cancel from the server). No further events.
    Cancelled(CancelReason),
}

/// A prefetch window shared by several consumers (possibly on several queues).
#[derive(Debug, Default)]
pub struct ChannelCredit {
    /// 0 = unlimited.
    limit: AtomicU32,
    used: AtomicU32,
    /// Queues that found the credit exhausted and want a kick when some frees up.
    waiting: Mutex<Vec<Weak<Queue>>>,
}

impl ChannelCredit {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(ChannelCredit { limit: AtomicU32::new(limit), ..ChannelCredit::default() })
    }

    /// Change the limit (AMQP basic.qos again). Raising it kicks the waiting queues.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::SeqCst);
        for q in self.drain_waiting() {
            q.kick();
        }
    }

    pub fn in_use(&self) -> u32 {
        self.used.load(Ordering::SeqCst)
    }

    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::SeqCst);
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| (limit == 0 || u < limit).then_some(u + 1))
            .is_ok()
    }

    /// Give back `n` credits; returns the queues to kick (the caller does so after dropping
    /// its own queue lock, to keep the lock order).
    pub(crate) fn release(&self, n: u32) -> Vec<Arc<Queue>> {
        if n == 0 {
            return Vec::new();
        }
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| Some(u.saturating_sub(n)));
        self.drain_waiting()
    }

    pub(crate) fn wait(&self, queue: Weak<Queue>) {
        let mut w = self.waiting.lock();
        if !w.iter().any(|q| q.ptr_eq(&queue)) {
            w.push(queue);
        }
    }

    fn drain_waiting(&self) -> Vec<Arc<Queue>> {
        std::mem::take(&mut *self.waiting.lock()).into_iter().filter_map(|w| w.upgrade()).collect()
    }
}

/// A registered consumer. Dropping it cancels it and requeues its unsettled deliveries (with
/// the redelivered flag set).
pub struct Consumer {
    pub(crate) queue: Arc<Queue>,
    pub(crate) id: u64,
    pub(crate) tag: String,
    pub(crate) rx: mpsc::UnboundedReceiver<ConsumerEvent>,
}

impl Consumer {
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// The next delivery or cancel notice; None once the consumer is finished.
    pub async fn recv(&mut self) -> Option<ConsumerEvent> {
        self.rx.recv().await
    }

    /// Take the stream of events, to read it on a task of its own while this handle stays
    /// where acks are decided (an AMQP channel). `recv` on this handle then returns None.
    pub fn take_events(&mut self) -> mpsc::UnboundedReceiver<ConsumerEvent> {
        std::mem::replace(&mut self.rx, mpsc::unbounded_channel().1)
    }

    /// A delivery already waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<ConsumerEvent> {
        self.rx.try_recv().ok()
    }

    /// Settle a delivery (AMQP basic.ack, STOMP ACK, MQTT PUBACK).
    pub fn ack(&self, lease: Receipt) -> Result<Settled> {
        self.queue.consumer_settle(self.id, lease, None)
    }

    /// Give a delivery back (`requeue`, redelivered flag set, original position) or
    /// dead-letter it with reason `rejected`.
    pub fn nack(&self, lease: Receipt, requeue: bool) -> Result<()> {
        self.queue.consumer_settle(self.id, lease, Some(requeue)).map(|_| ())
    }

    /// AMQP basic.reject: a nack of one delivery.
    pub fn reject(&self, lease: Receipt, requeue: bool) -> Result<()> {
        self.nack(lease, requeue)
    }

    /// Stop deliveries (AMQP basic.cancel) but keep the unsettled ones open: they may still be
    /// acked through this handle, and are requeued when it is dropped.
    pub fn stop(&self) {
        self.queue.stop_consumer(self.id);
    }

    /// Unsettled deliveries of this consumer.
    pub fn unacked(&self) -> usize {
        self.queue.consumer_unacked(self.id)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.queue.remove_consumer(self.id);
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("tag", &self.tag).field("queue", &self.queue.name()).finish()
    }
}
