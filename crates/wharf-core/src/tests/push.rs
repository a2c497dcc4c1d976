//! Push leases: consumers, credit, ack/nack/requeue, cancel, round robin, single active
//! consumer, priorities, delivery limit.

use std::time::Duration;

use super::*;
use crate::deadletter::death_count;
use crate::{
    CancelReason, ChannelCredit, Consumer, ConsumerEvent, ConsumerOptions, CoreError, DeathReason,
    ExchangeKind, ExchangeSettings,
};

fn opts(tag: &str, prefetch: u32) -> ConsumerOptions {
    ConsumerOptions { tag: tag.into(), prefetch, ..ConsumerOptions::default() }
}

fn drain(c: &mut Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(ev) = c.try_recv() {
        match ev {
            ConsumerEvent::Delivery(d) => out.push(*d),
            ConsumerEvent::Cancelled(r) => panic!("unexpected cancel {r:?}"),
        }
    }
    out
}

#[tokio::test]
async fn prefetch_bounds_unacked_deliveries() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    for i in 0..5 {
        send(&q, &i.to_string());
    }
    let mut c = q.consume(opts("c", 2)).expect("consume");
    let got = drain(&mut c);
    assert_eq!(bodies(&got), ["0", "1"]);
    assert_eq!(c.unacked(), 2);
    c.ack(got[0].receipt).expect("ack");
    assert_eq!(bodies(&drain(&mut c)), ["2"]);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.acked_total, s.consumers), (2, 2, 1, 1));
    // Acking twice, or a lease it does not hold, is an error (AMQP unknown delivery tag).
    assert!(matches!(c.ack(got[0].receipt), Err(CoreError::MessageNotInflight)));
}

#[tokio::test]
async fn async_recv_waits_for_a_send() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let mut c = q.consume(opts("c", 0)).expect("consume");
    let sender = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(&sender, "pushed");
    });
    let ev = tokio::time::timeout(Duration::from_secs(5), c.recv()).await.expect("in time");
    let Some(ConsumerEvent::Delivery(d)) = ev else { panic!("delivery expected") };
    assert_eq!(body(&d), "pushed");
}

#[tokio::test]
async fn nack_requeue_keeps_position_and_sets_redelivered() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    for b in ["a", "b", "c"] {
        send(&q, b);
    }
    let mut c = q.consume(opts("c", 1)).expect("consume");
    let a = drain(&mut c).remove(0);
    assert!(!a.redelivered);
    c.nack(a.receipt, true).expect("nack");
    let again = drain(&mut c).remove(0);
    assert_eq!(body(&again), "a", "back at its original position");
    assert!(again.redelivered);
    c.reject(again.receipt, true).expect("reject");
    let third = drain(&mut c).remove(0);
    assert_eq!(third.receive_count, 3);
}

#[tokio::test]
async fn dropping_a_consumer_requeues_its_unacked() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    for b in ["a", "b"] {
        send(&q, b);
    }
    let mut c = q.consume(opts("c", 0)).expect("consume");
    assert_eq!(drain(&mut c).len(), 2);
    drop(c);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.consumers), (2, 0, 0));
    let got = recv(&q, 10).await;
    assert_eq!(bodies(&got), ["a", "b"]);
    assert!(got.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn stop_keeps_leases_until_drop() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "a");
    let mut c = q.consume(opts("c", 0)).expect("consume");
    let d = drain(&mut c).remove(0);
    c.stop();
    send(&q, "b");
    assert!(drain(&mut c).is_empty(), "no deliveries after basic.cancel");
    c.ack(d.receipt).expect("late ack still works");
    assert_eq!(q.stats().ready, 1);
}

#[tokio::test]
async fn consumers_share_round_robin() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let mut a = q.consume(opts("a", 0)).expect("consume");
    let mut b = q.consume(opts("b", 0)).expect("consume");
    for i in 0..4 {
        send(&q, &i.to_string());
    }
    assert_eq!(bodies(&drain(&mut a)), ["0", "2"]);
    assert_eq!(bodies(&drain(&mut b)), ["1", "3"]);
}

