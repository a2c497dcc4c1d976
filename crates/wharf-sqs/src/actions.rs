//! The SQS actions. Each takes the action's input document (see `wire`) and returns its output
//! document; nothing here knows the wire protocol.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Map, Value};
use wharf_core::message::AttributeValue;
use wharf_core::{
    Broker, CoreError, Delivery, Message, Properties, Queue, QueueKind, QueueSettings, Receipt,
    ReceiveRequest, SendOptions, Sent, VHost,
};
use wharf_store::Durable;

use crate::attributes::{self, ArnContext, CREATED, MODIFIED, TAG_PREFIX};
use crate::digest::{hex, md5, md5_each};
use crate::error::{ErrorCode, SqsError, SqsResult};
use crate::message::{self, MessageAttribute};
use crate::movetask::{self, MoveTask, MAX_MOVE_RATE, TASK_HISTORY};
use crate::wire::Params;
use crate::SqsConfig;

/// Longest queue name, `.fifo` included.
pub const MAX_QUEUE_NAME_LEN: usize = 80;
/// Most entries in one batch request.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Longest batch entry id.
pub const MAX_BATCH_ID_LEN: usize = 80;
/// Sum of message sizes in one SendMessageBatch.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// ListQueues / ListDeadLetterSourceQueues page size.
pub const MAX_LIST_RESULTS: i64 = 1000;
/// A second PurgeQueue within this window is PurgeQueueInProgress.
pub const PURGE_WINDOW_MS: u64 = 60_000;
/// Tags per queue (AWS's documented recommendation, enforced here).
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_LEN: usize = 128;
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// Per-request facts the actions need.
pub struct RequestContext {
    /// The Host header, for queue URLs the caller can reach.
    pub host: String,
    /// SigV4 access key of the caller, if signed (reported as SenderId).
    pub access_key: Option<String>,
    /// The caller speaks AWS JSON 1.0 (not Query): outputs may come back already serialized.
    pub json: bool,
}

/// An action's output: a document both protocols render, or (JSON protocol only) the JSON
/// text itself, for outputs too hot to build as a document first.
#[derive(Debug)]
pub enum Output {
    Doc(Value),
    Json(String),
}

/// How long a FIFO ReceiveRequestAttemptId may be retried.
pub const ATTEMPT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Most remembered receive attempts; past this, new attempts are simply not remembered.
pub const MAX_ATTEMPTS: usize = 10_000;

/// A FIFO receive remembered under its ReceiveRequestAttemptId, so a retry (after a timeout,
/// say) gets the same messages and receipt handles instead of a locked group.
struct Attempt {
    valid_until_ms: u64,
    receipts: Vec<Receipt>,
    response: Value,
}

/// Front-end state that the engine has no place for.
pub struct Sqs {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: SqsConfig,
    /// Queue id → when its last purge started (engine clock, ms).
    purges: Mutex<HashMap<u64, u64>>,
    /// Queue name → when SQS deleted it (engine clock, ms), kept for `recreate_delay_ms`.
    deleted: Mutex<HashMap<String, u64>>,
    /// (queue id, ReceiveRequestAttemptId) → the answer given.
    attempts: Mutex<HashMap<(u64, String), Attempt>>,
    /// Source (DLQ) name → its move tasks, newest last.
    moves: Mutex<HashMap<String, Vec<Arc<MoveTask>>>>,
}

pub const ACTIONS: &[&str] = &[
    "CreateQueue",
    "DeleteQueue",
    "GetQueueUrl",
    "ListQueues",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "PurgeQueue",
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "ListDeadLetterSourceQueues",
    "TagQueue",
    "UntagQueue",
    "ListQueueTags",
    "AddPermission",
    "RemovePermission",
    "StartMessageMoveTask",
    "CancelMessageMoveTask",
    "ListMessageMoveTasks",
];

/// Valid SQS queue name: `[A-Za-z0-9_-]{1,80}`, FIFO ones ending in `.fifo` (counted).
pub fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= MAX_QUEUE_NAME_LEN
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The queue name in a queue URL (or a bare name). Only the last path segment counts: the host
/// and account are whatever the client was given and are not checked.
pub fn queue_name_from_url(url: &str) -> &str {
    let path = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("")
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

fn ranged(p: Params<'_>, name: &str, lo: i64, hi: i64, reason: &str) -> SqsResult<Option<i64>> {
    match p.int_opt(name)? {
        Some(n) if !(lo..=hi).contains(&n) => Err(SqsError::invalid_param(name, n, reason)),
        other => Ok(other),
    }
}

async fn wait_durable(d: Durable) -> SqsResult<()> {
    d.wait().await.map_err(SqsError::internal)
}

/// What every batch action answers: the entries that succeeded and those that failed.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchResult<'a, T> {
    successful: Vec<T>,
    failed: Vec<FailedEntry<'a>>,
}

/// A batch entry that succeeded with nothing more to say than its id.
#[derive(Serialize)]
struct BatchId<'a> {
    #[serde(rename = "Id")]
    id: &'a str,
}

/// A batch entry that failed.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FailedEntry<'a> {
    id: &'a str,
    sender_fault: bool,
    code: &'static str,
    message: String,
}

fn failed_entry<'a>(id: &'a str, e: &SqsError) -> FailedEntry<'a> {
    FailedEntry {
        id,
        sender_fault: e.code.sender_fault(),
        code: e.code.json_type(),
        message: e.message.clone(),
    }
}

/// The digests a send answers with; SDKs check them against what they sent.
struct Digests {
    body: String,
    attributes: Option<String>,
    system: Option<String>,
}

/// SendMessage's answer, and a SendMessageBatch entry's (which adds its `Id`).
#[derive(Serialize)]
struct SentMessage<'a> {
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "MD5OfMessageBody")]
    body_md5: String,
    #[serde(rename = "MD5OfMessageAttributes", skip_serializing_if = "Option::is_none")]
    attributes_md5: Option<String>,
    #[serde(rename = "MD5OfMessageSystemAttributes", skip_serializing_if = "Option::is_none")]
    system_md5: Option<String>,
    #[serde(rename = "SequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
}

