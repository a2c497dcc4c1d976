//! Pull leases (SQS semantics): visibility, receipts, long polls, delays, retention, TTL,
//! limits, redrive.

use std::time::Duration;

use super::*;
use crate::deadletter::death_count;
use crate::{CoreError, DeathReason, HeaderValue, Overflow, QueueKind, Receipt, RedrivePolicy};

#[tokio::test]
async fn send_receive_delete() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let sent = send(&q, "hello");
    assert!(sent.durable.is_done());
    let got = recv(&q, 10).await;
    assert_eq!(bodies(&got), ["hello"]);
    let d = &got[0];
    assert_eq!(d.message_id, sent.message_id);
    assert_eq!(d.sequence_number, sent.sequence_number);
    assert_eq!(d.receive_count, 1);
    assert_eq!(d.first_receive_ms, T0);
    assert_eq!(d.sent_ms, T0);
    assert!(!d.redelivered);
    // In flight: not visible.
    assert!(recv(&q, 10).await.is_empty());
    assert_eq!(q.stats().in_flight, 1);
    let settled = q.delete(d.receipt).expect("delete");
    assert!(settled.deleted);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.acked_total, s.enqueued_total, s.delivered_total), (0, 0, 1, 1, 1));
    // Deleting again: SQS says success; nothing happens.
    assert!(!q.delete(d.receipt).expect("second delete").deleted);
}

#[tokio::test]
async fn visibility_timeout_expiry_counts_receives() {
    let env = env();
    let q = env.queue("q", QueueSettings { visibility_timeout_ms: 10_000, ..QueueSettings::default() });
    send(&q, "m");
    let first = recv(&q, 1).await;
    assert_eq!(first.len(), 1);
    env.advance(9_999);
    assert!(recv(&q, 1).await.is_empty());
    env.advance(1);
    assert_eq!(q.stats().ready, 1);
    let second = recv(&q, 1).await;
    assert_eq!(second[0].receive_count, 2);
    assert!(second[0].redelivered);
    assert_eq!(second[0].first_receive_ms, T0, "first-receive time is kept");
    // The first receipt is stale now: delete succeeds but does not delete.
    assert!(!q.delete(first[0].receipt).expect("stale delete").deleted);
    assert_eq!(q.stats().in_flight, 1);
    assert!(q.delete(second[0].receipt).expect("delete").deleted);
}

#[tokio::test]
async fn receive_visibility_overrides_queue_default() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "m");
    recv_vis(&q, 1, 2_000).await;
    env.advance(2_000);
    assert_eq!(recv(&q, 1).await.len(), 1);
    let too_long = ReceiveRequest { max: 1, visibility: Some(Duration::from_secs(43_201)), wait: None };
    assert!(matches!(q.receive(too_long).await, Err(CoreError::InvalidArgument(_))));
    let bad_max = ReceiveRequest { max: 11, visibility: None, wait: None };
    assert!(matches!(q.receive(bad_max).await, Err(CoreError::InvalidArgument(_))));
}

