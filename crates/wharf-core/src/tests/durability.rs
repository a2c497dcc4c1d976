//! What survives a restart (a Broker reopened on the same store), recovery details, damaged
//! queues, compaction, memory per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wharf_store::{Durable, QueueId, QueueLog, QueueLogStats, RecordId, RecoveryReport, Store, StoreStats};

use super::*;
use crate::{CoreError, ExchangeKind, ExchangeSettings, Headers, QueueKind, RedrivePolicy};

#[tokio::test]
async fn definitions_and_messages_survive_reopen() {
    let env = env();
    let v = env.vhost();
    let mut settings = QueueSettings::durable();
    settings.visibility_timeout_ms = 5_000;
    settings.attributes.insert("Policy".into(), "{\"Version\":\"2012-10-17\"}".into());
    let q = env.queue("keep", settings.clone());
    env.queue("gone", QueueSettings::default());
    v.declare_exchange("ex", ExchangeKind::Topic, ExchangeSettings::default()).expect("declare");
    v.declare_exchange(
        "temp",
        ExchangeKind::Fanout,
        ExchangeSettings { durable: false, ..Default::default() },
    )
    .expect("declare");
    v.bind_queue("ex", "keep", "a.#", Headers::new()).expect("bind");
    env.broker.create_vhost("tenant").expect("vhost");
    let first = send(&q, "persistent");
    let mut transient = msg("transient");
    transient.properties.persistent = false;
    q.send(transient, SendOptions::default()).expect("send");
    let acked = send(&q, "acked");
    let in_flight = send(&q, "in-flight");
    let got = recv(&q, 10).await;
    assert_eq!(got.len(), 4);
    q.delete(got.iter().find(|d| d.message_id == acked.message_id).expect("acked").receipt).expect("delete");
    // Everything except the acked one is unacked; the in-flight one comes back.
    let _ = in_flight;

    let env2 = env.reopen();
    let v2 = env2.vhost();
    assert!(v2.queue("gone").is_err(), "non-durable queue is gone");
    assert!(v2.exchange("temp").is_err());
    assert_eq!(v2.exchange("ex").expect("ex").kind, ExchangeKind::Topic);
    assert!(env2.broker.vhost("tenant").is_ok());
    let q2 = v2.queue("keep").expect("durable queue");
    assert_eq!(*q2.settings(), settings);
    assert_eq!(q2.id(), q.id());
    let got = recv(&q2, 10).await;
    assert_eq!(bodies(&got), ["persistent", "in-flight"]);
    assert_eq!(got[0].message_id, first.message_id);
    assert_eq!(got[0].sequence_number, first.sequence_number);
    assert_eq!(got[0].sent_ms, T0);
    // Bindings came back too.
    assert_eq!(v2.publish("ex", "a.b", msg("routed"), Default::default()).expect("publish").routed, 1);
    // Sequence numbers keep increasing across the restart.
    assert!(send(&q2, "after").sequence_number > first.sequence_number);
    // Redeclaring with the same settings is fine after a restart.
    assert!(!v2.declare_queue("keep", settings).expect("redeclare").1);
}

#[tokio::test]
async fn sequence_numbers_increase_across_restart_even_when_empty() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let s = send(&q, "a");
    let d = recv(&q, 1).await.remove(0);
    q.delete(d.receipt).expect("delete");
    env.clock.advance(std::time::Duration::from_millis(1));
    let env2 = env.reopen();
    let q2 = env2.vhost().queue("q").expect("q");
    assert!(send(&q2, "b").sequence_number > s.sequence_number);
}

