//! Matching with FilterPolicyScope = MessageAttributes (the default).

mod common;

use common::*;
use wharf_filter_policy::{FilterPolicy, FilterScope, Message};

#[test]
fn exact_string_matches_any_listed_value_and_is_case_sensitive() {
    let p = attr_policy(r#"{"store": ["example_corp", "other"]}"#);
    assert!(s(&p, "store", "example_corp"));
    assert!(s(&p, "store", "other"));
    assert!(!s(&p, "store", "Example_corp"));
    assert!(!s(&p, "store", "example_corp "));
    assert!(!s(&p, "shop", "example_corp"), "a different attribute name does not count");
}

#[test]
fn exact_number_matches_number_attributes_numerically() {
    let p = attr_policy(r#"{"price": [100, 0.5]}"#);
    assert!(n(&p, "price", "100"));
    assert!(n(&p, "price", "100.0"));
    assert!(n(&p, "price", "1e2"));
    assert!(n(&p, "price", "0.500000"));
    assert!(!n(&p, "price", "100.00001"));
    assert!(!n(&p, "price", "101"));
    assert!(!s(&p, "price", "100"), "a String attribute is not compared numerically");
    assert!(!n(&p, "price", "not-a-number"));
}

#[test]
fn numbers_compare_with_five_decimal_places() {
    let p = attr_policy(r#"{"v": [1.000001]}"#);
    assert!(n(&p, "v", "1"), "beyond the fifth decimal the difference is lost, as AWS documents");
    let p = attr_policy(r#"{"v": [1.00001]}"#);
    assert!(!n(&p, "v", "1"));
}

#[test]
fn custom_data_type_suffixes_keep_their_base_type() {
    let p = attr_policy(r#"{"v": [5], "w": ["x"]}"#);
    assert!(p.matches(&attrs(&[("v", "Number.int", "5"), ("w", "String.custom", "x")]), ""));
}

#[test]
fn prefix_and_suffix() {
    let p = attr_policy(r#"{"event": [{"prefix": "order-"}]}"#);
    assert!(s(&p, "event", "order-placed"));
    assert!(s(&p, "event", "order-"));
    assert!(!s(&p, "event", "Order-placed"));
    assert!(!s(&p, "event", "my-order-"));
    let p = attr_policy(r#"{"file": [{"suffix": ".png"}]}"#);
    assert!(s(&p, "file", "cat.png"));
    assert!(!s(&p, "file", "cat.png.txt"));
    assert!(!n(&p, "file", "5"));
}

#[test]
fn equals_ignore_case() {
    let p = attr_policy(r#"{"name": [{"equals-ignore-case": "Bob"}]}"#);
    assert!(s(&p, "name", "bob"));
    assert!(s(&p, "name", "BOB"));
    assert!(!s(&p, "name", "bobby"));
    let p = attr_policy(r#"{"city": [{"equals-ignore-case": "ÅRHUS"}]}"#);
    assert!(s(&p, "city", "århus"));
    assert!(!s(&p, "city", "arhus"));
}

#[test]
fn anything_but_single_value_and_list() {
    let p = attr_policy(r#"{"store": [{"anything-but": "example_corp"}]}"#);
    assert!(s(&p, "store", "other"));
    assert!(!s(&p, "store", "example_corp"));
    assert!(!p.matches(&attrs(&[]), ""), "anything-but needs the attribute to be present");
    let p = attr_policy(r#"{"store": [{"anything-but": ["a", "b"]}]}"#);
    assert!(s(&p, "store", "c"));
    assert!(!s(&p, "store", "a"));
    assert!(!s(&p, "store", "b"));
}

#[test]
fn anything_but_numbers() {
    let p = attr_policy(r#"{"price": [{"anything-but": [100, 500]}]}"#);
    assert!(n(&p, "price", "200"));
    assert!(!n(&p, "price", "100"));
    assert!(!n(&p, "price", "500.0"));
    let p = attr_policy(r#"{"price": [{"anything-but": 100}]}"#);
    assert!(!n(&p, "price", "100"));
    assert!(n(&p, "price", "100.5"));
}

#[test]
fn anything_but_prefix_and_suffix() {
    let p = attr_policy(r#"{"event": [{"anything-but": {"prefix": "order-"}}]}"#);
    assert!(s(&p, "event", "refund-issued"));
    assert!(!s(&p, "event", "order-placed"));
    assert!(!p.matches(&attrs(&[]), ""));
}

#[test]
fn anything_but_on_a_string_array_needs_every_element_to_pass() {
    // AWS: "For String.Array type attributes, it matches if none of the array elements are
    // listed in the policy property."
    let p = attr_policy(r#"{"sports": [{"anything-but": ["rugby", "tennis"]}]}"#);
    let m = |v: &str| p.matches(&attrs(&[("sports", "String.Array", v)]), "");
    assert!(m(r#"["baseball", "football"]"#));
    assert!(!m(r#"["rugby", "baseball"]"#));
    assert!(!m("[]"), "an empty array has no value to be anything but");
    let p = attr_policy(r#"{"sports": [{"anything-but": {"prefix": "ru"}}]}"#);
    assert!(p.matches(&attrs(&[("sports", "String.Array", r#"["golf", "polo"]"#)]), ""));
    assert!(!p.matches(&attrs(&[("sports", "String.Array", r#"["golf", "rugby"]"#)]), ""));
}

#[test]
fn anything_but_combined_with_exists_false() {
    let p = attr_policy(r#"{"store": [{"anything-but": ["a"]}, {"exists": false}]}"#);
    assert!(s(&p, "store", "b"));
    assert!(!s(&p, "store", "a"));
    assert!(p.matches(&attrs(&[("other", "String", "x")]), ""));
}

#[test]
fn empty_attribute_set_matches_no_non_empty_policy() {
    for policy in [r#"{"a": [{"exists": false}]}"#, r#"{"a": [{"anything-but": "x"}]}"#] {
        assert!(!attr_policy(policy).matches(&attrs(&[]), "{}"), "{policy}");
    }
}

#[test]
fn dollar_or_that_is_not_an_operator_is_an_ordinary_key() {
    // AWS treats "$or" as a plain attribute name unless it holds an array of at least two
    // objects whose field names are not reserved keywords.
    let p = attr_policy(r#"{"$or": ["a", "b"]}"#);
    assert!(s(&p, "$or", "a"));
    assert!(!s(&p, "$or", "c"));
    assert!(!s(&p, "other", "a"));
    // A single object is a match expression on the key "$or", where "x" is no operator.
    assert!(FilterPolicy::parse(r#"{"$or": [{"x": ["a"]}]}"#, FilterScope::MessageAttributes).is_err());
}

#[test]
fn numeric_comparisons_each_operator() {
    let cases: &[(&str, &[(&str, bool)])] = &[
        (r#"["=", 10]"#, &[("10", true), ("10.0", true), ("9.99999", false), ("11", false)]),
        (r#"[">", 10]"#, &[("10", false), ("10.00001", true), ("-5", false)]),
        (r#"[">=", 10]"#, &[("10", true), ("9.99999", false), ("1000000000", true)]),
        (r#"["<", 10]"#, &[("10", false), ("9.99999", true), ("-1000000000", true)]),
        (r#"["<=", 10]"#, &[("10", true), ("10.00001", false)]),
        (r#"[">", 0, "<=", 150]"#, &[("0", false), ("0.00001", true), ("150", true), ("150.00001", false)]),
        (r#"[">=", -5.5, "<", 5.5]"#, &[("-5.5", true), ("5.5", false), ("0", true), ("-6", false)]),
    ];
    for (range, checks) in cases {
        let p = attr_policy(&format!(r#"{{"price": [{{"numeric": {range}}}]}}"#));
        for (value, expected) in *checks {
            assert_eq!(n(&p, "price", value), *expected, "{range} with {value}");
        }
        assert!(!s(&p, "price", "10"), "numeric conditions look only at Number attributes");
    }
}

#[test]
fn exists_true_and_false() {
    let p = attr_policy(r#"{"store": [{"exists": true}]}"#);
    assert!(s(&p, "store", "anything"));
    assert!(p.matches(&attrs(&[("store", "Binary", "AAEC")]), ""), "exists looks at the key only");
    assert!(!p.matches(&attrs(&[("other", "String", "x")]), ""));
    let p = attr_policy(r#"{"store": [{"exists": false}]}"#);
    assert!(!s(&p, "store", "anything"));
    assert!(p.matches(&attrs(&[("other", "String", "x")]), ""));
    assert!(!p.matches(&attrs(&[]), ""), "AWS: an empty set of attributes matches no filter");
}

#[test]
fn absent_attribute_fails_every_value_condition() {
    for rule in [
        r#""x""#,
        r#"5"#,
        r#"{"prefix": "x"}"#,
        r#"{"suffix": "x"}"#,
        r#"{"equals-ignore-case": "x"}"#,
        r#"{"anything-but": "x"}"#,
        r#"{"anything-but": {"prefix": "x"}}"#,
        r#"{"numeric": [">", 0]}"#,
        r#"{"cidr": "10.0.0.0/8"}"#,
    ] {
        let p = attr_policy(&format!(r#"{{"k": [{rule}]}}"#));
        assert!(!p.matches(&attrs(&[("other", "String", "x")]), ""), "{rule}");
    }
}

#[test]
fn cidr_ipv4_and_ipv6() {
    let p = attr_policy(r#"{"source_ip": [{"cidr": "10.0.0.0/24"}]}"#);
    assert!(s(&p, "source_ip", "10.0.0.0"));
    assert!(s(&p, "source_ip", "10.0.0.255"));
    assert!(!s(&p, "source_ip", "10.0.1.0"));
    assert!(!s(&p, "source_ip", "not an ip"));
    assert!(!s(&p, "source_ip", "::ffff:10.0.0.1"), "an IPv6 address is not in an IPv4 network");
    let p = attr_policy(r#"{"source_ip": [{"cidr": "2001:db8::/32"}]}"#);
    assert!(s(&p, "source_ip", "2001:db8:1234::1"));
    assert!(!s(&p, "source_ip", "2001:db9::1"));
    let p = attr_policy(r#"{"ip": [{"cidr": "0.0.0.0/0"}]}"#);
    assert!(s(&p, "ip", "192.168.1.1"));
    let p = attr_policy(r#"{"ip": [{"cidr": "192.168.1.7/32"}]}"#);
    assert!(s(&p, "ip", "192.168.1.7"));
    assert!(!s(&p, "ip", "192.168.1.8"));
}

#[test]
fn string_array_attribute_matches_if_any_element_matches() {
    let p = attr_policy(r#"{"customer_interests": ["rugby", "football"]}"#);
    let msg = |v: &str| attrs(&[("customer_interests", "String.Array", v)]);
    assert!(p.matches(&msg(r#"["soccer", "rugby", "hockey"]"#), ""));
    assert!(!p.matches(&msg(r#"["soccer", "hockey"]"#), ""));
    assert!(!p.matches(&msg(r#"[]"#), ""));
    assert!(!p.matches(&msg(r#"not json"#), ""));
    assert!(!p.matches(&attrs(&[("customer_interests", "String", r#"["rugby"]"#)]), ""));
    let p = attr_policy(r#"{"v": [{"numeric": [">", 10]}, true, null]}"#);
    assert!(p.matches(&attrs(&[("v", "String.Array", "[1, 20]")]), ""));
    assert!(p.matches(&attrs(&[("v", "String.Array", "[1, true]")]), ""));
    assert!(p.matches(&attrs(&[("v", "String.Array", "[null]")]), ""));
    assert!(!p.matches(&attrs(&[("v", "String.Array", r#"[1, "20", false]"#)]), ""));
}

#[test]
fn number_array_attributes_are_arrays_too() {
    let p = attr_policy(r#"{"price": [{"numeric": [">", 60]}]}"#);
    assert!(p.matches(&attrs(&[("price", "Number.Array", "[100, 50]")]), ""));
    assert!(!p.matches(&attrs(&[("price", "Number.Array", "[10, 50]")]), ""));
}

#[test]
fn binary_attributes_never_match_values() {
    let p = attr_policy(r#"{"b": ["AAEC", {"anything-but": "x"}, {"prefix": ""}]}"#);
    assert!(!p.matches(&attrs(&[("b", "Binary", "AAEC")]), ""));
}

#[test]
fn and_across_keys_or_within_a_key() {
    let p = attr_policy(
        r#"{"store": ["example_corp"], "event": [{"anything-but": "order_cancelled"}],
            "price_usd": [{"numeric": [">=", 100]}]}"#,
    );
    let ok = attrs(&[
        ("store", "String", "example_corp"),
        ("event", "String", "order_placed"),
        ("price_usd", "Number", "210.75"),
    ]);
    assert!(p.matches(&ok, ""));
    let cheap = attrs(&[
        ("store", "String", "example_corp"),
        ("event", "String", "order_placed"),
        ("price_usd", "Number", "99"),
    ]);
    assert!(!p.matches(&cheap, ""));
    let missing = attrs(&[("store", "String", "example_corp"), ("event", "String", "order_placed")]);
    assert!(!p.matches(&missing, ""));
    let p = attr_policy(r#"{"k": ["a", {"prefix": "zz"}, {"exists": false}]}"#);
    assert!(s(&p, "k", "a"));
    assert!(s(&p, "k", "zzz"));
    assert!(p.matches(&attrs(&[("other", "String", "x")]), ""));
    assert!(!s(&p, "k", "b"));
}

#[test]
fn or_combines_alternative_sub_policies() {
    let p = attr_policy(
        r#"{"source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                    {"namespace": ["AWS/EC2", "AWS/ES"]}]}"#,
    );
    let m = |pairs: &[(&str, &str, &str)]| p.matches(&attrs(pairs), "");
    assert!(m(&[("source", "String", "aws.cloudwatch"), ("metricName", "String", "ReadLatency")]));
    assert!(m(&[("source", "String", "aws.cloudwatch"), ("namespace", "String", "AWS/ES")]));
    assert!(!m(&[("source", "String", "aws.cloudwatch"), ("metricName", "String", "Other")]));
    assert!(!m(&[("source", "String", "other"), ("metricName", "String", "ReadLatency")]));
    assert!(!m(&[("source", "String", "aws.cloudwatch")]));
}

#[test]
fn nested_or() {
    let p = attr_policy(
        r#"{"source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization"]},
                    {"metricType": ["MetricType"],
                     "$or": [{"metricId": [1234, 4321]}, {"spaceId": [1000, 2000, 3000]}]}]}"#,
    );
    assert_eq!(p.combinations(), 1 + 2 + 3);
    let m = |pairs: &[(&str, &str, &str)]| p.matches(&attrs(pairs), "");
    let src = ("source", "String", "aws.cloudwatch");
    assert!(m(&[src, ("metricName", "String", "CPUUtilization")]));
    assert!(m(&[src, ("metricType", "String", "MetricType"), ("spaceId", "Number", "2000")]));
    assert!(!m(&[src, ("metricType", "String", "MetricType")]));
    assert!(!m(&[src, ("spaceId", "Number", "2000")]));
}

#[test]
fn empty_policy_matches_everything() {
    let p = attr_policy("{}");
    assert!(p.matches(&attrs(&[]), "anything"));
    assert!(p.matches(&attrs(&[("a", "String", "b")]), ""));
}

#[test]
fn attribute_scope_ignores_the_body() {
    let p = attr_policy(r#"{"store": ["x"]}"#);
    assert!(!p.matches(&attrs(&[]), r#"{"store": "x"}"#));
}

#[test]
fn prepared_message_gives_the_same_answers() {
    let a = attrs(&[("store", "String", "x")]);
    let body = r#"{"store": "y"}"#;
    let message = Message::new(&a, body);
    let by_attr = FilterPolicy::parse(r#"{"store": ["x"]}"#, FilterScope::MessageAttributes).unwrap();
    let by_body = FilterPolicy::parse(r#"{"store": ["y"]}"#, FilterScope::MessageBody).unwrap();
    let wrong = FilterPolicy::parse(r#"{"store": ["x"]}"#, FilterScope::MessageBody).unwrap();
    for p in [&by_attr, &by_body, &wrong] {
        assert_eq!(p.matches_message(&message), p.matches(&a, body));
    }
    assert!(by_attr.matches_message(&message));
    assert!(by_body.matches_message(&message));
    assert!(!wrong.matches_message(&message));
}

#[test]
fn scope_parses_from_aws_names() {
    assert_eq!("MessageAttributes".parse::<FilterScope>().unwrap(), FilterScope::MessageAttributes);
    assert_eq!("MessageBody".parse::<FilterScope>().unwrap(), FilterScope::MessageBody);
    assert_eq!(FilterScope::default(), FilterScope::MessageAttributes);
    let err = "messagebody".parse::<FilterScope>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid parameter: FilterPolicyScope: Invalid value [messagebody]. Please use either MessageBody or MessageAttributes"
    );
    assert_eq!(FilterScope::MessageBody.to_string(), "MessageBody");
}