impl<'a> SentMessage<'a> {
    fn new(id: Option<&'a str>, digests: Digests, sent: &Sent, fifo: bool) -> Self {
        SentMessage {
            id,
            message_id: sent.message_id.to_string(),
            body_md5: digests.body,
            attributes_md5: digests.attributes,
            system_md5: digests.system,
            sequence_number: fifo.then(|| format!("{:020}", sent.sequence_number)),
        }
    }
}

/// An output for the caller's protocol: JSON callers get the text straight from the typed
/// output (no document built, walked and dropped on the hot actions), Query callers the
/// document their XML is rendered from.
fn output<T: Serialize>(value: &T, ctx: &RequestContext) -> SqsResult<Output> {
    let rendered = if ctx.json {
        serde_json::to_string(value).map(Output::Json)
    } else {
        serde_json::to_value(value).map(Output::Doc)
    };
    rendered.map_err(|e| SqsError::internal(e.to_string()))
}

/// A parsed, validated SendMessage (or batch entry), before it reaches the engine.
struct Outgoing {
    body: String,
    attributes: Vec<MessageAttribute>,
    system: Vec<MessageAttribute>,
    delay: Option<Duration>,
    group_id: Option<String>,
    dedup_id: Option<String>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.body.len() + self.attributes.iter().map(MessageAttribute::size).sum::<usize>()
    }
}

impl Sqs {
    pub fn new(broker: Arc<Broker>, config: SqsConfig) -> Self {
        Sqs {
            broker,
            config,
            purges: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            moves: Mutex::new(HashMap::new()),
        }
    }

    fn vhost(&self) -> SqsResult<Arc<VHost>> {
        self.broker.vhost(&self.config.vhost).map_err(SqsError::internal)
    }

