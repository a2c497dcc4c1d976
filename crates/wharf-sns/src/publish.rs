//! Publish and PublishBatch: validate, then deliver to every confirmed subscription whose
//! filter policy matches — into SQS queues directly, and into the durable outbox of each HTTP
//! and email subscription — and answer only when every copy is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::Digest as _;
use wharf_core::message::AttributeValue;
use wharf_core::{HeaderValue, Headers, Message, Properties, QueueKind, SendOptions};
use wharf_filter_policy as filter;
use wharf_store::Durable;

use crate::error::{SnsError, SnsResult};
use crate::model::{sqs_queue_name, Subscription, TopicDef, TopicSubscriptions};
use crate::signing::{canonical_string, Keys};
use crate::wire::{url_encode, Params, Xml};
use crate::Sns;

/// Largest message: body plus every attribute's name, type and value (AWS: 256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 262_144;
pub const MAX_BATCH_ENTRIES: usize = 10;
/// FIFO deduplication window.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

/// One message attribute as published.
#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: String,
    pub data_type: String,
    pub value: AttributeValue,
}

impl Attribute {
    fn size(&self) -> usize {
        self.name.len()
            + self.data_type.len()
            + match &self.value {
                AttributeValue::String(s) => s.len(),
                AttributeValue::Binary(b) => b.len(),
            }
    }

    /// The text SNS shows for this value in the JSON envelope (base64 for binary).
    fn text(&self) -> String {
        match &self.value {
            AttributeValue::String(s) => s.clone(),
            AttributeValue::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }
}

/// A validated message, before delivery.
pub struct Outgoing {
    pub message_id: String,
    pub message: String,
    /// MessageStructure=json: protocol → text (with "default").
    pub per_protocol: Option<BTreeMap<String, String>>,
    pub subject: Option<String>,
    pub attributes: Vec<Attribute>,
    pub group_id: Option<String>,
    /// FIFO topics: the explicit id or the SHA-256 of the message.
    pub dedup_id: Option<String>,
    pub sequence_number: Option<String>,
    pub timestamp: String,
}

impl Outgoing {
    /// The text a subscription of `protocol` gets.
    pub fn content(&self, protocol: &str) -> &str {
        match &self.per_protocol {
            Some(m) => m.get(protocol).or_else(|| m.get("default")).map(String::as_str).unwrap_or(""),
            None => &self.message,
        }
    }

