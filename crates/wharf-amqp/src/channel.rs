//! One AMQP channel: its methods, content assembly for basic.publish, delivery tags and the
//! leases behind them, consumers, QoS, publisher confirms and transactions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{access, basic, channel, confirm, exchange, queue, tx, AMQPClass};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use wharf_core::{
    ChannelCredit, Consumer, ConsumerEvent, ConsumerOptions, CoreError, Delivery, ExchangeKind,
    ExchangeSettings, HeaderValue, Message, ObjectKind, Overflow, PublishOptions, Queue, QueueSettings,
    Receipt,
};
use wharf_store::Durable;

use crate::codec;
use crate::connection::{AfterDurable, Ctx, DurableJob, Event};
use crate::convert::{self, QueueArguments, QueueType};
use crate::error::AmqpError;
use crate::users::{Permission, Resource};

/// `x-queue-type` as kept in a queue's attributes.
const QUEUE_TYPE_ATTRIBUTE: &str = "x-queue-type";
const QUEUE_MODE_ATTRIBUTE: &str = "x-queue-mode";
const CONSUMER_TIMEOUT_ATTRIBUTE: &str = "x-consumer-timeout";

/// A basic.publish waiting for its content.
struct Pending {
    publish: basic::Publish,
    header: Option<(u64, basic::AMQPProperties)>,
    body: BytesMut,
}

/// What a delivery tag stands for until it is settled.
enum Lease {
    Consumer { tag: Arc<str>, receipt: Receipt },
    Get { queue: Arc<Queue>, receipt: Receipt },
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Nack { requeue: bool },
}

struct ConsumerEntry {
    consumer: Consumer,
    forwarder: JoinHandle<()>,
    no_ack: bool,
    quorum: bool,
    /// How long its deliveries may stay unacked.
    timeout: Option<Duration>,
    /// basic.cancel seen: no more deliveries, but its unacked leases may still be settled.
    cancelled: bool,
}

/// A publish ready to route.
struct Outgoing {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    message: Message,
}

/// tx.select mode: publishes and settlements wait for tx.commit.
#[derive(Default)]
struct Transaction {
    publishes: Vec<Outgoing>,
    settlements: Vec<(u64, Lease, Settle)>,
}

pub(crate) struct Channel {
    id: u16,
    /// Tells this channel apart from an earlier one with the same id, for late events.
    pub serial: u64,
    /// We sent channel.close and wait for close-ok.
    pub closing: bool,
    pending: Option<Pending>,
    next_delivery_tag: u64,
    unacked: BTreeMap<u64, Lease>,
    /// Delivery tag → when its consumer timeout runs out, and the timeout (for the message).
    deadlines: BTreeMap<u64, (Instant, Duration)>,
    consumers: HashMap<Arc<str>, ConsumerEntry>,
    /// basic.qos global=false: the prefetch of consumers created from now on.
    prefetch: u32,
    /// basic.qos global=true: one window shared by the channel's consumers.
    credit: Option<Arc<ChannelCredit>>,
    /// Confirm mode: the sequence number of the next publish.
    next_confirm: Option<u64>,
    /// Every publish up to this one is durable and not yet acked to the client.
    ack_upto: Option<u64>,
    transaction: Option<Transaction>,
    /// The queue last declared on this channel: what an empty queue name means.
    last_queue: Option<String>,
}

type MethodResult = Result<(), AmqpError>;

impl Channel {
    pub fn new(id: u16, serial: u64) -> Self {
        Channel {
            id,
            serial,
            closing: false,
            pending: None,
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            consumers: HashMap::new(),
            prefetch: 0,
            credit: None,
            next_confirm: None,
            ack_upto: None,
            transaction: None,
            last_queue: None,
        }
    }

    fn reply(&self, ctx: &mut Ctx, method: AMQPClass) {
        ctx.method(self.id, method);
    }

