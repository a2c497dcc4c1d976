//! Virtual hosts: exchanges, bindings and queues, and publishing through them.
//!
//! Lock order (see the crate README): the broker's definitions lock, then the broker's vhost
//! map, then a vhost's state, then a queue's state. Publishing routes under the vhost's read
//! lock, releases it, and only then sends to each queue, so no queue lock is ever held while a
//! vhost lock is taken.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use tracing::{info, warn};
use wharf_store::{Durable, QueueId};

use crate::broker::{Broker, Shared};
use crate::consumer::CancelReason;
use crate::deadletter::is_cycle;
use crate::error::{CoreError, ObjectKind, Result};
use crate::message::{Headers, Message};
use crate::queue::{Queue, SendOptions};
use crate::routing::{Binding, Destination, ExchangeKind, Router};
use crate::settings::{queue_precondition, ExchangeSettings, OwnerId, QueueSettings};

/// Exchange-to-exchange chains and alternate exchanges deeper than this are cut: a bound on
/// the work (and stack) one publish can cost.
const MAX_ROUTING_HOPS: usize = 64;

/// Options of a publish through an exchange.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// AMQP mandatory: informational here; the front end returns unroutable messages when
    /// [`PublishOutcome::routed`] is 0.
    pub mandatory: bool,
    /// Per-message options passed to every queue the message reaches.
    pub send: SendOptions,
}

/// What a publish did.
#[derive(Debug)]
pub struct PublishOutcome {
    /// Queues that accepted a copy. 0 = unroutable (AMQP basic.return when mandatory).
    pub routed: usize,
    /// Queues that matched but refused (full with reject-publish, too large, ...): AMQP nacks
    /// the publish when this is not empty.
    pub rejected: Vec<(String, CoreError)>,
    /// Resolves when every accepted copy is on disk; the front end confirms after it.
    pub durable: Durable,
}

/// An exchange as listed by [`VHost::exchanges`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeInfo {
    pub name: String,
    pub kind: ExchangeKind,
    pub settings: ExchangeSettings,
}

pub(crate) struct Exchange {
    pub(crate) kind: ExchangeKind,
    pub(crate) settings: ExchangeSettings,
    pub(crate) router: Router,
}

#[derive(Default)]
pub(crate) struct VHostState {
    pub(crate) exchanges: BTreeMap<String, Exchange>,
    pub(crate) queues: BTreeMap<String, Arc<Queue>>,
}

pub struct VHost {
    name: String,
    broker: Weak<Broker>,
    shared: Arc<Shared>,
    me: Weak<VHost>,
    pub(crate) state: RwLock<VHostState>,
}

/// The exchanges every vhost has and nobody may delete.
pub(crate) const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

