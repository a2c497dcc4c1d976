//! wharf's engine: one model of vhosts, exchanges, bindings, queues, leases and timers that
//! every protocol front end drives. See the crate README and docs/ARCHITECTURE.md.

pub mod clock;
pub mod error;
pub mod message;
pub mod record;
pub mod routing;
pub mod settings;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CoreError, ObjectKind, Result};
