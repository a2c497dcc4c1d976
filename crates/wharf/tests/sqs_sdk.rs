//! The SQS front end as a Rust user meets it: the real AWS SDK for Rust (`aws-sdk-sqs`, JSON 1.0
//! protocol) against the real `wharf serve --in-memory` on free loopback ports. One server per
//! test, so tests share nothing and can run in parallel (a start takes milliseconds).
//!
//! The Rust SDK does not verify MD5OfMessageBody / MD5OfMessageAttributes itself (the Java and
//! .NET SDKs do), so these tests compute both digests independently and compare: a wrong digest
//! is what makes those other SDKs throw.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::delete_message::DeleteMessageError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::operation::purge_queue::PurgeQueueError;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
use aws_sdk_sqs::operation::set_queue_attributes::SetQueueAttributesError;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use md5::{Digest, Md5};
use wharf::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

/// A running server and an SDK client pointed at it. The server dies with this value.
struct Sqs {
    client: Client,
    server: ServerProcess,
}

fn start() -> Sqs {
    let mut server = ServerProcess::spawn(Path::new(BINARY), &["--in-memory"]).expect("spawn wharf");
    server.wait_started(Duration::from_secs(30)).expect("wharf starts");
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDWHARFTEST", "secret", None, None, "static"))
        .endpoint_url(format!("http://{}", server.http))
        // Plain http: the smithy hyper client without a TLS stack.
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Sqs { client: Client::from_conf(config), server }
}

impl Sqs {
    async fn create(&self, name: &str, attributes: &[(QueueAttributeName, &str)]) -> String {
        let mut request = self.client.create_queue().queue_name(name);
        for (key, value) in attributes {
            request = request.attributes(key.clone(), *value);
        }
        let out = request.send().await.unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        out.queue_url.expect("QueueUrl")
    }

    async fn attributes(&self, url: &str) -> HashMap<QueueAttributeName, String> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("GetQueueAttributes");
        out.attributes.unwrap_or_default()
    }

    async fn receive(&self, url: &str, max: i32, visibility: Option<i32>) -> Vec<Message> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max)
            .set_visibility_timeout(visibility)
            .wait_time_seconds(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = out.messages.unwrap_or_default();
        for m in &messages {
            assert_digests_match(m);
        }
        messages
    }

    async fn send(&self, url: &str, body: &str) -> String {
        let out =
            self.client.send_message().queue_url(url).message_body(body).send().await.expect("SendMessage");
        assert_eq!(out.md5_of_message_body.as_deref(), Some(md5_hex(body.as_bytes()).as_str()));
        out.message_id.expect("MessageId")
    }
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5OfMessageAttributes as AWS documents it: attributes sorted by name, each as
/// len(name) name len(type) type, a transport byte (1 text, 2 binary), len(value) value, with
/// 4-byte big-endian lengths. Written here from the documentation, not shared with the server.
fn md5_of_attributes(attributes: &HashMap<String, MessageAttributeValue>) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let mut names: Vec<&String> = attributes.keys().collect();
    names.sort();
    let mut buf = Vec::new();
    let put = |bytes: &[u8], buf: &mut Vec<u8>| {
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(bytes);
    };
    for name in names {
        let value = &attributes[name];
        put(name.as_bytes(), &mut buf);
        put(value.data_type().as_bytes(), &mut buf);
        if let Some(blob) = &value.binary_value {
            buf.push(2);
            put(blob.as_ref(), &mut buf);
        } else {
            buf.push(1);
            put(value.string_value.as_deref().unwrap_or("").as_bytes(), &mut buf);
        }
    }
    Some(md5_hex(&buf))
}

fn assert_digests_match(m: &Message) {
    let body = m.body.as_deref().expect("Body");
    assert_eq!(m.md5_of_body.as_deref(), Some(md5_hex(body.as_bytes()).as_str()), "MD5OfBody of {body:?}");
    let attributes = m.message_attributes.clone().unwrap_or_default();
    assert_eq!(m.md5_of_message_attributes, md5_of_attributes(&attributes), "MD5OfMessageAttributes");
}

fn system_attribute(m: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes.as_ref().and_then(|a| a.get(&name)).map(String::as_str)
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap()
}