#[tokio::test]
async fn single_active_consumer_fails_over() {
    let env = env();
    let q = env.queue("q", QueueSettings { single_active_consumer: true, ..QueueSettings::default() });
    let mut a = q.consume(opts("a", 0)).expect("consume");
    let mut b = q.consume(opts("b", 0)).expect("consume");
    for i in 0..3 {
        send(&q, &i.to_string());
    }
    assert_eq!(drain(&mut a).len(), 3);
    assert!(drain(&mut b).is_empty());
    drop(a);
    let got = drain(&mut b);
    assert_eq!(bodies(&got), ["0", "1", "2"]);
    assert!(got.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn message_priorities_deliver_highest_first() {
    let env = env();
    let q = env.queue("q", QueueSettings { max_priority: Some(10), ..QueueSettings::default() });
    for (b, p) in [("low", 1), ("high", 5), ("mid", 3), ("capped", 200), ("none", 0)] {
        let mut m = msg(b);
        m.properties.priority = Some(p);
        q.send(m, SendOptions::default()).expect("send");
    }
    let mut c = q.consume(opts("c", 0)).expect("consume");
    assert_eq!(bodies(&drain(&mut c)), ["capped", "high", "mid", "low", "none"]);
}

#[tokio::test]
async fn consumer_priority_wins_while_it_has_credit() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let mut low = q.consume(ConsumerOptions { priority: 0, ..opts("low", 0) }).expect("consume");
    let mut high = q.consume(ConsumerOptions { priority: 10, ..opts("high", 2) }).expect("consume");
    for i in 0..3 {
        send(&q, &i.to_string());
    }
    assert_eq!(bodies(&drain(&mut high)), ["0", "1"]);
    assert_eq!(bodies(&drain(&mut low)), ["2"]);
}

#[tokio::test]
async fn no_ack_consumers_settle_on_delivery() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    send(&q, "a");
    let mut c = q.consume(ConsumerOptions { no_ack: true, ..opts("c", 1) }).expect("consume");
    send(&q, "b");
    assert_eq!(drain(&mut c).len(), 2);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.acked_total), (0, 0, 2));
    assert_eq!(env.store.stats().records_settled, 2);
}

#[tokio::test]
async fn exclusive_consumers_lock_the_queue() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let _a = q.consume(ConsumerOptions { exclusive: true, ..opts("a", 0) }).expect("consume");
    assert!(matches!(q.consume(opts("b", 0)), Err(CoreError::ResourceLocked(_))));
    let q2 = env.queue("q2", QueueSettings::default());
    let _b = q2.consume(opts("b", 0)).expect("consume");
    assert!(matches!(
        q2.consume(ConsumerOptions { exclusive: true, ..opts("x", 0) }),
        Err(CoreError::ResourceLocked(_))
    ));
}

#[tokio::test]
async fn channel_credit_is_shared_across_queues() {
    let env = env();
    let q1 = env.queue("q1", QueueSettings::default());
    let q2 = env.queue("q2", QueueSettings::default());
    send(&q1, "one");
    send(&q2, "two");
    let credit = ChannelCredit::new(1);
    let mut c1 =
        q1.consume(ConsumerOptions { channel: Some(credit.clone()), ..opts("c1", 0) }).expect("consume");
    let mut c2 =
        q2.consume(ConsumerOptions { channel: Some(credit.clone()), ..opts("c2", 0) }).expect("consume");
    let got = drain(&mut c1);
    assert_eq!(bodies(&got), ["one"]);
    assert!(drain(&mut c2).is_empty(), "the channel's single credit is in use");
    c1.ack(got[0].receipt).expect("ack");
    assert_eq!(bodies(&drain(&mut c2)), ["two"], "freed credit kicks the waiting queue");
    assert_eq!(credit.in_use(), 1);
}

