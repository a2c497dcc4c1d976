//! Engine tests that go through the broker. Every time rule is driven by a `ManualClock`
//! (advance, then `tick`); only the long-poll wake-up paths use short real waits.

mod durability;
mod fifo;
mod pull;
mod push;
mod routing;

use std::sync::Arc;
use std::time::Duration;

use wharf_store::memory::MemoryStore;
use wharf_store::Store;

use crate::{
    Broker, BrokerConfig, Delivery, ManualClock, Message, Queue, QueueSettings, ReceiveRequest, SendOptions,
    VHost,
};

pub(crate) const T0: u64 = 1_700_000_000_000;

pub(crate) struct Env {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub broker: Arc<Broker>,
}

pub(crate) fn env() -> Env {
    env_on(Arc::new(MemoryStore::new()), Arc::new(ManualClock::new(T0)))
}

pub(crate) fn env_on(store: Arc<MemoryStore>, clock: Arc<ManualClock>) -> Env {
    let dyn_store: Arc<dyn Store> = store.clone();
    let broker = Broker::open(dyn_store, clock.clone(), BrokerConfig::default()).expect("open broker");
    Env { store, clock, broker }
}

impl Env {
    /// A new broker on the same store and clock: a restart.
    pub fn reopen(&self) -> Env {
        self.broker.shutdown();
        env_on(self.store.clone(), self.clock.clone())
    }

    pub fn vhost(&self) -> Arc<VHost> {
        self.broker.vhost("/").expect("default vhost")
    }

    pub fn queue(&self, name: &str, settings: QueueSettings) -> Arc<Queue> {
        self.vhost().declare_queue(name, settings).expect("declare queue").0
    }

    /// Move time and let the engine notice.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.broker.tick();
    }
}

pub(crate) fn msg(body: &str) -> Message {
    let mut m = Message::new(body.as_bytes().to_vec());
    m.properties.persistent = true;
    m
}

pub(crate) fn send(q: &Queue, body: &str) -> crate::Sent {
    q.send(msg(body), SendOptions::default()).expect("send")
}

pub(crate) fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.message.body).into_owned()
}

pub(crate) fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(body).collect()
}

/// Receive without waiting.
pub(crate) async fn recv(q: &Queue, max: usize) -> Vec<Delivery> {
    q.receive(ReceiveRequest { max, visibility: None, wait: Some(Duration::ZERO) }).await.expect("receive")
}

pub(crate) async fn recv_vis(q: &Queue, max: usize, visibility_ms: u64) -> Vec<Delivery> {
    let req = ReceiveRequest {
        max,
        visibility: Some(Duration::from_millis(visibility_ms)),
        wait: Some(Duration::ZERO),
    };
    q.receive(req).await.expect("receive")
}