#[tokio::test]
async fn create_queues_get_url_and_list_by_prefix() {
    let sqs = start();
    let standard = sqs
        .create(
            "orders",
            &[
                (QueueAttributeName::VisibilityTimeout, "45"),
                (QueueAttributeName::MessageRetentionPeriod, "3600"),
                (QueueAttributeName::DelaySeconds, "0"),
            ],
        )
        .await;
    let host = sqs.server.http.to_string();
    assert_eq!(standard, format!("http://{host}/000000000000/orders"), "URL built from the Host header");
    let fifo = sqs
        .create(
            "orders-audit.fifo",
            &[
                (QueueAttributeName::FifoQueue, "true"),
                (QueueAttributeName::ContentBasedDeduplication, "true"),
            ],
        )
        .await;
    sqs.create("payments", &[]).await;

    let url = sqs.client.get_queue_url().queue_name("orders-audit.fifo").send().await.unwrap();
    assert_eq!(url.queue_url.as_deref(), Some(fifo.as_str()));

    let listed = sqs.client.list_queues().queue_name_prefix("orders").send().await.unwrap();
    let mut urls = listed.queue_urls.unwrap_or_default();
    urls.sort();
    assert_eq!(urls, vec![standard.clone(), fifo.clone()]);
    let all = sqs.client.list_queues().send().await.unwrap().queue_urls.unwrap_or_default();
    assert_eq!(all.len(), 3, "{all:?}");
    let paged = sqs.client.list_queues().max_results(2).send().await.unwrap();
    assert_eq!(paged.queue_urls.unwrap_or_default().len(), 2);
    let token = paged.next_token.expect("NextToken with more queues than MaxResults");
    let rest = sqs.client.list_queues().max_results(2).next_token(token).send().await.unwrap();
    assert_eq!(rest.queue_urls.unwrap_or_default().len(), 1);

    let attributes = sqs.attributes(&standard).await;
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "45");
    assert_eq!(attributes[&QueueAttributeName::MessageRetentionPeriod], "3600");
    assert_eq!(attributes[&QueueAttributeName::QueueArn], "arn:aws:sqs:us-east-1:000000000000:orders");
    assert!(!attributes.contains_key(&QueueAttributeName::FifoQueue), "{attributes:?}");
    let attributes = sqs.attributes(&fifo).await;
    assert_eq!(attributes[&QueueAttributeName::FifoQueue], "true");
    assert_eq!(attributes[&QueueAttributeName::ContentBasedDeduplication], "true");

    // Same name, same attributes: the existing queue. Different attributes: QueueNameExists.
    let again = sqs.create("orders", &[(QueueAttributeName::VisibilityTimeout, "45")]).await;
    assert_eq!(again, standard);
    let err = sqs
        .client
        .create_queue()
        .queue_name("orders")
        .attributes(QueueAttributeName::VisibilityTimeout, "46")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, CreateQueueError::QueueNameExists(_)), "{err:?}");
}

