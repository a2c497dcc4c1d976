//! Amazon SNS subscription filter policies.
//!
//! A policy is parsed and validated once ([`FilterPolicy::parse`]) into a compiled tree with
//! numbers pre-scaled and strings pre-lowered, then matched many times against messages
//! ([`FilterPolicy::matches`], or [`FilterPolicy::matches_message`] with a [`Message`] prepared
//! once when several subscriptions look at the same publish). The language, limits and the
//! places where AWS's documentation left a choice open are described in this crate's README.

mod error;
mod matching;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use error::{PolicyError, PolicyErrorKind};
pub use matching::Message;

/// Largest accepted policy document, in bytes ("256 KB" in AWS's constraints page).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most keys in one policy object (top level; for body scope only the parent keys count).
pub const MAX_KEYS: usize = 5;
/// Most value combinations a policy may expand to.
pub const MAX_COMBINATIONS: u64 = 150;

/// Which part of a published message a policy looks at (`FilterPolicyScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FilterScope {
    /// SNS message attributes (AWS's default).
    #[default]
    MessageAttributes,
    /// The message body, which must be a JSON object.
    MessageBody,
}

impl FilterScope {
    /// The attribute value as AWS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterScope::MessageAttributes => "MessageAttributes",
            FilterScope::MessageBody => "MessageBody",
        }
    }
}

impl fmt::Display for FilterScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FilterScope {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MessageAttributes" => Ok(FilterScope::MessageAttributes),
            "MessageBody" => Ok(FilterScope::MessageBody),
            other => Err(PolicyError::new(
                PolicyErrorKind::InvalidScope,
                format!("FilterPolicyScope: Invalid value [{other}]. Please use either MessageBody or MessageAttributes"),
            )),
        }
    }
}

/// One SNS message attribute: its `DataType` (`String`, `String.Array`, `Number`, `Binary`, with
/// an optional custom suffix such as `Number.float`) and its `StringValue` (for `Binary`, the
/// base64 text; binary attributes never match a value condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeValue {
    pub data_type: String,
    pub value: String,
}

impl AttributeValue {
    pub fn new(data_type: impl Into<String>, value: impl Into<String>) -> Self {
        AttributeValue { data_type: data_type.into(), value: value.into() }
    }
}

/// A validated, compiled filter policy.
#[derive(Debug, Clone)]
pub struct FilterPolicy {
    scope: FilterScope,
    root: parse::Group,
    combinations: u64,
}

impl FilterPolicy {
    /// Validates `policy_json` as AWS does on Subscribe/SetSubscriptionAttributes and compiles it.
    pub fn parse(policy_json: &str, scope: FilterScope) -> Result<FilterPolicy, PolicyError> {
        let (root, combinations) = parse::compile(policy_json, scope)?;
        Ok(FilterPolicy { scope, root, combinations })
    }

    pub fn scope(&self) -> FilterScope {
        self.scope
    }

    /// The combination count AWS's complexity limit is checked against (at most 150).
    pub fn combinations(&self) -> u64 {
        self.combinations
    }

    /// Whether the message is delivered to a subscription with this policy. Attribute scope looks
    /// only at `attributes`, body scope only at `body` (parsed here; use [`Message`] and
    /// [`FilterPolicy::matches_message`] to parse a body once for many policies).
    pub fn matches(&self, attributes: &BTreeMap<String, AttributeValue>, body: &str) -> bool {
        match self.scope {
            FilterScope::MessageAttributes => matching::matches_attributes(&self.root, attributes),
            FilterScope::MessageBody => {
                matching::matches_body(&self.root, matching::parse_body(body).as_ref())
            }
        }
    }

    /// Like [`FilterPolicy::matches`] with a message prepared once for many policies.
    pub fn matches_message(&self, message: &Message<'_>) -> bool {
        match self.scope {
            FilterScope::MessageAttributes => matching::matches_attributes(&self.root, message.attributes()),
            FilterScope::MessageBody => matching::matches_body(&self.root, message.body()),
        }
    }
}