    fn size(&self) -> usize {
        self.message.len() + self.attributes.iter().map(Attribute::size).sum::<usize>()
    }
}

/// ISO 8601 with milliseconds, as SNS writes Timestamp: `2024-01-02T03:04:05.678Z`.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

fn check_attribute_name(name: &str) -> SnsResult<()> {
    if name.is_empty() {
        return Err(SnsError::value("The message attribute name must not be empty."));
    }
    if name.len() > 256 {
        return Err(SnsError::value("Length of message attribute name must be less than 256 bytes."));
    }
    if name.starts_with('.') {
        return Err(SnsError::value("Invalid message attribute name starting with character '.' was found."));
    }
    if name.ends_with('.') {
        return Err(SnsError::value("Invalid message attribute name ending with character '.' was found."));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(SnsError::value(format!(
            "Invalid non-alphanumeric character '#x{:X}' was found in the message attribute name. Can only include \
             alphanumeric characters, hyphens, underscores, or dots.",
            u32::from(c)
        )));
    }
    if name.contains("..") {
        return Err(SnsError::value("Message attribute name can not have successive '.' character."));
    }
    Ok(())
}

fn parse_attributes(p: &Params) -> SnsResult<Vec<Attribute>> {
    let mut out = Vec::new();
    for (name, v) in p.struct_map("MessageAttributes") {
        check_attribute_name(&name)?;
        let Some(data_type) = v.get("DataType") else {
            return Err(SnsError::new(
                "ValidationError",
                400,
                format!("1 validation error detected: Value null at 'messageAttributes.{name}.member.dataType' failed to satisfy constraint: Member must not be null"),
            ));
        };
        let base = data_type.split('.').next().unwrap_or("");
        if !matches!(base, "String" | "Number" | "Binary") || data_type.len() > 256 {
            return Err(SnsError::value(format!(
                "The message attribute '{name}' has an invalid message attribute type, the set of supported type \
                 prefixes is Binary, Number, and String."
            )));
        }
        let empty = || {
            SnsError::value(format!(
                "The message attribute '{name}' must contain non-empty message attribute value for message \
                 attribute type '{data_type}'."
            ))
        };
        let value = if base == "Binary" {
            let raw = v.get("BinaryValue").ok_or_else(|| {
                SnsError::value(format!(
                    "The message attribute '{name}' with type '{data_type}' must use field 'Binary'."
                ))
            })?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw.trim()).map_err(|_| {
                SnsError::value(format!("The message attribute '{name}' has an invalid binary value."))
            })?;
            if bytes.is_empty() {
                return Err(empty());
            }
            AttributeValue::Binary(Bytes::from(bytes))
        } else {
            let s = v.get("StringValue").ok_or_else(|| {
                SnsError::value(format!(
                    "The message attribute '{name}' with type '{data_type}' must use field 'String'."
                ))
            })?;
            if s.is_empty() {
                return Err(empty());
            }
            if base == "Number" && s.trim().parse::<f64>().map_or(true, |f| !f.is_finite()) {
                return Err(SnsError::value(format!(
                    "Could not cast message attribute '{name}' value to number."
                )));
            }
            if data_type == "String.Array" && !serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_array()) {
                return Err(SnsError::value(format!(
                    "The message attribute '{name}' has an invalid message attribute value: a String.Array must be a JSON array."
                )));
            }
            AttributeValue::String(s.to_owned())
        };
        out.push(Attribute { name, data_type: data_type.to_owned(), value });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Per-topic FIFO bookkeeping: the sequence counter and the 5-minute deduplication window.
#[derive(Default)]
pub struct FifoState {
    next_sequence: u64,
    /// Dedup key → (message id, sequence number, expiry ms).
    seen: HashMap<String, (String, String, u64)>,
}

/// A delivery's body and headers for one subscription, and where it goes.
struct Copy {
    queue_name: String,
    outbox: bool,
    dead_letter_queue: Option<String>,
    message: Message,
    opts: SendOptions,
}

impl Sns {
    /// Validate one Publish (or PublishBatch entry) for `topic`.
    fn parse_outgoing(&self, p: &Params, topic: &TopicDef) -> SnsResult<Outgoing> {
        let message = p.get("Message").ok_or_else(|| SnsError::missing("Message"))?;
        if message.is_empty() {
            return Err(SnsError::param("Empty message"));
        }
        let subject = p.get("Subject").map(str::to_owned);
        if let Some(s) = &subject {
            if s.is_empty() || s.chars().count() > 100 || !s.chars().all(|c| (' '..='~').contains(&c)) {
                return Err(SnsError::param("Subject"));
            }
        }
        let attributes = parse_attributes(p)?;
        let per_protocol = match p.get("MessageStructure") {
            None => None,
            Some("json") => {
                let v: Value = serde_json::from_str(message)
                    .map_err(|_| SnsError::param("Message Structure - JSON message body failed to parse"))?;
                let Value::Object(m) = v else {
                    return Err(SnsError::param("Message Structure - JSON message body failed to parse"));
                };
                // Keys whose values are not strings are ignored, as on AWS.
                let m: BTreeMap<String, String> =
                    m.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned()))).collect();
                if !m.contains_key("default") {
                    return Err(SnsError::param("Message Structure - No default entry in JSON message body"));
                }
                Some(m)
            }
            Some(_) => return Err(SnsError::param("MessageStructure")),
        };
        let group_id = p.get("MessageGroupId").map(str::to_owned);
        let mut dedup_id = p.get("MessageDeduplicationId").map(str::to_owned);
        for (param, v) in [("MessageGroupId", &group_id), ("MessageDeduplicationId", &dedup_id)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(SnsError::param(format!(
                        "{param} Reason: must be 1 to 128 alphanumeric or punctuation characters"
                    )));
                }
            }
        }
        if topic.fifo {
            if group_id.is_none() {
                return Err(SnsError::param("The MessageGroupId parameter is required for FIFO topics"));
            }
            if dedup_id.is_none() {
                let content_based = topic
                    .attributes
                    .get("ContentBasedDeduplication")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if !content_based {
                    return Err(SnsError::param(
                        "The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                    ));
                }
                dedup_id = Some(crate::hex(&sha2::Sha256::digest(message.as_bytes())));
            }
        } else if dedup_id.is_some() {
            return Err(SnsError::param(
                "MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type",
            ));
        }
        let out = Outgoing {
            message_id: uuid::Uuid::new_v4().to_string(),
            message: message.to_owned(),
            per_protocol,
            subject,
            attributes,
            group_id,
            dedup_id,
            sequence_number: None,
            timestamp: iso8601(self.now_ms()),
        };
        if out.size() > MAX_MESSAGE_BYTES {
            return Err(SnsError::param("Message too long"));
        }
        Ok(out)
    }

    /// The topic a Publish names (TopicArn, or a topic's ARN as TargetArn).
    fn publish_target(&self, p: &Params) -> SnsResult<(Arc<TopicDef>, TopicSubscriptions)> {
        if let Some(phone) = p.get("PhoneNumber") {
            let _ = phone;
            return Err(SnsError::param(
                "PhoneNumber Reason: wharf does not send SMS; publish to a topic instead",
            ));
        }
        let arn = match (p.get("TopicArn"), p.get("TargetArn")) {
            (Some(t), None) | (None, Some(t)) => t,
            (Some(_), Some(_)) => {
                return Err(SnsError::param(
                    "TopicArn or TargetArn Reason: Only one of TopicArn or TargetArn may be specified",
                ))
            }
            (None, None) => return Err(SnsError::missing("TopicArn or TargetArn")),
        };
        if arn.contains(":endpoint/") {
            return Err(SnsError::param("TargetArn Reason: wharf does not deliver to mobile push endpoints"));
        }
        self.check_topic_arn(if p.get("TopicArn").is_some() { "TopicArn" } else { "TargetArn" }, arn)?;
        let state = self.state.read();
        let topic = state.topics.get(arn).cloned().ok_or_else(SnsError::no_topic)?;
        let subs = state.by_topic.get(arn).cloned().unwrap_or_default();
        Ok((topic, subs))
    }

    /// FIFO topics: number the message, or recognise a duplicate within the window (whose
    /// original id and number are returned and which is not delivered again).
    fn sequence(&self, topic: &TopicDef, out: &mut Outgoing) -> bool {
        if !topic.fifo {
            return true;
        }
        let now = self.now_ms();
        let mut fifo = self.fifo.lock();
        let state = fifo.entry(topic.arn.clone()).or_default();
        state.seen.retain(|_, (_, _, expires)| *expires > now);
        let by_group = topic.attributes.get("FifoThroughputScope").is_some_and(|s| s == "MessageGroup");
        let dedup = out.dedup_id.clone().unwrap_or_default();
        let key =
            if by_group { format!("{}\u{0}{dedup}", out.group_id.as_deref().unwrap_or("")) } else { dedup };
        if let Some((id, seq, _)) = state.seen.get(&key) {
            out.message_id = id.clone();
            out.sequence_number = Some(seq.clone());
            return false;
        }
        if state.next_sequence == 0 {
            // Start from the clock so numbers keep growing across restarts.
            state.next_sequence = now.saturating_mul(1000);
        }
        state.next_sequence += 1;
        let seq = format!("{:020}", state.next_sequence);
        out.sequence_number = Some(seq.clone());
        state.seen.insert(key, (out.message_id.clone(), seq, now + DEDUP_WINDOW_MS));
        true
    }

    pub(crate) async fn publish(&self, p: &Params) -> SnsResult<Xml> {
        let (topic, subs) = self.publish_target(p)?;
        let mut out = self.parse_outgoing(p, &topic)?;
        if self.sequence(&topic, &mut out) {
            let durable = self.fan_out(&topic, &subs, &out).await?;
            durable.wait().await.map_err(SnsError::internal)?;
        }
        let mut x = Xml::empty().with_text("MessageId", &out.message_id);
        if let Some(s) = &out.sequence_number {
            x = x.with_text("SequenceNumber", s);
        }
        Ok(x)
    }

    pub(crate) async fn publish_batch(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("TopicArn")?;
        let entries = p.struct_list("PublishBatchRequestEntries");
        if entries.is_empty() {
            return Err(SnsError::new(
                "EmptyBatchRequest",
                400,
                "The batch request doesn't contain any entries.",
            ));
        }
        if entries.len() > MAX_BATCH_ENTRIES {
            return Err(SnsError::new(
                "TooManyEntriesInBatchRequest",
                400,
                "The batch request contains more entries than permissible.",
            ));
        }
        let mut ids = Vec::new();
        for e in &entries {
            let id =
                e.get("Id").ok_or_else(|| SnsError::missing("PublishBatchRequestEntries.member.N.Id"))?;
            if id.is_empty() || id.len() > 80 {
                return Err(SnsError::new(
                    "InvalidBatchEntryId",
                    400,
                    format!("The Id of a batch entry in the batch request is too long: {id}"),
                ));
            }
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(SnsError::new(
                    "InvalidBatchEntryId",
                    400,
                    format!("The Id of a batch entry in the batch request contains an impermissible character: {id}"),
                ));
            }
            if ids.contains(&id) {
                return Err(SnsError::new(
                    "BatchEntryIdsNotDistinct",
                    400,
                    "Two or more batch entries in the request have the same Id.",
                ));
            }
            ids.push(id);
        }
        let mut target = Params::new([("TopicArn".to_owned(), arn.to_owned())]);
        let _ = &mut target;
        let (topic, subs) = self.publish_target(&target)?;
        let mut parsed = Vec::new();
        for e in &entries {
            parsed.push(self.parse_outgoing(e, &topic)?);
        }
        let total: usize = parsed.iter().map(Outgoing::size).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(SnsError::new(
                "BatchRequestTooLong",
                400,
                "The length of all the messages put together is more than the limit.",
            ));
        }
        let mut durable = Durable::done();
        let mut ok = Vec::new();
        for (id, mut out) in ids.iter().zip(parsed) {
            if self.sequence(&topic, &mut out) {
                durable = durable.join(self.fan_out(&topic, &subs, &out).await?);
            }
            let mut x = Xml::empty().with_text("Id", *id).with_text("MessageId", &out.message_id);
            if let Some(s) = &out.sequence_number {
                x = x.with_text("SequenceNumber", s);
            }
            ok.push(x);
        }
        // One wait for the whole batch: group commit makes it one sync.
        durable.wait().await.map_err(SnsError::internal)?;
        Ok(Xml::empty().with("Successful", Xml::members(ok)).with("Failed", Xml::empty()))
    }

    /// Hand `out` to every confirmed, matching subscription; the durability of all copies.
    pub(crate) async fn fan_out(
        &self,
        topic: &TopicDef,
        subs: &[Arc<Subscription>],
        out: &Outgoing,
    ) -> SnsResult<Durable> {
        let mut filter_attrs: Option<BTreeMap<String, filter::AttributeValue>> = None;
        let mut copies = Vec::new();
        let mut signatures: HashMap<String, String> = HashMap::new();
        let mut keys: Option<Arc<Keys>> = None;
        for sub in subs.iter().filter(|s| s.def.confirmed) {
            let protocol = sub.def.protocol.as_str();
            if let Some(policy) = &sub.filter {
                let attrs = filter_attrs.get_or_insert_with(|| {
                    out.attributes
                        .iter()
                        .map(|a| (a.name.clone(), filter::AttributeValue::new(a.data_type.clone(), a.text())))
                        .collect()
                });
                if !policy.matches(attrs, out.content(protocol)) {
                    continue;
                }
            }
            let raw = sub.raw && protocol != "email" && protocol != "email-json";
            let body = if raw || protocol == "email" {
                out.content(protocol).to_owned()
            } else {
                let content = out.content(protocol);
                let signature = if topic.fifo {
                    None
                } else {
                    let version = signature_version(topic);
                    let cache_key = format!("{version}\u{0}{content}");
                    if !signatures.contains_key(&cache_key) {
                        if keys.is_none() {
                            keys = Some(self.signer.keys().await?);
                        }
                        let k = keys.as_ref().ok_or_else(|| SnsError::internal("no signing key"))?;
                        let text = notification_canonical(out, content, &topic.arn);
                        signatures.insert(cache_key.clone(), k.sign(version, &text));
                    }
                    Some((version, signatures[&cache_key].clone(), self.cert_url(keys.as_deref())))
                };
                self.envelope(out, content, &topic.arn, &sub.def.arn, signature)
            };
            copies.push(self.copy_for(sub, out, body, raw));
        }
        let mut durable = Durable::done();
        for c in copies {
            durable = durable.join(self.send_copy(c)?);
        }
        Ok(durable)
    }

    pub(crate) fn cert_url(&self, keys: Option<&Keys>) -> String {
        let name = keys.map(|k| k.cert_file_name.as_str()).unwrap_or("SimpleNotificationService-wharf.pem");
        format!("{}/{name}", self.config.public_url)
    }

    pub(crate) fn unsubscribe_url(&self, sub_arn: &str) -> String {
        format!("{}/?Action=Unsubscribe&SubscriptionArn={}", self.config.public_url, url_encode(sub_arn))
    }

    pub(crate) fn subscribe_url(&self, topic_arn: &str, token: &str) -> String {
        format!(
            "{}/?Action=ConfirmSubscription&TopicArn={}&Token={}",
            self.config.public_url,
            url_encode(topic_arn),
            url_encode(token)
        )
    }

    /// The JSON notification envelope, keys in AWS's order.
    fn envelope(
        &self,
        out: &Outgoing,
        content: &str,
        topic_arn: &str,
        sub_arn: &str,
        signature: Option<(&str, String, String)>,
    ) -> String {
        let mut m = Map::new();
        let s = |v: &str| Value::String(v.to_owned());
        m.insert("Type".into(), s("Notification"));
        m.insert("MessageId".into(), s(&out.message_id));
        if let Some(seq) = &out.sequence_number {
            m.insert("SequenceNumber".into(), s(seq));
        }
        m.insert("TopicArn".into(), s(topic_arn));
        if let Some(subject) = &out.subject {
            m.insert("Subject".into(), s(subject));
        }
        m.insert("Message".into(), s(content));
        m.insert("Timestamp".into(), s(&out.timestamp));
        if let Some((version, sig, cert)) = signature {
            m.insert("SignatureVersion".into(), s(version));
            m.insert("Signature".into(), Value::String(sig));
            m.insert("SigningCertURL".into(), Value::String(cert));
        }
        m.insert("UnsubscribeURL".into(), Value::String(self.unsubscribe_url(sub_arn)));
        if !out.attributes.is_empty() {
            let attrs: Map<String, Value> = out
                .attributes
                .iter()
                .map(|a| {
                    let mut v = Map::new();
                    v.insert("Type".into(), s(&a.data_type));
                    v.insert("Value".into(), Value::String(a.text()));
                    (a.name.clone(), Value::Object(v))
                })
                .collect();
            m.insert("MessageAttributes".into(), Value::Object(attrs));
        }
        ordered_json(&m, ENVELOPE_ORDER)
    }

    fn copy_for(&self, sub: &Subscription, out: &Outgoing, body: String, raw: bool) -> Copy {
        let def = &sub.def;
        let mut headers = Headers::new();
        let outbox = def.has_outbox();
        if outbox {
            headers.insert(crate::delivery::H_TYPE.into(), HeaderValue::String("Notification".into()));
            headers.insert(crate::delivery::H_MESSAGE_ID.into(), HeaderValue::String(out.message_id.clone()));
            if raw {
                headers.insert(crate::delivery::H_RAW.into(), HeaderValue::Bool(true));
            }
            if let Some(subject) = &out.subject {
                headers.insert(crate::delivery::H_SUBJECT.into(), HeaderValue::String(subject.clone()));
            }
        } else if raw {
            // Raw delivery to SQS: SNS attributes become SQS message attributes.
            for a in &out.attributes {
                headers.insert(
                    a.name.clone(),
                    HeaderValue::Attribute { data_type: a.data_type.clone(), value: a.value.clone() },
                );
            }
        }
        let queue_name = if outbox {
            def.id().to_owned()
        } else {
            sqs_queue_name(&def.endpoint).unwrap_or_default().to_owned()
        };
        let message = Message {
            body: Bytes::from(body),
            headers,
            properties: Properties { persistent: true, ..Properties::default() },
            ..Message::default()
        };
        let mut system_attributes = BTreeMap::new();
        system_attributes.insert("SenderId".to_owned(), self.config.account_id.clone());
        let opts = SendOptions {
            delay: None,
            group_id: out.group_id.clone(),
            dedup_id: out.dedup_id.clone(),
            system_attributes,
            body_md5: None,
        };
        Copy { queue_name, outbox, dead_letter_queue: sub.dead_letter_queue.clone(), message, opts }
    }

    /// Enqueue one copy. A missing target queue (or one that refuses the message) sends the
    /// copy to the subscription's dead-letter queue if it has one; otherwise it is dropped and
    /// logged, as SNS drops what it cannot deliver.
    fn send_copy(&self, c: Copy) -> SnsResult<Durable> {
        if c.outbox {
            let q = self.outbox_queue(&c.queue_name)?;
            return Ok(q.send(c.message, SendOptions { group_id: None, dedup_id: None, ..c.opts })?.durable);
        }
        let error = match self.send_to_sqs(&c.queue_name, c.message.clone(), c.opts.clone()) {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        match &c.dead_letter_queue {
            Some(dlq) => match self.send_to_sqs(dlq, c.message, c.opts) {
                Ok(d) => {
                    tracing::info!(queue = %c.queue_name, dlq = %dlq, "SNS delivery failed ({error}); sent to the subscription's dead-letter queue");
                    Ok(d)
                }
                Err(e) => {
                    tracing::warn!(queue = %c.queue_name, dlq = %dlq, "SNS delivery failed ({error}) and so did its dead-letter queue ({e}); message dropped");
                    Ok(Durable::done())
                }
            },
            None => {
                tracing::warn!(queue = %c.queue_name, "SNS delivery failed ({error}); message dropped");
                Ok(Durable::done())
            }
        }
    }

    /// One message into an SQS queue of the account, as SQS SendMessage would store it.
    pub(crate) fn send_to_sqs(
        &self,
        name: &str,
        message: Message,
        mut opts: SendOptions,
    ) -> Result<Durable, String> {
        let vhost = self.broker.vhost(&self.config.vhost).map_err(|e| e.to_string())?;
        let q = vhost.queue(name).map_err(|_| format!("queue {name} does not exist"))?;
        if q.kind() != QueueKind::Fifo {
            opts.dedup_id = None;
        } else if opts.group_id.is_none() {
            return Err(format!("queue {name} is FIFO and the message has no MessageGroupId"));
        }
        q.send(message, opts).map(|s| s.durable).map_err(|e| e.to_string())
    }
}