#[tokio::test]
async fn send_receive_delete_with_message_attributes_and_digests() {
    let sqs = start();
    let url = sqs.create("attrs", &[]).await;
    // Non-ASCII on purpose: the digests are over UTF-8 bytes.
    let body = "héllo wörld ✓ 𝄞 \t\n end";
    let attributes: HashMap<String, MessageAttributeValue> = [
        ("customer".to_owned(), string_attribute("ACME ✓")),
        (
            "price".to_owned(),
            MessageAttributeValue::builder().data_type("Number.euros").string_value("12.50").build().unwrap(),
        ),
        (
            "count".to_owned(),
            MessageAttributeValue::builder().data_type("Number").string_value("-7").build().unwrap(),
        ),
        (
            "thumbnail".to_owned(),
            MessageAttributeValue::builder()
                .data_type("Binary.png")
                .binary_value(Blob::new(vec![0u8, 1, 2, 0xff, 0xfe, b'\n']))
                .build()
                .unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    let sent = sqs
        .client
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .set_message_attributes(Some(attributes.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.md5_of_message_body.as_deref(), Some(md5_hex(body.as_bytes()).as_str()));
    assert_eq!(sent.md5_of_message_attributes, md5_of_attributes(&attributes));
    let id = sent.message_id.expect("MessageId");

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let received = sqs.receive(&url, 10, None).await;
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(m.body.as_deref(), Some(body));
    assert_eq!(m.message_attributes.as_ref(), Some(&attributes), "attributes round-trip exactly");
    assert_eq!(system_attribute(m, MessageSystemAttributeName::ApproximateReceiveCount), Some("1"));
    assert_eq!(system_attribute(m, MessageSystemAttributeName::SenderId), Some("AKIDWHARFTEST"));
    let sent_at: u128 =
        system_attribute(m, MessageSystemAttributeName::SentTimestamp).unwrap().parse().unwrap();
    let first_receive: u128 =
        system_attribute(m, MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
            .unwrap()
            .parse()
            .unwrap();
    assert!(
        sent_at <= first_receive && first_receive <= before + 5_000,
        "{sent_at} {first_receive} {before}"
    );

    // Received with the queue's default visibility timeout: not receivable again yet.
    let out =
        sqs.client.receive_message().queue_url(&url).visibility_timeout(0).wait_time_seconds(0).send().await;
    assert!(out.unwrap().messages.unwrap_or_default().is_empty(), "in flight for the queue's 30 s");

    sqs.client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(m.receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();
    let attrs = sqs.attributes(&url).await;
    assert_eq!(attrs[&QueueAttributeName::ApproximateNumberOfMessages], "0");
    assert_eq!(attrs[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible], "0");
}

#[tokio::test]
async fn received_attribute_subset_has_its_own_digest() {
    let sqs = start();
    let url = sqs.create("subset", &[]).await;
    sqs.client
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .message_attributes("a", string_attribute("1"))
        .message_attributes("b", string_attribute("2"))
        .send()
        .await
        .unwrap();
    let out = sqs
        .client
        .receive_message()
        .queue_url(&url)
        .message_attribute_names("b")
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let attributes = messages[0].message_attributes.clone().unwrap_or_default();
    assert_eq!(attributes.keys().collect::<Vec<_>>(), vec!["b"]);
    assert_digests_match(&messages[0]);
}

#[tokio::test]
async fn batches_report_partial_failures_per_entry() {
    let sqs = start();
    let url = sqs.create("batch", &[]).await;
    let entry = |id: &str, body: &str| {
        SendMessageBatchRequestEntry::builder().id(id).message_body(body).build().unwrap()
    };
    let out = sqs
        .client
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("first", "one"))
        // U+0001 is outside SQS's body character set: that entry fails, the others succeed.
        .entries(entry("bad", "bad \u{1} body"))
        .entries(entry("third", "three"))
        .send()
        .await
        .unwrap();
    let mut ok: Vec<_> = out.successful.iter().map(|e| e.id.as_str()).collect();
    ok.sort();
    assert_eq!(ok, vec!["first", "third"]);
    for e in &out.successful {
        let body = if e.id == "first" { "one" } else { "three" };
        assert_eq!(e.md5_of_message_body, md5_hex(body.as_bytes()));
    }
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert_eq!(out.failed[0].id, "bad");
    assert!(out.failed[0].sender_fault);
    assert_eq!(out.failed[0].code, "InvalidMessageContents");

    let received = sqs.receive(&url, 10, None).await;
    assert_eq!(received.len(), 2);
    let mut bodies: Vec<_> = received.iter().filter_map(|m| m.body.as_deref()).collect();
    bodies.sort();
    assert_eq!(bodies, vec!["one", "three"]);

    let delete = |id: &str, handle: &str| {
        DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(handle).build().unwrap()
    };
    let out = sqs
        .client
        .delete_message_batch()
        .queue_url(&url)
        .entries(delete("a", received[0].receipt_handle.as_deref().unwrap()))
        .entries(delete("b", received[1].receipt_handle.as_deref().unwrap()))
        .entries(delete("garbage", "not-a-receipt-handle"))
        .send()
        .await
        .unwrap();
    let mut ok: Vec<_> = out.successful.iter().map(|e| e.id.as_str()).collect();
    ok.sort();
    assert_eq!(ok, vec!["a", "b"]);
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].id, "garbage");
    assert_eq!(out.failed[0].code, "ReceiptHandleIsInvalid");
    assert_eq!(sqs.attributes(&url).await[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible], "0");

    // Whole-batch errors are typed.
    let err = sqs
        .client
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("same", "1"))
        .entries(entry("same", "2"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, SendMessageBatchError::BatchEntryIdsNotDistinct(_)), "{err:?}");
    let mut too_many = sqs.client.send_message_batch().queue_url(&url);
    for i in 0..11 {
        too_many = too_many.entries(entry(&format!("e{i}"), "x"));
    }
    let err = too_many.send().await.unwrap_err().into_service_error();
    assert!(matches!(err, SendMessageBatchError::TooManyEntriesInBatchRequest(_)), "{err:?}");
    let err = sqs.client.send_message_batch().queue_url(&url).send().await.unwrap_err().into_service_error();
    assert!(
        matches!(err, SendMessageBatchError::EmptyBatchRequest(_)) || err.code() == Some("MissingParameter"),
        "{err:?}"
    );
}

#[tokio::test]
async fn visibility_zero_makes_a_message_receivable_again() {
    let sqs = start();
    let url = sqs.create("vis", &[]).await;
    let id = sqs.send(&url, "again").await;
    let first = sqs.receive(&url, 1, Some(60)).await;
    assert_eq!(first.len(), 1);
    assert!(sqs.receive(&url, 1, None).await.is_empty(), "invisible for 60 s");

    let first_handle = first[0].receipt_handle.clone().unwrap();
    sqs.client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&first_handle)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let second = sqs.receive(&url, 1, Some(60)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(system_attribute(&second[0], MessageSystemAttributeName::ApproximateReceiveCount), Some("2"));
    assert_eq!(
        system_attribute(&first[0], MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
        system_attribute(&second[0], MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
        "first-receive time is the first receive's"
    );
    let second_handle = second[0].receipt_handle.clone().unwrap();
    assert_ne!(first_handle, second_handle, "a new receipt handle per receive");
    sqs.client.delete_message().queue_url(&url).receipt_handle(second_handle).send().await.unwrap();
    assert_eq!(sqs.attributes(&url).await[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible], "0");

    let err = sqs
        .client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle("garbage")
        .visibility_timeout(0)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, ChangeMessageVisibilityError::ReceiptHandleIsInvalid(_)), "{err:?}");
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let sqs = start();
    let url = sqs.create("poll", &[]).await;
    let sender = {
        let client = sqs.client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.send_message().queue_url(url).message_body("late").send().await.unwrap();
        })
    };
    let start = Instant::now();
    let out = sqs.client.receive_message().queue_url(&url).wait_time_seconds(10).send().await.unwrap();
    let waited = start.elapsed();
    sender.await.unwrap();
    let messages = out.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "the long poll returns the message");
    assert_eq!(messages[0].body.as_deref(), Some("late"));
    assert!(waited >= Duration::from_millis(400), "returned before the send: {waited:?}");
    assert!(waited < Duration::from_secs(5), "did not wake on arrival: {waited:?}");

    // The queue's ReceiveMessageWaitTimeSeconds applies when the request has none.
    sqs.client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "1")
        .send()
        .await
        .unwrap();
    let start = Instant::now();
    let out = sqs.client.receive_message().queue_url(&url).send().await.unwrap();
    assert!(out.messages.unwrap_or_default().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
}

