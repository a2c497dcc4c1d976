//! HTTP and email deliveries. Each such subscription owns a durable outbox: an engine queue in
//! the internal vhost [`OUTBOX_VHOST`], named by the subscription's id. Publish (and Subscribe,
//! for the confirmation) puts what is owed there and answers once it is durable; a worker per
//! subscription takes deliveries out with a lease, posts or mails them, deletes them on
//! success, and on failure sets the lease to end when the delivery policy's next retry is due.
//! So a restart in the middle of retries loses nothing: what was not delivered is still in the
//! outbox and goes out again (its retry schedule starts over). A delivery that runs out of
//! retries goes to the subscription's dead-letter queue (RedrivePolicy) if it has one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use wharf_core::{
    HeaderValue, Headers, Message, Properties, Queue, QueueSettings, ReceiveRequest, SendOptions,
};

use crate::error::{SnsError, SnsResult};
use crate::model::{Subscription, SubscriptionDef, TopicDef};
use crate::publish::{iso8601, ordered_json, ENVELOPE_ORDER};
use crate::signing::canonical_string;
use crate::Sns;

/// The engine vhost that holds the outboxes. SQS never sees it (SQS lists its own vhost).
pub const OUTBOX_VHOST: &str = "sns.outbox";
/// Headers of an outbox message (never shown to anyone).
pub const H_TYPE: &str = "sns-type";
pub const H_MESSAGE_ID: &str = "sns-message-id";
pub const H_RAW: &str = "sns-raw";
pub const H_SUBJECT: &str = "sns-subject";
/// How long one HTTP attempt may take (AWS: 15 s).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The lease on a delivery being attempted; longer than any one attempt.
const ATTEMPT_LEASE: Duration = Duration::from_secs(120);
/// Outboxes keep undelivered messages as long as SQS keeps anything (14 days).
const OUTBOX_RETENTION_MS: u64 = 14 * 24 * 60 * 60 * 1000;