    fn arn_ctx(&self) -> ArnContext<'_> {
        ArnContext { region: &self.config.region, account: &self.config.account_id }
    }

    fn url(&self, ctx: &RequestContext, name: &str) -> String {
        format!("http://{}/{}/{}", ctx.host, self.config.account_id, name)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.broker.clock().now_ms()
    }

    /// The queue a QueueUrl names. Queues other protocols made with names SQS cannot spell,
    /// and other connections' exclusive queues, do not exist as far as SQS is concerned.
    fn queue(&self, p: Params<'_>) -> SqsResult<Arc<Queue>> {
        let url = p.str_req("QueueUrl")?;
        self.queue_named(queue_name_from_url(url))
    }

    fn queue_named(&self, name: &str) -> SqsResult<Arc<Queue>> {
        if !valid_queue_name(name) {
            return Err(SqsError::no_queue());
        }
        let q = self.vhost()?.queue(name)?;
        if q.exclusive_owner().is_some() {
            return Err(SqsError::no_queue());
        }
        Ok(q)
    }

    /// Queues SQS can see, sorted by name.
    fn sqs_queues(&self) -> SqsResult<Vec<Arc<Queue>>> {
        let mut qs: Vec<Arc<Queue>> = self
            .vhost()?
            .queues()
            .into_iter()
            .filter(|q| valid_queue_name(q.name()) && q.exclusive_owner().is_none())
            .collect();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(qs)
    }

    pub async fn call(&self, action: &str, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        match action {
            // The hot actions answer from typed outputs (see `output`).
            "ReceiveMessage" => self.receive_message(p, ctx).await,
            "SendMessage" => self.send_message(p, ctx).await,
            "SendMessageBatch" => self.send_message_batch(p, ctx).await,
            "DeleteMessageBatch" => self.delete_message_batch(p, ctx).await,
            "ChangeMessageVisibilityBatch" => self.change_message_visibility_batch(p, ctx),
            _ => self.call_for_document(action, p, ctx).await.map(Output::Doc),
        }
    }

    async fn call_for_document(&self, action: &str, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Value> {
        match action {
            "CreateQueue" => self.create_queue(p, ctx),
            "DeleteQueue" => self.delete_queue(p),
            "GetQueueUrl" => self.get_queue_url(p, ctx),
            "ListQueues" => self.list_queues(p, ctx),
            "GetQueueAttributes" => self.get_queue_attributes(p),
            "SetQueueAttributes" => self.set_queue_attributes(p),
            "PurgeQueue" => self.purge_queue(p),
            "DeleteMessage" => self.delete_message(p).await,
            "ChangeMessageVisibility" => self.change_message_visibility(p),
            "ListDeadLetterSourceQueues" => self.list_dead_letter_source_queues(p, ctx),
            "TagQueue" => self.tag_queue(p),
            "UntagQueue" => self.untag_queue(p),
            "ListQueueTags" => self.list_queue_tags(p),
            "AddPermission" => self.add_permission(p),
            "RemovePermission" => self.remove_permission(p),
            "StartMessageMoveTask" => self.start_message_move_task(p),
            "CancelMessageMoveTask" => self.cancel_message_move_task(p),
            "ListMessageMoveTasks" => self.list_message_move_tasks(p),
            _ => Err(SqsError::new(
                ErrorCode::InvalidAction,
                format!("The action {action} is not valid for this endpoint."),
            )),
        }
    }

    // ---- queues --------------------------------------------------------------------------

    fn create_queue(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Value> {
        let name = p.str_req("QueueName")?;
        let attrs = p.str_map("Attributes")?;
        let mut tags = p.str_map("tags")?;
        tags.extend(p.str_map("Tags")?);
        let fifo_name = name.ends_with(".fifo");
        let fifo_attr = match attrs.get("FifoQueue") {
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                return Err(SqsError::new(
                    ErrorCode::InvalidAttributeValue,
                    "Invalid value for the parameter FifoQueue.",
                ))
            }
            None => false,
        };
        if !valid_queue_name(name) || fifo_name != fifo_attr {
            return Err(SqsError::invalid(if fifo_attr || fifo_name {
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, \
                 must end with .fifo suffix and be 1 to 80 in length."
            } else {
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
            }));
        }
        check_tags(&tags)?;
        let vhost = self.vhost()?;
        if let Ok(existing) = vhost.queue(name) {
            return self.create_existing(&existing, &attrs, ctx);
        }
        self.check_not_deleted_recently(name)?;
        let mut settings = if fifo_attr { QueueSettings::fifo() } else { QueueSettings::default() };
        settings.durable = true;
        attributes::apply(&mut settings, &attrs, true)?;
        self.check_redrive_allowed(name, &settings)?;
        let now = (self.now_ms() / 1000).to_string();
        settings.attributes.insert(CREATED.to_owned(), now.clone());
        settings.attributes.insert(MODIFIED.to_owned(), now);
        for (k, v) in &tags {
            settings.attributes.insert(format!("{TAG_PREFIX}{k}"), v.clone());
        }
        match vhost.declare_queue(name, settings) {
            Ok(_) => Ok(json!({"QueueUrl": self.url(ctx, name)})),
            // Lost a race with another CreateQueue of the same name: judge against the winner.
            Err(CoreError::PreconditionFailed { .. }) => {
                let existing = vhost.queue(name)?;
                self.create_existing(&existing, &attrs, ctx)
            }
            Err(CoreError::InvalidArgument(m)) => Err(SqsError::invalid(m)),
            Err(e) => Err(e.into()),
        }
    }

    /// CreateQueue of a name that exists: fine if every attribute given matches.
    fn create_existing(
        &self,
        q: &Arc<Queue>,
        attrs: &BTreeMap<String, String>,
        ctx: &RequestContext,
    ) -> SqsResult<Value> {
        let s = q.settings();
        if s.exclusive_owner.is_some() {
            return Err(SqsError::new(ErrorCode::QueueNameExists, "A queue with this name already exists."));
        }
        let stats = q.stats();
        let arn = self.arn_ctx();
        for (name, requested) in attrs {
            let same = if name == "FifoQueue" {
                requested.eq_ignore_ascii_case("true") == (s.kind == QueueKind::Fifo)
            } else {
                if !attributes::is_readable(name) {
                    return Err(attributes::unknown_attribute(name));
                }
                let current = attributes::read(name, q.name(), &s, &stats, &arn);
                attributes::same_value(name, requested, current.as_deref())
            };
            if !same {
                return Err(SqsError::new(
                    ErrorCode::QueueNameExists,
                    format!("A queue already exists with the same name and a different value for attribute {name}"),
                ));
            }
        }
        Ok(json!({"QueueUrl": self.url(ctx, q.name())}))
    }

    /// The dead-letter queue's RedriveAllowPolicy must admit `source`.
    fn check_redrive_allowed(&self, source: &str, settings: &QueueSettings) -> SqsResult<()> {
        let Some(r) = &settings.redrive else { return Ok(()) };
        let Ok(dlq) = self.vhost()?.queue(&r.dead_letter_queue) else {
            return Err(SqsError::invalid(format!(
                "Value {} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.",
                self.arn_ctx().arn(&r.dead_letter_queue)
            )));
        };
        let dlq_settings = dlq.settings();
        if let Some(policy) = attributes::verbatim(&dlq_settings, "RedriveAllowPolicy") {
            let allow = attributes::parse_redrive_allow(policy)?;
            if !allow.allows(&self.arn_ctx().arn(source)) {
                return Err(SqsError::invalid(format!(
                    "Value for parameter RedrivePolicy is invalid. Reason: Queue {} does not allow {source} \
                     to use it as its dead-letter queue (RedriveAllowPolicy).",
                    r.dead_letter_queue
                )));
            }
        }
        Ok(())
    }

    fn delete_queue(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        self.vhost()?.delete_queue(q.name(), false, false)?;
        self.purges.lock().remove(&q.id());
        if self.config.recreate_delay_ms > 0 {
            let now = self.now_ms();
            let mut deleted = self.deleted.lock();
            // Forget what is past the window, so the map holds only recent deletions.
            deleted.retain(|_, at| now.saturating_sub(*at) < self.config.recreate_delay_ms);
            deleted.insert(q.name().to_owned(), now);
        }
        Ok(json!({}))
    }

    /// AWS refuses to create a queue under a name deleted less than 60 s ago.
    fn check_not_deleted_recently(&self, name: &str) -> SqsResult<()> {
        let deleted_at = self.deleted.lock().get(name).copied();
        match deleted_at {
            Some(at) if self.now_ms().saturating_sub(at) < self.config.recreate_delay_ms => {
                Err(SqsError::new(
                    ErrorCode::QueueDeletedRecently,
                    format!(
                        "You must wait {} seconds after deleting a queue before you can create another with the same name.",
                        self.config.recreate_delay_ms.div_ceil(1000)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn get_queue_url(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Value> {
        let name = p.str_req("QueueName")?;
        let q = self.queue_named(name)?;
        Ok(json!({"QueueUrl": self.url(ctx, q.name())}))
    }

    /// One page of `names` after NextToken (MaxResults given: with a NextToken if more remain).
    fn page(
        &self,
        p: Params<'_>,
        names: Vec<String>,
        ctx: &RequestContext,
        member: &str,
    ) -> SqsResult<Value> {
        let max = ranged(p, "MaxResults", 1, MAX_LIST_RESULTS, "MaxResults must be between 1 and 1000.")?;
        let after = match p.str_opt("NextToken")? {
            Some(t) if !t.is_empty() => Some(decode_token(t)?),
            _ => None,
        };
        let start = after.map_or(0, |a| names.partition_point(|n| n.as_str() <= a.as_str()));
        let limit = usize::try_from(max.unwrap_or(MAX_LIST_RESULTS)).unwrap_or(1000);
        let page: Vec<&String> = names[start..].iter().take(limit).collect();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert(member.into(), page.iter().map(|n| Value::String(self.url(ctx, n))).collect());
        }
        if max.is_some() && start + page.len() < names.len() {
            if let Some(last) = page.last() {
                out.insert("NextToken".into(), Value::String(encode_token(last)));
            }
        }
        Ok(Value::Object(out))
    }

    fn list_queues(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Value> {
        let prefix = p.str_opt("QueueNamePrefix")?.unwrap_or("");
        let names = self
            .sqs_queues()?
            .iter()
            .map(|q| q.name().to_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        self.page(p, names, ctx, "QueueUrls")
    }

    fn list_dead_letter_source_queues(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Value> {
        let dlq = self.queue(p)?;
        let names = self
            .sqs_queues()?
            .iter()
            .filter(|q| q.settings().redrive.as_ref().is_some_and(|r| r.dead_letter_queue == dlq.name()))
            .map(|q| q.name().to_owned())
            .collect();
        let mut out = self.page(p, names, ctx, "queueUrls")?;
        if let Value::Object(m) = &mut out {
            // Unlike ListQueues, the list member is required in this output.
            m.entry("queueUrls").or_insert_with(|| json!([]));
        }
        Ok(out)
    }

    fn get_queue_attributes(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let names = p.str_list("AttributeNames")?;
        let attrs = attributes::read_many(&names, q.name(), &q.settings(), &q.stats(), &self.arn_ctx())?;
        if attrs.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({"Attributes": attrs}))
    }

    fn set_queue_attributes(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let attrs = p.str_map("Attributes")?;
        let now = (self.now_ms() / 1000).to_string();
        // Validated and applied in one step under the engine's definitions lock: any error
        // (ours or the engine's) leaves the settings as they were.
        q.try_update_settings(|s| {
            attributes::apply(s, &attrs, false)?;
            if attrs.contains_key("RedrivePolicy") {
                self.check_redrive_allowed(q.name(), s)?;
            }
            s.attributes.insert(MODIFIED.to_owned(), now);
            Ok::<(), SqsError>(())
        })?;
        Ok(json!({}))
    }

    fn purge_queue(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let now = self.now_ms();
        {
            let mut purges = self.purges.lock();
            if let Some(at) = purges.get(&q.id()) {
                if now.saturating_sub(*at) < PURGE_WINDOW_MS {
                    return Err(SqsError::new(
                        ErrorCode::PurgeQueueInProgress,
                        format!("Only one PurgeQueue operation on {} is allowed every 60 seconds.", q.name()),
                    ));
                }
            }
            purges.insert(q.id(), now);
        }
        // AWS deletes in-flight messages too (unlike AMQP's queue.purge).
        q.purge_all()?;
        Ok(json!({}))
    }

    // ---- tags and permissions ------------------------------------------------------------

    fn tag_queue(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let tags = p.str_map("Tags")?;
        if tags.is_empty() {
            return Err(SqsError::missing("Tags"));
        }
        check_tags(&tags)?;
        let current = q.settings();
        let existing: HashSet<&str> =
            current.attributes.keys().filter_map(|k| k.strip_prefix(TAG_PREFIX)).collect();
        let total = existing.len() + tags.keys().filter(|k| !existing.contains(k.as_str())).count();
        if total > MAX_TAGS {
            return Err(SqsError::invalid(format!("Too many tags added for queue {}.", q.name())));
        }
        q.update_settings(|s| {
            for (k, v) in &tags {
                s.attributes.insert(format!("{TAG_PREFIX}{k}"), v.clone());
            }
        })?;
        Ok(json!({}))
    }

    fn untag_queue(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let keys = p.str_list("TagKeys")?;
        if keys.is_empty() {
            return Err(SqsError::missing("TagKeys"));
        }
        q.update_settings(|s| {
            for k in &keys {
                s.attributes.remove(&format!("{TAG_PREFIX}{k}"));
            }
        })?;
        Ok(json!({}))
    }

    fn list_queue_tags(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let tags: Map<String, Value> = q
            .settings()
            .attributes
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(TAG_PREFIX).map(|t| (t.to_owned(), Value::String(v.clone()))))
            .collect();
        if tags.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({"Tags": tags}))
    }

    fn add_permission(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let label = p.str_req("Label")?;
        if label.is_empty()
            || label.len() > 80
            || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SqsError::invalid_param(
                "Label",
                label,
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        let accounts = p.str_list("AWSAccountIds")?;
        if accounts.is_empty() {
            return Err(SqsError::missing("AWSAccountIds"));
        }
        let actions = p.str_list("Actions")?;
        if actions.is_empty() {
            return Err(SqsError::missing("Actions"));
        }
        for a in &actions {
            if *a != "*" && !ACTIONS.contains(a) {
                return Err(SqsError::invalid_param(
                    "ActionName",
                    a,
                    "Only the queue owner is allowed to invoke this action.",
                ));
            }
        }
        let arn = self.arn_ctx().arn(q.name());
        let settings = q.settings();
        let mut policy: Value = match attributes::verbatim(&settings, "Policy") {
            Some(text) => serde_json::from_str(text).map_err(SqsError::internal)?,
            None => {
                json!({"Version": "2012-10-17", "Id": format!("{arn}/SQSDefaultPolicy"), "Statement": []})
            }
        };
        let statements = statements_mut(&mut policy)?;
        if statements.iter().any(|s| s.get("Sid").and_then(Value::as_str) == Some(label)) {
            return Err(SqsError::invalid_param("Label", label, "Already exists."));
        }
        let principals: Vec<Value> =
            accounts.iter().map(|a| Value::String(format!("arn:aws:iam::{a}:root"))).collect();
        let sqs_actions: Vec<Value> = actions.iter().map(|a| Value::String(format!("SQS:{a}"))).collect();
        statements.push(json!({
            "Sid": label,
            "Effect": "Allow",
            "Principal": {"AWS": one_or_many(principals)},
            "Action": one_or_many(sqs_actions),
            "Resource": arn,
        }));
        let text = policy.to_string();
        q.update_settings(|s| {
            s.attributes.insert(format!("{}Policy", attributes::PREFIX), text);
        })?;
        Ok(json!({}))
    }

    fn remove_permission(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let label = p.str_req("Label")?;
        let not_found = || SqsError::invalid_param("Label", label, "can't find label on existing policy.");
        let settings = q.settings();
        let Some(text) = attributes::verbatim(&settings, "Policy") else { return Err(not_found()) };
        let mut policy: Value = serde_json::from_str(text).map_err(|_| not_found())?;
        let statements = statements_mut(&mut policy)?;
        let before = statements.len();
        statements.retain(|s| s.get("Sid").and_then(Value::as_str) != Some(label));
        if statements.len() == before {
            return Err(not_found());
        }
        let empty = statements.is_empty();
        let text = policy.to_string();
        q.update_settings(|s| {
            let key = format!("{}Policy", attributes::PREFIX);
            if empty {
                s.attributes.remove(&key);
            } else {
                s.attributes.insert(key, text);
            }
        })?;
        Ok(json!({}))
    }

    // ---- messages ------------------------------------------------------------------------

    fn parse_send(&self, p: Params<'_>, settings: &QueueSettings) -> SqsResult<Outgoing> {
        let fifo = settings.kind == QueueKind::Fifo;
        let body = p.str_opt("MessageBody")?.unwrap_or("");
        message::check_body(body)?;
        let attributes = message::parse_attributes(p, "MessageAttributes")?;
        let system = message::parse_system_attributes(p)?;
        let delay = ranged(p, "DelaySeconds", 0, 900, "DelaySeconds must be >= 0 and <= 900.")?;
        let delay = match delay {
            Some(d) if fifo && d != 0 => {
                return Err(SqsError::invalid_param(
                    "DelaySeconds",
                    d,
                    "The request include parameter that is not valid for this queue type.",
                ))
            }
            Some(_) if fifo => None,
            Some(d) => Some(secs(d)),
            None => None,
        };
        let group_id = p.str_opt("MessageGroupId")?;
        if let Some(g) = group_id {
            message::check_fifo_id("MessageGroupId", g)?;
        }
        let dedup_id = p.str_opt("MessageDeduplicationId")?;
        if let Some(d) = dedup_id {
            if !fifo {
                return Err(SqsError::invalid_param(
                    "MessageDeduplicationId",
                    d,
                    "The request includes a parameter that is not valid for this queue type.",
                ));
            }
            message::check_fifo_id("MessageDeduplicationId", d)?;
        }
        if fifo {
            if group_id.is_none() {
                return Err(SqsError::missing("MessageGroupId"));
            }
            if dedup_id.is_none() && !settings.content_based_dedup {
                return Err(SqsError::invalid(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId \
                     provided explicitly",
                ));
            }
        }
        let out = Outgoing {
            body: body.to_owned(),
            attributes,
            system,
            delay,
            group_id: group_id.map(str::to_owned),
            dedup_id: dedup_id.map(str::to_owned),
        };
        let limit = settings.max_message_size as usize;
        if out.size() > limit {
            return Err(SqsError::invalid(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            )));
        }
        Ok(out)
    }

    /// A validated message (whose body's MD5 is `body_md5`) as the engine takes it, and the
    /// digests of its answer.
    fn to_engine(
        &self,
        m: Outgoing,
        body_md5: [u8; 16],
        ctx: &RequestContext,
    ) -> (Message, SendOptions, Digests) {
        let mut system_attributes = BTreeMap::new();
        system_attributes.insert(
            "SenderId".to_owned(),
            ctx.access_key.clone().unwrap_or_else(|| self.config.account_id.clone()),
        );
        for s in &m.system {
            if let AttributeValue::String(v) = &s.value {
                system_attributes.insert(s.name.clone(), v.clone());
            }
        }
        let digests = Digests {
            body: hex(&body_md5),
            attributes: message::md5_of(&m.attributes),
            system: message::md5_of(&m.system),
        };
        let msg = Message {
            body: Bytes::from(m.body),
            headers: message::to_headers(&m.attributes),
            // SQS accepts only what it has made durable: every SQS message is persistent.
            properties: Properties { persistent: true, ..Properties::default() },
            ..Message::default()
        };
        let opts = SendOptions {
            delay: m.delay,
            group_id: m.group_id,
            dedup_id: m.dedup_id,
            system_attributes,
            body_md5: Some(body_md5),
        };
        (msg, opts, digests)
    }

    async fn send_message(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        let q = self.queue(p)?;
        let settings = q.settings();
        let m = self.parse_send(p, &settings)?;
        let body_md5 = md5(m.body.as_bytes());
        let (msg, opts, digests) = self.to_engine(m, body_md5, ctx);
        let sent = q.send(msg, opts)?;
        let out = SentMessage::new(None, digests, &sent, settings.kind == QueueKind::Fifo);
        wait_durable(sent.durable).await?;
        output(&out, ctx)
    }

    async fn send_message_batch(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        let q = self.queue(p)?;
        let entries = p.struct_list("Entries")?;
        let ids = check_batch(&entries, "SendMessageBatchRequestEntry")?;
        let settings = q.settings();
        let fifo = settings.kind == QueueKind::Fifo;
        let parsed: Vec<SqsResult<Outgoing>> =
            entries.iter().map(|e| self.parse_send(*e, &settings)).collect();
        let total: usize = parsed
            .iter()
            .zip(&entries)
            .map(|(r, e)| match r {
                Ok(m) => m.size(),
                Err(_) => e.str_opt("MessageBody").ok().flatten().map_or(0, str::len),
            })
            .sum();
        if total > MAX_BATCH_BYTES {
            return Err(SqsError::new(
                ErrorCode::BatchRequestTooLong,
                format!("Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes. You have sent {total} bytes."),
            ));
        }
        // The valid entries go to the engine together: one lock, one store write. Their bodies
        // are hashed together too, several at a time.
        let bodies: Vec<&[u8]> = parsed.iter().flatten().map(|m| m.body.as_bytes()).collect();
        let mut body_md5s = md5_each(&bodies).into_iter();
        let mut outputs = Vec::new();
        let mut items = Vec::new();
        let mut failed = Vec::new();
        for (id, r) in ids.iter().zip(parsed) {
            match r {
                Ok(m) => {
                    let body_md5 = body_md5s.next().expect("one digest per valid entry");
                    let (msg, opts, digests) = self.to_engine(m, body_md5, ctx);
                    outputs.push((*id, digests));
                    items.push((msg, opts));
                }
                Err(e) => failed.push(failed_entry(id, &e)),
            }
        }
        let mut ok = Vec::new();
        let mut durable = Durable::done();
        for ((id, digests), sent) in outputs.into_iter().zip(q.send_batch(items)?) {
            match sent {
                Ok(sent) => {
                    ok.push(SentMessage::new(Some(id), digests, &sent, fifo));
                    durable = durable.join(sent.durable);
                }
                Err(e) => failed.push(failed_entry(id, &e.into())),
            }
        }
        // One wait for the whole batch: group commit makes this one sync, not ten.
        wait_durable(durable).await?;
        output(&BatchResult { successful: ok, failed }, ctx)
    }

    async fn receive_message(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        let q = self.queue(p)?;
        let max =
            ranged(p, "MaxNumberOfMessages", 1, 10, "Must be between 1 and 10, if provided.")?.unwrap_or(1);
        let visibility = ranged(
            p,
            "VisibilityTimeout",
            0,
            attributes::MAX_VISIBILITY_SECONDS,
            "Must be between 0 and 43200, if provided.",
        )?;
        let wait = ranged(
            p,
            "WaitTimeSeconds",
            0,
            attributes::MAX_WAIT_SECONDS,
            "Must be >= 0 and <= 20, if provided.",
        )?;
        let mut system_names = p.str_list("AttributeNames")?;
        system_names.extend(p.str_list("MessageSystemAttributeNames")?);
        // The deprecated AttributeNames member is typed as queue attribute names, so clients
        // send those too; they are accepted and mean nothing for a message.
        if let Some(bad) =
            system_names.iter().find(|n| !SYSTEM_ATTRIBUTES.contains(n) && !attributes::is_readable(n))
        {
            return Err(attributes::unknown_attribute(bad));
        }
        let patterns = p.str_list("MessageAttributeNames")?;
        let fifo = q.kind() == QueueKind::Fifo;
        let attempt = match p.str_opt("ReceiveRequestAttemptId")? {
            Some(a) => {
                message::check_fifo_id("ReceiveRequestAttemptId", a)?;
                // Only FIFO queues deduplicate receives; standard queues ignore the id.
                fifo.then(|| (q.id(), a.to_owned()))
            }
            None => None,
        };
        if let Some(key) = &attempt {
            let now = self.now_ms();
            let mut attempts = self.attempts.lock();
            attempts.retain(|_, a| a.valid_until_ms > now);
            if let Some(a) = attempts.get(key) {
                return Ok(Output::Doc(a.response.clone()));
            }
        }
        let req = ReceiveRequest {
            max: usize::try_from(max).unwrap_or(1),
            visibility: visibility.map(secs),
            wait: wait.map(secs),
        };
        let deliveries = q.receive(req).await?;
        if deliveries.is_empty() {
            return Ok(Output::Doc(json!({})));
        }
        let arn = self.arn_ctx();
        let received = Received {
            messages: deliveries
                .iter()
                .map(|d| ReceivedMessage::new(d, &system_names, &patterns, fifo, &arn))
                .collect(),
        };
        // A FIFO receive attempt keeps its answer as a document, to give again on a retry.
        let Some(key) = attempt else {
            return output(&received, ctx);
        };
        let response = serde_json::to_value(&received).map_err(|e| SqsError::internal(e.to_string()))?;
        let lease_ms = visibility.map_or(q.settings().visibility_timeout_ms, |v| secs(v).as_millis() as u64);
        let valid_until_ms = self.now_ms() + lease_ms.min(ATTEMPT_WINDOW_MS);
        let mut attempts = self.attempts.lock();
        if attempts.len() < MAX_ATTEMPTS {
            let receipts = deliveries.iter().map(|d| d.receipt).collect();
            attempts.insert(key, Attempt { valid_until_ms, receipts, response: response.clone() });
        }
        Ok(Output::Doc(response))
    }

    async fn delete_message(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        let handle = p.str_req("ReceiptHandle")?;
        let d = self.delete_one(&q, handle)?;
        wait_durable(d).await?;
        Ok(json!({}))
    }

    async fn delete_message_batch(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        let q = self.queue(p)?;
        let entries = p.struct_list("Entries")?;
        let ids = check_batch(&entries, "DeleteMessageBatchRequestEntry")?;
        // Entries whose handle decodes go to the engine together: one lock, one store write.
        let mut decoded = Vec::new();
        let mut receipts = Vec::new();
        let mut failed = Vec::new();
        for (id, e) in ids.iter().zip(&entries) {
            match e.str_req("ReceiptHandle").and_then(|h| Ok((h, decode_receipt(h)?))) {
                Ok((handle, receipt)) => {
                    self.forget_attempts(receipt);
                    decoded.push((*id, handle));
                    receipts.push(receipt);
                }
                Err(err) => failed.push(failed_entry(id, &err)),
            }
        }
        let mut ok = Vec::new();
        let mut durable = Durable::done();
        for ((id, handle), deleted) in decoded.into_iter().zip(q.delete_batch(&receipts)?) {
            match deleted {
                Ok(settled) => match settled.durable.write_error() {
                    // The store refused this one's delete: that entry fails, not the whole batch.
                    Some(e) => failed.push(failed_entry(id, &SqsError::internal(e))),
                    None => {
                        durable = durable.join(settled.durable);
                        ok.push(BatchId { id });
                    }
                },
                Err(e) => failed.push(failed_entry(id, &delete_error(handle, e))),
            }
        }
        wait_durable(durable).await?;
        output(&BatchResult { successful: ok, failed }, ctx)
    }

    fn change_message_visibility(&self, p: Params<'_>) -> SqsResult<Value> {
        let q = self.queue(p)?;
        self.change_one(&q, p)?;
        Ok(json!({}))
    }

    fn change_message_visibility_batch(&self, p: Params<'_>, ctx: &RequestContext) -> SqsResult<Output> {
        let q = self.queue(p)?;
        let entries = p.struct_list("Entries")?;
        let ids = check_batch(&entries, "ChangeMessageVisibilityBatchRequestEntry")?;
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for (id, e) in ids.iter().zip(&entries) {
            match self.change_one(&q, *e) {
                Ok(()) => ok.push(BatchId { id }),
                Err(err) => failed.push(failed_entry(id, &err)),
            }
        }
        output(&BatchResult { successful: ok, failed }, ctx)
    }

    // ---- message move tasks ----------------------------------------------------------------

    /// The queue an ARN names, or ResourceNotFoundException naming the parameter.
    fn queue_by_arn(&self, param: &str, arn: &str) -> SqsResult<Arc<Queue>> {
        let missing = || {
            SqsError::new(
                ErrorCode::ResourceNotFound,
                format!("The resource that you specified for the {param} parameter doesn't exist."),
            )
        };
        let name = attributes::queue_name_from_arn(arn).ok_or_else(missing)?;
        self.queue_named(name).map_err(|_| missing())
    }

    fn start_message_move_task(&self, p: Params<'_>) -> SqsResult<Value> {
        let source_arn = p.str_req("SourceArn")?;
        let source = self.queue_by_arn("SourceArn", source_arn)?;
        let rate = ranged(
            p,
            "MaxNumberOfMessagesPerSecond",
            1,
            MAX_MOVE_RATE,
            "MaxNumberOfMessagesPerSecond must be between 1 and 500.",
        )?;
        let sources: Vec<Arc<Queue>> = self
            .sqs_queues()?
            .into_iter()
            .filter(|q| q.settings().redrive.as_ref().is_some_and(|r| r.dead_letter_queue == source.name()))
            .collect();
        if sources.is_empty() {
            return Err(SqsError::invalid("Source queue must be configured as a Dead Letter Queue."));
        }
        let destination_arn = p.str_opt("DestinationArn")?;
        let destination = match destination_arn {
            Some(arn) => {
                let q = self.queue_by_arn("DestinationArn", arn)?;
                if q.id() == source.id() {
                    return Err(SqsError::invalid("The destination must differ from the source queue."));
                }
                movetask::Destination::Queue(q)
            }
            // Each message goes back to the queue it was redriven from (the engine records
            // it); one sent straight to the DLQ goes to its only source queue, if it has one.
            None => {
                movetask::Destination::Sources { fallback: (sources.len() == 1).then(|| sources[0].clone()) }
            }
        };
        let mut moves = self.moves.lock();
        let history = moves.entry(source.name().to_owned()).or_default();
        if history.iter().any(|t| matches!(t.status(), "RUNNING" | "CANCELLING")) {
            return Err(SqsError::invalid("There can be only one active message movement task per queue."));
        }
        let task = Arc::new(MoveTask::new(
            source_arn.to_owned(),
            destination_arn.map(str::to_owned),
            rate,
            source.stats().ready,
            self.now_ms(),
        ));
        history.push(task.clone());
        if history.len() > TASK_HISTORY {
            history.remove(0);
        }
        let handle = task.handle.clone();
        tokio::spawn(movetask::run(task, source, destination, self.broker.clock()));
        Ok(json!({"TaskHandle": handle}))
    }

    fn cancel_message_move_task(&self, p: Params<'_>) -> SqsResult<Value> {
        let handle = p.str_req("TaskHandle")?;
        let source_arn = movetask::decode_handle(handle)?;
        let name = attributes::queue_name_from_arn(&source_arn).unwrap_or("");
        let task = self
            .moves
            .lock()
            .get(name)
            .and_then(|h| h.iter().find(|t| t.handle == handle).cloned())
            .ok_or_else(|| {
            SqsError::new(ErrorCode::ResourceNotFound, "The specified task handle does not exist.")
        })?;
        if !task.cancel() {
            return Err(SqsError::invalid("Only a running message movement task can be cancelled."));
        }
        Ok(json!({"ApproximateNumberOfMessagesMoved": task.moved()}))
    }

    fn list_message_move_tasks(&self, p: Params<'_>) -> SqsResult<Value> {
        let source_arn = p.str_req("SourceArn")?;
        let source = self.queue_by_arn("SourceArn", source_arn)?;
        let max = ranged(p, "MaxResults", 1, 10, "MaxResults must be between 1 and 10.")?.unwrap_or(1);
        let results: Vec<Value> = self
            .moves
            .lock()
            .get(source.name())
            .map(|h| h.iter().rev().take(usize::try_from(max).unwrap_or(1)).map(|t| t.to_json()).collect())
            .unwrap_or_default();
        Ok(json!({"Results": results}))
    }

    /// Deleting or changing the visibility of a message ends the retry window of the receive
    /// that returned it.
    fn forget_attempts(&self, receipt: Receipt) {
        let mut attempts = self.attempts.lock();
        if !attempts.is_empty() {
            attempts.retain(|_, a| !a.receipts.contains(&receipt));
        }
    }

    fn delete_one(&self, q: &Queue, handle: &str) -> SqsResult<Durable> {
        let receipt = decode_receipt(handle)?;
        self.forget_attempts(receipt);
        q.delete(receipt).map(|s| s.durable).map_err(|e| delete_error(handle, e))
    }

    fn change_one(&self, q: &Queue, p: Params<'_>) -> SqsResult<()> {
        let handle = p.str_req("ReceiptHandle")?;
        let timeout = p.int_req("VisibilityTimeout")?;
        if !(0..=attributes::MAX_VISIBILITY_SECONDS).contains(&timeout) {
            return Err(SqsError::invalid_param(
                "VisibilityTimeout",
                timeout,
                "VisibilityTimeout must be an integer between 0 and 43200",
            ));
        }
        let receipt = decode_receipt(handle)?;
        self.forget_attempts(receipt);
        match q.change_visibility(receipt, secs(timeout)) {
            Ok(()) => Ok(()),
            Err(CoreError::ReceiptHandleInvalid) => Err(SqsError::bad_receipt(handle)),
            Err(CoreError::InvalidArgument(_)) => Err(SqsError::invalid_param(
                "VisibilityTimeout",
                timeout,
                "Total VisibilityTimeout for the message is beyond the limit [43200 seconds]",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the engine assigned a sent message, added to its output document.
/// The SQS error for a failed delete of `handle`.
fn delete_error(handle: &str, e: CoreError) -> SqsError {
    match e {
        CoreError::ReceiptHandleInvalid => SqsError::bad_receipt(handle),
        e => e.into(),
    }
}

/// System attribute names a receive may ask for.
pub const SYSTEM_ATTRIBUTES: &[&str] = &[
    "All",
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
    "SqsManagedSseEnabled",
];

/// A ReceiveMessage output. Serialized straight to JSON on the hot path (no document in
/// between), or to a document for the Query protocol's XML.
#[derive(Serialize)]
struct Received<'a> {
    #[serde(rename = "Messages")]
    messages: Vec<ReceivedMessage<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceivedMessage<'a> {
    message_id: String,
    receipt_handle: String,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: String,
    body: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'static str, String>,
    #[serde(rename = "MD5OfMessageAttributes", skip_serializing_if = "Option::is_none")]
    md5_of_message_attributes: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    message_attributes: Map<String, Value>,
}

impl<'a> ReceivedMessage<'a> {
    fn new(
        d: &'a Delivery,
        system_names: &[&str],
        patterns: &[&str],
        fifo: bool,
        arn: &ArnContext<'_>,
    ) -> Self {
        // Bodies from other protocols may be any bytes; SQS bodies are text, so show them
        // lossily rather than fail the whole receive. (`from_utf8` first: its ASCII fast path is
        // several times quicker than the lossy decoder's on the valid text nearly every body is.)
        let body = match std::str::from_utf8(&d.message.body) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&d.message.body),
        };
        // Messages SQS accepted carry the digest it answered the sender with; others (AMQP,
        // SNS) are hashed here.
        let body_md5 = d.body_md5.unwrap_or_else(|| md5(body.as_bytes()));
        let want = |n: &str| system_names.iter().any(|s| *s == "All" || *s == n);
        let mut attributes = BTreeMap::new();
        let mut put = |k: &'static str, v: String| {
            if want(k) {
                attributes.insert(k, v);
            }
        };
        if let Some(sender) = d.system_attributes.get("SenderId") {
            put("SenderId", sender.clone());
        }
        put("SentTimestamp", d.sent_ms.to_string());
        put("ApproximateReceiveCount", d.receive_count.to_string());
        put("ApproximateFirstReceiveTimestamp", d.first_receive_ms.to_string());
        if let Some(trace) = d.system_attributes.get("AWSTraceHeader") {
            put("AWSTraceHeader", trace.clone());
        }
        if let Some(g) = &d.group_id {
            put("MessageGroupId", g.clone());
        }
        if let Some(source) = &d.dead_letter_source {
            put("DeadLetterQueueSourceArn", arn.arn(source));
        }
        if fifo {
            if let Some(dd) = &d.dedup_id {
                put("MessageDeduplicationId", dd.clone());
            }
            put("SequenceNumber", format!("{:020}", d.sequence_number));
        }
        let selected: Vec<MessageAttribute> = if patterns.is_empty() {
            Vec::new()
        } else {
            message::from_headers(&d.message.headers)
                .into_iter()
                .filter(|a| message::attribute_selected(patterns, &a.name))
                .collect()
        };
        ReceivedMessage {
            message_id: d.message_id.to_string(),
            receipt_handle: d.receipt.encode(),
            md5_of_body: hex(&body_md5),
            body,
            attributes,
            md5_of_message_attributes: message::md5_of(&selected),
            message_attributes: selected.iter().map(|a| (a.name.clone(), a.to_json())).collect(),
        }
    }
}

fn decode_receipt(handle: &str) -> SqsResult<Receipt> {
    Receipt::decode(handle).map_err(|_| SqsError::bad_receipt(handle))
}

/// The checks every batch shares; returns the entry ids in order.
fn check_batch<'a>(entries: &[Params<'a>], entry_kind: &str) -> SqsResult<Vec<&'a str>> {
    if entries.is_empty() {
        return Err(SqsError::new(
            ErrorCode::EmptyBatchRequest,
            format!("There should be at least one {entry_kind} in the request."),
        ));
    }
    if entries.len() > MAX_BATCH_ENTRIES {
        return Err(SqsError::new(
            ErrorCode::TooManyEntriesInBatchRequest,
            format!(
                "Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {}.",
                entries.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries {
        let id = e.str_req("Id")?;
        if id.is_empty()
            || id.len() > MAX_BATCH_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SqsError::new(
                ErrorCode::InvalidBatchEntryId,
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be \
                 at most 80 letters long.",
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::new(ErrorCode::BatchEntryIdsNotDistinct, format!("Id {id} repeated.")));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn check_tags(tags: &BTreeMap<String, String>) -> SqsResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(SqsError::invalid(format!("Too many tags: at most {MAX_TAGS} per queue.")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY_LEN {
            return Err(SqsError::invalid(format!(
                "Tag key '{k}' must be 1 to {MAX_TAG_KEY_LEN} characters long."
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(SqsError::invalid(format!(
                "The value of tag '{k}' must be at most {MAX_TAG_VALUE_LEN} characters long."
            )));
        }
    }
    Ok(())
}

fn one_or_many(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(items)
    }
}

fn statements_mut(policy: &mut Value) -> SqsResult<&mut Vec<Value>> {
    let Value::Object(m) = policy else { return Err(SqsError::internal("stored policy is not an object")) };
    let entry = m.entry("Statement").or_insert_with(|| json!([]));
    if let Value::Object(_) = entry {
        // A hand-written policy may hold one statement as an object.
        let single = entry.take();
        *entry = Value::Array(vec![single]);
    }
    match entry {
        Value::Array(a) => Ok(a),
        _ => Err(SqsError::internal("stored policy has no statement list")),
    }
}

fn encode_token(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_token(token: &str) -> SqsResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| SqsError::invalid("Invalid NextToken value."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(valid_queue_name("orders"));
        assert!(valid_queue_name("a-b_C9.fifo"));
        assert!(valid_queue_name(&"x".repeat(80)));
        assert!(!valid_queue_name(&"x".repeat(81)));
        assert!(!valid_queue_name(&format!("{}.fifo", "x".repeat(76))));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name(".fifo"));
        assert!(!valid_queue_name("a.b"));
        assert!(!valid_queue_name("a b"));
    }

    #[test]
    fn names_from_urls() {
        assert_eq!(queue_name_from_url("http://localhost:9324/000000000000/q1"), "q1");
        assert_eq!(queue_name_from_url("https://sqs.us-east-1.amazonaws.com/123/q.fifo"), "q.fifo");
        assert_eq!(queue_name_from_url("http://h/000000000000/q/"), "q");
        assert_eq!(queue_name_from_url("q2"), "q2");
        assert_eq!(queue_name_from_url("http://h"), "");
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(decode_token(&encode_token("q-1")).expect("ok"), "q-1");
        assert!(decode_token("***").is_err());
    }
}