#[tokio::test]
async fn fifo_state_survives_reopen() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings { durable: true, ..QueueSettings::fifo() });
    let opts = |g: &str, d: &str| SendOptions {
        group_id: Some(g.into()),
        dedup_id: Some(d.into()),
        ..SendOptions::default()
    };
    let a1 = q.send(msg("a1"), opts("a", "1")).expect("send");
    q.send(msg("a2"), opts("a", "2")).expect("send");
    let env2 = env.reopen();
    let q2 = env2.vhost().queue("q.fifo").expect("q");
    let dup = q2.send(msg("a1 again"), opts("a", "1")).expect("send");
    assert!(dup.duplicate_of_earlier, "dedup window rebuilt from the log");
    assert_eq!(dup.message_id, a1.message_id);
    let got = recv(&q2, 10).await;
    assert_eq!(bodies(&got), ["a1", "a2"]);
    assert_eq!(got[0].group_id.as_deref(), Some("a"));
    assert_eq!(got[0].dedup_id.as_deref(), Some("1"));
}

#[tokio::test]
async fn delayed_and_expiring_messages_keep_their_times() {
    let env = env();
    let q = env.queue(
        "q",
        QueueSettings { delay_ms: 10_000, message_ttl_ms: Some(60_000), ..QueueSettings::durable() },
    );
    send(&q, "m");
    env.clock.advance(std::time::Duration::from_secs(5));
    let env2 = env.reopen();
    let q2 = env2.vhost().queue("q").expect("q");
    assert_eq!(q2.stats().delayed, 1);
    env2.advance(5_000);
    assert_eq!(q2.stats().ready, 1);
    env2.advance(50_000);
    assert_eq!(q2.stats().ready, 0);
    assert_eq!(env2.store.stats().records_settled, 1);
}

#[tokio::test]
async fn dead_lettered_messages_move_logs() {
    let env = env();
    let dlq = env.queue("dlq", QueueSettings::durable());
    let q = env.queue(
        "q",
        QueueSettings {
            redrive: Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 1 }),
            ..QueueSettings::durable()
        },
    );
    send(&q, "m");
    recv_vis(&q, 1, 0).await;
    env.advance(1);
    assert!(recv(&q, 1).await.is_empty());
    env.broker.tick();
    let logs = |e: &Env, id: QueueId| e.store.open_queue(id).expect("log").stats().live_records;
    assert_eq!((logs(&env, q.id()), logs(&env, dlq.id())), (0, 1));
    let env2 = env.reopen();
    assert_eq!(env2.vhost().queue("dlq").expect("dlq").stats().ready, 1);
    assert_eq!(env2.vhost().queue("q").expect("q").stats().ready, 0);
}

/// A store whose logs can report damage and stragglers, and refuse settles, wrapping the
/// memory store.
struct FakeStore {
    inner: Arc<MemoryStore>,
    damaged: Option<QueueId>,
    all_stragglers: bool,
    refuse_settles: Arc<AtomicBool>,
}

struct FakeLog {
    inner: Arc<dyn QueueLog>,
    damaged: bool,
    all_stragglers: bool,
    refuse_settles: Arc<AtomicBool>,
}

impl Store for FakeStore {
    fn open_queue(&self, queue: QueueId) -> wharf_store::Result<Arc<dyn QueueLog>> {
        Ok(Arc::new(FakeLog {
            inner: self.inner.open_queue(queue)?,
            damaged: self.damaged == Some(queue),
            all_stragglers: self.all_stragglers,
            refuse_settles: self.refuse_settles.clone(),
        }))
    }
    fn remove_queue(&self, queue: QueueId) -> wharf_store::Result<()> {
        self.inner.remove_queue(queue)
    }
    fn queue_ids(&self) -> wharf_store::Result<Vec<QueueId>> {
        self.inner.queue_ids()
    }
    fn save_definitions(&self, bytes: &[u8]) -> wharf_store::Result<()> {
        self.inner.save_definitions(bytes)
    }
    fn load_definitions(&self) -> wharf_store::Result<Option<Vec<u8>>> {
        self.inner.load_definitions()
    }
    fn flush(&self) -> wharf_store::Result<()> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn is_persistent(&self) -> bool {
        true
    }
    fn fsync_mode(&self) -> wharf_store::FsyncMode {
        wharf_store::FsyncMode::Never
    }
}

