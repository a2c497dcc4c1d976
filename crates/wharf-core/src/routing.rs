//! Exchange routing: which destinations a published message goes to.
//!
//! Pure data structures, no I/O and no locks: the vhost owns one [`Router`] per exchange under
//! its own lock, follows exchange-to-exchange bindings and alternate exchanges, and guards
//! against cycles. This module only answers "which bindings of this exchange match".
//!
//! Semantics follow RabbitMQ. Each kind keeps its own index so that routing costs what the
//! matches cost, not what the binding count costs: a hash map by key for `direct`, a trie over
//! words for `topic`, a weighted hash over destinations for `x-consistent-hash`. `fanout` and
//! `headers` must look at every binding anyway.

mod consistent_hash;
mod direct;
mod headers;
mod topic;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::{HeaderValue, Headers, Message, Properties};

use consistent_hash::{HashOn, HashRing};
use direct::DirectIndex;
use headers::HeaderMatcher;
use topic::TopicTrie;

/// Exchange types. `ConsistentHash` is RabbitMQ's `x-consistent-hash`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    ConsistentHash,
}

impl ExchangeKind {
    pub const ALL: [ExchangeKind; 5] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
        ExchangeKind::ConsistentHash,
    ];

    /// The AMQP `exchange.declare` type name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
        }
    }
}

impl FromStr for ExchangeKind {
    type Err = RoutingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExchangeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| RoutingError::UnknownKind(s.to_owned()))
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Every binding, grouped by destination then key. The grouping is what lets fanout and
    /// headers routing drop duplicate destinations by looking at the previous one, and lets
    /// `remove_destination` take a range instead of scanning.
    entries: BTreeMap<(Destination, String), Vec<Entry>>,
    len: usize,
    index: Index,
}

#[derive(Clone, Debug)]
struct Entry {
    binding: Binding,
    /// Compiled `headers` arguments; `None` for every other kind.
    matcher: Option<HeaderMatcher>,
}

#[derive(Clone, Debug)]
enum Index {
    Direct(DirectIndex),
    /// Fanout and headers route from `entries` directly.
    Scan,
    Topic(TopicTrie),
    ConsistentHash(HashRing),
}

impl Router {
    /// `exchange_arguments` are the exchange's own declare arguments (e.g. `hash-header` for
    /// consistent hashing).
    pub fn new(kind: ExchangeKind, exchange_arguments: &Headers) -> Result<Self, RoutingError> {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(DirectIndex::default()),
            ExchangeKind::Fanout | ExchangeKind::Headers => Index::Scan,
            ExchangeKind::Topic => Index::Topic(TopicTrie::default()),
            ExchangeKind::ConsistentHash => {
                Index::ConsistentHash(HashRing::new(HashOn::from_arguments(exchange_arguments)?))
            }
        };
        Ok(Router { kind, entries: BTreeMap::new(), len: 0, index })
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Add a binding; false if an identical binding (destination, key, arguments) exists.
    pub fn bind(&mut self, binding: Binding) -> Result<bool, RoutingError> {
        // Validate before touching anything, so a rejected binding leaves no trace.
        let matcher = match self.kind {
            ExchangeKind::Headers => Some(HeaderMatcher::compile(&binding.arguments)?),
            _ => None,
        };
        let weight = match self.kind {
            ExchangeKind::ConsistentHash => consistent_hash::parse_weight(&binding.routing_key)?,
            _ => 0,
        };

        let group =
            self.entries.entry((binding.destination.clone(), binding.routing_key.clone())).or_default();
        if group.iter().any(|e| same_arguments(&e.binding.arguments, &binding.arguments)) {
            return Ok(false);
        }
        match &mut self.index {
            Index::Direct(index) => index.insert(&binding.routing_key, &binding.destination),
            Index::Scan => {}
            Index::Topic(trie) => trie.insert(&binding.routing_key, &binding.destination),
            Index::ConsistentHash(ring) => ring.add(&binding.destination, weight),
        }
        group.push(Entry { binding, matcher });
        self.len += 1;
        Ok(true)
    }

