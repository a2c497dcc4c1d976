//! Matching with FilterPolicyScope = MessageBody.

mod common;

use common::*;

const ORDER: &str = r#"{
    "customer_interests": ["soccer", "rugby", "hockey"],
    "store": "example_corp",
    "event": "order_placed",
    "price_usd": 210.75,
    "paid": true,
    "coupon": null,
    "origin": {"ip": "10.0.0.7", "country": {"code": "DK"}},
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
}"#;

#[test]
fn top_level_strings_numbers_booleans_and_null() {
    assert!(body(&body_policy(r#"{"store": ["example_corp"]}"#), ORDER));
    assert!(!body(&body_policy(r#"{"store": ["other"]}"#), ORDER));
    assert!(body(&body_policy(r#"{"price_usd": [210.75]}"#), ORDER));
    assert!(!body(&body_policy(r#"{"price_usd": ["210.75"]}"#), ORDER), "a string does not equal a number");
    assert!(body(&body_policy(r#"{"paid": [true]}"#), ORDER));
    assert!(!body(&body_policy(r#"{"paid": [false]}"#), ORDER));
    assert!(body(&body_policy(r#"{"coupon": [null]}"#), ORDER));
    assert!(!body(&body_policy(r#"{"store": [null]}"#), ORDER));
}

#[test]
fn nested_keys_any_depth() {
    assert!(body(&body_policy(r#"{"origin": {"country": {"code": ["DK", "SE"]}}}"#), ORDER));
    assert!(!body(&body_policy(r#"{"origin": {"country": {"code": ["NO"]}}}"#), ORDER));
    assert!(!body(&body_policy(r#"{"origin": {"code": ["DK"]}}"#), ORDER), "the path must be exact");
    assert!(body(&body_policy(r#"{"origin": {"ip": [{"cidr": "10.0.0.0/8"}]}}"#), ORDER));
    assert!(!body(&body_policy(r#"{"origin": {"ip": [{"cidr": "192.168.0.0/16"}]}}"#), ORDER));
}

#[test]
fn arrays_in_the_body_match_if_any_element_matches() {
    assert!(body(&body_policy(r#"{"customer_interests": ["rugby"]}"#), ORDER));
    assert!(!body(&body_policy(r#"{"customer_interests": ["golf"]}"#), ORDER));
    assert!(body(&body_policy(r#"{"items": {"sku": ["B-7"]}}"#), ORDER), "keys inside arrays of objects");
    assert!(body(&body_policy(r#"{"items": {"qty": [{"numeric": [">", 1]}]}}"#), ORDER));
    assert!(!body(&body_policy(r#"{"items": {"qty": [{"numeric": [">", 2]}]}}"#), ORDER));
    assert!(body(&body_policy(r#"{"m": [5]}"#), r#"{"m": [[1], [2, [5]]]}"#), "arrays of arrays");
}

#[test]
fn every_operator_in_body_scope() {
    let cases: &[(&str, bool)] = &[
        (r#"{"event": [{"prefix": "order_"}]}"#, true),
        (r#"{"event": [{"prefix": "refund"}]}"#, false),
        (r#"{"event": [{"suffix": "_placed"}]}"#, true),
        (r#"{"event": [{"suffix": "_cancelled"}]}"#, false),
        (r#"{"store": [{"equals-ignore-case": "EXAMPLE_CORP"}]}"#, true),
        (r#"{"store": [{"equals-ignore-case": "EXAMPLE"}]}"#, false),
        (r#"{"event": [{"anything-but": ["order_cancelled"]}]}"#, true),
        (r#"{"event": [{"anything-but": "order_placed"}]}"#, false),
        (r#"{"event": [{"anything-but": {"prefix": "refund"}}]}"#, true),
        (r#"{"event": [{"anything-but": {"prefix": "order"}}]}"#, false),
        (r#"{"price_usd": [{"anything-but": [100]}]}"#, true),
        (r#"{"price_usd": [{"anything-but": 210.75}]}"#, false),
        (r#"{"price_usd": [{"numeric": [">", 200, "<=", 210.75]}]}"#, true),
        (r#"{"price_usd": [{"numeric": ["<", 210.75]}]}"#, false),
        (r#"{"store": [{"exists": true}]}"#, true),
        (r#"{"nothing": [{"exists": true}]}"#, false),
        (r#"{"nothing": [{"exists": false}]}"#, true),
        (r#"{"store": [{"exists": false}]}"#, false),
        (r#"{"coupon": [{"exists": true}]}"#, false),
        (r#"{"coupon": [{"exists": false}]}"#, true),
        (r#"{"nothing": [{"anything-but": "x"}]}"#, false),
        (r#"{"origin": {"country": [{"exists": true}]}}"#, false),
    ];
    for (policy, expected) in cases {
        assert_eq!(body(&body_policy(policy), ORDER), *expected, "{policy}");
    }
}

#[test]
fn anything_but_on_a_body_array_needs_every_element_to_pass() {
    assert!(!body(&body_policy(r#"{"customer_interests": [{"anything-but": ["rugby"]}]}"#), ORDER));
    assert!(body(&body_policy(r#"{"customer_interests": [{"anything-but": ["golf"]}]}"#), ORDER));
    assert!(!body(
        &body_policy(r#"{"customer_interests": [{"anything-but": "x"}]}"#),
        r#"{"customer_interests": []}"#
    ));
}

#[test]
fn numeric_on_a_string_field_does_not_match() {
    let p = body_policy(r#"{"v": [{"numeric": [">", 0]}]}"#);
    assert!(!body(&p, r#"{"v": "5"}"#));
    assert!(body(&p, r#"{"v": 5}"#));
}

#[test]
fn and_across_keys_and_or_in_the_body() {
    let p = body_policy(
        r#"{"store": ["example_corp"],
            "$or": [{"price_usd": [{"numeric": [">", 500]}]},
                    {"origin": {"country": {"code": ["DK"]}}}]}"#,
    );
    assert!(body(&p, ORDER));
    assert!(!body(&p, r#"{"store": "example_corp", "price_usd": 5}"#));
    assert!(body(&p, r#"{"store": "example_corp", "price_usd": 501}"#));
    assert!(!body(&p, r#"{"store": "other", "price_usd": 501}"#));
}

#[test]
fn or_inside_a_nested_object_is_relative_to_it() {
    let p = body_policy(r#"{"origin": {"$or": [{"ip": ["1.2.3.4"]}, {"country": {"code": ["DK"]}}]}}"#);
    assert!(body(&p, ORDER));
    assert!(!body(&p, r#"{"origin": {"ip": "9.9.9.9"}}"#));
    assert!(body(&p, r#"{"origin": {"ip": "1.2.3.4"}}"#));
}

#[test]
fn a_body_that_is_not_a_json_object_matches_nothing() {
    let p = body_policy(r#"{"store": [{"exists": false}]}"#);
    assert!(body(&p, r#"{"other": 1}"#));
    for not_object in ["plain text", "", "[1, 2]", "\"string\"", "42", "{broken"] {
        assert!(!body(&p, not_object), "{not_object:?}");
    }
}

#[test]
fn body_scope_ignores_attributes() {
    let p = body_policy(r#"{"store": ["x"]}"#);
    assert!(!p.matches(&attrs(&[("store", "String", "x")]), "{}"));
}

#[test]
fn empty_policy_matches_every_body() {
    let p = body_policy("{}");
    assert!(body(&p, ORDER));
    assert!(body(&p, "not json"));
}
