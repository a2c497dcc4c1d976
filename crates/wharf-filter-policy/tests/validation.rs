//! Policies AWS rejects with InvalidParameter, and the limits exactly at and one past the edge.

mod common;

use common::*;
use wharf_filter_policy::{FilterPolicy, FilterScope, PolicyErrorKind, MAX_POLICY_BYTES};

fn assert_rejected(json: &str, message: &str) {
    let err = attr_err(json);
    assert_eq!(err.to_string(), format!("Invalid parameter: FilterPolicy: {message}"), "{json}");
    assert_eq!(err.kind(), PolicyErrorKind::InvalidRule, "{json}");
}

#[test]
fn messages_read_like_aws_for_both_actions() {
    let err = attr_err(r#"{"a": "x"}"#);
    assert_eq!(err.to_string(), r#"Invalid parameter: FilterPolicy: "a" must be an object or an array"#);
    assert_eq!(
        err.subscribe_message(),
        r#"Invalid parameter: Attributes Reason: FilterPolicy: "a" must be an object or an array"#
    );
    assert_eq!(err.detail(), r#"FilterPolicy: "a" must be an object or an array"#);
    let _: &dyn std::error::Error = &err;
}

#[test]
fn malformed_documents() {
    for json in ["", "not json", "{", r#"{"a": ["x"]"#] {
        let err = attr_err(json);
        assert_eq!(err.kind(), PolicyErrorKind::InvalidJson, "{json}");
        assert!(
            err.to_string().starts_with("Invalid parameter: FilterPolicy: failed to parse JSON."),
            "{err}"
        );
    }
    for json in ["[]", "1", "null", r#""{}""#] {
        assert_eq!(attr_err(json).kind(), PolicyErrorKind::InvalidJson, "{json}");
    }
}

#[test]
fn key_values_must_be_arrays_or_objects() {
    assert_rejected(r#"{"a": "x"}"#, r#""a" must be an object or an array"#);
    assert_rejected(r#"{"a": 1}"#, r#""a" must be an object or an array"#);
    assert_rejected(r#"{"a": null}"#, r#""a" must be an object or an array"#);
    assert_rejected(r#"{"a": []}"#, "Empty arrays are not allowed");
}

#[test]
fn nested_policies_only_in_body_scope() {
    let json = r#"{"a": {"b": ["x"]}}"#;
    let err = attr_err(json);
    assert_eq!(err.kind(), PolicyErrorKind::NestedInAttributeScope);
    assert_eq!(
        err.to_string(),
        "Invalid parameter: Filter policy scope MessageAttributes does not support nested filter policy"
    );
    body_policy(json);
    assert_eq!(body_err(r#"{"a": {}}"#).kind(), PolicyErrorKind::InvalidRule);
}

#[test]
fn match_values_must_be_scalars_or_one_key_objects() {
    assert_rejected(r#"{"a": [["x"]]}"#, "Match value must be String, number, true, false, or null");
    assert_rejected(r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#, "Only one key allowed in match expression");
    assert_rejected(r#"{"a": [{}]}"#, "Only one key allowed in match expression");
    assert_rejected(r#"{"a": [{"wildcard": "x*"}]}"#, "Unrecognized match type wildcard");
    attr_policy(r#"{"a": ["x", 1, -2.5, true, false, null]}"#);
}

#[test]
fn string_operators_take_strings() {
    for op in ["prefix", "suffix", "equals-ignore-case"] {
        assert_rejected(
            &format!(r#"{{"a": [{{"{op}": 1}}]}}"#),
            &format!("{op} match pattern must be a string"),
        );
        assert_rejected(
            &format!(r#"{{"a": [{{"{op}": null}}]}}"#),
            &format!("{op} match pattern must be a string"),
        );
    }
}

#[test]
fn exists_takes_a_boolean() {
    assert_rejected(r#"{"a": [{"exists": "true"}]}"#, "exists match pattern must be either true or false.");
    assert_rejected(r#"{"a": [{"exists": 1}]}"#, "exists match pattern must be either true or false.");
}

#[test]
fn anything_but_forms() {
    attr_policy(r#"{"a": [{"anything-but": "x"}]}"#);
    attr_policy(r#"{"a": [{"anything-but": 5}]}"#);
    attr_policy(r#"{"a": [{"anything-but": ["x", 5]}]}"#);
    attr_policy(r#"{"a": [{"anything-but": {"prefix": "x"}}]}"#);
    // AWS rejects anything-but with suffix (only prefix nests inside anything-but in SNS).
    assert_rejected(
        r#"{"a": [{"anything-but": {"suffix": "x"}}]}"#,
        "Unsupported anything-but pattern: suffix",
    );
    assert_rejected(
        r#"{"a": [{"anything-but": {"cidr": "10.0.0.0/8"}}]}"#,
        "Unsupported anything-but pattern: cidr",
    );
    assert_rejected(r#"{"a": [{"anything-but": {"prefix": 1}}]}"#, "prefix match pattern must be a string");
    assert_rejected(
        r#"{"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}"#,
        "Only one key allowed in match expression",
    );
    assert_rejected(r#"{"a": [{"anything-but": []}]}"#, "Empty arrays are not allowed");
    assert_rejected(
        r#"{"a": [{"anything-but": [["x"]]}]}"#,
        "Match value must be String, number, true, false, or null",
    );
}

#[test]
fn numeric_ranges_are_validated() {
    let bad: &[(&str, &str)] = &[
        (r#"[]"#, "Invalid member in numeric match: ]"),
        (r#"[5]"#, "Invalid member in numeric match: 5"),
        (r#"["!=", 5]"#, "Unrecognized numeric range operator: !="),
        (r#"["="]"#, "Value of equals must be numeric"),
        (r#"["=", "5"]"#, "Value of equals must be numeric"),
        (r#"[">", "x"]"#, "Value of > must be numeric"),
        (r#"["=", 5, "<", 6]"#, "Too many elements in numeric expression"),
        (r#"["<", 5, ">", 1]"#, "Too many elements in numeric expression"),
        (r#"[">", 5, ">", 6]"#, "Bad numeric range operator: >"),
        (r#"[">", 5, 6]"#, "Bad value in numeric range: 6"),
        (r#"[">", 5, "<"]"#, "Value of < must be numeric"),
        (r#"[">", 5, "<", 5]"#, "Bottom must be less than top"),
        (r#"[">=", 6, "<=", 5]"#, "Bottom must be less than top"),
        (r#"[">", 0, "<", 5, "<", 6]"#, "Too many terms in numeric range expression"),
        (r#""> 5""#, "Value of numeric must be an array."),
    ];
    for (range, message) in bad {
        assert_rejected(&format!(r#"{{"a": [{{"numeric": {range}}}]}}"#), message);
    }
    for good in [r#"["=", 0]"#, r#"[">", -1000000000, "<", 1000000000]"#, r#"[">=", 0.00001, "<=", 0.00002]"#]
    {
        attr_policy(&format!(r#"{{"a": [{{"numeric": {good}}}]}}"#));
    }
}

#[test]
fn cidr_is_validated() {
    assert_rejected(r#"{"a": [{"cidr": 10}]}"#, "cidr match pattern must be a string");
    assert_rejected(r#"{"a": [{"cidr": "10.0.0.0"}]}"#, "Malformed CIDR, one '/' required");
    assert_rejected(r#"{"a": [{"cidr": "10.0.0.0/x"}]}"#, "Malformed CIDR, mask bits must be an integer");
    assert_rejected(r#"{"a": [{"cidr": "10.0.0.300/8"}]}"#, "Nonstandard IP address: 10.0.0.300");
    assert_rejected(
        r#"{"a": [{"cidr": "10.0.0.0/33"}]}"#,
        "Malformed CIDR, mask bits must be between 0 and 32",
    );
    assert_rejected(r#"{"a": [{"cidr": "::/129"}]}"#, "Malformed CIDR, mask bits must be between 0 and 128");
    attr_policy(r#"{"a": [{"cidr": "::/128"}, {"cidr": "0.0.0.0/0"}]}"#);
}

#[test]
fn or_is_validated() {
    // Not a real `$or` (see AWS's three conditions): validated as an ordinary key.
    assert_rejected(r#"{"$or": "x"}"#, r#""$or" must be an object or an array"#);
    assert_rejected(r#"{"$or": [{"a": ["x"]}]}"#, "Unrecognized match type a");
    assert_rejected(r#"{"$or": [{"a": ["x"]}, ["y"]]}"#, "Unrecognized match type a");
    assert_rejected(
        r#"{"$or": [{"numeric": 123}, {"prefix": "abc"}]}"#,
        "Value of numeric must be an array.",
    );
    assert_eq!(attr_err(r#"{"$or": {"a": ["x"]}}"#).kind(), PolicyErrorKind::NestedInAttributeScope);
    assert_rejected(r#"{"$or": [{"a": ["x"]}, {}]}"#, r#"Empty objects are not allowed in "$or""#);
    assert_rejected(r#"{"$or": [{"a": ["x"]}, {"b": "y"}]}"#, r#""b" must be an object or an array"#);
}

fn keys(n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!(r#""key_{i}": ["v"]"#)).collect();
    format!("{{{}}}", fields.join(","))
}

#[test]
fn five_keys_pass_six_fail() {
    attr_policy(&keys(5));
    let err = attr_err(&keys(6));
    assert_eq!(err.kind(), PolicyErrorKind::TooManyKeys);
    assert_eq!(
        err.to_string(),
        "Invalid parameter: FilterPolicy: Filter policy can not have more than 5 keys"
    );
    // Body scope counts only parent keys.
    body_policy(r#"{"a": {"b": ["x"], "c": ["x"], "d": ["x"], "e": ["x"], "f": ["x"], "g": ["x"]}}"#);
    assert_eq!(body_err(&keys(6)).kind(), PolicyErrorKind::TooManyKeys);
    // `$or` counts as one key, and each branch may have five.
    let branch = keys(5);
    attr_policy(&format!(
        r#"{{"a": ["x"], "b": ["x"], "c": ["x"], "d": ["x"], "$or": [{branch}, {branch}]}}"#
    ));
    assert_eq!(
        attr_err(&format!(r#"{{"$or": [{branch}, {}]}}"#, keys(6))).kind(),
        PolicyErrorKind::TooManyKeys
    );
}

fn values(n: usize) -> String {
    (0..n).map(|i| format!(r#""v{i}""#)).collect::<Vec<_>>().join(",")
}

#[test]
fn one_hundred_fifty_combinations_pass_151_fail() {
    // 5 * 5 * 6 = 150
    let at = format!(r#"{{"a": [{}], "b": [{}], "c": [{}]}}"#, values(5), values(5), values(6));
    assert_eq!(attr_policy(&at).combinations(), 150);
    let over = format!(r#"{{"a": [{}]}}"#, values(151));
    let err = attr_err(&over);
    assert_eq!(err.kind(), PolicyErrorKind::TooComplex);
    assert_eq!(err.to_string(), "Invalid parameter: FilterPolicy: Filter policy is too complex");
    attr_policy(&format!(r#"{{"a": [{}]}}"#, values(150)));
    // Operators count as values too.
    let ops = (0..151).map(|i| format!(r#"{{"prefix": "p{i}"}}"#)).collect::<Vec<_>>().join(",");
    assert_eq!(attr_err(&format!(r#"{{"a": [{ops}]}}"#)).kind(), PolicyErrorKind::TooComplex);
}

#[test]
fn nested_combinations_follow_aws_arithmetic() {
    // AWS's documented example: four values three levels deep and three values two levels deep
    // give 3 x 4 x 2 x 3 = 72.
    let p = body_policy(
        r#"{"key_a": {"key_b": {"key_c": ["value_one", "value_two", "value_three", "value_four"]}},
            "key_d": {"key_e": ["value_one", "value_two", "value_three"]}}"#,
    );
    assert_eq!(p.combinations(), 72);
    let too_deep = r#"{"key_a": {"key_b": {"key_c": ["1","2","3","4"]}}, "key_d": {"key_e": ["1","2","3"]},
                       "key_f": ["1","2","3"]}"#;
    assert_eq!(body_err(too_deep).kind(), PolicyErrorKind::TooComplex);
}

#[test]
fn or_combinations_are_summed_over_branches() {
    // 2 * (50 + 25) = 150 passes; one more value in a branch tips it over.
    let at = format!(r#"{{"a": ["x", "y"], "$or": [{{"b": [{}]}}, {{"c": [{}]}}]}}"#, values(50), values(25));
    assert_eq!(attr_policy(&at).combinations(), 150);
    let over =
        format!(r#"{{"a": ["x", "y"], "$or": [{{"b": [{}]}}, {{"c": [{}]}}]}}"#, values(51), values(25));
    assert_eq!(attr_err(&over).kind(), PolicyErrorKind::TooComplex);
}

#[test]
fn policy_size_limit_is_256_kib() {
    let make = |len: usize| {
        let skeleton = r#"{"a": [""]}"#;
        format!(r#"{{"a": ["{}"]}}"#, "x".repeat(len - skeleton.len()))
    };
    let at = make(MAX_POLICY_BYTES);
    assert_eq!(at.len(), 256 * 1024);
    FilterPolicy::parse(&at, FilterScope::MessageAttributes).unwrap();
    let over = make(MAX_POLICY_BYTES + 1);
    let err = attr_err(&over);
    assert_eq!(err.kind(), PolicyErrorKind::TooLarge);
    assert!(
        err.to_string().starts_with("Invalid parameter: FilterPolicy: Filter policy is too large"),
        "{err}"
    );
}

#[test]
fn huge_numbers_and_deep_nesting_are_rejected_not_panics() {
    assert!(FilterPolicy::parse(r#"{"a": [1e400]}"#, FilterScope::MessageAttributes).is_err());
    let deep = format!("{}[\"x\"]{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    assert!(FilterPolicy::parse(&deep, FilterScope::MessageBody).is_err());
}