#[tokio::test]
async fn change_visibility_extends_and_zero_releases() {
    let env = env();
    let q = env.queue("q", QueueSettings { visibility_timeout_ms: 10_000, ..QueueSettings::default() });
    send(&q, "m");
    let d = recv(&q, 1).await.remove(0);
    env.advance(5_000);
    q.change_visibility(d.receipt, Duration::from_secs(20)).expect("extend");
    // The old 10 s deadline passes; the lease holds (counted from the call: 5 s + 20 s).
    env.advance(10_000);
    assert!(recv(&q, 1).await.is_empty());
    env.advance(10_000);
    assert_eq!(q.stats().ready, 1);
    let d = recv(&q, 1).await.remove(0);
    q.change_visibility(d.receipt, Duration::ZERO).expect("release");
    assert_eq!(q.stats().ready, 1);
    // Not in flight any more.
    assert!(matches!(
        q.change_visibility(d.receipt, Duration::from_secs(1)),
        Err(CoreError::MessageNotInflight)
    ));
    // Over 12 hours.
    let d = recv_vis(&q, 1, 12 * 3600 * 1000).await.remove(0);
    assert!(matches!(
        q.change_visibility(d.receipt, Duration::from_secs(43_201)),
        Err(CoreError::InvalidArgument(_))
    ));
    env.advance(6 * 3600 * 1000);
    q.change_visibility(d.receipt, Duration::from_secs(3 * 3600)).expect("still within 12 h");
    assert!(matches!(
        q.change_visibility(d.receipt, Duration::from_secs(7 * 3600)),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn receipts_from_elsewhere_are_invalid() {
    let env = env();
    let a = env.queue("a", QueueSettings::default());
    let b = env.queue("b", QueueSettings::default());
    send(&a, "m");
    let d = recv(&a, 1).await.remove(0);
    assert!(matches!(b.delete(d.receipt), Err(CoreError::ReceiptHandleInvalid)));
    let future = Receipt { seq: d.receipt.seq + 1000, ..d.receipt };
    assert!(matches!(a.delete(future), Err(CoreError::ReceiptHandleInvalid)));
    assert!(matches!(Receipt::decode("not-a-receipt"), Err(CoreError::ReceiptHandleInvalid)));
    let round = Receipt::decode(&d.receipt.encode()).expect("decode");
    assert!(a.delete(round).expect("delete").deleted);
}

#[tokio::test]
async fn long_poll_returns_at_once_when_messages_exist() {
    let env = env();
    let q = env.queue("q", QueueSettings { receive_wait_ms: 20_000, ..QueueSettings::default() });
    send(&q, "m");
    let got = tokio::time::timeout(Duration::from_secs(2), q.receive(ReceiveRequest::default()))
        .await
        .expect("did not wait")
        .expect("receive");
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn long_poll_wakes_when_a_message_is_sent() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let waiter = q.clone();
    let poll = tokio::spawn(async move {
        waiter.receive(ReceiveRequest { max: 5, visibility: None, wait: Some(Duration::from_secs(20)) }).await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    send(&q, "late");
    let got =
        tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woke").expect("join").expect("ok");
    assert_eq!(bodies(&got), ["late"]);
}

#[tokio::test]
async fn long_poll_wakes_when_visibility_expires() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "m");
    recv_vis(&q, 1, 30_000).await;
    let waiter = q.clone();
    let poll = tokio::spawn(async move {
        waiter.receive(ReceiveRequest { max: 1, visibility: None, wait: Some(Duration::from_secs(20)) }).await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    env.advance(30_000);
    let got =
        tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woke").expect("join").expect("ok");
    assert_eq!(got[0].receive_count, 2);
}

#[tokio::test]
async fn long_poll_wakes_on_change_visibility_zero() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    send(&q, "m");
    let d = recv(&q, 1).await.remove(0);
    let waiter = q.clone();
    let poll = tokio::spawn(async move {
        waiter.receive(ReceiveRequest { max: 1, visibility: None, wait: Some(Duration::from_secs(20)) }).await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    q.change_visibility(d.receipt, Duration::ZERO).expect("release");
    let got =
        tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woke").expect("join").expect("ok");
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn long_poll_times_out_empty_and_shutdown_ends_it() {
    let env = env();
    let q = env.queue("q", QueueSettings::default());
    let req = ReceiveRequest { max: 1, visibility: None, wait: Some(Duration::from_millis(50)) };
    assert!(q.receive(req).await.expect("receive").is_empty());
    let waiter = q.clone();
    let poll = tokio::spawn(async move {
        waiter.receive(ReceiveRequest { max: 1, visibility: None, wait: Some(Duration::from_secs(20)) }).await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    env.broker.shutdown();
    let got =
        tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woke").expect("join").expect("ok");
    assert!(got.is_empty());
    assert!(matches!(q.send(msg("x"), SendOptions::default()), Err(CoreError::ShuttingDown)));
}

#[tokio::test]
async fn delay_queue_and_per_message_delay() {
    let env = env();
    let q = env.queue("q", QueueSettings { delay_ms: 5_000, ..QueueSettings::default() });
    send(&q, "queue-delay");
    q.send(msg("own-delay"), SendOptions { delay: Some(Duration::from_secs(1)), ..SendOptions::default() })
        .expect("send");
    q.send(msg("no-delay"), SendOptions { delay: Some(Duration::ZERO), ..SendOptions::default() })
        .expect("send");
    assert_eq!(q.stats().delayed, 2);
    assert_eq!(bodies(&recv(&q, 10).await), ["no-delay"]);
    env.advance(1_000);
    assert_eq!(bodies(&recv(&q, 10).await), ["own-delay"]);
    env.advance(3_999);
    assert!(recv(&q, 10).await.is_empty());
    env.advance(1);
    assert_eq!(bodies(&recv(&q, 10).await), ["queue-delay"]);
}

#[tokio::test]
async fn retention_drops_old_messages() {
    let env = env();
    let q = env.queue("q", QueueSettings { retention_ms: 60_000, ..QueueSettings::default() });
    send(&q, "old");
    env.advance(30_000);
    send(&q, "young");
    env.advance(30_000);
    let s = q.stats();
    assert_eq!((s.ready, s.expired_total), (1, 1));
    assert_eq!(bodies(&recv(&q, 10).await), ["young"]);
}

#[tokio::test]
async fn ttl_dead_letters_with_x_death() {
    let env = env();
    let v = env.vhost();
    let dlq = env.queue("dlq", QueueSettings::default());
    v.declare_exchange("dlx", crate::ExchangeKind::Fanout, crate::ExchangeSettings::default()).expect("dlx");
    v.bind_queue("dlx", "dlq", "", Default::default()).expect("bind");
    let q = env.queue(
        "work",
        QueueSettings {
            message_ttl_ms: Some(10_000),
            dead_letter_exchange: Some("dlx".into()),
            ..QueueSettings::default()
        },
    );
    v.publish("", "work", msg("queue-ttl"), Default::default()).expect("publish");
    let mut short = msg("message-ttl");
    short.properties.expiration_ms = Some(2_000);
    v.publish("", "work", short, Default::default()).expect("publish");
    env.advance(2_000);
    // The per-message TTL (lower) wins, even behind an unexpired head.
    let got = recv(&dlq, 10).await;
    assert_eq!(bodies(&got), ["message-ttl"]);
    let h = &got[0].message.headers;
    assert_eq!(death_count(h, "work", DeathReason::Expired), 1);
    assert_eq!(h.get("x-first-death-reason"), Some(&HeaderValue::String("expired".into())));
    assert_eq!(h.get("x-first-death-queue"), Some(&HeaderValue::String("work".into())));
    assert_eq!(got[0].message.properties.expiration_ms, None, "TTL removed on dead-lettering");
    env.advance(8_000);
    assert_eq!(bodies(&recv(&dlq, 10).await), ["queue-ttl"]);
    let s = q.stats();
    assert_eq!((s.ready, s.expired_total, s.dead_lettered_total), (0, 2, 2));
}

#[tokio::test]
async fn max_length_drop_head_dead_letters_maxlen() {
    let env = env();
    let v = env.vhost();
    env.queue("dlq", QueueSettings::default());
    v.declare_exchange("dlx", crate::ExchangeKind::Direct, crate::ExchangeSettings::default()).expect("dlx");
    v.bind_queue("dlx", "dlq", "dead", Default::default()).expect("bind");
    let q = env.queue(
        "q",
        QueueSettings {
            max_length: Some(2),
            dead_letter_exchange: Some("dlx".into()),
            dead_letter_routing_key: Some("dead".into()),
            ..QueueSettings::default()
        },
    );
    for b in ["1", "2", "3"] {
        send(&q, b);
    }
    assert_eq!(bodies(&recv(&q, 10).await), ["2", "3"]);
    let dlq = v.queue("dlq").expect("dlq");
    let dead = recv(&dlq, 10).await;
    assert_eq!(bodies(&dead), ["1"]);
    assert_eq!(death_count(&dead[0].message.headers, "q", DeathReason::MaxLen), 1);
}

#[tokio::test]
async fn max_length_reject_publish() {
    let env = env();
    let q = env.queue(
        "q",
        QueueSettings { max_length: Some(1), overflow: Overflow::RejectPublish, ..QueueSettings::default() },
    );
    send(&q, "1");
    assert!(matches!(q.send(msg("2"), SendOptions::default()), Err(CoreError::QueueFull(_))));
    // In-flight messages do not count against the limit.
    recv(&q, 1).await;
    send(&q, "3");
}

#[tokio::test]
async fn max_length_reject_publish_dlx_and_bytes() {
    let env = env();
    let v = env.vhost();
    let dlq = env.queue("dlq", QueueSettings::default());
    v.declare_exchange("dlx", crate::ExchangeKind::Fanout, crate::ExchangeSettings::default()).expect("dlx");
    v.bind_queue("dlx", "dlq", "", Default::default()).expect("bind");
    let q = env.queue(
        "q",
        QueueSettings {
            max_length_bytes: Some(10),
            overflow: Overflow::RejectPublishDlx,
            dead_letter_exchange: Some("dlx".into()),
            ..QueueSettings::default()
        },
    );
    send(&q, "12345678");
    assert!(matches!(q.send(msg("abc"), SendOptions::default()), Err(CoreError::QueueFull(_))));
    assert_eq!(bodies(&recv(&dlq, 10).await), ["abc"]);
    // A publish through an exchange reports the refusal so AMQP can nack it.
    let out = v.publish("", "q", msg("xyz"), Default::default()).expect("publish");
    assert_eq!(out.routed, 0);
    assert_eq!(out.rejected.len(), 1);
}

#[tokio::test]
async fn redrive_moves_to_dlq_after_max_receives() {
    let env = env();
    let dlq = env.queue("dlq", QueueSettings::durable());
    let q = env.queue(
        "q",
        QueueSettings {
            durable: true,
            redrive: Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 2 }),
            ..QueueSettings::default()
        },
    );
    let sent = send(&q, "poison");
    env.advance(1_000);
    for _ in 0..2 {
        assert_eq!(recv_vis(&q, 1, 0).await.len(), 1);
        env.advance(1);
    }
    // The third receive would exceed maxReceiveCount: the message moves instead.
    assert!(recv(&q, 1).await.is_empty());
    let moved = recv(&dlq, 1).await;
    assert_eq!(bodies(&moved), ["poison"]);
    assert_eq!(moved[0].message_id, sent.message_id, "keeps its id");
    assert_eq!(moved[0].sent_ms, T0, "keeps its original sent time");
    assert_eq!(moved[0].receive_count, 1);
    assert_eq!(q.stats().dead_lettered_total, 1);
    assert_eq!(env.store.stats().records_appended, 2);
}

#[tokio::test]
async fn redrive_records_the_source_queue_durably() {
    let env = env();
    env.queue("dlq", QueueSettings::durable());
    let redrive = |durable| QueueSettings {
        durable,
        redrive: Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 1 }),
        ..QueueSettings::default()
    };
    let a = env.queue("a", redrive(true));
    let b = env.queue("b", redrive(false));
    send(&a, "from a");
    // Not persistent, and b is not durable: moved in memory.
    b.send(Message::new("from b"), SendOptions::default()).expect("send");
    for q in [&a, &b] {
        assert_eq!(recv_vis(q, 1, 0).await.len(), 1);
        env.advance(1);
        assert!(recv(q, 1).await.is_empty());
        // A message straight from a sender has no source.
        assert_eq!(recv_vis(q, 1, 0).await.len(), 0);
    }
    send(&env.vhost().queue("dlq").expect("dlq"), "sent to the dlq");
    let dlq = env.vhost().queue("dlq").expect("dlq");
    let got = recv_vis(&dlq, 10, 0).await;
    let sources: Vec<(String, Option<String>)> =
        got.iter().map(|d| (body(d), d.dead_letter_source.clone())).collect();
    assert_eq!(
        sources,
        [
            ("from a".to_string(), Some("a".to_string())),
            ("from b".to_string(), Some("b".to_string())),
            ("sent to the dlq".to_string(), None)
        ]
    );
    // The source is in the record: it survives a restart (the in-memory message does not).
    env.advance(1);
    let env2 = env.reopen();
    let dlq = env2.vhost().queue("dlq").expect("dlq");
    let got = recv(&dlq, 10).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].dead_letter_source.as_deref(), Some("a"));
    assert_eq!(got[1].dead_letter_source, None);
}

#[tokio::test]
async fn redrive_target_must_exist_and_match_kind() {
    let env = env();
    let v = env.vhost();
    let missing = QueueSettings {
        redrive: Some(RedrivePolicy { dead_letter_queue: "nope".into(), max_receive_count: 1 }),
        ..QueueSettings::default()
    };
    assert!(matches!(v.declare_queue("q", missing), Err(CoreError::InvalidArgument(_))));
    env.queue("dlq.fifo", QueueSettings::fifo());
    let mixed = QueueSettings {
        redrive: Some(RedrivePolicy { dead_letter_queue: "dlq.fifo".into(), max_receive_count: 1 }),
        ..QueueSettings::default()
    };
    assert!(matches!(v.declare_queue("q", mixed), Err(CoreError::InvalidArgument(_))));
    assert_eq!(v.queue("dlq.fifo").expect("q").kind(), QueueKind::Fifo);
}

#[tokio::test]
async fn sizes_sequences_and_purge() {
    let env = env();
    let q = env.queue("q", QueueSettings { max_message_size: 4, ..QueueSettings::default() });
    assert!(matches!(
        q.send(msg("12345"), SendOptions::default()),
        Err(CoreError::MessageTooLarge { size: 5, limit: 4 })
    ));
    let a = send(&q, "a").sequence_number;
    let b = send(&q, "b").sequence_number;
    let c = send(&q, "c").sequence_number;
    assert!(a < b && b < c);
    recv(&q, 1).await;
    assert_eq!(q.purge().expect("purge"), 2);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight), (0, 1));
}

#[tokio::test]
async fn purge_all_removes_leased_messages_too() {
    let env = env();
    let q = env.queue("q", QueueSettings { visibility_timeout_ms: 10_000, ..QueueSettings::durable() });
    send(&q, "leased");
    send(&q, "ready");
    q.send(msg("delayed"), SendOptions { delay: Some(Duration::from_secs(5)), ..SendOptions::default() })
        .expect("send");
    let leased = recv(&q, 1).await.remove(0);
    assert_eq!(q.purge_all().expect("purge"), 3);
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.delayed, s.bytes), (0, 0, 0, 0));
    // The receipt is that of a deleted message: delete succeeds without deleting, visibility
    // changes are refused.
    assert!(!q.delete(leased.receipt).expect("delete").deleted);
    assert!(matches!(
        q.change_visibility(leased.receipt, Duration::from_secs(1)),
        Err(CoreError::MessageNotInflight)
    ));
    assert!(matches!(q.nack(leased.receipt, true), Err(CoreError::MessageNotInflight)));
    // It never comes back, not after its visibility timeout and not after a restart.
    env.advance(20_000);
    assert!(recv(&q, 10).await.is_empty());
    let env2 = env.reopen();
    let q2 = env2.vhost().queue("q").expect("queue");
    assert_eq!(q2.stats().messages(), 0);
}

