//! MessageRetentionPeriod through the real SQS listener and the real Rust AWS SDK. The shortest
//! retention AWS allows is 60 s, so instead of sleeping, the listener runs in-process on an
//! engine driven by a `ManualClock`, and the test moves time forward.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use wharf_core::{Broker, BrokerConfig, ManualClock};
use wharf_sqs::SqsConfig;
use wharf_store::memory::MemoryStore;

struct InProcess {
    client: Client,
    broker: Arc<Broker>,
    clock: Arc<ManualClock>,
}

async fn start() -> InProcess {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let broker =
        Broker::open(Arc::new(MemoryStore::new()), clock.clone(), BrokerConfig::default()).expect("broker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(wharf_sqs::serve(listener, broker.clone(), SqsConfig::default(), std::future::pending()));
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDWHARFTEST", "secret", None, None, "static"))
        .endpoint_url(format!("http://{addr}"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    InProcess { client: Client::from_conf(config), broker, clock }
}

impl InProcess {
    async fn create(&self, name: &str, attributes: &[(QueueAttributeName, &str)]) -> String {
        let mut request = self.client.create_queue().queue_name(name);
        for (key, value) in attributes {
            request = request.attributes(key.clone(), *value);
        }
        request.send().await.expect("CreateQueue").queue_url.expect("QueueUrl")
    }

    async fn send(&self, url: &str, body: &str) {
        self.client.send_message().queue_url(url).message_body(body).send().await.expect("SendMessage");
    }

    async fn count(&self, url: &str, attribute: QueueAttributeName) -> u64 {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(attribute.clone())
            .send()
            .await
            .expect("GetQueueAttributes");
        out.attributes.unwrap_or_default()[&attribute].parse().expect("a count")
    }

    async fn receive_bodies(&self, url: &str) -> Vec<String> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("ReceiveMessage");
        out.messages.unwrap_or_default().into_iter().filter_map(|m| m.body).collect()
    }

    /// Move the engine's clock and let it process what fell due.
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.broker.tick();
    }
}

#[tokio::test]
async fn messages_older_than_the_retention_period_are_gone_and_not_dead_lettered() {
    let sqs = start().await;
    let dlq = sqs.create("retention-dlq", &[]).await;
    let dlq_arn = "arn:aws:sqs:us-east-1:000000000000:retention-dlq";
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let url = sqs
        .create(
            "retention",
            &[
                (QueueAttributeName::MessageRetentionPeriod, "60"),
                (QueueAttributeName::RedrivePolicy, &policy),
            ],
        )
        .await;

    sqs.send(&url, "old").await;
    sqs.advance(Duration::from_secs(30));
    sqs.send(&url, "young").await;
    sqs.advance(Duration::from_secs(29));
    // 59 s: both are still within the 60 s retention.
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessages).await, 2);

    sqs.advance(Duration::from_secs(2));
    // 61 s for "old", 31 s for "young".
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessages).await, 1);
    assert_eq!(sqs.receive_bodies(&url).await, vec!["young".to_owned()]);
    // Expiry by retention deletes; it is not a failed receive, so the DLQ gets nothing.
    assert_eq!(sqs.count(&dlq, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}

#[tokio::test]
async fn an_in_flight_message_past_retention_is_not_delivered_again() {
    let sqs = start().await;
    let url = sqs
        .create(
            "retention-inflight",
            &[
                (QueueAttributeName::MessageRetentionPeriod, "60"),
                (QueueAttributeName::VisibilityTimeout, "50"),
            ],
        )
        .await;
    sqs.send(&url, "leased").await;
    sqs.advance(Duration::from_secs(20));
    assert_eq!(sqs.receive_bodies(&url).await, vec!["leased".to_owned()]);
    // The lease runs out at 70 s, after the message's retention ended at 60 s.
    sqs.advance(Duration::from_secs(51));
    assert!(sqs.receive_bodies(&url).await.is_empty());
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessagesNotVisible).await, 0);
}

#[tokio::test]
async fn lowering_the_retention_period_applies_to_messages_already_queued() {
    let sqs = start().await;
    let url = sqs.create("retention-lowered", &[]).await;
    sqs.send(&url, "queued-under-four-days").await;
    sqs.advance(Duration::from_secs(120));
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessages).await, 1);
    sqs.client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "60")
        .send()
        .await
        .expect("SetQueueAttributes");
    sqs.advance(Duration::from_secs(1));
    assert_eq!(sqs.count(&url, QueueAttributeName::ApproximateNumberOfMessages).await, 0);
}