impl QueueLog for FakeLog {
    fn append(&self, record: &[u8]) -> wharf_store::Result<(RecordId, Durable)> {
        self.inner.append(record)
    }
    fn read(&self, id: RecordId) -> wharf_store::Result<Vec<u8>> {
        self.inner.read(id)
    }
    fn settle(&self, id: RecordId) -> wharf_store::Result<Durable> {
        if self.refuse_settles.load(Ordering::SeqCst) {
            return Err(wharf_store::StoreError::io("ack file", std::io::Error::other("disk gone")));
        }
        self.inner.settle(id)
    }
    fn recover(&self, visit: &mut dyn FnMut(RecordId, &[u8])) -> wharf_store::Result<RecoveryReport> {
        let mut report = self.inner.recover(visit)?;
        if self.damaged {
            report.damage = Some("bad CRC at segment 3 offset 4096".into());
        }
        Ok(report)
    }
    fn stragglers(&self) -> Vec<RecordId> {
        if !self.all_stragglers {
            return Vec::new();
        }
        let mut ids = Vec::new();
        let _ = self.inner.recover(&mut |id, _| ids.push(id));
        ids
    }
    fn stats(&self) -> QueueLogStats {
        self.inner.stats()
    }
}

fn open_fake(inner: &Arc<MemoryStore>, damaged: Option<QueueId>, all_stragglers: bool) -> Arc<Broker> {
    open_fake_refusing(inner, damaged, all_stragglers, Arc::default())
}

fn open_fake_refusing(
    inner: &Arc<MemoryStore>,
    damaged: Option<QueueId>,
    all_stragglers: bool,
    refuse_settles: Arc<AtomicBool>,
) -> Arc<Broker> {
    let store: Arc<dyn Store> =
        Arc::new(FakeStore { inner: inner.clone(), damaged, all_stragglers, refuse_settles });
    Broker::open(store, Arc::new(ManualClock::new(T0)), BrokerConfig::default()).expect("open")
}

#[tokio::test]
async fn a_delete_the_store_refused_is_not_reported_durable_and_the_message_is_not_lost() {
    let inner = Arc::new(MemoryStore::new());
    let refuse = Arc::new(AtomicBool::new(false));
    let broker = open_fake_refusing(&inner, None, false, refuse.clone());
    let q =
        broker.vhost("/").expect("vhost").declare_queue("q", QueueSettings::durable()).expect("declare").0;
    for body in ["a", "b", "c"] {
        send(&q, body);
    }
    let got = recv(&q, 10).await;
    assert_eq!(got.len(), 3);

    refuse.store(true, Ordering::SeqCst);
    let one = q.delete(got[0].receipt).expect("the engine lets go of it");
    assert!(matches!(one.durable.check(), Some(Err(wharf_store::StoreError::WriteFailed(_)))));
    let receipts: Vec<_> = got[1..].iter().map(|d| d.receipt).collect();
    for settled in q.delete_batch(&receipts).expect("batch") {
        let settled = settled.expect("the engine lets go of it");
        assert!(settled.durable.wait().await.is_err(), "a refused ack must not be confirmed");
    }
    broker.shutdown();

    // Nothing was acked on disk: after a restart all three are back (at least once).
    refuse.store(false, Ordering::SeqCst);
    let broker = open_fake(&inner, None, false);
    let q = broker.vhost("/").expect("vhost").queue("q").expect("durable queue");
    assert_eq!(bodies(&recv(&q, 10).await), ["a", "b", "c"]);
}