#[tokio::test]
async fn purge_all_unlocks_fifo_groups() {
    let env = env();
    let q = env.queue("q.fifo", QueueSettings::fifo());
    for b in ["a", "b"] {
        let opts =
            SendOptions { group_id: Some("g".into()), dedup_id: Some(b.into()), ..SendOptions::default() };
        q.send(msg(b), opts).expect("send");
    }
    assert_eq!(bodies(&recv(&q, 1).await), ["a"]);
    q.purge_all().expect("purge");
    let opts =
        SendOptions { group_id: Some("g".into()), dedup_id: Some("c".into()), ..SendOptions::default() };
    q.send(msg("c"), opts).expect("send");
    assert_eq!(bodies(&recv(&q, 10).await), ["c"], "the group is not locked by a purged lease");
}

#[tokio::test]
async fn try_update_settings_is_all_or_nothing() {
    #[derive(Debug, PartialEq)]
    enum FrontEndError {
        Refused(&'static str),
        Core(String),
    }
    impl From<CoreError> for FrontEndError {
        fn from(e: CoreError) -> Self {
            FrontEndError::Core(e.to_string())
        }
    }
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let before = q.settings();
    // The closure's own error: nothing it changed sticks, and the error comes back as is.
    let r = q.try_update_settings(|s| {
        s.visibility_timeout_ms = 1_000;
        s.attributes.insert("Policy".into(), "{}".into());
        Err(FrontEndError::Refused("no"))
    });
    assert_eq!(r.unwrap_err(), FrontEndError::Refused("no"));
    assert_eq!(q.settings(), before);
    // The engine's validation after the closure: converted into the caller's error type.
    let r = q.try_update_settings(|s| {
        s.delay_ms = 1;
        s.visibility_timeout_ms = u64::MAX;
        Ok::<(), FrontEndError>(())
    });
    assert!(matches!(r, Err(FrontEndError::Core(_))));
    let r = q.try_update_settings(|s| {
        s.durable = false;
        Ok::<(), CoreError>(())
    });
    assert!(matches!(r, Err(CoreError::InvalidArgument(_))));
    assert_eq!(q.settings(), before);
    // Both pass: applied, and persisted with the definitions.
    let new = q
        .try_update_settings(|s| {
            s.visibility_timeout_ms = 2_000;
            Ok::<(), CoreError>(())
        })
        .expect("update");
    assert_eq!((new.visibility_timeout_ms, q.settings().visibility_timeout_ms), (2_000, 2_000));
    let env2 = env.reopen();
    assert_eq!(env2.vhost().queue("q").expect("q").settings().visibility_timeout_ms, 2_000);
}

#[tokio::test]
async fn update_settings_applies_and_validates() {
    let env = env();
    let q = env.queue("q", QueueSettings::durable());
    let s = q
        .update_settings(|s| {
            s.visibility_timeout_ms = 1_000;
            s.attributes.insert("Policy".into(), "{}".into());
        })
        .expect("update");
    assert_eq!(s.visibility_timeout_ms, 1_000);
    send(&q, "m");
    recv(&q, 1).await;
    env.advance(1_000);
    assert_eq!(q.stats().ready, 1);
    assert!(matches!(q.update_settings(|s| s.kind = QueueKind::Fifo), Err(CoreError::InvalidArgument(_))));
    assert!(matches!(
        q.update_settings(|s| s.visibility_timeout_ms = u64::MAX),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn queue_expiry_deletes_unused_queue() {
    let env = env();
    let v = env.vhost();
    env.queue("temp", QueueSettings { expires_ms: Some(10_000), ..QueueSettings::default() });
    env.advance(5_000);
    // A receive counts as use.
    recv(&v.queue("temp").expect("exists"), 1).await;
    env.advance(9_000);
    assert!(v.queue("temp").is_ok());
    env.advance(1_000);
    assert!(matches!(v.queue("temp"), Err(CoreError::NotFound { .. })));
}

#[tokio::test]
async fn a_returned_message_is_still_swept_when_it_expires() {
    let env = env();
    let q = env.queue("q", QueueSettings { retention_ms: 60_000, ..QueueSettings::default() });
    send(&q, "a");
    send(&q, "b");
    recv_vis(&q, 1, 1_000).await;
    env.advance(1_000);
    assert_eq!(q.stats().ready, 2);
    // Nobody receives; retention passes: both are swept, not just the head.
    env.advance(59_000);
    let s = q.stats();
    assert_eq!((s.ready, s.expired_total), (0, 2));
}

#[tokio::test]
async fn move_to_keeps_ids_sent_time_and_attributes() {
    let env = env();
    let src = env.queue("src", QueueSettings::durable());
    let dest = env.queue("dest", QueueSettings { retention_ms: 60_000, ..QueueSettings::durable() });
    let mut sent = Vec::new();
    for i in 0..5 {
        let mut m = msg(&i.to_string());
        m.headers.insert("i".into(), HeaderValue::I32(i));
        let opts = SendOptions {
            system_attributes: [("SenderId".to_string(), "me".to_string())].into(),
            ..SendOptions::default()
        };
        sent.push(src.send(m, opts).expect("send"));
        env.advance(10_000);
    }
    assert!(matches!(src.move_to(&src, 10), Err(CoreError::InvalidArgument(_))));
    assert_eq!(src.move_to(&dest, 3).expect("move"), 3);
    assert_eq!((src.stats().ready, src.stats().in_flight, dest.stats().ready), (2, 0, 3));
    assert_eq!(src.move_to(&dest, 10).expect("move"), 2);
    assert_eq!(src.move_to(&dest, 10).expect("nothing left"), 0);
    let got = recv(&dest, 10).await;
    assert_eq!(bodies(&got), ["0", "1", "2", "3", "4"]);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.message_id, sent[i].message_id);
        assert_eq!(d.sent_ms, T0 + 10_000 * i as u64);
        assert_eq!(d.message.headers.get("i"), Some(&HeaderValue::I32(i as i32)));
        assert_eq!(d.system_attributes["SenderId"], "me");
        assert_eq!(d.receive_count, 1);
    }
    // Retention counts from the original sent time: 71 s after the first send, the first two
    // are past dest's 60 s.
    env.advance(21_000);
    for d in &got {
        dest.change_visibility(d.receipt, Duration::ZERO).expect("release");
    }
    assert_eq!(bodies(&recv(&dest, 10).await), ["2", "3", "4"]);
    // Durable before settled: after a restart the messages are in dest only.
    let env2 = env.reopen();
    assert_eq!(env2.vhost().queue("src").expect("src").stats().messages(), 0);
    assert_eq!(env2.vhost().queue("dest").expect("dest").stats().messages(), 3);
}

#[tokio::test]
async fn move_to_a_refusing_queue_keeps_messages_in_place() {
    let env = env();
    let src = env.queue("src", QueueSettings::durable());
    let full = env.queue(
        "full",
        QueueSettings { max_length: Some(1), overflow: Overflow::RejectPublish, ..QueueSettings::durable() },
    );
    for b in ["a", "b", "c"] {
        send(&src, b);
    }
    // One fits; the refusal stops the move and the rest stay, in order, never received.
    assert_eq!(src.move_to(&full, 10).expect("partial move"), 1);
    assert!(matches!(src.move_to(&full, 10), Err(CoreError::QueueFull(_))));
    assert_eq!((src.stats().ready, src.stats().in_flight), (2, 0));
    let left = recv(&src, 10).await;
    assert_eq!(bodies(&left), ["b", "c"]);
    assert!(left.iter().all(|d| d.receive_count == 1 && !d.redelivered));
}

#[tokio::test]
async fn move_to_keeps_fifo_order() {
    let env = env();
    let src = env.queue("src.fifo", QueueSettings::fifo());
    let dest = env.queue("dest.fifo", QueueSettings::fifo());
    for (g, b) in [("g1", "a"), ("g2", "b"), ("g1", "c"), ("g2", "d")] {
        let opts =
            SendOptions { group_id: Some(g.into()), dedup_id: Some(b.into()), ..SendOptions::default() };
        src.send(msg(b), opts).expect("send");
    }
    assert_eq!(src.move_to(&dest, 10).expect("move"), 4);
    let got = recv(&dest, 10).await;
    let group = |g: &str| -> Vec<String> {
        got.iter().filter(|d| d.group_id.as_deref() == Some(g)).map(body).collect()
    };
    assert_eq!((group("g1"), group("g2")), (vec!["a".to_string(), "c".into()], vec!["b".into(), "d".into()]));
    assert!(got.iter().all(|d| d.dedup_id.is_some()));
}

#[tokio::test]
async fn move_to_sources_sends_each_message_home() {
    let env = env();
    env.queue("dlq", QueueSettings::durable());
    let redrive = QueueSettings {
        durable: true,
        redrive: Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 1 }),
        ..QueueSettings::default()
    };
    let a = env.queue("a", redrive.clone());
    let b = env.queue("b", redrive);
    send(&a, "from a");
    send(&b, "from b");
    for q in [&a, &b] {
        recv_vis(q, 1, 0).await;
        env.advance(1);
        assert!(recv(q, 1).await.is_empty());
    }
    let dlq = env.vhost().queue("dlq").expect("dlq");
    send(&dlq, "no source");
    // Without a fallback the sourceless message stops the move, after the others went home.
    assert_eq!(dlq.move_to_sources(None, 10).expect("move"), 2);
    assert!(matches!(dlq.move_to_sources(None, 10), Err(CoreError::InvalidArgument(_))));
    assert_eq!(dlq.stats().ready, 1);
    assert_eq!(dlq.move_to_sources(Some(&a), 10).expect("fallback"), 1);
    let home_a = recv(&a, 10).await;
    assert_eq!(bodies(&home_a), ["from a", "no source"]);
    assert!(home_a.iter().all(|d| d.dead_letter_source.is_none()), "no longer a dead letter");
    assert_eq!(bodies(&recv_vis(&b, 10, 0).await), ["from b"]);
    // A source queue that is gone: the message stays in the DLQ.
    env.advance(1);
    assert!(recv(&b, 1).await.is_empty(), "redriven again");
    env.vhost().delete_queue("b", false, false).expect("delete b");
    assert!(matches!(dlq.move_to_sources(None, 10), Err(CoreError::NotFound { .. })));
    assert_eq!(dlq.stats().ready, 1);
}