    fn core(ctx: &Ctx) -> impl Fn(CoreError) -> AmqpError + '_ {
        move |e| AmqpError::from_core(e, ctx.vhost.name())
    }

    pub fn on_method(&mut self, ctx: &mut Ctx, method: AMQPClass) -> MethodResult {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        if self.pending.is_some() {
            return Err(AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got method {class_id}.{method_id}"
            )));
        }
        self.dispatch(ctx, method).map_err(|e| e.during(class_id, method_id))
    }

    fn dispatch(&mut self, ctx: &mut Ctx, method: AMQPClass) -> MethodResult {
        match method {
            AMQPClass::Basic(m) => self.on_basic(ctx, m),
            AMQPClass::Queue(m) => self.on_queue(ctx, m),
            AMQPClass::Exchange(m) => self.on_exchange(ctx, m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                if self.transaction.is_some() {
                    return Err(AmqpError::precondition("cannot switch from tx to confirm mode"));
                }
                self.next_confirm.get_or_insert(1);
                if !select.nowait {
                    self.reply(ctx, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.on_tx(ctx, m),
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                if !flow.active {
                    return Err(AmqpError::not_implemented("active=false is not supported by wharf"));
                }
                self.reply(
                    ctx,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.reply(ctx, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})));
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format!(
                "method {}.{} is not valid here",
                other.get_amqp_class_id(),
                other.get_amqp_method_id()
            ))),
        }
    }

    // ---- content -----------------------------------------------------------------------

    pub fn on_header(&mut self, ctx: &mut Ctx, header: AMQPContentHeader) -> MethodResult {
        let Some(pending) = self.pending.as_mut().filter(|p| p.header.is_none()) else {
            return Err(AmqpError::unexpected_frame("content header without a basic.publish before it"));
        };
        let limit = ctx.shared.config.max_message_size;
        if header.body_size > u64::from(limit) {
            self.pending = None;
            return Err(AmqpError::precondition(format!(
                "message size {} is larger than configured max size {limit}",
                header.body_size
            ))
            .during(60, 40));
        }
        pending.body.reserve(header.body_size as usize);
        pending.header = Some((header.body_size, header.properties));
        self.finish_content(ctx)
    }

    pub fn on_body(&mut self, ctx: &mut Ctx, payload: Bytes) -> MethodResult {
        let Some(pending) = self.pending.as_mut().filter(|p| p.header.is_some()) else {
            return Err(AmqpError::unexpected_frame("content body without a content header before it"));
        };
        let expected = pending.header.as_ref().map_or(0, |(size, _)| *size);
        if pending.body.len() as u64 + payload.len() as u64 > expected {
            return Err(AmqpError::frame_error(format!(
                "content body is longer than the {expected} bytes its header announced"
            )));
        }
        pending.body.extend_from_slice(&payload);
        self.finish_content(ctx)
    }

    fn finish_content(&mut self, ctx: &mut Ctx) -> MethodResult {
        let complete = matches!(&self.pending, Some(Pending { header: Some((size, _)), body, .. }) if body.len() as u64 == *size);
        if !complete {
            return Ok(());
        }
        let Some(Pending { publish, header: Some((_, properties)), body }) = self.pending.take() else {
            return Ok(());
        };
        self.publish(ctx, publish, properties, body.freeze()).map_err(|e| e.during(60, 40))
    }

    // ---- publishing --------------------------------------------------------------------

    fn publish(
        &mut self,
        ctx: &mut Ctx,
        publish: basic::Publish,
        properties: basic::AMQPProperties,
        body: Bytes,
    ) -> MethodResult {
        let message = convert::message_from_publish(&properties, body).map_err(AmqpError::precondition)?;
        if let Some(user_id) = &message.properties.user_id {
            if user_id != ctx.user.name() {
                return Err(AmqpError::precondition(format!(
                    "user_id property set to '{user_id}' but authenticated user was '{}'",
                    ctx.user.name()
                )));
            }
        }
        ctx.check(Permission::Write, Resource::Exchange, publish.exchange.as_str())?;
        let outgoing = Outgoing {
            exchange: publish.exchange.as_str().to_owned(),
            routing_key: publish.routing_key.as_str().to_owned(),
            mandatory: publish.mandatory,
            message,
        };
        if let Some(tx) = &mut self.transaction {
            // Routing errors (a missing exchange) are still reported now, as RabbitMQ does.
            ctx.vhost.exchange(&outgoing.exchange).map_err(Self::core(ctx))?;
            tx.publishes.push(outgoing);
            return Ok(());
        }
        let (durable, refused) = self.route(ctx, outgoing)?;
        if let Some(seq) = self.next_confirm.as_mut() {
            let job = DurableJob {
                channel: self.id,
                serial: self.serial,
                durable: (!refused).then_some(durable),
                then: AfterDurable::Confirm(*seq),
            };
            *seq += 1;
            ctx.durable_jobs.push_back(job);
        }
        Ok(())
    }

    /// Route one message; returns when it will be durable and whether any queue refused it
    /// (x-overflow reject-publish). Unroutable mandatory messages come back as basic.return.
    fn route(&mut self, ctx: &mut Ctx, out: Outgoing) -> Result<(Durable, bool), AmqpError> {
        let returned = out.mandatory.then(|| out.message.clone());
        let options = PublishOptions { mandatory: out.mandatory, ..PublishOptions::default() };
        let outcome = ctx
            .vhost
            .publish(&out.exchange, &out.routing_key, out.message, options)
            .map_err(Self::core(ctx))?;
        if outcome.routed == 0 && outcome.rejected.is_empty() {
            if let Some(message) = returned {
                self.reply(
                    ctx,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: 312,
                        reply_text: "NO_ROUTE".into(),
                        exchange: convert::short(&out.exchange),
                        routing_key: convert::short(&out.routing_key),
                    })),
                );
                let props = convert::properties_for_delivery(&message, None);
                codec::write_content(&mut ctx.out, self.id, props, &message.body, ctx.frame_max);
            }
        }
        Ok((outcome.durable, !outcome.rejected.is_empty()))
    }

    // ---- basic -------------------------------------------------------------------------

    fn on_basic(&mut self, ctx: &mut Ctx, method: basic::AMQPMethod) -> MethodResult {
        use basic::AMQPMethod as M;
        match method {
            M::Publish(publish) => {
                ctx.published = true;
                if publish.immediate {
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                self.pending = Some(Pending { publish, header: None, body: BytesMut::new() });
                Ok(())
            }
            M::Qos(qos) => {
                let limit = u32::from(qos.prefetch_count);
                if qos.global {
                    match &self.credit {
                        Some(credit) => credit.set_limit(limit),
                        None => self.credit = Some(ChannelCredit::new(limit)),
                    }
                } else {
                    self.prefetch = limit;
                }
                self.reply(ctx, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
                Ok(())
            }
            M::Consume(consume) => self.consume(ctx, consume),
            M::Cancel(cancel) => {
                let tag: Arc<str> = cancel.consumer_tag.as_str().into();
                if let Some(entry) = self.consumers.get_mut(&tag) {
                    entry.consumer.stop();
                    entry.cancelled = true;
                }
                self.forget_finished_consumers();
                if !cancel.nowait {
                    self.reply(
                        ctx,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk { consumer_tag: cancel.consumer_tag })),
                    );
                }
                Ok(())
            }
            M::Get(get) => self.get(ctx, get),
            M::Ack(ack) => self.settle(ack.delivery_tag, ack.multiple, Settle::Ack),
            M::Nack(nack) => {
                self.settle(nack.delivery_tag, nack.multiple, Settle::Nack { requeue: nack.requeue })
            }
            M::Reject(reject) => {
                self.settle(reject.delivery_tag, false, Settle::Nack { requeue: reject.requeue })
            }
            M::Recover(recover) => {
                self.recover(recover.requeue)?;
                self.reply(ctx, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                Ok(())
            }
            M::RecoverAsync(recover) => self.recover(recover.requeue),
            other => Err(AmqpError::command_invalid(format!(
                "basic method {} is not valid from a client",
                AMQPClass::Basic(other).get_amqp_method_id()
            ))),
        }
    }

    /// An empty queue name means the queue last declared on this channel.
    fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn lookup_queue(&self, ctx: &Ctx, name: &str) -> Result<Arc<Queue>, AmqpError> {
        let name = self.queue_name(name)?;
        ctx.vhost.queue_for(&name, Some(ctx.connection_id)).map_err(|e| match e {
            CoreError::ResourceLocked(_) => AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally \
                 declared on another connection or the exclusive property value does not match that of the \
                 original declaration.",
                ctx.vhost.name()
            )),
            e => Self::core(ctx)(e),
        })
    }

    fn consume(&mut self, ctx: &mut Ctx, consume: basic::Consume) -> MethodResult {
        let queue = self.lookup_queue(ctx, consume.queue.as_str())?;
        ctx.check(Permission::Read, Resource::Queue, queue.name())?;
        let tag: Arc<str> = if consume.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", uuid::Uuid::new_v4().simple()).into()
        } else {
            consume.consumer_tag.as_str().into()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!("attempt to reuse consumer tag '{tag}'")));
        }
        let mut priority = 0;
        for (key, value) in consume.arguments.inner() {
            match key.as_str() {
                "x-priority" => {
                    priority =
                        convert::integer(value).and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
                            AmqpError::precondition("invalid arg 'x-priority': must be an integer")
                        })?
                }
                other => {
                    return Err(AmqpError::precondition(format!(
                        "unsupported consumer arg '{other}': wharf supports x-priority"
                    )))
                }
            }
        }
        let options = ConsumerOptions {
            tag: tag.to_string(),
            prefetch: self.prefetch,
            no_ack: consume.no_ack,
            exclusive: consume.exclusive,
            priority,
            channel: self.credit.clone(),
        };
        let mut consumer = queue.consume(options).map_err(|e| match e {
            CoreError::ResourceLocked(_) => AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                queue.name(),
                ctx.vhost.name()
            )),
            e => Self::core(ctx)(e),
        })?;
        let mut events = consumer.take_events();
        let sink = ctx.events.clone();
        let (channel, serial, consumer_tag) = (self.id, self.serial, tag.clone());
        let forwarder = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let done = matches!(event, ConsumerEvent::Cancelled(_));
                let event = Event::Delivery { channel, serial, consumer_tag: consumer_tag.clone(), event };
                if sink.send(event).is_err() || done {
                    return;
                }
            }
        });
        let settings = queue.settings();
        let quorum = is_quorum(&settings);
        let timeout = consumer_timeout(ctx, &settings);
        self.consumers.insert(
            tag.clone(),
            ConsumerEntry { consumer, forwarder, no_ack: consume.no_ack, quorum, timeout, cancelled: false },
        );
        if !consume.nowait {
            self.reply(
                ctx,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: (&*tag).into(),
                })),
            );
        }
        Ok(())
    }

    fn get(&mut self, ctx: &mut Ctx, get: basic::Get) -> MethodResult {
        let queue = self.lookup_queue(ctx, get.queue.as_str())?;
        ctx.check(Permission::Read, Resource::Queue, queue.name())?;
        let Some(delivery) = queue.get(get.no_ack).map_err(Self::core(ctx))? else {
            self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
            return Ok(());
        };
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        let remaining = queue.stats().ready;
        self.reply(
            ctx,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: delivery.redelivered,
                exchange: convert::short(&delivery.message.exchange),
                routing_key: convert::short(&delivery.message.routing_key),
                message_count: u32::try_from(remaining).unwrap_or(u32::MAX),
            })),
        );
        let extra = delivery_count(is_quorum(&queue.settings()), &delivery);
        let props = convert::properties_for_delivery(&delivery.message, extra);
        codec::write_content(&mut ctx.out, self.id, props, &delivery.message.body, ctx.frame_max);
        if !get.no_ack {
            if let Some(timeout) = consumer_timeout(ctx, &queue.settings()) {
                self.deadlines.insert(tag, (Instant::now() + timeout, timeout));
            }
            self.unacked.insert(tag, Lease::Get { queue, receipt: delivery.receipt });
        }
        Ok(())
    }

    /// ack / nack / reject of one tag, or of every tag up to it (`multiple`; tag 0 = all).
    fn settle(&mut self, tag: u64, multiple: bool, how: Settle) -> MethodResult {
        let tags: Vec<u64> = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            self.unacked.range(..=upto).map(|(t, _)| *t).collect()
        } else if self.unacked.contains_key(&tag) {
            vec![tag]
        } else {
            return Err(AmqpError::precondition(format!("unknown delivery tag {tag}")));
        };
        for tag in tags {
            let Some(lease) = self.unacked.remove(&tag) else { continue };
            match &mut self.transaction {
                Some(tx) => tx.settlements.push((tag, lease, how)),
                None => self.apply(lease, how),
            }
        }
        self.forget_finished_consumers();
        Ok(())
    }

    fn apply(&self, lease: Lease, how: Settle) {
        // A lease can have ended under us (the queue was purged or deleted): nothing to do.
        let _ = match (lease, how) {
            (Lease::Consumer { tag, receipt }, how) => match self.consumers.get(&tag) {
                Some(entry) => match how {
                    Settle::Ack => entry.consumer.ack(receipt).map(|_| ()),
                    Settle::Nack { requeue } => entry.consumer.nack(receipt, requeue),
                },
                None => Ok(()),
            },
            (Lease::Get { queue, receipt }, Settle::Ack) => queue.delete(receipt).map(|_| ()),
            (Lease::Get { queue, receipt }, Settle::Nack { requeue }) => queue.nack(receipt, requeue),
        };
    }

    fn recover(&mut self, requeue: bool) -> MethodResult {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        for (_, lease) in std::mem::take(&mut self.unacked) {
            self.apply(lease, Settle::Nack { requeue: true });
        }
        self.forget_finished_consumers();
        Ok(())
    }

    /// Cancelled consumers are kept while they have unacked deliveries; drop them after.
    fn forget_finished_consumers(&mut self) {
        let held: std::collections::HashSet<Arc<str>> = self
            .unacked
            .values()
            .filter_map(|l| match l {
                Lease::Consumer { tag, .. } => Some(tag.clone()),
                Lease::Get { .. } => None,
            })
            .collect();
        self.consumers.retain(|tag, entry| {
            let keep = !entry.cancelled || held.contains(tag);
            if !keep {
                entry.forwarder.abort();
            }
            keep
        });
    }

    pub fn on_event(&mut self, ctx: &mut Ctx, event: Event) {
        match event {
            Event::Delivery { consumer_tag, event: ConsumerEvent::Delivery(delivery), .. } => {
                let Some(entry) = self.consumers.get(&consumer_tag) else {
                    Self::requeue_orphan(ctx, &delivery);
                    return;
                };
                if entry.cancelled {
                    let _ = entry.consumer.nack(delivery.receipt, true);
                    return;
                }
                let tag = self.next_delivery_tag;
                self.next_delivery_tag += 1;
                self.reply(
                    ctx,
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                        consumer_tag: (&*consumer_tag).into(),
                        delivery_tag: tag,
                        redelivered: delivery.redelivered,
                        exchange: convert::short(&delivery.message.exchange),
                        routing_key: convert::short(&delivery.message.routing_key),
                    })),
                );
                let props = convert::properties_for_delivery(
                    &delivery.message,
                    delivery_count(entry.quorum, &delivery),
                );
                codec::write_content(&mut ctx.out, self.id, props, &delivery.message.body, ctx.frame_max);
                if !entry.no_ack {
                    if let Some(timeout) = entry.timeout {
                        self.deadlines.insert(tag, (Instant::now() + timeout, timeout));
                    }
                    self.unacked
                        .insert(tag, Lease::Consumer { tag: consumer_tag, receipt: delivery.receipt });
                }
            }
            Event::Delivery { consumer_tag, event: ConsumerEvent::Cancelled(_), .. } => {
                // The queue is gone. Its leases went with it.
                self.unacked.retain(|_, l| !matches!(l, Lease::Consumer { tag, .. } if *tag == consumer_tag));
                if let Some(entry) = self.consumers.remove(&consumer_tag) {
                    entry.forwarder.abort();
                    if ctx.cancel_notify && !entry.cancelled {
                        self.reply(
                            ctx,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: (&*consumer_tag).into(),
                                nowait: true,
                            })),
                        );
                    }
                }
            }
            Event::Durable { then: AfterDurable::Confirm(seq), ok: true, .. } => {
                // Confirms come in publish order: one `multiple` ack covers a whole group
                // commit (written by `flush_confirms` after the batch of events).
                self.ack_upto = Some(seq);
            }
            Event::Durable { then: AfterDurable::Confirm(seq), ok: false, .. } => {
                self.flush_confirms(ctx);
                let nack = basic::Nack { delivery_tag: seq, multiple: false, requeue: false };
                self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::Nack(nack)));
            }
            Event::Durable { then: AfterDurable::CommitOk, .. } => {
                self.reply(ctx, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
        }
    }

    /// Write the publisher acks gathered from the last batch of events as one frame.
    pub fn flush_confirms(&mut self, ctx: &mut Ctx) {
        if let Some(tag) = self.ack_upto.take() {
            let ack = basic::Ack { delivery_tag: tag, multiple: true };
            self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)));
        }
    }

    /// 406, as RabbitMQ's consumer timeout, when a delivery stayed unacked past its deadline.
    pub fn check_consumer_timeout(&mut self, now: Instant) -> MethodResult {
        let unacked = &self.unacked;
        self.deadlines.retain(|tag, _| unacked.contains_key(tag));
        match self.deadlines.values().find(|(deadline, _)| *deadline <= now) {
            Some((_, timeout)) => Err(AmqpError::precondition(format!(
                "delivery acknowledgement on channel {} timed out. Timeout value used: {} ms. This timeout \
                 value can be configured, see consumers doc guide to learn more",
                self.id,
                timeout.as_millis()
            ))),
            None => Ok(()),
        }
    }

    /// A delivery for a consumer this channel no longer has: the engine's lease must not
    /// linger, so it goes back to the queue.
    pub fn requeue_orphan(ctx: &Ctx, delivery: &Delivery) {
        if let Some(queue) = ctx.vhost.queues().into_iter().find(|q| q.id() == delivery.receipt.queue) {
            let _ = queue.nack(delivery.receipt, true);
        }
    }

    /// The channel is closing: everything it holds goes back to its queues (consumers requeue
    /// what they hold when dropped; basic.get leases are returned here).
    pub fn shutdown(&mut self) {
        self.pending = None;
        self.transaction = None;
        for (_, lease) in std::mem::take(&mut self.unacked) {
            if let Lease::Get { queue, receipt } = lease {
                let _ = queue.nack(receipt, true);
            }
        }
        for (_, entry) in self.consumers.drain() {
            entry.forwarder.abort();
        }
    }

    // ---- tx ----------------------------------------------------------------------------

    fn on_tx(&mut self, ctx: &mut Ctx, method: tx::AMQPMethod) -> MethodResult {
        match method {
            tx::AMQPMethod::Select(_) => {
                if self.next_confirm.is_some() {
                    return Err(AmqpError::precondition("cannot switch from confirm to tx mode"));
                }
                self.transaction.get_or_insert_with(Transaction::default);
                self.reply(ctx, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(tx) = self.transaction.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let mut durable = Durable::done();
                for out in tx.publishes {
                    durable = durable.join(self.route(ctx, out)?.0);
                }
                for (_, lease, how) in tx.settlements {
                    self.apply(lease, how);
                }
                self.forget_finished_consumers();
                // commit-ok once everything committed is on disk.
                let job = DurableJob {
                    channel: self.id,
                    serial: self.serial,
                    durable: Some(durable),
                    then: AfterDurable::CommitOk,
                };
                ctx.durable_jobs.push_back(job);
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(tx) = self.transaction.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                // Settlements not committed leave the deliveries unacked, as they were.
                for (tag, lease, _) in tx.settlements {
                    self.unacked.insert(tag, lease);
                }
                self.reply(ctx, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("tx method not valid from a client")),
        }
    }

    // ---- exchanges ---------------------------------------------------------------------

    fn on_exchange(&mut self, ctx: &mut Ctx, method: exchange::AMQPMethod) -> MethodResult {
        use exchange::AMQPMethod as M;
        let vhost = ctx.vhost.clone();
        let (reply, nowait) = match method {
            M::Declare(d) => {
                let name = d.exchange.as_str();
                if d.passive {
                    vhost.exchange(name).map_err(Self::core(ctx))?;
                } else {
                    if name.is_empty() {
                        return Err(AmqpError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    ctx.check(Permission::Configure, Resource::Exchange, name)?;
                    let kind: ExchangeKind = d.kind.as_str().parse().map_err(|_| {
                        AmqpError::command_invalid(format!("unknown exchange type '{}'", d.kind.as_str()))
                    })?;
                    let mut arguments = convert::table_from_amqp(&d.arguments);
                    let alternate_exchange = match arguments.remove("alternate-exchange") {
                        None => None,
                        Some(HeaderValue::String(ae)) => Some(ae),
                        Some(_) => {
                            return Err(AmqpError::precondition(
                                "invalid arg 'alternate-exchange': must be a string",
                            ))
                        }
                    };
                    let settings = ExchangeSettings {
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        alternate_exchange,
                        arguments,
                    };
                    vhost
                        .declare_exchange(name, kind, settings)
                        .map_err(|e| exchange_error(e, name, &vhost))?;
                }
                (M::DeclareOk(exchange::DeclareOk {}), d.nowait)
            }
            M::Delete(d) => {
                let name = d.exchange.as_str();
                if name.is_empty() {
                    return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
                }
                ctx.check(Permission::Configure, Resource::Exchange, name)?;
                match vhost.delete_exchange(name, d.if_unused) {
                    // Deleting what is not there succeeds, as in RabbitMQ.
                    Ok(()) | Err(CoreError::NotFound { .. }) => {}
                    Err(CoreError::PreconditionFailed { .. }) => {
                        return Err(AmqpError::precondition(format!(
                            "exchange '{name}' in vhost '{}' in use",
                            vhost.name()
                        )))
                    }
                    Err(e) => return Err(Self::core(ctx)(e)),
                }
                (M::DeleteOk(exchange::DeleteOk {}), d.nowait)
            }
            M::Bind(b) => {
                let args = convert::table_from_amqp(&b.arguments);
                let (dest, src) = (b.destination.as_str(), b.source.as_str());
                check_binding(ctx, Resource::Exchange, dest, src)?;
                vhost.bind_exchange(dest, src, b.routing_key.as_str(), args).map_err(Self::core(ctx))?;
                (M::BindOk(exchange::BindOk {}), b.nowait)
            }
            M::Unbind(u) => {
                let args = convert::table_from_amqp(&u.arguments);
                let (dest, src) = (u.destination.as_str(), u.source.as_str());
                check_binding(ctx, Resource::Exchange, dest, src)?;
                match vhost.unbind_exchange(dest, src, u.routing_key.as_str(), args) {
                    Ok(_) | Err(CoreError::NotFound { kind: ObjectKind::Binding, .. }) => {}
                    Err(e) => return Err(Self::core(ctx)(e)),
                }
                (M::UnbindOk(exchange::UnbindOk {}), u.nowait)
            }
            _ => return Err(AmqpError::command_invalid("exchange method not valid from a client")),
        };
        if !nowait {
            self.reply(ctx, AMQPClass::Exchange(reply));
        }
        Ok(())
    }

    // ---- queues ------------------------------------------------------------------------

    fn on_queue(&mut self, ctx: &mut Ctx, method: queue::AMQPMethod) -> MethodResult {
        use queue::AMQPMethod as M;
        let vhost = ctx.vhost.clone();
        match method {
            M::Declare(d) => self.declare_queue(ctx, d),
            M::Bind(b) => {
                let q = self.lookup_queue(ctx, b.queue.as_str())?;
                check_default_exchange(b.exchange.as_str())?;
                check_binding(ctx, Resource::Queue, q.name(), b.exchange.as_str())?;
                let args = convert::table_from_amqp(&b.arguments);
                vhost
                    .bind_queue(b.exchange.as_str(), q.name(), b.routing_key.as_str(), args)
                    .map_err(Self::core(ctx))?;
                if !b.nowait {
                    self.reply(ctx, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
                Ok(())
            }
            M::Unbind(u) => {
                let q = self.lookup_queue(ctx, u.queue.as_str())?;
                check_default_exchange(u.exchange.as_str())?;
                check_binding(ctx, Resource::Queue, q.name(), u.exchange.as_str())?;
                let args = convert::table_from_amqp(&u.arguments);
                match vhost.unbind_queue(u.exchange.as_str(), q.name(), u.routing_key.as_str(), args) {
                    Ok(_) | Err(CoreError::NotFound { kind: ObjectKind::Binding, .. }) => {}
                    Err(e) => return Err(Self::core(ctx)(e)),
                }
                self.reply(ctx, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
                Ok(())
            }
            M::Purge(p) => {
                let q = self.lookup_queue(ctx, p.queue.as_str())?;
                ctx.check(Permission::Read, Resource::Queue, q.name())?;
                let purged = q.purge().map_err(Self::core(ctx))?;
                if !p.nowait {
                    let message_count = u32::try_from(purged).unwrap_or(u32::MAX);
                    self.reply(ctx, AMQPClass::Queue(M::PurgeOk(queue::PurgeOk { message_count })));
                }
                Ok(())
            }
            M::Delete(d) => {
                let name = self.queue_name(d.queue.as_str())?;
                ctx.check(Permission::Configure, Resource::Queue, &name)?;
                let deleted = match vhost.queue_for(&name, Some(ctx.connection_id)) {
                    // Deleting what is not there succeeds, as in RabbitMQ.
                    Err(CoreError::NotFound { .. }) => 0,
                    Err(e) => return Err(Self::core(ctx)(e)),
                    Ok(_) => match vhost.delete_queue(&name, d.if_unused, d.if_empty) {
                        Ok(n) => n,
                        Err(CoreError::NotFound { .. }) => 0,
                        Err(CoreError::PreconditionFailed { setting, .. }) => {
                            let why = if setting == "in-use" { "in use" } else { "not empty" };
                            return Err(AmqpError::precondition(format!(
                                "queue '{name}' in vhost '{}' {why}",
                                vhost.name()
                            )));
                        }
                        Err(e) => return Err(Self::core(ctx)(e)),
                    },
                };
                if !d.nowait {
                    let message_count = u32::try_from(deleted).unwrap_or(u32::MAX);
                    self.reply(ctx, AMQPClass::Queue(M::DeleteOk(queue::DeleteOk { message_count })));
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("queue method not valid from a client")),
        }
    }

    fn declare_queue(&mut self, ctx: &mut Ctx, d: queue::Declare) -> MethodResult {
        let vhost = ctx.vhost.clone();
        let requested = d.queue.as_str();
        if d.passive {
            let q = self.lookup_queue(ctx, requested)?;
            return self.declare_ok(ctx, &q, d.nowait);
        }
        if requested.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{requested}' contains reserved prefix 'amq.*'"
            )));
        }
        if !requested.is_empty() {
            ctx.check(Permission::Configure, Resource::Queue, requested)?;
        }
        let args = QueueArguments::parse(&d.arguments, requested, vhost.name())?;
        let wanted = queue_settings(ctx, &d, &args)?;
        if !requested.is_empty() {
            if let Ok(existing) = vhost.queue(requested) {
                let existing = self.lookup_queue(ctx, existing.name())?;
                check_equivalent(&existing.settings(), &wanted, requested, vhost.name())?;
                existing.touch();
                return self.declare_ok(ctx, &existing, d.nowait);
            }
        }
        let (q, _) = vhost.declare_queue(requested, wanted).map_err(Self::core(ctx))?;
        self.declare_ok(ctx, &q, d.nowait)
    }

    fn declare_ok(&mut self, ctx: &mut Ctx, q: &Queue, nowait: bool) -> MethodResult {
        self.last_queue = Some(q.name().to_owned());
        if !nowait {
            let stats = q.stats();
            self.reply(
                ctx,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: q.name().into(),
                    message_count: u32::try_from(stats.ready).unwrap_or(u32::MAX),
                    consumer_count: u32::try_from(stats.consumers).unwrap_or(u32::MAX),
                })),
            );
        }
        Ok(())
    }
}

