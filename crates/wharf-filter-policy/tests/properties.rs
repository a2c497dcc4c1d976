//! Property tests: arbitrary input never panics; exact-value policies match their combinations.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use wharf_filter_policy::{AttributeValue, FilterPolicy, FilterScope};

/// Arbitrary JSON, biased towards the shapes filter policies use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|n| json!(n)),
        prop_oneof![
            Just("prefix"),
            Just("suffix"),
            Just("anything-but"),
            Just("numeric"),
            Just("exists"),
            Just("cidr"),
            Just("equals-ignore-case"),
            Just("$or"),
            Just(">"),
            Just("<="),
            Just("="),
            Just("10.0.0.0/8"),
            Just("::/0"),
            Just("x"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
        "[a-z0-9./:<>=-]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("a".to_string()),
                        Just("$or".to_string()),
                        Just("numeric".to_string()),
                        Just("prefix".to_string()),
                        Just("anything-but".to_string()),
                        Just("exists".to_string()),
                        Just("cidr".to_string()),
                        "[a-z]{1,3}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_and_match_never_panic(policy in json_value(), message in json_value(), text in ".{0,40}") {
        let policy_text = policy.to_string();
        let message_text = message.to_string();
        for scope in [FilterScope::MessageAttributes, FilterScope::MessageBody] {
            if let Ok(p) = FilterPolicy::parse(&policy_text, scope) {
                let mut attributes = BTreeMap::new();
                for (i, ty) in ["String", "String.Array", "Number", "Binary"].iter().enumerate() {
                    attributes.insert("a".repeat(i + 1), AttributeValue::new(*ty, message_text.clone()));
                    attributes.insert(format!("t{i}"), AttributeValue::new(*ty, text.clone()));
                }
                let _ = p.matches(&attributes, &message_text);
                let _ = p.matches(&attributes, &text);
                prop_assert!(p.combinations() <= 150);
            }
            let _ = FilterPolicy::parse(&text, scope);
        }
    }

    #[test]
    fn exact_policy_matches_each_of_its_combinations(
        keys in prop::collection::btree_map("[a-z]{1,8}", prop::collection::vec(
            prop_oneof!["[ -~]{0,8}".prop_map(|s| json!(s)), (-1_000_000i64..1_000_000).prop_map(|n| json!(n))],
            1..4), 1..=4),
        pick in any::<prop::sample::Index>(),
        other in "[ -~]{0,8}",
    ) {
        let policy_json = Value::Object(keys.iter().map(|(k, v)| (k.clone(), Value::Array(v.clone()))).collect());
        let attr = FilterPolicy::parse(&policy_json.to_string(), FilterScope::MessageAttributes).unwrap();
        let body_scope = FilterPolicy::parse(&policy_json.to_string(), FilterScope::MessageBody).unwrap();

        // Build one combination: the same picked index (modulo length) in every key.
        let mut attributes = BTreeMap::new();
        let mut doc = serde_json::Map::new();
        for (key, values) in &keys {
            let chosen = &values[pick.index(values.len())];
            let attribute = match chosen {
                Value::String(s) => AttributeValue::new("String", s.clone()),
                n => AttributeValue::new("Number", n.to_string()),
            };
            attributes.insert(key.clone(), attribute);
            doc.insert(key.clone(), chosen.clone());
        }
        let body_text = Value::Object(doc.clone()).to_string();
        prop_assert!(attr.matches(&attributes, ""));
        prop_assert!(body_scope.matches(&BTreeMap::new(), &body_text));

        // Replacing one key's value with something not in its list breaks the match.
        let (first_key, first_values) = keys.iter().next().unwrap();
        if !first_values.contains(&json!(other)) {
            attributes.insert(first_key.clone(), AttributeValue::new("String", other.clone()));
            doc.insert(first_key.clone(), json!(other));
            prop_assert!(!attr.matches(&attributes, ""));
            prop_assert!(!body(&body_scope, &Value::Object(doc).to_string()));
        }
    }
}