#[tokio::test]
async fn damaged_queue_opens_closed() {
    let inner = Arc::new(MemoryStore::new());
    let broker = open_fake(&inner, None, false);
    let v = broker.vhost("/").expect("vhost");
    let bad = v.declare_queue("bad", QueueSettings::durable()).expect("declare").0;
    let good = v.declare_queue("good", QueueSettings::durable()).expect("declare").0;
    send(&bad, "x");
    send(&good, "y");
    let bad_id = bad.id();
    broker.shutdown();

    let broker = open_fake(&inner, Some(bad_id), false);
    let damaged = broker.damaged_queues();
    assert_eq!(damaged.len(), 1);
    assert_eq!((damaged[0].vhost.as_str(), damaged[0].queue.as_str()), ("/", "bad"));
    assert!(damaged[0].reason.contains("bad CRC"));
    let v = broker.vhost("/").expect("vhost");
    let bad = v.queue("bad").expect("listed");
    assert!(matches!(bad.send(msg("z"), SendOptions::default()), Err(CoreError::QueueDamaged { .. })));
    assert!(matches!(recv_err(&bad).await, CoreError::QueueDamaged { .. }));
    assert_eq!(bad.stats().ready, 1, "what was read before the damage is kept for inspection");
    let good = v.queue("good").expect("good");
    assert_eq!(bodies(&recv(&good, 10).await), ["y"]);
    // An operator can still delete it.
    v.delete_queue("bad", false, false).expect("delete");
}

async fn recv_err(q: &Queue) -> CoreError {
    q.receive(ReceiveRequest::default()).await.expect_err("should fail")
}

#[tokio::test]
async fn undecodable_records_mark_the_queue_damaged() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    send(&q, "ok");
    env.store.open_queue(q.id()).expect("log").append(b"\x09garbage").expect("append");
    let env2 = env.reopen();
    let damaged = env2.broker.damaged_queues();
    assert_eq!(damaged.len(), 1);
    assert!(damaged[0].reason.contains("could not be decoded"));
}

#[tokio::test]
async fn compaction_moves_stragglers_and_recovery_dedupes_copies() {
    let inner = Arc::new(MemoryStore::new());
    let broker = open_fake(&inner, None, true);
    let v = broker.vhost("/").expect("vhost");
    let q = v.declare_queue("q", QueueSettings::durable()).expect("declare").0;
    send(&q, "a");
    send(&q, "b");
    let d = recv(&q, 1).await.remove(0);
    assert_eq!(broker.compact(), 2);
    // Both copies' bookkeeping: old records settled, new ones live.
    let log = inner.open_queue(q.id()).expect("log");
    assert_eq!(log.stats().live_records, 2);
    // The lease still works after its record moved.
    assert!(q.delete(d.receipt).expect("delete").deleted);
    assert_eq!(log.stats().live_records, 1);
    // Simulate a crash between a re-append and the old copy's settle: a second copy of "b".
    let mut copy = None;
    log.recover(&mut |_, bytes| copy = Some(bytes.to_vec())).expect("recover");
    log.append(&copy.expect("one record")).expect("append");
    broker.shutdown();
    let broker = open_fake(&inner, None, false);
    let q = broker.vhost("/").expect("vhost").queue("q").expect("q");
    assert_eq!(bodies(&recv(&q, 10).await), ["b"], "one copy survives");
    assert_eq!(log.stats().live_records, 1, "the older duplicate was settled");
}

#[test]
fn per_message_memory_is_small() {
    let entry = crate::queue::entry_size();
    println!("per-message engine entry: {entry} bytes (+~18 bytes of ready index, standard queues)");
    assert!(entry <= 64);
}

#[tokio::test]
async fn recovery_of_many_records_is_fast() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let n = 200_000;
    let body = "x".repeat(64);
    for _ in 0..n {
        send(&q, &body);
    }
    env.broker.shutdown();
    let start = std::time::Instant::now();
    let env2 = env_on(env.store.clone(), env.clock.clone());
    let elapsed = start.elapsed();
    let q2 = env2.vhost().queue("q").expect("q");
    assert_eq!(q2.stats().ready, n);
    println!("recovered {n} records in {elapsed:?}");
    // Unoptimised build on a shared machine; the release build is an order of magnitude faster.
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(bodies(&recv(&q2, 1).await), [body]);
    assert_eq!(q2.settings().kind, QueueKind::Standard);
}