/// The queue's `x-consumer-timeout` (0: none), else the server's.
fn consumer_timeout(ctx: &Ctx, settings: &QueueSettings) -> Option<Duration> {
    match settings.attributes.get(CONSUMER_TIMEOUT_ATTRIBUTE).and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => ctx.shared.config.consumer_timeout,
    }
}

fn is_quorum(settings: &QueueSettings) -> bool {
    settings.attributes.get(QUEUE_TYPE_ATTRIBUTE).is_some_and(|t| t == "quorum")
}

/// Quorum queues count earlier deliveries in `x-delivery-count` (0 on the first, as RabbitMQ
/// 3.x sends it).
fn delivery_count(quorum: bool, delivery: &Delivery) -> Option<(&'static str, HeaderValue)> {
    let earlier = delivery.receive_count.saturating_sub(1);
    quorum.then(|| ("x-delivery-count", HeaderValue::I64(i64::from(earlier))))
}

/// Binding (or unbinding) needs write on the destination and read on the source exchange.
fn check_binding(ctx: &Ctx, kind: Resource, destination: &str, source: &str) -> MethodResult {
    ctx.check(Permission::Write, kind, destination)?;
    ctx.check(Permission::Read, Resource::Exchange, source)
}

fn check_default_exchange(name: &str) -> MethodResult {
    if name.is_empty() {
        return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
    }
    Ok(())
}

