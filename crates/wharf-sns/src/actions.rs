//! Topic, subscription, tag, permission and data-protection actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use wharf_filter_policy::{FilterPolicy, FilterScope};

use crate::error::{SnsError, SnsResult};
use crate::model::{dead_letter_target, sqs_queue_name, Subscription, SubscriptionDef, TopicDef};
use crate::policy::{default_topic_policy, DeliveryPolicy};
use crate::wire::{Params, Xml};
use crate::{RequestContext, Sns};

/// Longest topic name (the `.fifo` suffix included).
pub const MAX_TOPIC_NAME_LEN: usize = 256;
/// Topics per account (AWS: 100,000 standard, 1,000 FIFO).
pub const MAX_TOPICS: usize = 100_000;
pub const MAX_FIFO_TOPICS: usize = 1_000;
/// Tags per topic.
pub const MAX_TAGS: usize = 50;
/// Filter policies per topic (FilterPolicyLimitExceeded past it).
pub const MAX_FILTER_POLICIES_PER_TOPIC: usize = 200;
/// List pages: ListTopics and ListSubscriptions(ByTopic) return 100 at a time.
pub const PAGE: usize = 100;
/// How long a confirmation token is accepted (AWS: 2 days).
pub const TOKEN_VALIDITY_MS: u64 = 2 * 24 * 60 * 60 * 1000;

const TOPIC_ATTRIBUTES: &[&str] = &[
    "DeliveryPolicy",
    "DisplayName",
    "Policy",
    "TracingConfig",
    "KmsMasterKeyId",
    "SignatureVersion",
    "ContentBasedDeduplication",
    "FifoThroughputScope",
    "ArchivePolicy",
    "FifoTopic",
];

const FEEDBACK_PROTOCOLS: &[&str] = &["HTTP", "Firehose", "Lambda", "Application", "SQS"];

fn is_feedback_attribute(name: &str) -> bool {
    FEEDBACK_PROTOCOLS.iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            matches!(rest, "SuccessFeedbackRoleArn" | "FailureFeedbackRoleArn" | "SuccessFeedbackSampleRate")
        })
    })
}

const SUBSCRIPTION_ATTRIBUTES: &[&str] = &[
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "SubscriptionRoleArn",
    "ReplayPolicy",
];

pub const PROTOCOLS: &[&str] =
    &["http", "https", "email", "email-json", "sms", "sqs", "application", "lambda", "firehose"];

fn valid_topic_name(name: &str, fifo: bool) -> bool {
    let base = if fifo {
        match name.strip_suffix(".fifo") {
            Some(b) => b,
            None => return false,
        }
    } else {
        name
    };
    !base.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bool_text(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// Page through `items` (sorted) after `token`, which is the last ARN of the previous page.
fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    key: impl Fn(&T) -> &str,
) -> SnsResult<(Vec<T>, Option<String>)> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => {
            let after = decode_token(t).ok_or_else(|| SnsError::param("NextToken"))?;
            items.iter().position(|i| key(i) > after.as_str()).unwrap_or(items.len())
        }
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > PAGE;
    let page: Vec<T> = rest.into_iter().take(PAGE).collect();
    let next = if more { page.last().map(|i| encode_token(key(i))) } else { None };
    Ok((page, next))
}