/// The 1,000,000-record figure: `cargo test -p wharf-core --release -- --ignored million`.
#[tokio::test]
#[ignore = "slow in debug builds; run with --release"]
async fn recovery_of_a_million_records() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let n = 1_000_000;
    let body = "x".repeat(100);
    for _ in 0..n {
        send(&q, &body);
    }
    env.broker.shutdown();
    let start = std::time::Instant::now();
    let env2 = env_on(env.store.clone(), env.clock.clone());
    let elapsed = start.elapsed();
    assert_eq!(env2.vhost().queue("q").expect("q").stats().ready, n);
    println!("recovered {n} records in {elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn extension_documents_survive_reopen() {
    let env = env();
    assert_eq!(env.broker.extension("sns"), None);
    let doc = serde_json::json!({"topics": [{"name": "t"}]});
    env.broker.save_extension("sns", doc.clone()).expect("save");
    env.broker.save_extension("other", serde_json::json!(1)).expect("save");
    env.broker.save_extension("other", serde_json::Value::Null).expect("remove");
    let env2 = env.reopen();
    assert_eq!(env2.broker.extension("sns"), Some(doc));
    assert_eq!(env2.broker.extension("other"), None);
}

#[tokio::test]
async fn batches_send_and_delete_as_one_by_one_would_and_survive_reopen() {
    let env = env();
    let mut settings = QueueSettings::durable();
    settings.max_message_size = 5;
    let q = env.queue("batch", settings);
    let other = env.queue("other", QueueSettings::durable());
    send(&other, "x");
    let foreign = recv(&other, 1).await.remove(0).receipt;

    let with_md5 = SendOptions { body_md5: Some([1; 16]), ..SendOptions::default() };
    let items = vec![
        (msg("a"), with_md5),
        (msg("too long"), SendOptions::default()),
        (msg("b"), SendOptions::default()),
        (msg("c"), SendOptions { body_md5: Some([3; 16]), ..SendOptions::default() }),
    ];
    let sent = q.send_batch(items).expect("batch");
    assert!(matches!(sent[1], Err(CoreError::MessageTooLarge { size: 8, limit: 5 })));
    let seqs: Vec<u64> = [0, 2, 3].iter().map(|&i| sent[i].as_ref().expect("sent").sequence_number).collect();
    // The refused one takes no sequence number.
    assert_eq!(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2]);

    let got = recv(&q, 10).await;
    assert_eq!(bodies(&got), ["a", "b", "c"]);
    assert_eq!(got[0].body_md5, Some([1; 16]));
    assert_eq!(got[1].body_md5, None);
    let deleted =
        q.delete_batch(&[got[0].receipt, got[0].receipt, foreign, got[1].receipt]).expect("delete batch");
    assert!(deleted[0].as_ref().expect("a").deleted);
    assert!(!deleted[1].as_ref().expect("a again is stale, not an error").deleted);
    assert!(matches!(deleted[2], Err(CoreError::ReceiptHandleInvalid)));
    assert!(deleted[3].as_ref().expect("b").deleted);

    // After a restart: the deleted ones stay gone, the unacked one is back with its digest.
    let env2 = env.reopen();
    let q2 = env2.vhost().queue("batch").expect("queue");
    let got = recv(&q2, 10).await;
    assert_eq!(bodies(&got), ["c"]);
    assert_eq!(got[0].sequence_number, seqs[2]);
    assert_eq!(got[0].body_md5, Some([3; 16]), "the digest is in the record");

    // A queue with a length limit takes a batch one message at a time, with its overflow rule.
    let mut limited = QueueSettings::durable();
    limited.max_length = Some(2);
    limited.overflow = crate::Overflow::RejectPublish;
    let q3 = env2.queue("limited", limited);
    let sent = q3.send_batch(vec![(msg("1"), SendOptions::default()); 3]).expect("batch");
    assert!(sent[0].is_ok() && sent[1].is_ok());
    assert!(matches!(sent[2], Err(CoreError::QueueFull(_))));
}
