//! Queue and exchange settings: the union of SQS attributes and AMQP arguments.
//!
//! Settings are plain serde data: they are persisted in the definitions document and compared
//! field by field on redeclare (the first differing field is named in the error). Durations
//! are milliseconds so the persisted form is exact and small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, ObjectKind, Result};
use crate::message::Headers;

/// SQS: 12 hours is the longest a lease may last.
pub const MAX_VISIBILITY_MS: u64 = 12 * 60 * 60 * 1000;
/// SQS default visibility timeout.
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;
/// SQS default retention: 4 days.
pub const DEFAULT_RETENTION_MS: u64 = 4 * 24 * 60 * 60 * 1000;
/// SQS default (and largest) message size: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 1024 * 1024;
/// SQS FIFO deduplication interval.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Longest delay the engine accepts (SQS allows 15 minutes; the engine is more generous so
/// other front ends can use delays too, but a bound keeps timer arithmetic sane).
pub const MAX_DELAY_MS: u64 = 12 * 60 * 60 * 1000;

/// An opaque connection identity, for exclusive queues (AMQP `exclusive`).
pub type OwnerId = u64;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueKind {
    /// At-least-once, best-effort order (SQS standard, AMQP classic).
    #[default]
    Standard,
    /// Message groups, strict order per group, 5-minute deduplication (SQS FIFO).
    Fifo,
}

/// What a full queue (max length / max length bytes) does with one more message.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Drop (dead-letter with reason `maxlen`) the oldest ready messages. RabbitMQ's default.
    #[default]
    DropHead,
    /// Refuse the new message (AMQP publisher nack).
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DedupScope {
    #[default]
    Queue,
    MessageGroup,
}

/// SQS RedrivePolicy: after `max_receive_count` receives, the next receive moves the message
/// to `dead_letter_queue` (a queue of the same vhost) instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSettings {
    pub kind: QueueKind,
    /// Survives a restart (definition and persistent messages).
    pub durable: bool,
    /// Owned by one connection: others get ResourceLocked; deleted when it closes. Exclusive
    /// queues are never persisted, whatever `durable` says (their owner cannot survive).
    pub exclusive_owner: Option<OwnerId>,
    /// Deleted when its last consumer goes away (after having had one).
    pub auto_delete: bool,
    pub visibility_timeout_ms: u64,
    /// Queue-level delivery delay (SQS DelaySeconds).
    pub delay_ms: u64,
    /// Messages older than this (from their original send) are dropped.
    pub retention_ms: u64,
    pub max_message_size: u32,
    /// Long-poll wait used when a receive does not say (SQS ReceiveMessageWaitTimeSeconds).
    pub receive_wait_ms: u64,
    pub redrive: Option<RedrivePolicy>,
    pub content_based_dedup: bool,
    pub dedup_scope: DedupScope,
    /// x-message-ttl: messages expire this long after entering the queue.
    pub message_ttl_ms: Option<u64>,
    /// x-expires: the queue is deleted after being unused this long.
    pub expires_ms: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    /// x-max-priority. Messages' priorities are capped to it; None = no priorities.
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    /// x-delivery-limit: a message returned more than this many times is dead-lettered.
    pub delivery_limit: Option<u32>,
    /// Protocol-specific attributes kept verbatim for the front ends (SQS Policy, tags, ...).
    pub attributes: BTreeMap<String, String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            kind: QueueKind::Standard,
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            visibility_timeout_ms: DEFAULT_VISIBILITY_MS,
            delay_ms: 0,
            retention_ms: DEFAULT_RETENTION_MS,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            receive_wait_ms: 0,
            redrive: None,
            content_based_dedup: false,
            dedup_scope: DedupScope::Queue,
            message_ttl_ms: None,
            expires_ms: None,
            max_length: None,
            max_length_bytes: None,
            overflow: Overflow::DropHead,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            max_priority: None,
            single_active_consumer: false,
            delivery_limit: None,
            attributes: BTreeMap::new(),
        }
    }
}

impl QueueSettings {
    pub fn durable() -> Self {
        QueueSettings { durable: true, ..QueueSettings::default() }
    }

    pub fn fifo() -> Self {
        QueueSettings { kind: QueueKind::Fifo, ..QueueSettings::default() }
    }

    /// Whether messages and the definition go to the store.
    pub fn is_persisted(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }

    /// Check values a client could have got wrong. Protocol-specific ranges (SQS's 0–900 s
    /// delay, 1 KiB minimum size) are the front end's to enforce; these are the engine's.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::InvalidArgument(m));
        if self.visibility_timeout_ms > MAX_VISIBILITY_MS {
            return bad(format!(
                "visibility timeout {} ms exceeds the maximum of {MAX_VISIBILITY_MS} ms",
                self.visibility_timeout_ms
            ));
        }
        if self.delay_ms > MAX_DELAY_MS {
            return bad(format!("delay {} ms exceeds the maximum of {MAX_DELAY_MS} ms", self.delay_ms));
        }
        if self.max_message_size == 0 {
            return bad("maximum message size must be at least 1 byte".into());
        }
        if self.retention_ms == 0 {
            return bad("retention period must be positive".into());
        }
        if let Some(r) = &self.redrive {
            if r.max_receive_count == 0 {
                return bad("redrive maxReceiveCount must be at least 1".into());
            }
            if r.dead_letter_queue.is_empty() {
                return bad("redrive dead-letter queue name is empty".into());
            }
        }
        if self.kind == QueueKind::Standard && self.content_based_dedup {
            return bad("content-based deduplication is only for FIFO queues".into());
        }
        if self.expires_ms == Some(0) {
            return bad("queue expiry (x-expires) must be positive".into());
        }
        Ok(())
    }

    /// The first setting that differs, for redeclare errors: (name, existing, requested).
    pub fn first_difference(&self, other: &QueueSettings) -> Option<(&'static str, String, String)> {
        macro_rules! cmp {
            ($($field:ident),*) => {
                $(if self.$field != other.$field {
                    return Some((
                        stringify!($field),
                        format!("{:?}", self.$field),
                        format!("{:?}", other.$field),
                    ));
                })*
            };
        }
        cmp!(
            kind,
            durable,
            exclusive_owner,
            auto_delete,
            visibility_timeout_ms,
            delay_ms,
            retention_ms,
            max_message_size,
            receive_wait_ms,
            redrive,
            content_based_dedup,
            dedup_scope,
            message_ttl_ms,
            expires_ms,
            max_length,
            max_length_bytes,
            overflow,
            dead_letter_exchange,
            dead_letter_routing_key,
            max_priority,
            single_active_consumer,
            delivery_limit,
            attributes
        );
        None
    }

    /// Settings that cannot change after creation (SetQueueAttributes may change the rest).
    pub(crate) fn immutable_difference(&self, other: &QueueSettings) -> Option<&'static str> {
        if self.kind != other.kind {
            Some("kind")
        } else if self.durable != other.durable {
            Some("durable")
        } else if self.exclusive_owner != other.exclusive_owner {
            Some("exclusive_owner")
        } else if self.auto_delete != other.auto_delete {
            Some("auto_delete")
        } else if self.max_priority != other.max_priority {
            Some("max_priority")
        } else {
            None
        }
    }
}

/// Exchange declare settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExchangeSettings {
    pub durable: bool,
    pub auto_delete: bool,
    /// Clients cannot publish to it; only exchange-to-exchange bindings and dead-lettering can.
    pub internal: bool,
    /// Where messages this exchange cannot route go (AMQP `alternate-exchange`).
    pub alternate_exchange: Option<String>,
    /// Other declare arguments, kept and compared verbatim.
    pub arguments: Headers,
}

impl Default for ExchangeSettings {
    fn default() -> Self {
        ExchangeSettings {
            durable: true,
            auto_delete: false,
            internal: false,
            alternate_exchange: None,
            arguments: Headers::new(),
        }
    }
}

impl ExchangeSettings {
    pub(crate) fn first_difference(&self, other: &ExchangeSettings) -> Option<&'static str> {
        if self.durable != other.durable {
            Some("durable")
        } else if self.auto_delete != other.auto_delete {
            Some("auto_delete")
        } else if self.internal != other.internal {
            Some("internal")
        } else if self.alternate_exchange != other.alternate_exchange {
            Some("alternate_exchange")
        } else if self.arguments != other.arguments {
            Some("arguments")
        } else {
            None
        }
    }
}

pub(crate) fn queue_precondition(name: &str, setting: &str, existing: &str, requested: &str) -> CoreError {
    CoreError::precondition(
        ObjectKind::Queue,
        name,
        setting,
        format!("inequivalent {setting}: existing {existing}, requested {requested}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_sqs() {
        let s = QueueSettings::default();
        assert_eq!(s.visibility_timeout_ms, 30_000);
        assert_eq!(s.retention_ms, 345_600_000);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn differences_are_named() {
        let a = QueueSettings::default();
        let b = QueueSettings { message_ttl_ms: Some(5), ..QueueSettings::default() };
        let (field, _, _) = a.first_difference(&b).expect("differs");
        assert_eq!(field, "message_ttl_ms");
        assert!(a.first_difference(&a.clone()).is_none());
    }

    #[test]
    fn validation_rejects_bad_values() {
        let s = QueueSettings { visibility_timeout_ms: MAX_VISIBILITY_MS + 1, ..QueueSettings::default() };
        assert!(matches!(s.validate(), Err(CoreError::InvalidArgument(_))));
        let s = QueueSettings { content_based_dedup: true, ..QueueSettings::default() };
        assert!(s.validate().is_err());
    }

    #[test]
    fn settings_round_trip_through_json() {
        let mut s = QueueSettings::fifo();
        s.redrive = Some(RedrivePolicy { dead_letter_queue: "dlq.fifo".into(), max_receive_count: 3 });
        s.attributes.insert("Policy".into(), "{}".into());
        let json = serde_json::to_string(&s).expect("serialise");
        let back: QueueSettings = serde_json::from_str(&json).expect("parse");
        assert_eq!(s, back);
    }
}