#[tokio::test]
async fn fifo_keeps_group_order_and_deduplicates() {
    let sqs = start();
    let url = sqs.create("jobs.fifo", &[(QueueAttributeName::FifoQueue, "true")]).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        let group = if i % 2 == 0 { "even" } else { "odd" };
        let out = sqs
            .client
            .send_message()
            .queue_url(&url)
            .message_body(format!("{group}-{i}"))
            .message_group_id(group)
            .message_deduplication_id(format!("dedup-{i}"))
            .send()
            .await
            .unwrap();
        let sequence: u128 = out.sequence_number.clone().expect("SequenceNumber").parse().unwrap();
        sent.push((out.message_id.clone().unwrap(), sequence));
    }
    assert!(sent.windows(2).all(|w| w[0].1 < w[1].1), "strictly increasing SequenceNumbers: {sent:?}");

    // A duplicate within 5 minutes is accepted and answered with the original's id and number.
    let dup = sqs
        .client
        .send_message()
        .queue_url(&url)
        .message_body("a different body")
        .message_group_id("even")
        .message_deduplication_id("dedup-2")
        .send()
        .await
        .unwrap();
    assert_eq!(dup.message_id.as_deref(), Some(sent[2].0.as_str()));
    assert_eq!(dup.sequence_number.unwrap().parse::<u128>().unwrap(), sent[2].1);

    let mut received = Vec::new();
    for _ in 0..10 {
        let batch = sqs.receive(&url, 10, Some(60)).await;
        if batch.is_empty() {
            break;
        }
        received.extend(batch);
    }
    assert_eq!(received.len(), 6, "the duplicate was not enqueued");
    for group in ["even", "odd"] {
        let in_group: Vec<_> = received
            .iter()
            .filter(|m| system_attribute(m, MessageSystemAttributeName::MessageGroupId) == Some(group))
            .map(|m| m.body.clone().unwrap())
            .collect();
        let expected: Vec<_> =
            (0..6).filter(|i| (i % 2 == 0) == (group == "even")).map(|i| format!("{group}-{i}")).collect();
        assert_eq!(in_group, expected, "order within group {group}");
    }
    let m = &received[0];
    assert!(system_attribute(m, MessageSystemAttributeName::SequenceNumber).is_some());
    assert!(system_attribute(m, MessageSystemAttributeName::MessageDeduplicationId).is_some());

    // Per-message delays are not allowed on FIFO queues; a missing group id is refused.
    let err = sqs
        .client
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .message_group_id("g")
        .message_deduplication_id("d")
        .delay_seconds(5)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    let err = sqs
        .client
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .message_deduplication_id("d2")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("MissingParameter"), "{err:?}");

    // Content-based deduplication: the same body is the same message.
    let content = sqs
        .create(
            "content.fifo",
            &[
                (QueueAttributeName::FifoQueue, "true"),
                (QueueAttributeName::ContentBasedDeduplication, "true"),
            ],
        )
        .await;
    let send = || {
        sqs.client.send_message().queue_url(&content).message_body("same body").message_group_id("g").send()
    };
    let a = send().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(a.message_id, b.message_id);
    assert_eq!(sqs.attributes(&content).await[&QueueAttributeName::ApproximateNumberOfMessages], "1");
}