#[tokio::test]
async fn deleting_the_queue_cancels_consumers() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "a");
    let mut c = q.consume(opts("c", 0)).expect("consume");
    let mut events = Vec::new();
    assert_eq!(env.vhost().delete_queue("q", false, false).expect("delete"), 1);
    while let Some(ev) = c.try_recv() {
        events.push(ev);
    }
    assert!(matches!(events.last(), Some(ConsumerEvent::Cancelled(CancelReason::QueueDeleted))));
    assert!(matches!(q.send(msg("x"), SendOptions::default()), Err(CoreError::NotFound { .. })));
}

#[tokio::test]
async fn reject_without_requeue_dead_letters_and_delivery_limit() {
    let env = env();
    let v = env.vhost();
    let dlq = env.queue("dlq", QueueSettings::default());
    v.declare_exchange("dlx", ExchangeKind::Fanout, ExchangeSettings::default()).expect("dlx");
    v.bind_queue("dlx", "dlq", "", Default::default()).expect("bind");
    let q = env.queue(
        "q",
        QueueSettings {
            delivery_limit: Some(1),
            dead_letter_exchange: Some("dlx".into()),
            ..QueueSettings::default()
        },
    );
    send(&q, "rejected");
    send(&q, "poison");
    let mut c = q.consume(opts("c", 1)).expect("consume");
    let r = drain(&mut c).remove(0);
    c.reject(r.receipt, false).expect("reject");
    let p = drain(&mut c).remove(0);
    c.nack(p.receipt, true).expect("first return");
    let p = drain(&mut c).remove(0);
    assert_eq!(p.receive_count, 2);
    c.nack(p.receipt, true).expect("second return is past the limit");
    assert!(drain(&mut c).is_empty());
    let dead = recv(&dlq, 10).await;
    assert_eq!(bodies(&dead), ["rejected", "poison"]);
    assert_eq!(death_count(&dead[0].message.headers, "q", DeathReason::Rejected), 1);
    assert_eq!(death_count(&dead[1].message.headers, "q", DeathReason::DeliveryLimit), 1);
}

#[tokio::test]
async fn basic_get_leases_until_settled() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "a");
    send(&q, "b");
    let d = q.get(false).expect("get").expect("a message");
    assert_eq!(body(&d), "a");
    env.advance(10 * 60 * 1000);
    assert_eq!(q.stats().in_flight, 1, "held leases have no visibility deadline");
    q.nack(d.receipt, true).expect("requeue");
    let again = q.get(true).expect("get").expect("a message");
    assert!(again.redelivered);
    assert_eq!(q.stats().messages(), 1);
}

#[tokio::test]
async fn auto_delete_after_last_consumer() {
    let env = env();
    let q = env.queue("q", QueueSettings { auto_delete: true, ..QueueSettings::default() });
    let c = q.consume(opts("c", 0)).expect("consume");
    drop(c);
    assert!(env.vhost().queue("q").is_err());
}

#[tokio::test]
async fn purge_all_frees_push_leases_and_later_acks_are_no_ops() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let credit = ChannelCredit::new(2);
    let mut c =
        q.consume(ConsumerOptions { channel: Some(credit.clone()), ..opts("c", 2) }).expect("consume");
    for i in 0..2 {
        send(&q, &i.to_string());
    }
    let held = drain(&mut c);
    assert_eq!((held.len(), c.unacked(), credit.in_use()), (2, 2, 2));
    // The plain purge leaves leases alone (AMQP queue.purge).
    send(&q, "ready");
    assert_eq!(q.purge().expect("purge"), 1);
    assert_eq!(c.unacked(), 2);
    assert_eq!(q.purge_all().expect("purge all"), 2);
    assert_eq!((c.unacked(), credit.in_use(), q.stats().messages()), (0, 0, 0));
    // Settling a purged lease is harmless, once; a lease never held is still an error.
    let acked = c.ack(held[0].receipt).expect("ack of a purged lease");
    assert!(!acked.deleted);
    c.nack(held[1].receipt, true).expect("nack of a purged lease");
    assert!(matches!(c.ack(held[0].receipt), Err(CoreError::MessageNotInflight)));
    assert_eq!(q.stats().acked_total, 0);
    // The freed credit lets the consumer go on.
    send(&q, "after");
    assert_eq!(bodies(&drain(&mut c)), ["after"]);
}
