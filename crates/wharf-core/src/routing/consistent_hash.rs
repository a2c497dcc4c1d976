//! `x-consistent-hash` exchanges: each message goes to exactly one destination, chosen by a
//! hash of its routing key (or a header, or a property), with shares proportional to the
//! binding weights.
//!
//! RabbitMQ describes the weight as points on a hash ring. A ring with only `weight` points
//! per destination gives lumpy shares for small weights (weights 1 and 3 put four points on
//! the ring, and the arcs between them are anything but 1:3), so instead every destination
//! draws a score from the message hash and the highest wins, with the weight scaling the
//! score (weighted rendezvous hashing). Shares then follow the weights exactly in
//! expectation, a key always lands on the same destination while the bindings stay the same,
//! and adding or removing a destination moves only the keys it gains or loses, which is what
//! the exchange promises. Scores depend only on the message hash and the destination's name,
//! so the mapping survives restarts and rebinding in any order.

use sha2::{Digest, Sha256};

use crate::message::{HeaderValue, Headers, Properties};

use super::{Destination, RoutingError};

/// What a message is hashed on, from the exchange arguments.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum HashOn {
    RoutingKey,
    Header(String),
    Property(Property),
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) enum Property {
    MessageId,
    CorrelationId,
    Timestamp,
}

impl HashOn {
    pub(super) fn from_arguments(arguments: &Headers) -> Result<Self, RoutingError> {
        let text = |name: &str| -> Result<Option<String>, RoutingError> {
            match arguments.get(name) {
                None => Ok(None),
                Some(value @ (HeaderValue::String(_) | HeaderValue::Attribute { .. })) => Ok(value.as_text()),
                Some(other) => Err(RoutingError::InvalidArgument(format!(
                    "exchange argument {name} must be a string, not {other:?}"
                ))),
            }
        };
        match (text("hash-header")?, text("hash-property")?) {
            (Some(_), Some(_)) => {
                Err(RoutingError::InvalidArgument("hash-header and hash-property cannot both be set".into()))
            }
            (Some(header), None) => Ok(HashOn::Header(header)),
            (None, Some(property)) => match property.as_str() {
                "message_id" => Ok(HashOn::Property(Property::MessageId)),
                "correlation_id" => Ok(HashOn::Property(Property::CorrelationId)),
                "timestamp" => Ok(HashOn::Property(Property::Timestamp)),
                other => Err(RoutingError::InvalidArgument(format!(
                    "hash-property must be message_id, correlation_id or timestamp, not '{other}'"
                ))),
            },
            (None, None) => Ok(HashOn::RoutingKey),
        }
    }
}

/// A binding's weight is its routing key: a positive integer, as RabbitMQ requires.
pub(super) fn parse_weight(routing_key: &str) -> Result<u64, RoutingError> {
    match routing_key.parse::<u32>() {
        Ok(weight) if weight > 0 => Ok(weight.into()),
        _ => Err(RoutingError::InvalidArgument(format!(
            "an x-consistent-hash binding key is a weight, a positive integer, not '{routing_key}'"
        ))),
    }
}

#[derive(Clone, Debug)]
pub(super) struct HashRing {
    on: HashOn,
    members: Vec<Member>,
}

#[derive(Clone, Debug)]
struct Member {
    destination: Destination,
    /// Sum of the weights of every binding to this destination.
    weight: u64,
    seed: u64,
}

impl HashRing {
    pub(super) fn new(on: HashOn) -> Self {
        HashRing { on, members: Vec::new() }
    }

    pub(super) fn uses_properties(&self) -> bool {
        matches!(self.on, HashOn::Property(_))
    }

    pub(super) fn add(&mut self, destination: &Destination, weight: u64) {
        match self.members.iter_mut().find(|m| &m.destination == destination) {
            Some(member) => member.weight += weight,
            None => self.members.push(Member {
                destination: destination.clone(),
                weight,
                seed: destination_seed(destination),
            }),
        }
    }

    pub(super) fn remove(&mut self, destination: &Destination, weight: u64) {
        if let Some(at) = self.members.iter().position(|m| &m.destination == destination) {
            let member = &mut self.members[at];
            member.weight = member.weight.saturating_sub(weight);
            if member.weight == 0 {
                self.members.remove(at);
            }
        }
    }

    pub(super) fn pick(
        &self,
        routing_key: &str,
        headers: &Headers,
        properties: Option<&Properties>,
    ) -> Option<&Destination> {
        if self.members.is_empty() {
            return None;
        }
        // A message without the header or property still goes somewhere, always the same
        // place, as it does in RabbitMQ: it hashes as the empty string.
        let hash = match &self.on {
            HashOn::RoutingKey => stable_hash(routing_key.as_bytes()),
            HashOn::Header(name) => match headers.get(name) {
                Some(value) => stable_hash(&header_bytes(value)),
                None => stable_hash(b""),
            },
            HashOn::Property(property) => {
                let text = properties.and_then(|p| match property {
                    Property::MessageId => p.message_id.clone(),
                    Property::CorrelationId => p.correlation_id.clone(),
                    Property::Timestamp => p.timestamp.map(|t| t.to_string()),
                });
                stable_hash(text.unwrap_or_default().as_bytes())
            }
        };
        self.members.iter().max_by(|a, b| score(hash, a).total_cmp(&score(hash, b))).map(|m| &m.destination)
    }
}

/// `weight / -ln(u)` with `u` uniform in (0, 1): the largest of these is destination `i` with
/// probability `weight_i / Σ weight`.
fn score(hash: u64, member: &Member) -> f64 {
    let bits = mix(hash ^ member.seed) >> 11;
    let unit = (bits as f64 + 0.5) / (1u64 << 53) as f64;
    member.weight as f64 / -unit.ln()
}

/// The header's text, so that a STOMP string "42" and an AMQP integer 42 land together.
fn header_bytes(value: &HeaderValue) -> Vec<u8> {
    match value {
        HeaderValue::Bytes(b) => b.to_vec(),
        other => match other.as_text() {
            Some(text) => text.into_bytes(),
            // Void, arrays and tables have no text form; their JSON is stable (tables are
            // ordered maps).
            None => serde_json::to_vec(other).unwrap_or_default(),
        },
    }
}

fn stable_hash(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn destination_seed(destination: &Destination) -> u64 {
    // Tag the kind so a queue and an exchange of the same name score differently.
    let (tag, name) = match destination {
        Destination::Queue(name) => (b'q', name),
        Destination::Exchange(name) => (b'e', name),
    };
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(tag);
    bytes.extend_from_slice(name.as_bytes());
    stable_hash(&bytes)
}

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output, so
/// `hash ^ seed` gives independent-looking scores per destination.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