#[tokio::test]
async fn dead_letter_queue_after_max_receive_count() {
    let sqs = start();
    let dlq = sqs.create("work-dlq", &[]).await;
    let dlq_arn = sqs.attributes(&dlq).await[&QueueAttributeName::QueueArn].clone();
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#);
    let source = sqs.create("work", &[(QueueAttributeName::RedrivePolicy, policy.as_str())]).await;
    let id = sqs.send(&source, "poison").await;

    // Two receives are allowed; the third finds the message moved to the DLQ.
    for attempt in 1..=2 {
        let got = sqs.receive(&source, 1, Some(0)).await;
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(
            system_attribute(&got[0], MessageSystemAttributeName::ApproximateReceiveCount),
            Some(attempt.to_string().as_str())
        );
    }
    assert!(sqs.receive(&source, 1, Some(0)).await.is_empty(), "past maxReceiveCount");
    let out = sqs
        .client
        .receive_message()
        .queue_url(&dlq)
        .wait_time_seconds(2)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let dead = out.messages.unwrap_or_default();
    assert_eq!(dead.len(), 1, "moved to the DLQ");
    assert_eq!(dead[0].body.as_deref(), Some("poison"));
    assert_eq!(dead[0].message_id.as_deref(), Some(id.as_str()), "AWS keeps the MessageId");

    let sources = sqs.client.list_dead_letter_source_queues().queue_url(&dlq).send().await.unwrap();
    assert_eq!(sources.queue_urls, vec![source.clone()]);
    let attributes = sqs.attributes(&source).await;
    let stored: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(stored["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(stored["maxReceiveCount"].to_string().trim_matches('"'), "2");
}

#[tokio::test]
async fn attributes_and_tags_round_trip() {
    let sqs = start();
    let url = sqs.create("settings", &[]).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sqs:SendMessage","Resource":"*"}]}"#;
    let settings = [
        (QueueAttributeName::VisibilityTimeout, "120"),
        (QueueAttributeName::DelaySeconds, "3"),
        (QueueAttributeName::MaximumMessageSize, "2048"),
        (QueueAttributeName::MessageRetentionPeriod, "86400"),
        (QueueAttributeName::ReceiveMessageWaitTimeSeconds, "2"),
        (QueueAttributeName::Policy, policy),
        (QueueAttributeName::KmsMasterKeyId, "alias/aws/sqs"),
        (QueueAttributeName::KmsDataKeyReusePeriodSeconds, "600"),
        (QueueAttributeName::RedriveAllowPolicy, r#"{"redrivePermission":"denyAll"}"#),
    ];
    let mut request = sqs.client.set_queue_attributes().queue_url(&url);
    for (key, value) in &settings {
        request = request.attributes(key.clone(), *value);
    }
    request.send().await.unwrap();
    let read = sqs.attributes(&url).await;
    for (key, value) in &settings {
        assert_eq!(read.get(key).map(String::as_str), Some(*value), "{key:?}");
    }
    assert!(read.contains_key(&QueueAttributeName::CreatedTimestamp));
    assert!(read.contains_key(&QueueAttributeName::LastModifiedTimestamp));

    // Asking for some attributes returns those.
    let some = sqs
        .client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::DelaySeconds)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(some.len(), 1, "{some:?}");

    let err = sqs
        .client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::VisibilityTimeout, "43201")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, SetQueueAttributesError::InvalidAttributeValue(_)), "{err:?}");
    let err = sqs
        .client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::from("NoSuchAttribute"), "1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, SetQueueAttributesError::InvalidAttributeName(_)), "{err:?}");
    let err = sqs
        .client
        .create_queue()
        .queue_name("bad-attrs")
        .attributes(QueueAttributeName::MaximumMessageSize, "10")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, CreateQueueError::InvalidAttributeValue(_)), "{err:?}");
    let after = sqs.attributes(&url).await;
    assert_eq!(after[&QueueAttributeName::VisibilityTimeout], "120", "a failed set changes nothing");

    sqs.client.tag_queue().queue_url(&url).tags("team", "core").tags("env", "test").send().await.unwrap();
    sqs.client.untag_queue().queue_url(&url).tag_keys("env").send().await.unwrap();
    let tags = sqs.client.list_queue_tags().queue_url(&url).send().await.unwrap().tags.unwrap_or_default();
    assert_eq!(tags, HashMap::from([("team".to_owned(), "core".to_owned())]));
}