fn encode_token(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(t: &str) -> Option<String> {
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..t.len()).step_by(2).map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn tags_of(p: &Params) -> SnsResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for t in p.struct_list("Tags") {
        let key = t.get("Key").ok_or_else(|| SnsError::missing("Tags.member.N.Key"))?;
        let value = t.get("Value").unwrap_or("");
        if key.is_empty() || key.chars().count() > 128 {
            return Err(SnsError::param("Tag Key must be between 1 and 128 characters"));
        }
        if value.chars().count() > 256 {
            return Err(SnsError::param("Tag Value must be at most 256 characters"));
        }
        if out.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(SnsError::param("Duplicated keys are not allowed."));
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

fn subscription_xml(s: &SubscriptionDef) -> Xml {
    let arn = if s.confirmed { s.arn.as_str() } else { "PendingConfirmation" };
    Xml::empty()
        .with_text("SubscriptionArn", arn)
        .with_text("Owner", &s.owner)
        .with_text("Protocol", &s.protocol)
        .with_text("Endpoint", &s.endpoint)
        .with_text("TopicArn", &s.topic_arn)
}

impl Sns {
    pub(crate) fn topic_arn(&self, name: &str) -> String {
        format!("arn:aws:sns:{}:{}:{}", self.config.region, self.config.account_id, name)
    }

    /// Check a TopicArn's form and region as AWS does before looking it up.
    pub(crate) fn check_topic_arn(&self, param: &str, arn: &str) -> SnsResult<()> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() < 6 {
            return Err(SnsError::param(format!(
                "{param} Reason: An ARN must have at least 6 elements, not {}",
                parts.len()
            )));
        }
        if parts[0] != "arn" || parts[2] != "sns" || parts[3] != self.config.region || parts.len() != 6 {
            return Err(SnsError::param(param));
        }
        Ok(())
    }

    pub(crate) fn topic(&self, arn: &str) -> SnsResult<Arc<TopicDef>> {
        self.check_topic_arn("TopicArn", arn)?;
        self.state.read().topics.get(arn).cloned().ok_or_else(SnsError::no_topic)
    }

    fn subscription(&self, arn: &str) -> SnsResult<Arc<Subscription>> {
        self.state.read().subscriptions.get(arn).cloned().ok_or_else(SnsError::no_subscription)
    }

    /// Persist the whole SNS document. Called with the state's write lock held, so saves
    /// happen in the order of the changes.
    pub(crate) fn save(&self, state: &crate::model::State) -> SnsResult<()> {
        self.broker.save_extension(crate::model::EXTENSION, state.to_doc()).map_err(SnsError::internal)
    }

    // ---- topics ----------------------------------------------------------------------------

    pub(crate) fn create_topic(&self, p: &Params) -> SnsResult<Xml> {
        let name = p.req("Name")?;
        let attrs = p.map("Attributes");
        let tags = tags_of(p)?;
        let fifo_attr =
            attrs.iter().find(|(k, _)| k == "FifoTopic").map(|(_, v)| v.eq_ignore_ascii_case("true"));
        let fifo = fifo_attr.unwrap_or(false);
        if fifo && !valid_topic_name(name, true) {
            return Err(SnsError::param(
                "Fifo Topic names must end with .fifo and must be made up of only uppercase and lowercase \
                 ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long.",
            ));
        }
        if !fifo && !valid_topic_name(name, false) {
            return Err(SnsError::param("Topic Name"));
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &attrs {
            if k == "FifoTopic" {
                continue;
            }
            self.check_topic_attribute(k, v, fifo)?;
            attributes.insert(k.clone(), v.clone());
        }
        let dpp = p.get("DataProtectionPolicy").map(str::to_owned);
        if let Some(d) = &dpp {
            check_data_protection_policy(d)?;
        }
        let arn = self.topic_arn(name);
        let mut state = self.state.write();
        if let Some(existing) = state.topics.get(&arn) {
            // CreateTopic is idempotent for the same definition.
            if existing.fifo != fifo || attributes.iter().any(|(k, v)| existing.attributes.get(k) != Some(v))
            {
                return Err(SnsError::param(
                    "Attributes Reason: Topic already exists with different attributes",
                ));
            }
            if tags.iter().any(|(k, v)| existing.tags.get(k) != Some(v)) {
                return Err(SnsError::param("Tags Reason: Topic already exists with different tags"));
            }
            return Ok(Xml::empty().with_text("TopicArn", arn));
        }
        let (count, fifo_count) =
            state.topics.values().fold((0, 0), |(n, f), t| (n + 1, f + usize::from(t.fifo)));
        if count >= MAX_TOPICS || (fifo && fifo_count >= MAX_FIFO_TOPICS) {
            return Err(SnsError::new("TopicLimitExceeded", 403, "Topic limit exceeded"));
        }
        if tags.len() > MAX_TAGS {
            return Err(SnsError::new(
                "TagLimitExceeded",
                400,
                "Could not complete request: tag quota of per resource exceeded",
            ));
        }
        let topic = TopicDef {
            name: name.to_owned(),
            arn: arn.clone(),
            fifo,
            attributes,
            tags: tags.into_iter().collect(),
            data_protection_policy: dpp,
            subscriptions_deleted: 0,
        };
        state.topics.insert(arn.clone(), Arc::new(topic));
        state.reindex(&arn);
        if let Err(e) = self.save(&state) {
            state.topics.remove(&arn);
            state.reindex(&arn);
            return Err(e);
        }
        Ok(Xml::empty().with_text("TopicArn", arn))
    }

    fn check_topic_attribute(&self, name: &str, value: &str, fifo: bool) -> SnsResult<()> {
        if !TOPIC_ATTRIBUTES.contains(&name) && !is_feedback_attribute(name) {
            return Err(SnsError::param("AttributeName"));
        }
        let bad = || SnsError::param(format!("Attributes Reason: {name}: Invalid value [{value}]"));
        match name {
            "FifoTopic" => return Err(SnsError::param("AttributeName")),
            "SignatureVersion" if !matches!(value, "1" | "2") => {
                return Err(SnsError::param(
                    "Attributes Reason: SignatureVersion: Invalid value [{value}]. Must be 1 or 2."
                        .replace("{value}", value),
                ))
            }
            "TracingConfig" if !matches!(value, "PassThrough" | "Active") => return Err(bad()),
            "DisplayName" if value.chars().count() > 100 => return Err(bad()),
            "ContentBasedDeduplication" | "FifoThroughputScope" | "ArchivePolicy" if !fifo => {
                return Err(SnsError::param(format!(
                    "Attributes Reason: {name} is only valid for FIFO topics"
                )))
            }
            "ContentBasedDeduplication"
                if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") =>
            {
                return Err(bad())
            }
            "FifoThroughputScope" if !matches!(value, "Topic" | "MessageGroup") => return Err(bad()),
            "DeliveryPolicy" if !value.is_empty() => DeliveryPolicy::validate_topic(value)?,
            "Policy" | "ArchivePolicy"
                if !value.is_empty()
                    && !serde_json::from_str::<Value>(value).is_ok_and(|v| v.is_object()) =>
            {
                return Err(SnsError::param(format!("{name}: failed to parse JSON.")));
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn delete_topic(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("TopicArn")?;
        self.check_topic_arn("TopicArn", arn)?;
        let removed: Vec<Arc<Subscription>> = {
            let mut state = self.state.write();
            if state.topics.remove(arn).is_none() {
                // Deleting a topic that does not exist succeeds, as on AWS.
                return Ok(Xml::empty());
            }
            let subs: Vec<String> = state
                .subscriptions
                .values()
                .filter(|s| s.def.topic_arn == arn)
                .map(|s| s.def.arn.clone())
                .collect();
            let removed = subs.iter().filter_map(|s| state.subscriptions.remove(s)).collect();
            state.reindex(arn);
            self.save(&state)?;
            removed
        };
        self.fifo.lock().remove(arn);
        for s in removed {
            self.drop_outbox(&s.def);
        }
        Ok(Xml::empty())
    }

    pub(crate) fn list_topics(&self, p: &Params) -> SnsResult<Xml> {
        let arns: Vec<String> = self.state.read().topics.keys().cloned().collect();
        let (page, next) = page(arns, p.get("NextToken"), |a| a.as_str())?;
        let mut x = Xml::empty()
            .with("Topics", Xml::members(page.into_iter().map(|a| Xml::empty().with_text("TopicArn", a))));
        if let Some(n) = next {
            x = x.with_text("NextToken", n);
        }
        Ok(x)
    }

    pub(crate) fn default_policy(&self, arn: &str) -> String {
        json!({
            "Version": "2008-10-17",
            "Id": "__default_policy_ID",
            "Statement": [{
                "Sid": "__default_statement_ID",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                           "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe",
                           "SNS:ListSubscriptionsByTopic", "SNS:Publish"],
                "Resource": arn,
                "Condition": {"StringEquals": {"AWS:SourceOwner": self.config.account_id}}
            }]
        })
        .to_string()
    }

    pub(crate) fn get_topic_attributes(&self, p: &Params) -> SnsResult<Xml> {
        let topic = self.topic(p.req("TopicArn")?)?;
        let (pending, confirmed) = {
            let state = self.state.read();
            let subs = state.by_topic.get(&topic.arn).cloned().unwrap_or_default();
            let confirmed = subs.iter().filter(|s| s.def.confirmed).count();
            (subs.len() - confirmed, confirmed)
        };
        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        attrs.insert("TopicArn".into(), topic.arn.clone());
        attrs.insert("Owner".into(), self.config.account_id.clone());
        attrs.insert("Policy".into(), self.default_policy(&topic.arn));
        attrs.insert("DisplayName".into(), String::new());
        attrs.insert("SubscriptionsPending".into(), pending.to_string());
        attrs.insert("SubscriptionsConfirmed".into(), confirmed.to_string());
        attrs.insert("SubscriptionsDeleted".into(), topic.subscriptions_deleted.to_string());
        attrs.insert("EffectiveDeliveryPolicy".into(), default_topic_policy().to_string());
        if topic.fifo {
            attrs.insert("FifoTopic".into(), "true".into());
            attrs.insert("ContentBasedDeduplication".into(), "false".into());
        }
        for (k, v) in &topic.attributes {
            attrs.insert(k.clone(), v.clone());
        }
        if let Some(d) = topic.attributes.get("DeliveryPolicy").filter(|d| !d.is_empty()) {
            attrs.insert("EffectiveDeliveryPolicy".into(), d.clone());
        }
        if topic.attributes.get("Policy").is_some_and(|p| p.is_empty()) {
            attrs.insert("Policy".into(), self.default_policy(&topic.arn));
        }
        Ok(Xml::empty().with("Attributes", Xml::entries(attrs.iter())))
    }

    pub(crate) fn set_topic_attributes(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("TopicArn")?;
        let name = p.req("AttributeName")?;
        let value = p.get("AttributeValue").unwrap_or("");
        let topic = self.topic(arn)?;
        self.check_topic_attribute(name, value, topic.fifo)
            .map_err(|e| SnsError::invalid(e.message.replace("Attributes Reason: ", "")))?;
        self.update_topic(arn, |t| {
            t.attributes.insert(name.to_owned(), value.to_owned());
            Ok(())
        })?;
        Ok(Xml::empty())
    }

    /// Change a topic's definition, recompile its subscriptions (their effective delivery
    /// policy follows the topic's), and save.
    fn update_topic(&self, arn: &str, f: impl FnOnce(&mut TopicDef) -> SnsResult<()>) -> SnsResult<()> {
        let mut state = self.state.write();
        let old = state.topics.get(arn).cloned().ok_or_else(SnsError::no_topic)?;
        let mut t = (*old).clone();
        f(&mut t)?;
        let t = Arc::new(t);
        state.topics.insert(arn.to_owned(), t.clone());
        let subs: Vec<Arc<Subscription>> =
            state.subscriptions.values().filter(|s| s.def.topic_arn == arn).cloned().collect();
        for s in subs {
            if let Ok(new) = Subscription::compile(s.def.clone(), &t) {
                state.subscriptions.insert(s.def.arn.clone(), Arc::new(new));
            }
        }
        state.reindex(arn);
        if let Err(e) = self.save(&state) {
            state.topics.insert(arn.to_owned(), old);
            return Err(e);
        }
        Ok(())
    }

    // ---- permissions ----------------------------------------------------------------------------

    pub(crate) fn add_permission(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("TopicArn")?;
        let label = p.req("Label")?;
        let accounts = p.list("AWSAccountId");
        let actions = p.list("ActionName");
        if accounts.is_empty() {
            return Err(SnsError::missing("AWSAccountId"));
        }
        if actions.is_empty() {
            return Err(SnsError::missing("ActionName"));
        }
        if label.is_empty()
            || label.len() > 80
            || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SnsError::param("Label"));
        }
        self.topic(arn)?;
        let principals: Vec<Value> =
            accounts.iter().map(|a| Value::String(format!("arn:aws:iam::{a}:root"))).collect();
        let actions: Vec<Value> = actions.iter().map(|a| Value::String(format!("SNS:{a}"))).collect();
        let default = self.default_policy(arn);
        self.update_topic(arn, |t| {
            let text = t.attributes.get("Policy").filter(|p| !p.is_empty()).cloned().unwrap_or(default);
            let mut policy: Value = serde_json::from_str(&text).map_err(|_| SnsError::param("Policy"))?;
            let statements = statements_mut(&mut policy)?;
            if statements.iter().any(|s| s.get("Sid").and_then(Value::as_str) == Some(label)) {
                return Err(SnsError::param("Statement already exists"));
            }
            statements.push(json!({
                "Sid": label,
                "Effect": "Allow",
                "Principal": {"AWS": if principals.len() == 1 { principals[0].clone() } else { Value::Array(principals) }},
                "Action": if actions.len() == 1 { actions[0].clone() } else { Value::Array(actions) },
                "Resource": arn,
            }));
            t.attributes.insert("Policy".into(), policy.to_string());
            Ok(())
        })?;
        Ok(Xml::empty())
    }

    pub(crate) fn remove_permission(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("TopicArn")?;
        let label = p.req("Label")?;
        self.topic(arn)?;
        let default = self.default_policy(arn);
        self.update_topic(arn, |t| {
            let text = t.attributes.get("Policy").filter(|p| !p.is_empty()).cloned().unwrap_or(default);
            let mut policy: Value = serde_json::from_str(&text).map_err(|_| SnsError::param("Policy"))?;
            let statements = statements_mut(&mut policy)?;
            let before = statements.len();
            statements.retain(|s| s.get("Sid").and_then(Value::as_str) != Some(label));
            if statements.len() != before {
                t.attributes.insert("Policy".into(), policy.to_string());
            }
            Ok(())
        })?;
        Ok(Xml::empty())
    }

    // ---- tags -------------------------------------------------------------------------------

    fn tagged_topic(&self, p: &Params) -> SnsResult<String> {
        let arn = p.req("ResourceArn")?;
        self.check_topic_arn("ResourceArn", arn)?;
        if !self.state.read().topics.contains_key(arn) {
            return Err(SnsError::new("ResourceNotFound", 404, "Resource does not exist"));
        }
        Ok(arn.to_owned())
    }

    pub(crate) fn tag_resource(&self, p: &Params) -> SnsResult<Xml> {
        let arn = self.tagged_topic(p)?;
        let tags = tags_of(p)?;
        if tags.is_empty() {
            return Err(SnsError::missing("Tags"));
        }
        self.update_topic(&arn, |t| {
            let mut merged = t.tags.clone();
            merged.extend(tags);
            if merged.len() > MAX_TAGS {
                return Err(SnsError::new(
                    "TagLimitExceeded",
                    400,
                    "Could not complete request: tag quota of per resource exceeded",
                ));
            }
            t.tags = merged;
            Ok(())
        })?;
        Ok(Xml::empty())
    }

    pub(crate) fn untag_resource(&self, p: &Params) -> SnsResult<Xml> {
        let arn = self.tagged_topic(p)?;
        let keys = p.list("TagKeys");
        self.update_topic(&arn, |t| {
            for k in &keys {
                t.tags.remove(k);
            }
            Ok(())
        })?;
        Ok(Xml::empty())
    }

    pub(crate) fn list_tags_for_resource(&self, p: &Params) -> SnsResult<Xml> {
        let arn = self.tagged_topic(p)?;
        let topic = self.topic(&arn)?;
        let tags = topic.tags.iter().map(|(k, v)| Xml::empty().with_text("Key", k).with_text("Value", v));
        Ok(Xml::empty().with("Tags", Xml::members(tags)))
    }

    // ---- data protection ------------------------------------------------------------------------

    pub(crate) fn put_data_protection_policy(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("ResourceArn")?;
        let policy = p.req("DataProtectionPolicy")?;
        self.check_topic_arn("ResourceArn", arn)?;
        check_data_protection_policy(policy)?;
        self.update_topic(arn, |t| {
            t.data_protection_policy = Some(policy.to_owned());
            Ok(())
        })
        .map_err(|e| {
            if e.code == "NotFound" {
                SnsError::new("ResourceNotFound", 404, "Resource does not exist")
            } else {
                e
            }
        })?;
        Ok(Xml::empty())
    }

    pub(crate) fn get_data_protection_policy(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("ResourceArn")?;
        self.check_topic_arn("ResourceArn", arn)?;
        let topic = self
            .state
            .read()
            .topics
            .get(arn)
            .cloned()
            .ok_or_else(|| SnsError::new("ResourceNotFound", 404, "Resource does not exist"))?;
        let mut x = Xml::empty();
        if let Some(d) = &topic.data_protection_policy {
            x = x.with_text("DataProtectionPolicy", d);
        }
        Ok(x)
    }

    // ---- subscriptions ------------------------------------------------------------------------

    fn check_subscription_attribute(
        &self,
        name: &str,
        value: &str,
        protocol: &str,
        topic: &TopicDef,
        endpoint: &str,
        on_subscribe: bool,
    ) -> SnsResult<()> {
        let prefix = if on_subscribe { "Attributes Reason: " } else { "" };
        if !SUBSCRIPTION_ATTRIBUTES.contains(&name) {
            return Err(SnsError::param(format!("{prefix}AttributeName")));
        }
        let wrap = |e: SnsError| -> SnsError {
            if on_subscribe {
                SnsError::invalid(e.message.replacen(
                    "Invalid parameter: ",
                    "Invalid parameter: Attributes Reason: ",
                    1,
                ))
            } else {
                e
            }
        };
        match name {
            "RawMessageDelivery" => {
                if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") {
                    return Err(SnsError::param(format!(
                        "{prefix}RawMessageDelivery: Invalid value [{value}]. Must be true or false."
                    )));
                }
                if !matches!(protocol, "sqs" | "http" | "https" | "firehose") {
                    return Err(SnsError::param(format!(
                        "{prefix}Delivery protocol [{protocol}] does not support raw message delivery."
                    )));
                }
            }
            "FilterPolicyScope" => {
                value.parse::<FilterScope>().map_err(|e| wrap(SnsError::invalid(e.to_string())))?;
            }
            "DeliveryPolicy" if !value.is_empty() => {
                DeliveryPolicy::validate_subscription(value, protocol).map_err(wrap)?
            }
            "RedrivePolicy" if !value.is_empty() => {
                let dlq = dead_letter_target(value).map_err(wrap)?;
                if topic.fifo && endpoint.ends_with(".fifo") && !dlq.ends_with(".fifo") {
                    return Err(SnsError::param(format!(
                        "{prefix}RedrivePolicy: must use a FIFO queue as DLQ for a FIFO Subscription to a FIFO Topic."
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Compile a filter policy change now, so a bad policy is refused with AWS's message, and
    /// count the topic's policies against the limit.
    fn check_filter(
        &self,
        attributes: &BTreeMap<String, String>,
        topic: &str,
        other_than: Option<&str>,
        on_subscribe: bool,
    ) -> SnsResult<()> {
        let Some(policy) = attributes.get("FilterPolicy").filter(|p| !p.trim().is_empty()) else {
            return Ok(());
        };
        let scope = match attributes.get("FilterPolicyScope") {
            Some(s) => s.parse::<FilterScope>().map_err(|e| SnsError::invalid(e.to_string()))?,
            None => FilterScope::MessageAttributes,
        };
        FilterPolicy::parse(policy, scope).map_err(|e| {
            SnsError::invalid(if on_subscribe { e.subscribe_message() } else { e.to_string() })
        })?;
        let state = self.state.read();
        let count = state
            .by_topic
            .get(topic)
            .map(|subs| {
                subs.iter().filter(|s| s.filter.is_some() && Some(s.def.arn.as_str()) != other_than).count()
            })
            .unwrap_or(0);
        if count >= MAX_FILTER_POLICIES_PER_TOPIC {
            return Err(SnsError::new("FilterPolicyLimitExceeded", 403, "Filter policy limit exceeded"));
        }
        Ok(())
    }

    pub(crate) async fn subscribe(&self, p: &Params, ctx: &RequestContext) -> SnsResult<Xml> {
        let topic_arn = p.req("TopicArn")?;
        let protocol = p.req("Protocol")?;
        self.check_topic_arn("TopicArn", topic_arn)?;
        let topic = self.topic(topic_arn)?;
        let endpoint = p.get("Endpoint").unwrap_or("");
        if !PROTOCOLS.contains(&protocol) {
            return Err(SnsError::param(format!(
                "Amazon SNS does not support this protocol string: {protocol}"
            )));
        }
        match protocol {
            "sqs" => {
                let name = sqs_queue_name(endpoint).ok_or_else(|| SnsError::param("SQS endpoint ARN"))?;
                if name.ends_with(".fifo") && !topic.fifo {
                    return Err(SnsError::param(
                        "Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics",
                    ));
                }
            }
            "http" | "https" => {
                let scheme = format!("{protocol}://");
                let valid = endpoint.starts_with(&scheme)
                    && endpoint.len() > scheme.len()
                    && endpoint.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
                if !valid {
                    return Err(SnsError::param("Endpoint must match the specified protocol"));
                }
            }
            "email" | "email-json" => {
                if !valid_email(endpoint) {
                    return Err(SnsError::param("Email address"));
                }
                if self.config.smtp.is_none() {
                    return Err(SnsError::param(
                        "Protocol Reason: email delivery needs an SMTP relay; start wharf with --sns-smtp-relay HOST:PORT",
                    ));
                }
            }
            other => {
                return Err(SnsError::param(format!(
                    "Protocol Reason: wharf does not deliver to {other} endpoints; supported protocols are sqs, http, email and email-json"
                )))
            }
        }
        if topic.fifo && protocol != "sqs" {
            return Err(SnsError::param(format!("Invalid protocol type: {protocol} for a FIFO topic")));
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in p.map("Attributes") {
            self.check_subscription_attribute(&k, &v, protocol, &topic, endpoint, true)?;
            let v = if k == "RawMessageDelivery" { v.to_ascii_lowercase() } else { v };
            attributes.insert(k, v);
        }
        // The same endpoint on the same topic is the same subscription.
        let existing = {
            let state = self.state.read();
            state.by_topic.get(topic_arn).and_then(|subs| {
                subs.iter().find(|s| s.def.protocol == protocol && s.def.endpoint == endpoint).cloned()
            })
        };
        if let Some(s) = existing {
            if attributes.iter().any(|(k, v)| s.def.attributes.get(k) != Some(v)) {
                return Err(SnsError::param(
                    "Attributes Reason: Subscription already exists with different attributes",
                ));
            }
            let arn = if s.def.confirmed || p.bool("ReturnSubscriptionArn")? == Some(true) {
                s.def.arn.clone()
            } else {
                "pending confirmation".to_owned()
            };
            return Ok(Xml::empty().with_text("SubscriptionArn", arn));
        }
        self.check_filter(&attributes, topic_arn, None, true)?;
        let needs_confirmation = matches!(protocol, "http" | "https" | "email" | "email-json");
        let now = self.now_ms();
        let def = SubscriptionDef {
            arn: format!("{topic_arn}:{}", uuid::Uuid::new_v4()),
            topic_arn: topic_arn.to_owned(),
            protocol: protocol.to_owned(),
            endpoint: endpoint.to_owned(),
            owner: self.config.account_id.clone(),
            attributes,
            confirmed: !needs_confirmation,
            confirmation_authenticated: !needs_confirmation,
            token: needs_confirmation.then(new_token),
            token_expires_ms: if needs_confirmation { now + TOKEN_VALIDITY_MS } else { 0 },
            authenticate_on_unsubscribe: false,
        };
        let sub = Arc::new(Subscription::compile(def.clone(), &topic)?);
        if def.has_outbox() {
            self.create_outbox(&def)?;
        }
        {
            let mut state = self.state.write();
            if !state.topics.contains_key(topic_arn) {
                return Err(SnsError::no_topic());
            }
            state.subscriptions.insert(def.arn.clone(), sub.clone());
            state.reindex(topic_arn);
            if let Err(e) = self.save(&state) {
                state.subscriptions.remove(&def.arn);
                state.reindex(topic_arn);
                return Err(e);
            }
        }
        if needs_confirmation {
            // The confirmation goes through the outbox like any delivery: durable, retried.
            self.send_confirmation(&topic, &sub, "SubscriptionConfirmation").await?;
            self.start_worker(&def);
        }
        let _ = ctx;
        let arn = if def.confirmed || p.bool("ReturnSubscriptionArn")? == Some(true) {
            def.arn.clone()
        } else {
            "pending confirmation".to_owned()
        };
        Ok(Xml::empty().with_text("SubscriptionArn", arn))
    }

    pub(crate) fn confirm_subscription(&self, p: &Params) -> SnsResult<Xml> {
        let topic_arn = p.req("TopicArn")?;
        let token = p.req("Token")?;
        self.check_topic_arn("TopicArn", topic_arn)?;
        let authenticate = p.bool("AuthenticateOnUnsubscribe")?.unwrap_or(false);
        let now = self.now_ms();
        let mut state = self.state.write();
        let sub = state
            .subscriptions
            .values()
            .find(|s| s.def.topic_arn == topic_arn && s.def.token.as_deref() == Some(token))
            .cloned()
            .ok_or_else(|| SnsError::param("Token"))?;
        if sub.def.confirmed {
            return Ok(Xml::empty().with_text("SubscriptionArn", &sub.def.arn));
        }
        if sub.def.token_expires_ms < now {
            return Err(SnsError::param("Token Reason: the confirmation token has expired"));
        }
        let topic = state.topics.get(topic_arn).cloned().ok_or_else(SnsError::no_topic)?;
        let mut def = sub.def.clone();
        def.confirmed = true;
        def.confirmation_authenticated = authenticate;
        def.authenticate_on_unsubscribe = authenticate;
        let arn = def.arn.clone();
        state.subscriptions.insert(arn.clone(), Arc::new(Subscription::compile(def, &topic)?));
        state.reindex(topic_arn);
        if let Err(e) = self.save(&state) {
            state.subscriptions.insert(arn.clone(), sub);
            state.reindex(topic_arn);
            return Err(e);
        }
        Ok(Xml::empty().with_text("SubscriptionArn", arn))
    }

    pub(crate) fn unsubscribe(&self, p: &Params, ctx: &RequestContext) -> SnsResult<Xml> {
        let arn = p.req("SubscriptionArn")?;
        let parts = arn.split(':').count();
        if parts < 6 {
            return Err(SnsError::param(format!(
                "SubscriptionArn Reason: An ARN must have at least 6 elements, not {parts}"
            )));
        }
        if parts != 7 || !arn.starts_with("arn:aws:sns:") {
            return Err(SnsError::param("SubscriptionId"));
        }
        let removed = {
            let mut state = self.state.write();
            let Some(sub) = state.subscriptions.get(arn).cloned() else {
                // Unsubscribing twice succeeds, as on AWS.
                return Ok(Xml::empty());
            };
            if sub.def.authenticate_on_unsubscribe && !ctx.signed {
                return Err(SnsError::new("AuthorizationError", 403, "User is not authorized to unsubscribe: the subscription requires an authenticated Unsubscribe"));
            }
            state.subscriptions.remove(arn);
            let topic_arn = sub.def.topic_arn.clone();
            if let Some(t) = state.topics.get(&topic_arn).cloned() {
                let mut t = (*t).clone();
                t.subscriptions_deleted += 1;
                state.topics.insert(topic_arn.clone(), Arc::new(t));
            }
            state.reindex(&topic_arn);
            self.save(&state)?;
            sub
        };
        self.drop_outbox(&removed.def);
        Ok(Xml::empty())
    }

    pub(crate) fn get_subscription_attributes(&self, p: &Params) -> SnsResult<Xml> {
        let sub = self.subscription(p.req("SubscriptionArn")?)?;
        let d = &sub.def;
        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        attrs.insert("SubscriptionArn".into(), d.arn.clone());
        attrs.insert("TopicArn".into(), d.topic_arn.clone());
        attrs.insert("Owner".into(), d.owner.clone());
        attrs.insert("Protocol".into(), d.protocol.clone());
        attrs.insert("Endpoint".into(), d.endpoint.clone());
        attrs.insert("PendingConfirmation".into(), bool_text(!d.confirmed));
        attrs.insert("ConfirmationWasAuthenticated".into(), bool_text(d.confirmation_authenticated));
        attrs.insert("RawMessageDelivery".into(), bool_text(sub.raw));
        attrs.insert(
            "SubscriptionPrincipal".into(),
            format!("arn:aws:iam::{}:user/wharf", self.config.account_id),
        );
        if matches!(d.protocol.as_str(), "http" | "https") {
            attrs.insert("EffectiveDeliveryPolicy".into(), sub.delivery.to_json().to_string());
        }
        for (k, v) in &d.attributes {
            attrs.insert(k.clone(), v.clone());
        }
        if attrs.contains_key("FilterPolicy") && !attrs.contains_key("FilterPolicyScope") {
            attrs.insert("FilterPolicyScope".into(), "MessageAttributes".into());
        }
        Ok(Xml::empty().with("Attributes", Xml::entries(attrs.iter())))
    }

    pub(crate) fn set_subscription_attributes(&self, p: &Params) -> SnsResult<Xml> {
        let arn = p.req("SubscriptionArn")?;
        let name = p.req("AttributeName")?;
        let value = p.get("AttributeValue").unwrap_or("");
        let sub = self.subscription(arn)?;
        let topic = self.topic(&sub.def.topic_arn)?;
        self.check_subscription_attribute(name, value, &sub.def.protocol, &topic, &sub.def.endpoint, false)?;
        let mut def = sub.def.clone();
        let value = if name == "RawMessageDelivery" { value.to_ascii_lowercase() } else { value.to_owned() };
        if value.is_empty() && matches!(name, "FilterPolicy" | "RedrivePolicy" | "DeliveryPolicy") {
            def.attributes.remove(name);
        } else {
            def.attributes.insert(name.to_owned(), value);
        }
        self.check_filter(&def.attributes, &def.topic_arn, Some(arn), false)?;
        let compiled = Arc::new(Subscription::compile(def, &topic)?);
        let mut state = self.state.write();
        if !state.subscriptions.contains_key(arn) {
            return Err(SnsError::no_subscription());
        }
        state.subscriptions.insert(arn.to_owned(), compiled);
        state.reindex(&topic.arn);
        if let Err(e) = self.save(&state) {
            state.subscriptions.insert(arn.to_owned(), sub);
            state.reindex(&topic.arn);
            return Err(e);
        }
        Ok(Xml::empty())
    }

    pub(crate) fn list_subscriptions(&self, p: &Params) -> SnsResult<Xml> {
        let subs: Vec<Arc<Subscription>> = self.state.read().subscriptions.values().cloned().collect();
        self.subscription_page(subs, p)
    }

    pub(crate) fn list_subscriptions_by_topic(&self, p: &Params) -> SnsResult<Xml> {
        let topic = self.topic(p.req("TopicArn")?)?;
        let subs: Vec<Arc<Subscription>> =
            self.state.read().by_topic.get(&topic.arn).map(|s| (**s).clone()).unwrap_or_default();
        let mut subs = subs;
        subs.sort_by(|a, b| a.def.arn.cmp(&b.def.arn));
        self.subscription_page(subs, p)
    }

    fn subscription_page(&self, subs: Vec<Arc<Subscription>>, p: &Params) -> SnsResult<Xml> {
        let (page, next) = page(subs, p.get("NextToken"), |s| s.def.arn.as_str())?;
        let mut x =
            Xml::empty().with("Subscriptions", Xml::members(page.iter().map(|s| subscription_xml(&s.def))));
        if let Some(n) = next {
            x = x.with_text("NextToken", n);
        }
        Ok(x)
    }
}

fn statements_mut(policy: &mut Value) -> SnsResult<&mut Vec<Value>> {
    let Value::Object(m) = policy else { return Err(SnsError::param("Policy")) };
    let entry = m.entry("Statement").or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        let one = entry.take();
        *entry = Value::Array(vec![one]);
    }
    match entry {
        Value::Array(items) => Ok(items),
        _ => Err(SnsError::param("Policy")),
    }
}

fn check_data_protection_policy(text: &str) -> SnsResult<()> {
    let v: Value = serde_json::from_str(text)
        .map_err(|_| SnsError::param("DataProtectionPolicy: failed to parse JSON."))?;
    if !v.is_object() || v.get("Statement").is_none_or(|s| !s.is_array()) {
        return Err(SnsError::param("DataProtectionPolicy: must be a JSON object with a Statement array."));
    }
    Ok(())
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// A confirmation token: 64 random hex digits (AWS's are longer; nothing parses them).
fn new_token() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a-b_C9", false));
        assert!(!valid_topic_name("a.fifo", false));
        assert!(valid_topic_name("a.fifo", true));
        assert!(!valid_topic_name(".fifo", true));
        assert!(!valid_topic_name("a", true));
        assert!(!valid_topic_name(&"x".repeat(257), false));
        assert!(valid_topic_name(&"x".repeat(256), false));
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(decode_token(&encode_token("arn:aws:sns:x")).as_deref(), Some("arn:aws:sns:x"));
        assert_eq!(decode_token("zz"), None);
    }

    #[test]
    fn feedback_attributes() {
        assert!(is_feedback_attribute("SQSSuccessFeedbackRoleArn"));
        assert!(is_feedback_attribute("HTTPSuccessFeedbackSampleRate"));
        assert!(!is_feedback_attribute("SQSFailureFeedbackSampleRate"));
    }
}