fn signature_version(topic: &TopicDef) -> &str {
    match topic.attributes.get("SignatureVersion").map(String::as_str) {
        Some("2") => "2",
        _ => "1",
    }
}

fn notification_canonical(out: &Outgoing, content: &str, topic_arn: &str) -> String {
    let mut fields: Vec<(&str, &str)> = vec![("Message", content), ("MessageId", &out.message_id)];
    if let Some(s) = &out.subject {
        fields.push(("Subject", s));
    }
    fields.push(("Timestamp", &out.timestamp));
    fields.push(("TopicArn", topic_arn));
    fields.push(("Type", "Notification"));
    canonical_string(&fields)
}

pub(crate) const ENVELOPE_ORDER: &[&str] = &[
    "Type",
    "MessageId",
    "SequenceNumber",
    "Token",
    "TopicArn",
    "Subject",
    "Message",
    "SubscribeURL",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
    "MessageAttributes",
];

/// A JSON object with its keys in `order` (serde_json's map is sorted by default).
pub(crate) fn ordered_json(m: &Map<String, Value>, order: &[&str]) -> String {
    let mut out = String::from("{");
    let mut first = true;
    for key in order
        .iter()
        .copied()
        .filter(|k| m.contains_key(*k))
        .chain(m.keys().map(String::as_str).filter(|k| !order.contains(k)))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::String(key.to_owned()).to_string());
        out.push(':');
        out.push_str(&m[key].to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn attribute_names() {
        assert!(check_attribute_name("a.b-c_D").is_ok());
        for bad in ["", ".a", "a.", "a..b", "sp ace", &"x".repeat(257)] {
            assert!(check_attribute_name(bad).is_err(), "{bad}");
        }
    }
}
