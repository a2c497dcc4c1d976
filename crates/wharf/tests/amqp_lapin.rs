//! The AMQP front end as a Rust user meets it: lapin, the main Rust AMQP 0-9-1 client, against
//! the real `wharf serve --in-memory` on free loopback ports: confirms, routing by every exchange
//! kind, dead-lettering, QoS and redelivery, returns, transactions, exclusivity, server-sent
//! cancels, priorities and quorum delivery limits (the same behaviours test_amqp_pika.py drives
//! through pika).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use wharf::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

async fn start() -> (ServerProcess, Connection) {
    let mut server = ServerProcess::spawn(Path::new(BINARY), &["--in-memory"]).expect("spawn wharf");
    server.wait_started(Duration::from_secs(30)).expect("wharf starts");
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp);
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await.expect("lapin connects");
    (server, conn)
}

async fn declare(channel: &Channel, name: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), options, arguments).await.expect("queue.declare");
}

#[tokio::test]
async fn publish_with_confirms_then_consume_and_ack() {
    let (_server, conn) = start().await;
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, "lapin-orders", FieldTable::default()).await;
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

    let mut headers = FieldTable::default();
    headers.insert("tenant".into(), AMQPValue::LongString(LongString::from("acme")));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("text/plain".into())
        .with_message_id("m-1".into())
        .with_headers(headers);
    for i in 0..20 {
        let confirm = channel
            .basic_publish(
                "".into(),
                "lapin-orders".into(),
                BasicPublishOptions::default(),
                format!("order {i}").as_bytes(),
                properties.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "publish {i} was not confirmed");
    }

    channel.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume(
            "lapin-orders".into(),
            "lapin-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a delivery in time")
            .expect("the stream goes on")
            .expect("a delivery, not an error");
        assert_eq!(delivery.data, format!("order {i}").into_bytes());
        assert_eq!(delivery.properties.delivery_mode(), &Some(2));
        assert_eq!(delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        let tenant = delivery.properties.headers().as_ref().and_then(|h| h.inner().get("tenant").cloned());
        assert_eq!(tenant, Some(AMQPValue::LongString(LongString::from("acme"))));
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let left = channel.basic_get("lapin-orders".into(), BasicGetOptions::default()).await.unwrap();
    assert!(left.is_none(), "every message was acked");
}

#[tokio::test]
async fn overflow_reject_publish_is_a_nack_and_errors_close_the_channel() {
    let (_server, conn) = start().await;
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    declare(&channel, "lapin-bounded", args).await;
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let publish = |body: &'static [u8]| {
        let channel = channel.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    "lapin-bounded".into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    assert!(publish(b"fits").await.is_ack());
    assert!(publish(b"refused").await.is_nack());

    let other = conn.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let err = other.queue_declare("lapin-missing".into(), options, FieldTable::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("NOT_FOUND - no queue 'lapin-missing' in vhost '/'"), "{text}");
    // The connection goes on after a channel error.
    let again = conn.create_channel().await.unwrap();
    assert!(again
        .basic_get("lapin-bounded".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_some());
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind, options: ExchangeDeclareOptions) {
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .expect("exchange.declare");
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str, arguments: FieldTable) {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), arguments)
        .await
        .expect("queue.bind");
}

async fn bind_exchange(channel: &Channel, destination: &str, source: &str, key: &str) {
    let options = ExchangeBindOptions::default();
    channel
        .exchange_bind(destination.into(), source.into(), key.into(), options, FieldTable::default())
        .await
        .expect("exchange.bind");
}

async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8], properties: BasicProperties) {
    channel
        .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, properties)
        .await
        .expect("basic.publish");
}

async fn get(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    channel.basic_get(queue.into(), BasicGetOptions { no_ack }).await.expect("basic.get")
}