    /// Remove a binding; false if it did not exist.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let key = (binding.destination.clone(), binding.routing_key.clone());
        let Some(group) = self.entries.get_mut(&key) else {
            return false;
        };
        let Some(at) = group.iter().position(|e| same_arguments(&e.binding.arguments, &binding.arguments))
        else {
            return false;
        };
        let removed = group.remove(at);
        if group.is_empty() {
            self.entries.remove(&key);
        }
        self.len -= 1;
        self.unindex(&removed.binding);
        true
    }

    /// Remove every binding to `destination` (it was deleted); returns how many.
    pub fn remove_destination(&mut self, destination: &Destination) -> usize {
        let keys: Vec<(Destination, String)> = self
            .entries
            .range((destination.clone(), String::new())..)
            .take_while(|((d, _), _)| d == destination)
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = 0;
        for key in keys {
            for entry in self.entries.remove(&key).unwrap_or_default() {
                self.unindex(&entry.binding);
                removed += 1;
            }
        }
        self.len -= removed;
        removed
    }

    fn unindex(&mut self, binding: &Binding) {
        match &mut self.index {
            Index::Direct(index) => index.remove(&binding.routing_key, &binding.destination),
            Index::Scan => {}
            Index::Topic(trie) => trie.remove(&binding.routing_key, &binding.destination),
            Index::ConsistentHash(ring) => {
                // The key parsed at bind time, so it parses now.
                let weight = consistent_hash::parse_weight(&binding.routing_key).unwrap_or(0);
                ring.remove(&binding.destination, weight);
            }
        }
    }

    /// Bindings grouped by destination, then routing key, then insertion order.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.entries.values().flat_map(|group| group.iter().map(|e| &e.binding))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when this exchange hashes a message property (`hash-property`), so it must be
    /// routed with [`Router::route_message`] or [`Router::route_with_properties`].
    pub fn uses_properties(&self) -> bool {
        matches!(&self.index, Index::ConsistentHash(ring) if ring.uses_properties())
    }

    /// Append the destinations matching this message to `out`, each at most once.
    ///
    /// An `x-consistent-hash` exchange declared with `hash-property` sees no properties here,
    /// so every message hashes as if the property were missing; use
    /// [`Router::route_message`] for those.
    pub fn route(&self, routing_key: &str, headers: &Headers, out: &mut Vec<Destination>) {
        self.route_with_properties(routing_key, headers, None, out);
    }

    /// [`Router::route`] with the message's own key, headers and properties.
    pub fn route_message(&self, message: &Message, out: &mut Vec<Destination>) {
        self.route_with_properties(&message.routing_key, &message.headers, Some(&message.properties), out);
    }

    /// [`Router::route`], with the properties an `x-consistent-hash` exchange may hash on.
    pub fn route_with_properties(
        &self,
        routing_key: &str,
        headers: &Headers,
        properties: Option<&Properties>,
        out: &mut Vec<Destination>,
    ) {
        let mut found: Vec<&Destination> = Vec::new();
        match &self.index {
            Index::Direct(index) => found.extend(index.get(routing_key)),
            Index::Topic(trie) => trie.collect(routing_key, &mut found),
            Index::ConsistentHash(ring) => found.extend(ring.pick(routing_key, headers, properties)),
            Index::Scan => {
                for group in self.entries.values() {
                    let hit = match self.kind {
                        ExchangeKind::Headers => {
                            group.iter().any(|e| e.matcher.as_ref().is_some_and(|m| m.matches(headers)))
                        }
                        _ => true,
                    };
                    let destination = &group[0].binding.destination;
                    // Groups are sorted by destination, so a repeat is always the last one found.
                    if hit && found.last() != Some(&destination) {
                        found.push(destination);
                    }
                }
            }
        }
        extend_unique(out, &found);
    }
}

/// Past this many comparisons a hash set is cheaper than scanning `out`.
const LINEAR_DEDUP_LIMIT: usize = 256;

/// Append `found` to `out`, skipping anything `out` already holds and repeats within `found`.
fn extend_unique<'a>(out: &mut Vec<Destination>, found: &[&'a Destination]) {
    if found.is_empty() {
        return;
    }
    if (out.len() + found.len()) * found.len() <= LINEAR_DEDUP_LIMIT {
        for destination in found {
            if !out.contains(destination) {
                out.push((*destination).clone());
            }
        }
        return;
    }
    let fresh: Vec<&'a Destination> = {
        let mut seen: HashSet<&Destination> = out.iter().collect();
        found.iter().copied().filter(|d| seen.insert(d)).collect()
    };
    out.extend(fresh.into_iter().cloned());
}

/// Binding identity. Unlike `==`, a NaN argument equals itself, so such a binding can still
/// be unbound, and `0.0` differs from `-0.0` as it does for RabbitMQ.
fn same_arguments(a: &Headers, b: &Headers) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn same_value(a: &HeaderValue, b: &HeaderValue) -> bool {
    match (a, b) {
        (HeaderValue::F32(x), HeaderValue::F32(y)) => x.to_bits() == y.to_bits(),
        (HeaderValue::F64(x), HeaderValue::F64(y)) => x.to_bits() == y.to_bits(),
        (HeaderValue::Array(x), HeaderValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (HeaderValue::Table(x), HeaderValue::Table(y)) => same_arguments(x, y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
