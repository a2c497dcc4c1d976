//! FIFO queues: groups, ordering, group locking, deduplication.

use std::time::Duration;

use super::*;
use crate::{CoreError, DedupScope};

fn gsend(q: &Queue, group: &str, dedup: &str, body: &str) -> crate::Sent {
    q.send(
        msg(body),
        SendOptions { group_id: Some(group.into()), dedup_id: Some(dedup.into()), ..SendOptions::default() },
    )
    .expect("send")
}

#[tokio::test]
async fn fifo_requires_group_and_dedup_and_refuses_message_delay() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    let no_group = q.send(msg("x"), SendOptions { dedup_id: Some("d".into()), ..SendOptions::default() });
    assert!(matches!(no_group, Err(CoreError::InvalidArgument(_))));
    let no_dedup = q.send(msg("x"), SendOptions { group_id: Some("g".into()), ..SendOptions::default() });
    assert!(matches!(no_dedup, Err(CoreError::InvalidArgument(_))));
    let delayed = q.send(
        msg("x"),
        SendOptions {
            group_id: Some("g".into()),
            dedup_id: Some("d".into()),
            delay: Some(Duration::from_secs(1)),
            ..SendOptions::default()
        },
    );
    assert!(matches!(delayed, Err(CoreError::InvalidArgument(_))));
}

#[tokio::test]
async fn fifo_orders_within_group_and_locks_groups_in_flight() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    let s1 = gsend(&q, "a", "1", "a1");
    let s2 = gsend(&q, "b", "2", "b1");
    let s3 = gsend(&q, "a", "3", "a2");
    assert!(s1.sequence_number < s2.sequence_number && s2.sequence_number < s3.sequence_number);
    let first = recv(&q, 1).await;
    assert_eq!(bodies(&first), ["a1"]);
    assert_eq!(first[0].group_id.as_deref(), Some("a"));
    // Group a is locked while a1 is in flight: b is served, then nothing.
    assert_eq!(bodies(&recv(&q, 10).await), ["b1"]);
    assert!(recv(&q, 10).await.is_empty());
    q.delete(first[0].receipt).expect("delete");
    assert_eq!(bodies(&recv(&q, 10).await), ["a2"]);
}

#[tokio::test]
async fn fifo_receive_fills_from_one_group_then_others_in_order() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    gsend(&q, "a", "1", "a1");
    gsend(&q, "b", "2", "b1");
    gsend(&q, "a", "3", "a2");
    gsend(&q, "b", "4", "b2");
    let got = recv(&q, 10).await;
    assert_eq!(bodies(&got), ["a1", "a2", "b1", "b2"]);
    // A returned message comes back first in its group, in order.
    for d in &got {
        q.change_visibility(d.receipt, Duration::ZERO).expect("release");
    }
    assert_eq!(bodies(&recv(&q, 3).await), ["a1", "a2", "b1"]);
}

#[tokio::test]
async fn fifo_visibility_expiry_unlocks_group_in_order() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings { visibility_timeout_ms: 1_000, ..QueueSettings::fifo() });
    gsend(&q, "a", "1", "a1");
    gsend(&q, "a", "2", "a2");
    let got = recv(&q, 1).await;
    assert_eq!(bodies(&got), ["a1"]);
    assert!(recv(&q, 1).await.is_empty());
    env.advance(1_000);
    let again = recv(&q, 1).await;
    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn fifo_deduplicates_by_id_within_the_window() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    let first = gsend(&q, "g", "same", "one");
    let dup = gsend(&q, "g", "same", "two");
    assert!(dup.duplicate_of_earlier);
    assert_eq!(dup.message_id, first.message_id);
    assert_eq!(dup.sequence_number, first.sequence_number);
    assert_eq!(q.stats().ready, 1);
    // Still a duplicate after the original was consumed.
    let d = recv(&q, 1).await.remove(0);
    q.delete(d.receipt).expect("delete");
    env.advance(4 * 60 * 1000);
    assert!(gsend(&q, "g", "same", "three").duplicate_of_earlier);
    // The window is 5 minutes from the first send.
    env.advance(60 * 1000);
    let fresh = gsend(&q, "g", "same", "four");
    assert!(!fresh.duplicate_of_earlier);
    assert!(fresh.sequence_number > first.sequence_number);
    assert_eq!(bodies(&recv(&q, 10).await), ["four"]);
}

#[tokio::test]
async fn fifo_content_based_deduplication() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings { content_based_dedup: true, ..QueueSettings::fifo() });
    let opts = || SendOptions { group_id: Some("g".into()), ..SendOptions::default() };
    let a = q.send(msg("body"), opts()).expect("send");
    let b = q.send(msg("body"), opts()).expect("send");
    let c = q.send(msg("other"), opts()).expect("send");
    assert!(b.duplicate_of_earlier && !c.duplicate_of_earlier);
    assert_eq!(a.message_id, b.message_id);
    // SQS reports the body's SHA-256 as the deduplication id.
    assert_eq!(
        a.dedup_id.as_deref(),
        Some("230d8358dc8e8890b4c58deeb62912ee2f20357ae92a5cc861b98e68fe31acb5")
    );
    let got = recv(&q, 10).await;
    assert_eq!(got[0].dedup_id, a.dedup_id);
    // An explicit id wins over content.
    let explicit = q.send(msg("body"), SendOptions { dedup_id: Some("x".into()), ..opts() }).expect("send");
    assert!(!explicit.duplicate_of_earlier);
}

#[tokio::test]
async fn fifo_dedup_scope_message_group() {
    let env = env();
    let q =
        env.queue("q.fifo", QueueSettings { dedup_scope: DedupScope::MessageGroup, ..QueueSettings::fifo() });
    assert!(!gsend(&q, "a", "id", "x").duplicate_of_earlier);
    assert!(!gsend(&q, "b", "id", "y").duplicate_of_earlier);
    assert!(gsend(&q, "a", "id", "z").duplicate_of_earlier);
}

#[tokio::test]
async fn standard_queue_keeps_group_id_without_locking() {
    let env = env();
    let q = env.queue("fair", QueueSettings::default());
    for b in ["1", "2"] {
        q.send(msg(b), SendOptions { group_id: Some("tenant".into()), ..SendOptions::default() })
            .expect("send");
    }
    let got = recv(&q, 1).await;
    assert_eq!(got[0].group_id.as_deref(), Some("tenant"));
    assert_eq!(recv(&q, 1).await.len(), 1, "no group lock on standard queues");
}

#[tokio::test]
async fn fifo_push_consumer_respects_group_lock() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    gsend(&q, "a", "1", "a1");
    gsend(&q, "a", "2", "a2");
    gsend(&q, "b", "3", "b1");
    let mut c = q.consume(crate::ConsumerOptions { tag: "c".into(), ..Default::default() }).expect("consume");
    let mut got = Vec::new();
    while let Some(crate::ConsumerEvent::Delivery(d)) = c.try_recv() {
        got.push(*d);
    }
    assert_eq!(bodies(&got), ["a1", "b1"]);
    c.ack(got[0].receipt).expect("ack");
    let Some(crate::ConsumerEvent::Delivery(d)) = c.try_recv() else { panic!("a2 expected") };
    assert_eq!(body(&d), "a2");
}