fn exchange_error(e: CoreError, name: &str, vhost: &wharf_core::VHost) -> AmqpError {
    match e {
        CoreError::PreconditionFailed { setting, message, .. } => AmqpError::precondition(format!(
            "inequivalent arg '{setting}' for exchange '{name}' in vhost '{}': {message}",
            vhost.name()
        )),
        CoreError::AccessRefused(_) if name.starts_with("amq.") => {
            AmqpError::access_refused(format!("exchange name '{name}' contains reserved prefix 'amq.*'"))
        }
        e => AmqpError::from_core(e, vhost.name()),
    }
}

/// The engine settings a queue.declare asks for.
fn queue_settings(ctx: &Ctx, d: &queue::Declare, args: &QueueArguments) -> Result<QueueSettings, AmqpError> {
    let quorum = args.queue_type == Some(QueueType::Quorum);
    let name = d.queue.as_str();
    if quorum {
        let invalid = |property: &str| {
            AmqpError::precondition(format!(
                "invalid property '{property}' for queue '{name}' in vhost '{}'",
                ctx.vhost.name()
            ))
        };
        if !d.durable {
            return Err(invalid("non-durable"));
        }
        if d.exclusive {
            return Err(invalid("exclusive-owner"));
        }
        if d.auto_delete {
            return Err(invalid("auto-delete"));
        }
    }
    let mut s = QueueSettings {
        durable: d.durable,
        exclusive_owner: d.exclusive.then_some(ctx.connection_id),
        auto_delete: d.auto_delete,
        // AMQP messages stay until consumed or expired by a TTL the client asked for.
        retention_ms: u64::MAX,
        max_message_size: ctx.shared.config.max_message_size,
        message_ttl_ms: args.message_ttl_ms,
        expires_ms: args.expires_ms,
        max_length: args.max_length,
        max_length_bytes: args.max_length_bytes,
        overflow: args.overflow.unwrap_or_default(),
        dead_letter_exchange: args.dead_letter_exchange.clone(),
        dead_letter_routing_key: args.dead_letter_routing_key.clone(),
        max_priority: args.max_priority,
        single_active_consumer: args.single_active_consumer,
        delivery_limit: args.delivery_limit,
        ..QueueSettings::default()
    };
    if quorum {
        s.attributes.insert(QUEUE_TYPE_ATTRIBUTE.into(), "quorum".into());
    }
    if let Some(mode) = &args.queue_mode {
        s.attributes.insert(QUEUE_MODE_ATTRIBUTE.into(), mode.clone());
    }
    if let Some(ms) = args.consumer_timeout_ms {
        s.attributes.insert(CONSUMER_TIMEOUT_ATTRIBUTE.into(), ms.to_string());
    }
    Ok(s)
}