fn header_text<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    match h.get(name) {
        Some(HeaderValue::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

impl Sns {
    pub(crate) fn outbox_queue(&self, name: &str) -> SnsResult<Arc<Queue>> {
        Ok(self.broker.vhost(OUTBOX_VHOST)?.queue(name)?)
    }

    pub(crate) fn create_outbox(&self, def: &SubscriptionDef) -> SnsResult<Arc<Queue>> {
        let vhost = match self.broker.vhost(OUTBOX_VHOST) {
            Ok(v) => v,
            Err(_) => match self.broker.create_vhost(OUTBOX_VHOST) {
                Ok(v) => v,
                Err(_) => self.broker.vhost(OUTBOX_VHOST)?,
            },
        };
        let settings = QueueSettings {
            retention_ms: OUTBOX_RETENTION_MS,
            visibility_timeout_ms: ATTEMPT_LEASE.as_millis() as u64,
            ..QueueSettings::durable()
        };
        let (q, _) = vhost.declare_queue(def.id(), settings)?;
        Ok(q)
    }

    /// Stop a subscription's worker and delete its outbox (with whatever was still owed).
    pub(crate) fn drop_outbox(&self, def: &SubscriptionDef) {
        if let Some(handle) = self.workers.lock().remove(&def.arn) {
            handle.abort();
        }
        if def.has_outbox() {
            if let Ok(v) = self.broker.vhost(OUTBOX_VHOST) {
                let _ = v.delete_queue(def.id(), false, false);
            }
        }
    }

    pub(crate) fn start_worker(&self, def: &SubscriptionDef) {
        let Some(me) = self.me.upgrade() else { return };
        let arn = def.arn.clone();
        let mut workers = self.workers.lock();
        if workers.contains_key(&arn) {
            return;
        }
        let task = tokio::spawn(me.clone().worker(arn.clone()));
        workers.insert(arn, task.abort_handle());
    }

    /// Enqueue a SubscriptionConfirmation for an HTTP or email subscription.
    pub(crate) async fn send_confirmation(
        &self,
        topic: &TopicDef,
        sub: &Subscription,
        kind: &str,
    ) -> SnsResult<()> {
        let def = &sub.def;
        let token = def.token.clone().unwrap_or_default();
        let message_id = uuid::Uuid::new_v4().to_string();
        let subscribe_url = self.subscribe_url(&topic.arn, &token);
        let text = format!(
            "You have chosen to subscribe to the topic {}.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
            topic.arn
        );
        let timestamp = iso8601(self.now_ms());
        let body = if def.protocol == "email" {
            format!(
                "You have chosen to subscribe to the topic: \n{}\n\nTo confirm this subscription, click or visit the link below \
                 (If this was in error no action is necessary):\nConfirm subscription\n{subscribe_url}\n",
                topic.arn
            )
        } else {
            let keys = self.signer.keys().await?;
            let version = match topic.attributes.get("SignatureVersion").map(String::as_str) {
                Some("2") => "2",
                _ => "1",
            };
            let canonical = canonical_string(&[
                ("Message", &text),
                ("MessageId", &message_id),
                ("SubscribeURL", &subscribe_url),
                ("Timestamp", &timestamp),
                ("Token", &token),
                ("TopicArn", &topic.arn),
                ("Type", kind),
            ]);
            let mut m = Map::new();
            let s = |v: &str| Value::String(v.to_owned());
            m.insert("Type".into(), s(kind));
            m.insert("MessageId".into(), s(&message_id));
            m.insert("Token".into(), s(&token));
            m.insert("TopicArn".into(), s(&topic.arn));
            m.insert("Message".into(), s(&text));
            m.insert("SubscribeURL".into(), s(&subscribe_url));
            m.insert("Timestamp".into(), s(&timestamp));
            m.insert("SignatureVersion".into(), s(version));
            m.insert("Signature".into(), Value::String(keys.sign(version, &canonical)));
            m.insert("SigningCertURL".into(), Value::String(self.cert_url(Some(&keys))));
            ordered_json(&m, ENVELOPE_ORDER)
        };
        let mut headers = Headers::new();
        headers.insert(H_TYPE.into(), HeaderValue::String(kind.to_owned()));
        headers.insert(H_MESSAGE_ID.into(), HeaderValue::String(message_id));
        headers.insert(
            H_SUBJECT.into(),
            HeaderValue::String("AWS Notification - Subscription Confirmation".into()),
        );
        let q = self.outbox_queue(def.id())?;
        let msg = Message {
            body: Bytes::from(body),
            headers,
            properties: Properties { persistent: true, ..Properties::default() },
            ..Message::default()
        };
        q.send(msg, SendOptions::default())?.durable.wait().await.map_err(SnsError::internal)?;
        Ok(())
    }

    /// One subscription's delivery loop; ends when the subscription or the engine goes away.
    async fn worker(self: Arc<Self>, arn: String) {
        loop {
            if self.broker.is_shutting_down() {
                return;
            }
            let Some(sub) = self.state.read().subscriptions.get(&arn).cloned() else { return };
            let Ok(q) = self.outbox_queue(sub.def.id()) else { return };
            let req = ReceiveRequest {
                max: 10,
                visibility: Some(ATTEMPT_LEASE),
                wait: Some(Duration::from_secs(20)),
            };
            let deliveries = match q.receive(req).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(subscription = %arn, "SNS outbox: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for d in deliveries {
                // The definition may have changed since the last look (a new DeliveryPolicy).
                let Some(sub) = self.state.read().subscriptions.get(&arn).cloned() else { return };
                let result = self.attempt(&sub, &d.message).await;
                match result {
                    Ok(()) => {
                        let _ = q.delete(d.receipt);
                    }
                    Err(error) => {
                        let retry = d.receive_count;
                        match sub.delivery.delay_before_retry(retry) {
                            Some(delay) => {
                                tracing::info!(subscription = %arn, retry, "SNS delivery failed ({error}); retrying in {delay:?}");
                                let _ = q.change_visibility(d.receipt, delay);
                            }
                            None => {
                                self.give_up(&sub, &d.message, &error);
                                let _ = q.delete(d.receipt);
                            }
                        }
                    }
                }
            }
        }
    }

    fn give_up(&self, sub: &Subscription, message: &Message, error: &str) {
        let is_notification = header_text(&message.headers, H_TYPE) == Some("Notification");
        match (&sub.dead_letter_queue, is_notification) {
            (Some(dlq), true) => {
                let msg = Message {
                    body: message.body.clone(),
                    properties: Properties { persistent: true, ..Properties::default() },
                    ..Message::default()
                };
                let mut opts = SendOptions::default();
                opts.system_attributes.insert("SenderId".into(), self.config.account_id.clone());
                match self.send_to_sqs(dlq, msg, opts) {
                    Ok(_) => {
                        tracing::info!(subscription = %sub.def.arn, dlq = %dlq, "SNS delivery gave up ({error}); moved to the dead-letter queue")
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %sub.def.arn, "SNS delivery gave up ({error}); dead-letter queue failed too ({e}); dropped")
                    }
                }
            }
            _ => {
                tracing::warn!(subscription = %sub.def.arn, "SNS delivery gave up after every retry ({error}); dropped")
            }
        }
    }

    async fn attempt(&self, sub: &Subscription, message: &Message) -> Result<(), String> {
        match sub.def.protocol.as_str() {
            "http" | "https" => self.post(sub, message).await,
            "email" | "email-json" => self.mail(sub, message).await,
            other => Err(format!("no delivery for protocol {other}")),
        }
    }

    async fn post(&self, sub: &Subscription, message: &Message) -> Result<(), String> {
        let def = &sub.def;
        let kind = header_text(&message.headers, H_TYPE).unwrap_or("Notification");
        let uri: hyper::Uri = def.endpoint.parse().map_err(|e| format!("bad endpoint: {e}"))?;
        let host = uri.host().ok_or("endpoint has no host")?.trim_matches(['[', ']']).to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone());
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
        let content_type = if kind == "Notification" {
            sub.delivery.header_content_type.clone().unwrap_or_else(|| "text/plain; charset=UTF-8".to_owned())
        } else {
            "text/plain; charset=UTF-8".to_owned()
        };
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "Amazon Simple Notification Service Agent")
            .header("x-amz-sns-message-type", kind)
            .header("x-amz-sns-message-id", header_text(&message.headers, H_MESSAGE_ID).unwrap_or(""))
            .header("x-amz-sns-topic-arn", &def.topic_arn);
        if kind != "SubscriptionConfirmation" {
            req = req.header("x-amz-sns-subscription-arn", &def.arn);
        }
        if matches!(message.headers.get(H_RAW), Some(HeaderValue::Bool(true))) {
            req = req.header("x-amz-sns-rawdelivery", "true");
        }
        let req = req.body(Full::new(message.body.clone())).map_err(|e| e.to_string())?;
        let exchange = async {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            if https {
                let name = ServerName::try_from(host.clone()).map_err(|e| format!("TLS server name: {e}"))?;
                let tls = TlsConnector::from(self.tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                exchange(tls, req).await
            } else {
                exchange(stream, req).await
            }
        };
        let status =
            tokio::time::timeout(HTTP_TIMEOUT, exchange).await.map_err(|_| "timed out".to_owned())??;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }

    async fn mail(&self, sub: &Subscription, message: &Message) -> Result<(), String> {
        use lettre::AsyncTransport as _;
        let smtp = self.config.smtp.as_ref().ok_or("no SMTP relay configured")?;
        let (host, port) = match smtp.relay.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse::<u16>().map_err(|_| "bad SMTP relay port")?),
            None => (smtp.relay.clone(), 25),
        };
        let kind = header_text(&message.headers, H_TYPE).unwrap_or("Notification");
        let subject = match header_text(&message.headers, H_SUBJECT) {
            Some(s) => s.to_owned(),
            None => {
                let display = self
                    .state
                    .read()
                    .topics
                    .get(&sub.def.topic_arn)
                    .and_then(|t| t.attributes.get("DisplayName").filter(|d| !d.is_empty()).cloned());
                display.unwrap_or_else(|| "AWS Notification Message".to_owned())
            }
        };
        let mut body = String::from_utf8_lossy(&message.body).into_owned();
        if kind == "Notification" && sub.def.protocol == "email" {
            body.push_str(&format!(
                "\n\n--\nIf you wish to stop receiving notifications from this topic, please click or visit the link below to unsubscribe:\n{}\n",
                self.unsubscribe_url(&sub.def.arn)
            ));
        }
        let content_type = if sub.def.protocol == "email-json" {
            lettre::message::header::ContentType::parse("application/json; charset=UTF-8")
                .map_err(|e| e.to_string())?
        } else {
            lettre::message::header::ContentType::TEXT_PLAIN
        };
        let mail = lettre::Message::builder()
            .from(smtp.from.parse().map_err(|e| format!("bad sender address: {e}"))?)
            .to(sub.def.endpoint.parse().map_err(|e| format!("bad recipient address: {e}"))?)
            .subject(subject)
            .header(content_type)
            .body(body)
            .map_err(|e| e.to_string())?;
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(HTTP_TIMEOUT))
            .build();
        tokio::time::timeout(HTTP_TIMEOUT, transport.send(mail))
            .await
            .map_err(|_| "SMTP timed out".to_owned())?
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// One HTTP/1.1 request on a fresh connection (plain or TLS); the answer's status.
async fn exchange<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<hyper::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}
