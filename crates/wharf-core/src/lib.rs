//! wharf's engine: one model of vhosts, exchanges, bindings, queues, leases and timers that
//! every protocol front end drives. See the crate README for its invariants and
//! docs/ARCHITECTURE.md for where it sits.
//!
//! Entry point: [`Broker::open`]. From a [`Broker`] get a [`VHost`]; declare exchanges and
//! queues on it, publish through it, and use each [`Queue`] for pull leases
//! ([`Queue::receive`]) or push leases ([`Queue::consume`]).

pub mod broker;
pub mod clock;
pub mod consumer;
pub mod deadletter;
pub mod error;
pub mod message;
pub mod queue;
mod ready;
pub mod record;
pub mod routing;
pub mod settings;
pub mod vhost;

#[cfg(test)]
mod tests;

pub use broker::{Broker, BrokerConfig, DamagedQueue, QueueMetrics, DEFAULT_VHOST};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consumer::{CancelReason, ChannelCredit, Consumer, ConsumerEvent, ConsumerOptions};
pub use deadletter::DeathReason;
pub use error::{CoreError, ObjectKind, Result};
pub use message::{HeaderValue, Headers, Message, Properties};
pub use queue::{Delivery, Queue, QueueStats, Receipt, ReceiveRequest, SendOptions, Sent, Settled};
pub use record::MessageId;
pub use routing::{Binding, Destination, ExchangeKind};
pub use settings::{
    DedupScope, ExchangeSettings, Overflow, OwnerId, QueueKind, QueueSettings, RedrivePolicy,
};
pub use vhost::{ExchangeInfo, PublishOptions, PublishOutcome, VHost};
