//! Topics and subscriptions: their durable definitions (saved with the engine's definitions as
//! the `sns` extension document) and the compiled runtime form Publish reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wharf_filter_policy::{FilterPolicy, FilterScope};

use crate::error::{SnsError, SnsResult};
use crate::policy::DeliveryPolicy;

/// Name of the extension document in the engine's definitions.
pub const EXTENSION: &str = "sns";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicDef {
    pub name: String,
    pub arn: String,
    pub fifo: bool,
    /// Attributes set by CreateTopic / SetTopicAttributes, returned as given.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_protection_policy: Option<String>,
    /// Subscriptions removed from this topic, for GetTopicAttributes' SubscriptionsDeleted.
    #[serde(default)]
    pub subscriptions_deleted: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDef {
    pub arn: String,
    pub topic_arn: String,
    pub protocol: String,
    pub endpoint: String,
    pub owner: String,
    /// DeliveryPolicy, FilterPolicy, FilterPolicyScope, RawMessageDelivery, RedrivePolicy,
    /// SubscriptionRoleArn, ReplayPolicy as set.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub confirmed: bool,
    #[serde(default)]
    pub confirmation_authenticated: bool,
    /// The confirmation token while pending, and when it stops being accepted (engine ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default)]
    pub token_expires_ms: u64,
    #[serde(default)]
    pub authenticate_on_unsubscribe: bool,
}

impl SubscriptionDef {
    /// The last ARN segment: the subscription's id, also its outbox queue's name.
    pub fn id(&self) -> &str {
        self.arn.rsplit(':').next().unwrap_or(&self.arn)
    }

    /// Deliveries to this subscription go through a durable outbox queue (HTTP, email).
    pub fn has_outbox(&self) -> bool {
        matches!(self.protocol.as_str(), "http" | "https" | "email" | "email-json")
    }
}

/// A subscription as Publish uses it: the definition plus what was compiled from it.
#[derive(Debug)]
pub struct Subscription {
    pub def: SubscriptionDef,
    pub filter: Option<FilterPolicy>,
    pub raw: bool,
    /// The SQS queue named by RedrivePolicy.deadLetterTargetArn.
    pub dead_letter_queue: Option<String>,
    /// The effective HTTP retry policy (subscription over topic over default).
    pub delivery: DeliveryPolicy,
}

impl Subscription {
    pub fn compile(def: SubscriptionDef, topic: &TopicDef) -> SnsResult<Subscription> {
        let scope = match def.attributes.get("FilterPolicyScope") {
            Some(s) => s.parse::<FilterScope>().map_err(|e| SnsError::invalid(e.to_string()))?,
            None => FilterScope::MessageAttributes,
        };
        let filter = match def.attributes.get("FilterPolicy").filter(|p| !p.trim().is_empty()) {
            Some(p) => Some(FilterPolicy::parse(p, scope).map_err(|e| SnsError::invalid(e.to_string()))?),
            None => None,
        };
        let raw = def.attributes.get("RawMessageDelivery").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let dead_letter_queue = match def.attributes.get("RedrivePolicy") {
            Some(p) => Some(dead_letter_target(p)?),
            None => None,
        };
        let delivery = DeliveryPolicy::effective(
            topic.attributes.get("DeliveryPolicy").map(String::as_str),
            def.attributes.get("DeliveryPolicy").map(String::as_str),
            &def.protocol,
        );
        Ok(Subscription { def, filter, raw, dead_letter_queue, delivery })
    }
}

/// The queue name of an SQS ARN (`arn:aws:sqs:<region>:<account>:<name>`).
pub fn sqs_queue_name(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "sqs", _, _, name] if !name.is_empty() && !name.contains(':') => Some(name),
        _ => None,
    }
}

/// `RedrivePolicy` of a subscription: `{"deadLetterTargetArn": "<SQS queue ARN>"}`.
pub fn dead_letter_target(policy: &str) -> SnsResult<String> {
    let bad = |why: &str| SnsError::param(format!("RedrivePolicy: {why}"));
    let v: Value = serde_json::from_str(policy).map_err(|_| bad("failed to parse JSON."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("deadLetterTargetArn is missing"))?;
    sqs_queue_name(arn).map(str::to_owned).ok_or_else(|| bad("deadLetterTargetArn is an invalid arn"))
}

/// A topic's subscriptions as Publish takes them: one clone of an `Arc` per publish.
pub type TopicSubscriptions = Arc<Vec<Arc<Subscription>>>;

/// Everything SNS keeps, in memory. Changed under the front end's write lock and saved whole.
#[derive(Default)]
pub struct State {
    pub topics: BTreeMap<String, Arc<TopicDef>>,
    pub subscriptions: BTreeMap<String, Arc<Subscription>>,
    /// Topic ARN → its subscriptions, in subscription order; rebuilt when one changes.
    pub by_topic: HashMap<String, TopicSubscriptions>,
}

#[derive(Serialize, Deserialize, Default)]
struct Doc {
    topics: Vec<TopicDef>,
    subscriptions: Vec<SubscriptionDef>,
}

impl State {
    pub fn to_doc(&self) -> Value {
        let doc = Doc {
            topics: self.topics.values().map(|t| (**t).clone()).collect(),
            subscriptions: self.subscriptions.values().map(|s| s.def.clone()).collect(),
        };
        serde_json::to_value(doc).unwrap_or(Value::Null)
    }

    /// Rebuild from a saved document. A subscription that no longer compiles (it should not
    /// happen: everything was validated when set) is kept without its filter and logged.
    pub fn from_doc(doc: Value) -> SnsResult<State> {
        let doc: Doc =
            serde_json::from_value(doc).map_err(|e| SnsError::internal(format!("SNS definitions: {e}")))?;
        let mut state = State::default();
        for t in doc.topics {
            state.topics.insert(t.arn.clone(), Arc::new(t));
        }
        for s in doc.subscriptions {
            let Some(topic) = state.topics.get(&s.topic_arn).cloned() else { continue };
            let sub = match Subscription::compile(s.clone(), &topic) {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(subscription = %s.arn, "subscription attributes no longer valid: {}", e.message);
                    let mut plain = s.clone();
                    plain
                        .attributes
                        .retain(|k, _| k != "FilterPolicy" && k != "RedrivePolicy" && k != "DeliveryPolicy");
                    Subscription::compile(plain, &topic)?
                }
            };
            state.subscriptions.insert(s.arn.clone(), Arc::new(sub));
        }
        let topics: Vec<String> = state.topics.keys().cloned().collect();
        for t in topics {
            state.reindex(&t);
        }
        Ok(state)
    }

    pub fn reindex(&mut self, topic_arn: &str) {
        let subs: Vec<Arc<Subscription>> =
            self.subscriptions.values().filter(|s| s.def.topic_arn == topic_arn).cloned().collect();
        if self.topics.contains_key(topic_arn) {
            self.by_topic.insert(topic_arn.to_owned(), Arc::new(subs));
        } else {
            self.by_topic.remove(topic_arn);
        }
    }
}