pub(crate) fn is_builtin(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

fn refuse_reserved(name: &str, what: &str) -> Result<()> {
    if is_builtin(name) {
        return Err(CoreError::AccessRefused(format!("{what} exchange '{name}' is reserved")));
    }
    Ok(())
}

impl VHost {
    pub(crate) fn new(name: &str, broker: Weak<Broker>, shared: Arc<Shared>) -> Arc<VHost> {
        let mut state = VHostState::default();
        for (ex, kind) in BUILTIN_EXCHANGES {
            if let Ok(router) = Router::new(kind, &Headers::new()) {
                state
                    .exchanges
                    .insert(ex.to_owned(), Exchange { kind, settings: ExchangeSettings::default(), router });
            }
        }
        Arc::new_cyclic(|me| VHost {
            name: name.to_owned(),
            broker,
            shared,
            me: me.clone(),
            state: RwLock::new(state),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Persist definitions. The caller holds the definitions lock.
    fn save(&self) -> Result<()> {
        match self.broker.upgrade() {
            Some(b) => b.save_definitions(),
            None => Err(CoreError::ShuttingDown),
        }
    }

    // ---- exchanges ----------------------------------------------------------------------

    /// Declare an exchange; `Ok(true)` if it was created. An existing one with a different
    /// kind or settings is `PreconditionFailed` naming the setting.
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        settings: ExchangeSettings,
    ) -> Result<bool> {
        let _defs = self.shared.defs_lock.lock();
        {
            let mut st = self.state.write();
            if let Some(ex) = st.exchanges.get(name) {
                if ex.kind != kind {
                    return Err(CoreError::precondition(
                        ObjectKind::Exchange,
                        name,
                        "type",
                        format!("inequivalent type: existing '{}', requested '{}'", ex.kind, kind),
                    ));
                }
                if is_builtin(name) {
                    return Ok(false);
                }
                if let Some(field) = ex.settings.first_difference(&settings) {
                    return Err(CoreError::precondition(
                        ObjectKind::Exchange,
                        name,
                        field,
                        format!("inequivalent {field}"),
                    ));
                }
                return Ok(false);
            }
            refuse_reserved(name, "declaring")?;
            let router = Router::new(kind, &settings.arguments)
                .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
            st.exchanges.insert(name.to_owned(), Exchange { kind, settings: settings.clone(), router });
        }
        if settings.durable {
            self.save()?;
        }
        Ok(true)
    }

    /// Passive declare: the exchange's kind, or NotFound.
    pub fn exchange(&self, name: &str) -> Result<ExchangeInfo> {
        let st = self.state.read();
        let ex = st.exchanges.get(name).ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, name))?;
        Ok(ExchangeInfo { name: name.to_owned(), kind: ex.kind, settings: ex.settings.clone() })
    }

    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        let st = self.state.read();
        st.exchanges
            .iter()
            .map(|(n, ex)| ExchangeInfo { name: n.clone(), kind: ex.kind, settings: ex.settings.clone() })
            .collect()
    }

    /// Delete an exchange and every binding from or to it. `if_unused`: refuse if it has
    /// bindings.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let _defs = self.shared.defs_lock.lock();
        let durable = {
            let mut st = self.state.write();
            let ex =
                st.exchanges.get(name).ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, name))?;
            refuse_reserved(name, "deleting")?;
            if if_unused && !ex.router.is_empty() {
                return Err(CoreError::precondition(ObjectKind::Exchange, name, "in-use", "exchange in use"));
            }
            let durable = ex.settings.durable;
            st.exchanges.remove(name);
            let auto_deleted_durable =
                Self::remove_destination(&mut st, Destination::Exchange(name.to_owned()));
            durable || auto_deleted_durable
        };
        if durable {
            self.save()?;
        }
        Ok(())
    }

    // ---- bindings ----------------------------------------------------------------------

    /// Bind `binding.destination` (a queue or an exchange) to `exchange`. `Ok(false)` if the
    /// identical binding existed.
    pub fn bind(&self, exchange: &str, binding: Binding) -> Result<bool> {
        let _defs = self.shared.defs_lock.lock();
        let durable = {
            let mut st = self.state.write();
            if exchange.is_empty() {
                return Err(CoreError::AccessRefused("the default exchange cannot be bound to".into()));
            }
            let dest_durable = match &binding.destination {
                Destination::Queue(q) => st
                    .queues
                    .get(q)
                    .ok_or_else(|| CoreError::not_found(ObjectKind::Queue, q))?
                    .settings()
                    .is_persisted(),
                Destination::Exchange(e) => {
                    st.exchanges
                        .get(e)
                        .ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, e))?
                        .settings
                        .durable
                }
            };
            let ex = st
                .exchanges
                .get_mut(exchange)
                .ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, exchange))?;
            let source_durable = ex.settings.durable;
            let created = ex.router.bind(binding).map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
            if !created {
                return Ok(false);
            }
            source_durable && dest_durable
        };
        if durable {
            self.save()?;
        }
        Ok(true)
    }

    /// Remove a binding; `Ok(false)` if it did not exist.
    pub fn unbind(&self, exchange: &str, binding: &Binding) -> Result<bool> {
        let _defs = self.shared.defs_lock.lock();
        let removed = {
            let mut st = self.state.write();
            if exchange.is_empty() {
                return Err(CoreError::AccessRefused("the default exchange cannot be unbound".into()));
            }
            let ex = st
                .exchanges
                .get_mut(exchange)
                .ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, exchange))?;
            let removed = ex.router.unbind(binding);
            if removed {
                Self::auto_delete_if_unbound(&mut st, exchange);
            }
            removed
        };
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    pub fn bind_queue(
        &self,
        exchange: &str,
        queue: &str,
        routing_key: &str,
        arguments: Headers,
    ) -> Result<bool> {
        let destination = Destination::Queue(queue.to_owned());
        self.bind(exchange, Binding { destination, routing_key: routing_key.to_owned(), arguments })
    }

    pub fn unbind_queue(
        &self,
        exchange: &str,
        queue: &str,
        routing_key: &str,
        arguments: Headers,
    ) -> Result<bool> {
        let destination = Destination::Queue(queue.to_owned());
        self.unbind(exchange, &Binding { destination, routing_key: routing_key.to_owned(), arguments })
    }

    /// Exchange-to-exchange binding: messages routed by `source` also go through `destination`.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: Headers,
    ) -> Result<bool> {
        let dest = Destination::Exchange(destination.to_owned());
        self.bind(source, Binding { destination: dest, routing_key: routing_key.to_owned(), arguments })
    }

    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: Headers,
    ) -> Result<bool> {
        let dest = Destination::Exchange(destination.to_owned());
        self.unbind(source, &Binding { destination: dest, routing_key: routing_key.to_owned(), arguments })
    }

    /// Every explicit binding, as (source exchange, binding).
    pub fn bindings(&self) -> Vec<(String, Binding)> {
        let st = self.state.read();
        st.exchanges
            .iter()
            .flat_map(|(name, ex)| ex.router.bindings().map(move |b| (name.clone(), b.clone())))
            .collect()
    }

    // ---- queues ------------------------------------------------------------------------

    /// Declare a queue; returns it and whether it was created. An empty name gets a generated
    /// one (AMQP server-named queues). An existing queue with different settings is
    /// `PreconditionFailed` naming the first differing setting; another connection's
    /// exclusive queue is `ResourceLocked`.
    pub fn declare_queue(&self, name: &str, settings: QueueSettings) -> Result<(Arc<Queue>, bool)> {
        settings.validate()?;
        let name = if name.is_empty() {
            format!("amq.gen-{}", uuid::Uuid::new_v4().simple())
        } else {
            name.to_owned()
        };
        let _defs = self.shared.defs_lock.lock();
        if let Some(q) = self.state.read().queues.get(&name).cloned() {
            let existing = q.settings();
            if existing.exclusive_owner.is_some() && existing.exclusive_owner != settings.exclusive_owner {
                return Err(CoreError::ResourceLocked(format!(
                    "queue '{name}' is exclusive to another connection"
                )));
            }
            if let Some((field, old, new)) = existing.first_difference(&settings) {
                return Err(queue_precondition(&name, field, &old, &new));
            }
            q.touch();
            return Ok((q, false));
        }
        self.check_redrive(&name, &settings)?;
        let id = self.shared.next_queue_id();
        let log = if settings.is_persisted() { Some(self.shared.store.open_queue(id)?) } else { None };
        let persisted = settings.is_persisted();
        let q = Queue::new(&name, &self.name, id, settings, log, self.shared.clone(), self.me.clone());
        self.state.write().queues.insert(name.clone(), q.clone());
        if persisted {
            if let Err(e) = self.save() {
                self.state.write().queues.remove(&name);
                let _ = self.shared.store.remove_queue(id);
                return Err(e);
            }
        }
        Ok((q, true))
    }

    /// A queue rebuilt from the definitions at start-up.
    pub(crate) fn restore_queue(&self, name: &str, id: QueueId, settings: QueueSettings) -> Arc<Queue> {
        let (log, open_error) = match self.shared.store.open_queue(id) {
            Ok(log) => (Some(log), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let q = Queue::new(name, &self.name, id, settings, log, self.shared.clone(), self.me.clone());
        match open_error {
            Some(reason) => q.mark_damaged(format!("cannot open its log: {reason}")),
            None => match q.recover() {
                Ok(report) => {
                    let stats = q.stats();
                    info!(
                        vhost = %self.name, queue = %name, messages = stats.messages(),
                        truncated_bytes = report.truncated_bytes,
                        "recovered queue"
                    );
                    if let Some(d) = report.damage {
                        warn!(vhost = %self.name, queue = %name, "queue log damaged, queue opened closed: {d}");
                    }
                }
                Err(e) => {
                    warn!(vhost = %self.name, queue = %name, "queue recovery failed, queue opened closed: {e}");
                    q.mark_damaged(format!("recovery failed: {e}"));
                }
            },
        }
        self.state.write().queues.insert(name.to_owned(), q.clone());
        q
    }

    pub(crate) fn restore_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        settings: ExchangeSettings,
    ) -> Result<()> {
        if is_builtin(name) {
            return Ok(());
        }
        let router = Router::new(kind, &settings.arguments).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        self.state.write().exchanges.insert(name.to_owned(), Exchange { kind, settings, router });
        Ok(())
    }

    pub(crate) fn restore_binding(&self, source: &str, binding: Binding) -> Result<()> {
        let mut st = self.state.write();
        let ex =
            st.exchanges.get_mut(source).ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, source))?;
        ex.router.bind(binding).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        Ok(())
    }

    /// SQS: the redrive target must exist and be of the same kind.
    fn check_redrive(&self, name: &str, settings: &QueueSettings) -> Result<()> {
        let Some(r) = &settings.redrive else { return Ok(()) };
        if r.dead_letter_queue == name {
            return Err(CoreError::InvalidArgument("a queue cannot be its own dead-letter queue".into()));
        }
        let st = self.state.read();
        let dlq = st.queues.get(&r.dead_letter_queue).ok_or_else(|| {
            CoreError::InvalidArgument(format!("dead-letter queue '{}' does not exist", r.dead_letter_queue))
        })?;
        if dlq.kind() != settings.kind {
            return Err(CoreError::InvalidArgument(
                "the dead-letter queue of a FIFO queue must be FIFO, and of a standard queue standard".into(),
            ));
        }
        Ok(())
    }

    /// Look a queue up (SQS GetQueueUrl, AMQP passive declare).
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.state
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::not_found(ObjectKind::Queue, name))
    }

    /// Passive declare on behalf of a connection: another connection's exclusive queue is
    /// `ResourceLocked`.
    pub fn queue_for(&self, name: &str, owner: Option<OwnerId>) -> Result<Arc<Queue>> {
        let q = self.queue(name)?;
        match q.exclusive_owner() {
            Some(o) if Some(o) != owner => {
                Err(CoreError::ResourceLocked(format!("queue '{name}' is exclusive to another connection")))
            }
            _ => Ok(q),
        }
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.state.read().queues.values().cloned().collect()
    }

    /// Delete a queue; returns how many messages it held. `if_unused`: refuse if it has
    /// consumers; `if_empty`: refuse if it holds messages.
    pub fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool) -> Result<u64> {
        let _defs = self.shared.defs_lock.lock();
        let (q, definitions_changed) = {
            let mut st = self.state.write();
            let q =
                st.queues.get(name).cloned().ok_or_else(|| CoreError::not_found(ObjectKind::Queue, name))?;
            if if_unused && q.consumer_count() > 0 {
                return Err(CoreError::precondition(ObjectKind::Queue, name, "in-use", "queue in use"));
            }
            if if_empty && q.message_count() > 0 {
                return Err(CoreError::precondition(ObjectKind::Queue, name, "not-empty", "queue not empty"));
            }
            let definitions_changed = Self::unlink_queue(&mut st, name);
            (q, definitions_changed)
        };
        self.finish_delete(&q, definitions_changed)
    }

    /// Take a queue out of the map and its bindings out of the exchanges; true when that
    /// auto-deleted a durable exchange (the definitions must be saved).
    fn unlink_queue(st: &mut VHostState, name: &str) -> bool {
        st.queues.remove(name);
        Self::remove_destination(st, Destination::Queue(name.to_owned()))
    }

    /// Remove every binding to `gone`, then delete each auto-delete exchange that lost its last
    /// binding that way, and so on through exchange-to-exchange bindings. True when a durable
    /// exchange was deleted.
    fn remove_destination(st: &mut VHostState, gone: Destination) -> bool {
        let mut pending = vec![gone];
        let mut durable_deleted = false;
        while let Some(gone) = pending.pop() {
            let mut unbound = Vec::new();
            for (name, ex) in st.exchanges.iter_mut() {
                if ex.router.remove_destination(&gone) > 0 {
                    unbound.push(name.clone());
                }
            }
            for name in unbound {
                if let Some(durable) = Self::take_if_auto_delete(st, &name) {
                    durable_deleted |= durable;
                    pending.push(Destination::Exchange(name));
                }
            }
        }
        durable_deleted
    }

    /// An exchange just lost a binding as a source: delete it if it is auto-delete and that was
    /// its last one (as RabbitMQ does), with what that cascades to.
    fn auto_delete_if_unbound(st: &mut VHostState, name: &str) {
        if Self::take_if_auto_delete(st, name).is_some() {
            Self::remove_destination(st, Destination::Exchange(name.to_owned()));
        }
    }

    /// Remove `name` if it is an auto-delete exchange with no bindings left; `Some(durable)`
    /// when it was removed.
    fn take_if_auto_delete(st: &mut VHostState, name: &str) -> Option<bool> {
        let ex = st.exchanges.get(name)?;
        if !ex.settings.auto_delete || !ex.router.is_empty() || is_builtin(name) {
            return None;
        }
        let durable = ex.settings.durable;
        st.exchanges.remove(name);
        info!(exchange = %name, "deleting auto-delete exchange: its last binding went");
        Some(durable)
    }

    /// After a queue left the map: close it, forget its definition, remove its log (in that
    /// order, so a crash in between leaves an orphan log, never a definition without a log).
    /// `definitions_changed`: unlinking it also deleted a durable exchange.
    fn finish_delete(&self, q: &Arc<Queue>, definitions_changed: bool) -> Result<u64> {
        let n = q.close(CancelReason::QueueDeleted);
        if q.log().is_some() || definitions_changed {
            self.save()?;
        }
        if q.log().is_some() {
            self.shared.store.remove_queue(q.id())?;
        }
        Ok(n)
    }

    /// Delete `q` if it is still this vhost's queue of that name (auto-delete, x-expires).
    pub(crate) fn delete_if_current(&self, q: &Arc<Queue>, why: &str) {
        let _defs = self.shared.defs_lock.lock();
        let definitions_changed = {
            let mut st = self.state.write();
            match st.queues.get(q.name()) {
                Some(current) if Arc::ptr_eq(current, q) => Self::unlink_queue(&mut st, q.name()),
                _ => return,
            }
        };
        info!(vhost = %self.name, queue = %q.name(), "deleting queue: {why}");
        if let Err(e) = self.finish_delete(q, definitions_changed) {
            warn!(vhost = %self.name, queue = %q.name(), "deleting queue: {e}");
        }
    }

    pub(crate) fn auto_delete_queue(&self, q: &Arc<Queue>) {
        if q.consumer_count() == 0 {
            self.delete_if_current(q, "auto-delete after its last consumer left");
        }
    }

    /// A connection closed: delete its exclusive queues.
    pub fn owner_closed(&self, owner: OwnerId) {
        let owned: Vec<Arc<Queue>> = self
            .state
            .read()
            .queues
            .values()
            .filter(|q| q.exclusive_owner() == Some(owner))
            .cloned()
            .collect();
        for q in owned {
            self.delete_if_current(&q, "its exclusive owner closed");
        }
    }

    /// Change a queue's mutable settings; persisted for durable queues.
    pub(crate) fn update_queue_settings<E: From<CoreError>>(
        &self,
        queue: &Queue,
        f: impl FnOnce(&mut QueueSettings) -> Result<(), E>,
    ) -> Result<QueueSettings, E> {
        let _defs = self.shared.defs_lock.lock();
        let old = queue.settings();
        let mut new = QueueSettings::clone(&old);
        // On a copy: an error from `f` or from validation leaves the queue's settings alone.
        f(&mut new)?;
        new.validate()?;
        if let Some(field) = old.immutable_difference(&new) {
            return Err(
                CoreError::InvalidArgument(format!("{field} cannot be changed after creation")).into()
            );
        }
        if new.redrive != old.redrive {
            self.check_redrive(queue.name(), &new)?;
        }
        queue.set_settings(Arc::new(new.clone()))?;
        if new.is_persisted() {
            if let Err(e) = self.save() {
                // Not on disk: not applied either.
                let _ = queue.set_settings(old);
                return Err(e.into());
            }
        }
        Ok(new)
    }

    // ---- publishing --------------------------------------------------------------------

    /// Publish through an exchange ("" is the default exchange: straight to the queue named
    /// by the routing key). Follows exchange-to-exchange bindings and alternate exchanges.
    pub fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mut message: Message,
        opts: PublishOptions,
    ) -> Result<PublishOutcome> {
        if self.shared.is_shutting_down() {
            return Err(CoreError::ShuttingDown);
        }
        message.exchange = exchange.to_owned();
        message.routing_key = routing_key.to_owned();
        let targets = {
            let st = self.state.read();
            let ex = st
                .exchanges
                .get(exchange)
                .ok_or_else(|| CoreError::not_found(ObjectKind::Exchange, exchange))?;
            if ex.settings.internal {
                return Err(CoreError::AccessRefused(format!(
                    "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                    self.name
                )));
            }
            Self::route(&st, exchange, &message)
        };
        Ok(Self::deliver(targets, message, &opts.send))
    }

    /// Which queues a message published to `exchange` reaches.
    fn route(st: &VHostState, exchange: &str, message: &Message) -> Vec<Arc<Queue>> {
        let mut visited = HashSet::new();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        Self::visit(st, exchange, message, &mut visited, &mut seen, &mut out, 0);
        out
    }

    /// Route through one exchange; true if any queue was reached through it (its bindings,
    /// exchanges bound to it, or its alternate exchange).
    fn visit(
        st: &VHostState,
        exchange: &str,
        message: &Message,
        visited: &mut HashSet<String>,
        seen: &mut HashSet<String>,
        out: &mut Vec<Arc<Queue>>,
        depth: usize,
    ) -> bool {
        if depth > MAX_ROUTING_HOPS || !visited.insert(exchange.to_owned()) {
            return false;
        }
        let Some(ex) = st.exchanges.get(exchange) else { return false };
        let mut reached = false;
        let push = |name: &str, out: &mut Vec<Arc<Queue>>, seen: &mut HashSet<String>| -> bool {
            match st.queues.get(name) {
                Some(q) => {
                    if seen.insert(name.to_owned()) {
                        out.push(q.clone());
                    }
                    true
                }
                None => false,
            }
        };
        if exchange.is_empty() {
            return push(&message.routing_key, out, seen);
        }
        let mut destinations = Vec::new();
        ex.router.route_message(message, &mut destinations);
        for d in destinations {
            match d {
                Destination::Queue(name) => reached |= push(&name, out, seen),
                Destination::Exchange(name) => {
                    reached |= Self::visit(st, &name, message, visited, seen, out, depth + 1);
                }
            }
        }
        if !reached {
            if let Some(ae) = &ex.settings.alternate_exchange {
                reached = Self::visit(st, ae, message, visited, seen, out, depth + 1);
            }
        }
        reached
    }

    fn deliver(targets: Vec<Arc<Queue>>, message: Message, opts: &SendOptions) -> PublishOutcome {
        let mut outcome = PublishOutcome { routed: 0, rejected: Vec::new(), durable: Durable::done() };
        for q in targets {
            match q.send(message.clone(), opts.clone()) {
                Ok(sent) => {
                    outcome.routed += 1;
                    outcome.durable = outcome.durable.join(sent.durable);
                }
                Err(e) => outcome.rejected.push((q.name().to_owned(), e)),
            }
        }
        outcome
    }

    /// Re-publish a dead-lettered message through `exchange` (internal exchanges allowed),
    /// skipping queues that would close a dead-letter cycle. None if no queue took it.
    pub(crate) fn publish_dead_letter(
        &self,
        exchange: &str,
        routing_key: &str,
        mut message: Message,
        opts: SendOptions,
        from_queue: &str,
    ) -> Option<Durable> {
        message.exchange = exchange.to_owned();
        message.routing_key = routing_key.to_owned();
        let targets: Vec<Arc<Queue>> = {
            let st = self.state.read();
            if !st.exchanges.contains_key(exchange) {
                warn!(vhost = %self.name, queue = %from_queue, "dead-letter exchange '{exchange}' does not exist; message dropped");
                return None;
            }
            Self::route(&st, exchange, &message)
                .into_iter()
                .filter(|q| !is_cycle(&message.headers, q.name()))
                .collect()
        };
        let outcome = Self::deliver(targets, message, &opts);
        for (q, e) in &outcome.rejected {
            warn!(vhost = %self.name, from = %from_queue, to = %q, "dead-letter copy refused: {e}");
        }
        (outcome.routed > 0).then_some(outcome.durable)
    }
}

impl std::fmt::Debug for VHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VHost").field("name", &self.name).finish()
    }
}