#[tokio::test]
async fn errors_surface_as_typed_sdk_errors() {
    let sqs = start();
    let err = sqs.client.get_queue_url().queue_name("missing").send().await.unwrap_err().into_service_error();
    assert!(matches!(err, GetQueueUrlError::QueueDoesNotExist(_)), "{err:?}");
    assert_eq!(err.code(), Some("AWS.SimpleQueueService.NonExistentQueue"));

    let missing = format!("http://{}/000000000000/missing", sqs.server.http);
    let err = sqs.client.send_message().queue_url(&missing).message_body("x").send().await;
    let err = err.unwrap_err().into_service_error();
    assert!(matches!(err, SendMessageError::QueueDoesNotExist(_)), "{err:?}");

    let url = sqs.create("errors", &[]).await;
    let err = sqs
        .client
        .delete_message()
        .queue_url(&url)
        .receipt_handle("definitely-not-a-handle")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, DeleteMessageError::ReceiptHandleIsInvalid(_)), "{err:?}");

    let err = sqs.client.send_message().queue_url(&url).message_body("bad \u{0} char").send().await;
    let err = err.unwrap_err().into_service_error();
    assert!(matches!(err, SendMessageError::InvalidMessageContents(_)), "{err:?}");

    let err = sqs.client.receive_message().queue_url(&url).max_number_of_messages(11).send().await;
    let err = err.unwrap_err().into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");

    // A message larger than the queue's MaximumMessageSize.
    let small = sqs.create("small", &[(QueueAttributeName::MaximumMessageSize, "1024")]).await;
    let err = sqs.client.send_message().queue_url(&small).message_body("x".repeat(1025)).send().await;
    assert_eq!(err.unwrap_err().into_service_error().code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn purge_empties_the_queue_once_a_minute() {
    let sqs = start();
    let url = sqs.create("purge", &[(QueueAttributeName::DelaySeconds, "0")]).await;
    for i in 0..5 {
        sqs.send(&url, &format!("m{i}")).await;
    }
    assert_eq!(sqs.attributes(&url).await[&QueueAttributeName::ApproximateNumberOfMessages], "5");
    sqs.client.purge_queue().queue_url(&url).send().await.unwrap();
    assert!(sqs.receive(&url, 10, None).await.is_empty());
    assert_eq!(sqs.attributes(&url).await[&QueueAttributeName::ApproximateNumberOfMessages], "0");
    let err = sqs.client.purge_queue().queue_url(&url).send().await.unwrap_err().into_service_error();
    assert!(matches!(err, PurgeQueueError::PurgeQueueInProgress(_)), "{err:?}");

    // DeleteQueue, then the queue is gone.
    sqs.client.delete_queue().queue_url(&url).send().await.unwrap();
    let err = sqs.client.get_queue_url().queue_name("purge").send().await.unwrap_err().into_service_error();
    assert!(matches!(err, GetQueueUrlError::QueueDoesNotExist(_)), "{err:?}");
}
