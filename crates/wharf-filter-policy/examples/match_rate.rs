//! Matching throughput for typical policies (in-process; the end-to-end figure is the SNS bench).
//!
//! `cargo run --release -p wharf-filter-policy --example match_rate`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use wharf_filter_policy::{AttributeValue, FilterPolicy, FilterScope, Message};

fn rate(name: &str, iterations: u32, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut hits = 0u32;
    for _ in 0..iterations {
        hits += u32::from(black_box(f()));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{name:<56} {:>10.0} per second  ({hits}/{iterations} true)", f64::from(iterations) / secs);
}

fn main() {
    let attributes: BTreeMap<String, AttributeValue> = [
        ("store", "String", "example_corp"),
        ("event", "String", "order_placed"),
        ("price_usd", "Number", "210.75"),
        ("customer_interests", "String.Array", r#"["soccer", "rugby", "hockey"]"#),
        ("source_ip", "String", "10.0.0.17"),
    ]
    .iter()
    .map(|(k, t, v)| (k.to_string(), AttributeValue::new(*t, *v)))
    .collect();
    let body = r#"{"store": "example_corp", "event": "order_placed", "price_usd": 210.75,
        "customer_interests": ["soccer", "rugby", "hockey"], "origin": {"ip": "10.0.0.17"},
        "payload": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

    let attr_policy = FilterPolicy::parse(
        r#"{"store": ["example_corp"], "event": [{"anything-but": "order_cancelled"}],
            "price_usd": [{"numeric": [">", 100, "<=", 500]}], "customer_interests": ["rugby", "football"],
            "source_ip": [{"cidr": "10.0.0.0/24"}]}"#,
        FilterScope::MessageAttributes,
    )
    .unwrap();
    let body_policy = FilterPolicy::parse(
        r#"{"store": ["example_corp"], "price_usd": [{"numeric": [">", 100]}],
            "$or": [{"customer_interests": ["rugby"]}, {"origin": {"ip": [{"cidr": "10.0.0.0/8"}]}}]}"#,
        FilterScope::MessageBody,
    )
    .unwrap();

    rate("attribute scope, 5 keys (String.Array re-parsed)", 1_000_000, || {
        attr_policy.matches(&attributes, body)
    });
    rate("body scope, body parsed per match", 300_000, || body_policy.matches(&attributes, body));
    let message = Message::new(&attributes, body);
    rate("body scope, body parsed once (Message)", 1_000_000, || body_policy.matches_message(&message));
    rate("publishes checked against 10 body policies (parse once)", 100_000, || {
        let message = Message::new(&attributes, body);
        (0..10).filter(|_| body_policy.matches_message(&message)).count() == 10
    });
}
