//! The AMQP front end as a Rust user meets it: lapin, the main Rust AMQP 0-9-1 client, against
//! the real `wharf serve --in-memory` on free loopback ports.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
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
