#![allow(dead_code)]

use std::collections::BTreeMap;

use wharf_filter_policy::{AttributeValue, FilterPolicy, FilterScope, PolicyError};

pub fn attrs(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, AttributeValue> {
    pairs.iter().map(|(name, ty, value)| (name.to_string(), AttributeValue::new(*ty, *value))).collect()
}

pub fn attr_policy(json: &str) -> FilterPolicy {
    FilterPolicy::parse(json, FilterScope::MessageAttributes).unwrap_or_else(|e| panic!("{json}: {e}"))
}

pub fn body_policy(json: &str) -> FilterPolicy {
    FilterPolicy::parse(json, FilterScope::MessageBody).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// Attribute-scope match with one String attribute.
pub fn s(policy: &FilterPolicy, name: &str, value: &str) -> bool {
    policy.matches(&attrs(&[(name, "String", value)]), "")
}

/// Attribute-scope match with one Number attribute.
pub fn n(policy: &FilterPolicy, name: &str, value: &str) -> bool {
    policy.matches(&attrs(&[(name, "Number", value)]), "")
}

pub fn body(policy: &FilterPolicy, body: &str) -> bool {
    policy.matches(&BTreeMap::new(), body)
}

pub fn attr_err(json: &str) -> PolicyError {
    FilterPolicy::parse(json, FilterScope::MessageAttributes).expect_err(json)
}

pub fn body_err(json: &str) -> PolicyError {
    FilterPolicy::parse(json, FilterScope::MessageBody).expect_err(json)
}