/// A redeclare must ask for what the queue is. Only what AMQP can express is compared: a
/// queue made through SQS has SQS settings an AMQP client cannot name. Texts as RabbitMQ's.
fn check_equivalent(
    existing: &QueueSettings,
    wanted: &QueueSettings,
    name: &str,
    vhost: &str,
) -> MethodResult {
    /// An argument as the client would have sent it: (value, AMQP type name), or None.
    type Arg = Option<(String, &'static str)>;
    fn int<T: ToString>(v: Option<T>) -> Arg {
        v.map(|v| (v.to_string(), "signedint"))
    }
    fn text(v: Option<&str>) -> Arg {
        v.map(|v| (v.to_owned(), "longstr"))
    }
    let args = |s: &QueueSettings| -> [(&'static str, Arg); 12] {
        let overflow = match s.overflow {
            Overflow::DropHead => None,
            Overflow::RejectPublish => Some("reject-publish"),
            Overflow::RejectPublishDlx => Some("reject-publish-dlx"),
        };
        [
            ("x-message-ttl", int(s.message_ttl_ms)),
            ("x-expires", int(s.expires_ms)),
            ("x-max-length", int(s.max_length)),
            ("x-max-length-bytes", int(s.max_length_bytes)),
            ("x-overflow", text(overflow)),
            ("x-dead-letter-exchange", text(s.dead_letter_exchange.as_deref())),
            ("x-dead-letter-routing-key", text(s.dead_letter_routing_key.as_deref())),
            ("x-max-priority", int(s.max_priority)),
            ("x-single-active-consumer", s.single_active_consumer.then(|| ("true".to_owned(), "bool"))),
            ("x-queue-type", text(is_quorum(s).then_some("quorum"))),
            ("x-delivery-limit", int(s.delivery_limit)),
            ("x-consumer-timeout", int(s.attributes.get(CONSUMER_TIMEOUT_ATTRIBUTE))),
        ]
    };
    let refuse = |arg: &str, how: String| {
        Err(AmqpError::precondition(format!(
            "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': {how}"
        )))
    };
    for (arg, wanted, existing) in [
        ("durable", wanted.durable, existing.durable),
        ("auto_delete", wanted.auto_delete, existing.auto_delete),
        ("exclusive", wanted.exclusive_owner.is_some(), existing.exclusive_owner.is_some()),
    ] {
        if wanted != existing {
            return refuse(arg, format!("received '{wanted}' but current is '{existing}'"));
        }
    }
    for ((arg, received), (_, current)) in args(wanted).into_iter().zip(args(existing)) {
        let how = match (received, current) {
            (Some((r, _)), Some((c, _))) if r != c => format!("received '{r}' but current is '{c}'"),
            (Some((r, t)), None) => format!("received the value '{r}' of type '{t}' but current is none"),
            (None, Some((c, t))) => format!("received none but current is the value '{c}' of type '{t}'"),
            _ => continue,
        };
        return refuse(arg, how);
    }
    Ok(())
}