/// basic.get until a message is there (dead-lettering and expiry happen after the call that
/// causes them), or `None` after three seconds.
async fn get_eventually(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(message) = get(channel, queue, no_ack).await {
            return Some(message);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bodies(channel: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(message) = get(channel, queue, true).await {
        out.push(message.delivery.data);
    }
    out
}

fn header(message: &BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message.delivery.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned())
}

/// The first x-death entry's field `name`.
fn death(message: &BasicGetMessage, name: &str) -> Option<AMQPValue> {
    match header(message, "x-death")? {
        AMQPValue::FieldArray(entries) => match entries.as_slice().first()? {
            AMQPValue::FieldTable(entry) => entry.inner().get(name).cloned(),
            _ => None,
        },
        _ => None,
    }
}

fn as_text(value: Option<AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn as_int(value: Option<AMQPValue>) -> Option<i64> {
    match value? {
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::LongInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::Timestamp(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

#[tokio::test]
async fn every_exchange_kind_routes_as_rabbitmq_does() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    let plain = ExchangeDeclareOptions::default();
    for q in ["d", "f1", "f2", "t", "h-all", "h-any-with-x", "e2e", "alt", "hash-a", "hash-b"] {
        declare(&ch, q, FieldTable::default()).await;
    }
    exchange(&ch, "lx-direct", ExchangeKind::Direct, plain).await;
    exchange(&ch, "lx-fanout", ExchangeKind::Fanout, plain).await;
    exchange(&ch, "lx-topic", ExchangeKind::Topic, plain).await;
    exchange(&ch, "lx-headers", ExchangeKind::Headers, plain).await;
    bind(&ch, "d", "lx-direct", "red", FieldTable::default()).await;
    bind(&ch, "f1", "lx-fanout", "", FieldTable::default()).await;
    bind(&ch, "f2", "lx-fanout", "", FieldTable::default()).await;
    bind(&ch, "t", "lx-topic", "orders.*.eu", FieldTable::default()).await;
    let binding = |mode: &str| table(&[("x-match", text(mode)), ("kind", text("a")), ("x-tag", text("t"))]);
    bind(&ch, "h-all", "lx-headers", "", binding("all")).await;
    bind(&ch, "h-any-with-x", "lx-headers", "", binding("any-with-x")).await;

    publish(&ch, "lx-direct", "red", b"d", BasicProperties::default()).await;
    publish(&ch, "lx-direct", "blue", b"nowhere", BasicProperties::default()).await;
    publish(&ch, "lx-fanout", "ignored", b"f", BasicProperties::default()).await;
    publish(&ch, "lx-topic", "orders.new.eu", b"t", BasicProperties::default()).await;
    publish(&ch, "lx-topic", "orders.new.us", b"nowhere", BasicProperties::default()).await;
    let with_headers = |pairs: &[(&str, AMQPValue)]| BasicProperties::default().with_headers(table(pairs));
    // `all` leaves the binding's x- keys out of the match; `any-with-x` matches on one.
    publish(&ch, "lx-headers", "", b"kind", with_headers(&[("kind", text("a"))])).await;
    publish(&ch, "lx-headers", "", b"tag", with_headers(&[("x-tag", text("t"))])).await;
    assert_eq!(bodies(&ch, "d").await, [b"d".to_vec()]);
    assert_eq!(bodies(&ch, "f1").await, [b"f".to_vec()]);
    assert_eq!(bodies(&ch, "f2").await, [b"f".to_vec()]);
    assert_eq!(bodies(&ch, "t").await, [b"t".to_vec()]);
    assert_eq!(bodies(&ch, "h-all").await, [b"kind".to_vec()]);
    assert_eq!(bodies(&ch, "h-any-with-x").await, [b"kind".to_vec(), b"tag".to_vec()]);

    // Exchange-to-exchange bindings and an alternate exchange.
    exchange(&ch, "lx-alt", ExchangeKind::Fanout, plain).await;
    let source_args = table(&[("alternate-exchange", text("lx-alt"))]);
    ch.exchange_declare("lx-source".into(), ExchangeKind::Direct, plain, source_args).await.unwrap();
    bind_exchange(&ch, "lx-fanout", "lx-source", "k").await;
    bind(&ch, "alt", "lx-alt", "", FieldTable::default()).await;
    publish(&ch, "lx-source", "k", b"via-binding", BasicProperties::default()).await;
    publish(&ch, "lx-source", "other", b"via-alternate", BasicProperties::default()).await;
    assert_eq!(bodies(&ch, "f1").await, [b"via-binding".to_vec()]);
    assert_eq!(bodies(&ch, "alt").await, [b"via-alternate".to_vec()]);

    // Consistent hashing: each routing key to exactly one queue, both queues get a share.
    exchange(&ch, "lx-hash", ExchangeKind::Custom("x-consistent-hash".into()), plain).await;
    bind(&ch, "hash-a", "lx-hash", "1", FieldTable::default()).await;
    bind(&ch, "hash-b", "lx-hash", "1", FieldTable::default()).await;
    let keys: Vec<String> = (0..200).map(|i| format!("order-{i}")).collect();
    for key in keys.iter().chain(keys.iter().take(50)) {
        publish(&ch, "lx-hash", key, key.as_bytes(), BasicProperties::default()).await;
    }
    let a = bodies(&ch, "hash-a").await;
    let b = bodies(&ch, "hash-b").await;
    assert_eq!(a.len() + b.len(), 250);
    assert!(a.len() > 30 && b.len() > 30, "{} / {}", a.len(), b.len());
    assert!(a.iter().all(|key| !b.contains(key)), "a routing key reached both queues");
}

#[tokio::test]
async fn auto_delete_and_internal_exchanges() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "ad-q", FieldTable::default()).await;
    let auto = ExchangeDeclareOptions { auto_delete: true, ..ExchangeDeclareOptions::default() };
    exchange(&ch, "ad-x", ExchangeKind::Fanout, auto).await;
    bind(&ch, "ad-q", "ad-x", "", FieldTable::default()).await;
    ch.queue_unbind("ad-q".into(), "ad-x".into(), "".into(), FieldTable::default()).await.unwrap();
    let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
    let err = ch
        .exchange_declare("ad-x".into(), ExchangeKind::Fanout, passive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND - no exchange 'ad-x' in vhost '/'"), "{err}");

    let ch = conn.create_channel().await.unwrap();
    let internal = ExchangeDeclareOptions { internal: true, ..ExchangeDeclareOptions::default() };
    exchange(&ch, "in-inner", ExchangeKind::Fanout, internal).await;
    exchange(&ch, "in-front", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    bind_exchange(&ch, "in-inner", "in-front", "k").await;
    bind(&ch, "ad-q", "in-inner", "", FieldTable::default()).await;
    publish(&ch, "in-front", "k", b"through", BasicProperties::default()).await;
    assert_eq!(bodies(&ch, "ad-q").await, [b"through".to_vec()]);
    publish(&ch, "in-inner", "", b"straight in", BasicProperties::default()).await;
    let err = ch.basic_get("ad-q".into(), BasicGetOptions::default()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("ACCESS_REFUSED - cannot publish to internal exchange 'in-inner' in vhost '/'"),
        "{err}"
    );
}

#[tokio::test]
async fn rejected_expired_and_overflowing_messages_are_dead_lettered_with_x_death() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "dl-dlq", FieldTable::default()).await;
    let to_dlq = |extra: &[(&str, AMQPValue)]| {
        let mut pairs =
            vec![("x-dead-letter-exchange", text("")), ("x-dead-letter-routing-key", text("dl-dlq"))];
        pairs.extend_from_slice(extra);
        table(&pairs)
    };

    // Rejected (after a requeue, which sets the redelivered flag).
    declare(&ch, "dl-work", to_dlq(&[])).await;
    publish(&ch, "", "dl-work", b"job", BasicProperties::default()).await;
    let first = get(&ch, "dl-work", false).await.expect("the job");
    assert!(!first.delivery.redelivered);
    ch.basic_nack(
        first.delivery.delivery_tag,
        BasicNackOptions { requeue: true, ..BasicNackOptions::default() },
    )
    .await
    .unwrap();
    let again = get_eventually(&ch, "dl-work", false).await.expect("requeued");
    assert!(again.delivery.redelivered);
    ch.basic_reject(again.delivery.delivery_tag, BasicRejectOptions { requeue: false }).await.unwrap();
    let dead = get_eventually(&ch, "dl-dlq", true).await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"job");
    assert_eq!(as_text(death(&dead, "reason")).as_deref(), Some("rejected"));
    assert_eq!(as_text(death(&dead, "queue")).as_deref(), Some("dl-work"));
    assert_eq!(as_int(death(&dead, "count")), Some(1));
    assert_eq!(as_text(header(&dead, "x-first-death-reason")).as_deref(), Some("rejected"));

    // Expired: queue TTL.
    declare(&ch, "dl-ttl", to_dlq(&[("x-message-ttl", AMQPValue::LongInt(50))])).await;
    publish(&ch, "", "dl-ttl", b"short-lived", BasicProperties::default()).await;
    let dead = get_eventually(&ch, "dl-dlq", true).await.expect("expired into the DLQ");
    assert_eq!(dead.delivery.data, b"short-lived");
    assert_eq!(as_text(death(&dead, "reason")).as_deref(), Some("expired"));

    // Overflow: x-max-length with drop-head dead-letters the oldest.
    declare(&ch, "dl-bounded", to_dlq(&[("x-max-length", AMQPValue::LongInt(1))])).await;
    publish(&ch, "", "dl-bounded", b"old", BasicProperties::default()).await;
    publish(&ch, "", "dl-bounded", b"new", BasicProperties::default()).await;
    let dead = get_eventually(&ch, "dl-dlq", true).await.expect("dropped into the DLQ");
    assert_eq!(dead.delivery.data, b"old");
    assert_eq!(as_text(death(&dead, "reason")).as_deref(), Some("maxlen"));
    assert_eq!(bodies(&ch, "dl-bounded").await, [b"new".to_vec()]);
}

#[tokio::test]
async fn prefetch_holds_back_deliveries_until_acked() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "qos", FieldTable::default()).await;
    for i in 0..5 {
        publish(&ch, "", "qos", format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume("qos".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let wait = |ms: u64| Duration::from_millis(ms);
    let first =
        tokio::time::timeout(wait(3000), consumer.next()).await.expect("a delivery").unwrap().unwrap();
    let _second =
        tokio::time::timeout(wait(3000), consumer.next()).await.expect("a delivery").unwrap().unwrap();
    let third = tokio::time::timeout(wait(300), consumer.next()).await;
    assert!(third.is_err(), "a third delivery came past prefetch 2");
    first.ack(BasicAckOptions::default()).await.unwrap();
    let third = tokio::time::timeout(wait(3000), consumer.next())
        .await
        .expect("a delivery after the ack")
        .unwrap()
        .unwrap();
    assert_eq!(third.data, b"m2");
}

#[tokio::test]
async fn mandatory_returns_and_transactions() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            b"lost?",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let returned = confirm.take_message().expect("the unroutable message came back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"lost?");

    let tx = conn.create_channel().await.unwrap();
    declare(&tx, "tx-q", FieldTable::default()).await;
    tx.tx_select().await.unwrap();
    publish(&tx, "", "tx-q", b"rolled back", BasicProperties::default()).await;
    tx.tx_rollback().await.unwrap();
    publish(&tx, "", "tx-q", b"committed", BasicProperties::default()).await;
    assert!(get(&ch, "tx-q", true).await.is_none(), "visible before the commit");
    tx.tx_commit().await.unwrap();
    assert_eq!(bodies(&ch, "tx-q").await, [b"committed".to_vec()]);
}

#[tokio::test]
async fn exclusive_server_named_queues_and_server_sent_cancel() {
    let (server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    let options = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    let private = ch.queue_declare("".into(), options, FieldTable::default()).await.unwrap();
    let name: ShortString = private.name().clone();
    assert!(name.as_str().starts_with("amq.gen-"), "{}", name.as_str());

    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp);
    let other = Connection::connect(&uri, ConnectionProperties::default()).await.unwrap();
    let och = other.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let err = och.queue_declare(name.clone(), passive, FieldTable::default()).await.unwrap_err();
    assert!(err.to_string().contains("RESOURCE_LOCKED"), "{err}");

    // Deleting a queue cancels its consumers: lapin ends the consumer's stream.
    declare(&ch, "cancelled", FieldTable::default()).await;
    let mut consumer = ch
        .basic_consume("cancelled".into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let och = other.create_channel().await.unwrap();
    och.queue_delete("cancelled".into(), QueueDeleteOptions::default()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await.expect("the stream ends");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
}

#[tokio::test]
async fn priorities_and_quorum_delivery_limits() {
    let (_server, conn) = start().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "prio", table(&[("x-max-priority", AMQPValue::ShortShortUInt(5))])).await;
    for (body, priority) in [("low", 1u8), ("high", 5), ("mid", 3)] {
        publish(&ch, "", "prio", body.as_bytes(), BasicProperties::default().with_priority(priority)).await;
    }
    assert_eq!(bodies(&ch, "prio").await, [b"high".to_vec(), b"mid".to_vec(), b"low".to_vec()]);

    declare(&ch, "poison-dlq", FieldTable::default()).await;
    let quorum = table(&[
        ("x-queue-type", text("quorum")),
        ("x-delivery-limit", AMQPValue::LongInt(2)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("poison-dlq")),
    ]);
    declare(&ch, "poison", quorum).await;
    publish(&ch, "", "poison", b"poison", BasicProperties::default()).await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let message = get_eventually(&ch, "poison", false).await.expect("delivered again");
        counts.push(as_int(header(&message, "x-delivery-count")));
        ch.basic_nack(
            message.delivery.delivery_tag,
            BasicNackOptions { requeue: true, ..BasicNackOptions::default() },
        )
        .await
        .unwrap();
    }
    assert_eq!(counts, [Some(0), Some(1), Some(2)]);
    let dead = get_eventually(&ch, "poison-dlq", true).await.expect("dead-lettered at the limit");
    assert_eq!(as_text(death(&dead, "reason")).as_deref(), Some("delivery_limit"));
    assert!(get(&ch, "poison", true).await.is_none());
}
