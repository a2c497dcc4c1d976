//! Exchange routing: which destinations a published message goes to.
//!
//! Pure data structures, no I/O and no locks: the vhost owns one [`Router`] per exchange under
//! its own lock, follows exchange-to-exchange bindings and alternate exchanges, and guards
//! against cycles. This module only answers "which bindings of this exchange match".

use serde::{Deserialize, Serialize};

use crate::message::Headers;

/// Exchange types. `ConsistentHash` is RabbitMQ's `x-consistent-hash`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    ConsistentHash,
}

/// Where a binding delivers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown exchange type '{0}'")]
    UnknownKind(String),
    #[error("invalid binding argument: {0}")]
    InvalidArgument(String),
}

/// One exchange's bindings, indexed for its kind.
#[derive(Clone, Debug)]
pub struct Router {
    kind: ExchangeKind,
    bindings: Vec<Binding>,
}

impl Router {
    /// `exchange_arguments` are the exchange's own declare arguments (e.g. `hash-header` for
    /// consistent hashing).
    pub fn new(kind: ExchangeKind, exchange_arguments: &Headers) -> Result<Self, RoutingError> {
        let _ = exchange_arguments;
        Ok(Router { kind, bindings: Vec::new() })
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Add a binding; false if an identical binding (destination, key, arguments) exists.
    pub fn bind(&mut self, binding: Binding) -> Result<bool, RoutingError> {
        if self.bindings.contains(&binding) {
            return Ok(false);
        }
        self.bindings.push(binding);
        Ok(true)
    }

    /// Remove a binding; false if it did not exist.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| b != binding);
        before != self.bindings.len()
    }

    /// Remove every binding to `destination` (it was deleted); returns how many.
    pub fn remove_destination(&mut self, destination: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|b| &b.destination != destination);
        before - self.bindings.len()
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Append the destinations matching this message to `out`, each at most once.
    pub fn route(&self, routing_key: &str, headers: &Headers, out: &mut Vec<Destination>) {
        let _ = (routing_key, headers, out);
        todo!("routing by kind")
    }
}
