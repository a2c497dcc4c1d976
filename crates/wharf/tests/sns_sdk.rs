//! The SNS front end as a Rust user meets it: the real AWS SDK for Rust (`aws-sdk-sns`, Query
//! protocol) next to `aws-sdk-sqs` against the real `wharf serve --in-memory`: topics, tags,
//! subscriptions with filter policies, Publish and PublishBatch into SQS queues (raw and
//! enveloped), FIFO, and errors as the SDK reports them.

use std::path::Path;
use std::time::Duration;

use aws_sdk_sns::error::ProvideErrorMetadata;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry, Tag};
use aws_sdk_sqs::types::QueueAttributeName;
use wharf::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");

struct Clients {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    _server: ServerProcess,
}

fn start() -> Clients {
    let mut server = ServerProcess::spawn(Path::new(BINARY), &["--in-memory"]).expect("spawn wharf");
    server.wait_started(Duration::from_secs(30)).expect("wharf starts");
    let endpoint = format!("http://{}", server.http);
    let creds = aws_sdk_sns::config::Credentials::new("AKIDWHARFTEST", "secret", None, None, "static");
    let sns = aws_sdk_sns::Config::builder()
        .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new("us-east-1"))
        .credentials_provider(creds.clone())
        .endpoint_url(&endpoint)
        // Plain http: the smithy hyper client without a TLS stack.
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let sqs = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(&endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Clients {
        sns: aws_sdk_sns::Client::from_conf(sns),
        sqs: aws_sdk_sqs::Client::from_conf(sqs),
        _server: server,
    }
}

impl Clients {
    /// A queue and its ARN.
    async fn queue(&self, name: &str, fifo: bool) -> (String, String) {
        let mut req = self.sqs.create_queue().queue_name(name);
        if fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let url = req.send().await.expect("CreateQueue").queue_url.expect("url");
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .unwrap_or_default();
        let arn = attrs.get(&QueueAttributeName::QueueArn).expect("QueueArn").clone();
        (url, arn)
    }

    async fn bodies(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default()
    }
}

fn string_attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("attribute")
}

#[tokio::test]
async fn topics_subscriptions_and_publish() {
    let c = start();
    let topic = c
        .sns
        .create_topic()
        .name("orders")
        .tags(Tag::builder().key("team").value("rust").build().expect("tag"))
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("arn");
    assert_eq!(topic, "arn:aws:sns:us-east-1:000000000000:orders");
    let tags = c
        .sns
        .list_tags_for_resource()
        .resource_arn(&topic)
        .send()
        .await
        .expect("tags")
        .tags
        .unwrap_or_default();
    assert_eq!(tags.len(), 1);
    let (raw_url, raw_arn) = c.queue("raw", false).await;
    let (env_url, env_arn) = c.queue("enveloped", false).await;
    c.sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&raw_arn)
        .attributes("RawMessageDelivery", "true")
        .attributes("FilterPolicy", r#"{"kind": ["keep"]}"#)
        .send()
        .await
        .expect("Subscribe raw");
    let sub = c
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&env_arn)
        .send()
        .await
        .expect("Subscribe")
        .subscription_arn
        .expect("arn");
    let attrs = c.sns.get_subscription_attributes().subscription_arn(&sub).send().await.expect("attrs");
    assert_eq!(
        attrs.attributes.unwrap_or_default().get("PendingConfirmation").map(String::as_str),
        Some("false")
    );

    let id = c
        .sns
        .publish()
        .topic_arn(&topic)
        .message("kept")
        .subject("s")
        .message_attributes("kind", string_attr("keep"))
        .send()
        .await
        .expect("Publish")
        .message_id
        .expect("id");
    c.sns.publish().topic_arn(&topic).message("filtered").send().await.expect("Publish");
    let raw = c.bodies(&raw_url).await;
    assert_eq!(raw.iter().map(|m| m.body().unwrap_or("")).collect::<Vec<_>>(), ["kept"]);
    let kind = raw[0].message_attributes().and_then(|a| a.get("kind")).and_then(|a| a.string_value());
    assert_eq!(kind, Some("keep"));
    let env = c.bodies(&env_url).await;
    assert_eq!(env.len(), 2);
    let first: serde_json::Value = serde_json::from_str(env[0].body().unwrap_or("")).expect("envelope");
    let ids: Vec<String> = env
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(m.body().unwrap_or("")).expect("json")["MessageId"]
                .to_string()
        })
        .collect();
    assert!(ids.contains(&format!("\"{id}\"")));
    assert_eq!(first["Type"], "Notification");
    assert_eq!(first["TopicArn"], topic.as_str());

    let batch = c
        .sns
        .publish_batch()
        .topic_arn(&topic)
        .publish_batch_request_entries(
            PublishBatchRequestEntry::builder()
                .id("one")
                .message("b1")
                .message_attributes("kind", string_attr("keep"))
                .build()
                .expect("entry"),
        )
        .publish_batch_request_entries(
            PublishBatchRequestEntry::builder().id("two").message("b2").build().expect("entry"),
        )
        .send()
        .await
        .expect("PublishBatch");
    assert_eq!(batch.successful().len(), 2);
    assert_eq!(c.bodies(&raw_url).await.iter().map(|m| m.body().unwrap_or("")).collect::<Vec<_>>(), ["b1"]);

    let listed = c.sns.list_subscriptions_by_topic().topic_arn(&topic).send().await.expect("list");
    assert_eq!(listed.subscriptions().len(), 2);
    c.sns.unsubscribe().subscription_arn(&sub).send().await.expect("Unsubscribe");
    c.sns.delete_topic().topic_arn(&topic).send().await.expect("DeleteTopic");
    assert!(c.sns.list_topics().send().await.expect("ListTopics").topics().is_empty());
}

#[tokio::test]
async fn fifo_and_errors() {
    let c = start();
    let topic = c
        .sns
        .create_topic()
        .name("ledger.fifo")
        .attributes("FifoTopic", "true")
        .attributes("ContentBasedDeduplication", "true")
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("arn");
    let (url, arn) = c.queue("ledger.fifo", true).await;
    c.sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("Subscribe");
    let a =
        c.sns.publish().topic_arn(&topic).message("one").message_group_id("g").send().await.expect("Publish");
    let again =
        c.sns.publish().topic_arn(&topic).message("one").message_group_id("g").send().await.expect("Publish");
    assert_eq!(a.message_id, again.message_id);
    assert!(a.sequence_number.is_some());
    c.sns.publish().topic_arn(&topic).message("two").message_group_id("g").send().await.expect("Publish");
    let got = c.bodies(&url).await;
    assert_eq!(got.iter().map(|m| m.body().unwrap_or("")).collect::<Vec<_>>(), ["one", "two"]);

    let err = c.sns.publish().topic_arn(&topic).message("x").send().await.expect_err("needs a group");
    assert_eq!(err.code(), Some("InvalidParameter"));
    assert_eq!(
        err.message(),
        Some("Invalid parameter: The MessageGroupId parameter is required for FIFO topics")
    );
    let err = c
        .sns
        .get_topic_attributes()
        .topic_arn("arn:aws:sns:us-east-1:000000000000:missing")
        .send()
        .await
        .expect_err("missing");
    assert!(err.as_service_error().is_some_and(|e| e.is_not_found_exception()), "{err:?}");
    let err = c.sns.create_topic().name("bad name").send().await.expect_err("bad name");
    assert!(err.as_service_error().is_some_and(|e| e.is_invalid_parameter_exception()), "{err:?}");
}
