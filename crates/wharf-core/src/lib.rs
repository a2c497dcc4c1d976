//! wharf's engine: one model of vhosts, exchanges, bindings, queues, leases and timers that
//! every protocol front end drives. See docs/ARCHITECTURE.md.

pub mod message;
pub mod routing;
