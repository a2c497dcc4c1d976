//! Matching compiled policies against message attributes or a JSON body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde_json::Value;

use crate::parse::{scale, Bound, Condition, Field, Group, Literal};
use crate::AttributeValue;

/// A published message prepared once for matching against many policies: the body is parsed as
/// JSON at most once, and only if a body-scope policy asks for it.
#[derive(Debug)]
pub struct Message<'a> {
    attributes: &'a BTreeMap<String, AttributeValue>,
    body: &'a str,
    parsed_body: OnceLock<Option<Value>>,
}

impl<'a> Message<'a> {
    pub fn new(attributes: &'a BTreeMap<String, AttributeValue>, body: &'a str) -> Self {
        Message { attributes, body, parsed_body: OnceLock::new() }
    }

    pub(crate) fn attributes(&self) -> &'a BTreeMap<String, AttributeValue> {
        self.attributes
    }

    pub(crate) fn body(&self) -> Option<&Value> {
        self.parsed_body.get_or_init(|| parse_body(self.body)).as_ref()
    }
}

/// The body as a JSON object, or `None` when it is not one (such a body matches no body policy).
pub(crate) fn parse_body(body: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(body) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// A message value as the matcher sees it. Numbers are scaled like policy numbers.
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Str(Cow<'a, str>),
    Num(i64),
    Bool(bool),
    Null,
}

impl<'a> Val<'a> {
    /// A JSON scalar; objects and arrays are not values (arrays are walked by the caller).
    fn from_json(v: &'a Value) -> Option<Val<'a>> {
        match v {
            Value::String(s) => Some(Val::Str(Cow::Borrowed(s))),
            Value::Number(n) => n.as_f64().and_then(scale).map(Val::Num),
            Value::Bool(b) => Some(Val::Bool(*b)),
            Value::Null => Some(Val::Null),
            _ => None,
        }
    }

    fn into_owned(self) -> Val<'static> {
        match self {
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Num(n) => Val::Num(n),
            Val::Bool(b) => Val::Bool(b),
            Val::Null => Val::Null,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    fn equals(&self, literal: &Literal) -> bool {
        match (self, literal) {
            (Val::Str(a), Literal::Str(b)) => a == b,
            (Val::Num(a), Literal::Num(b)) => a == b,
            (Val::Bool(a), Literal::Bool(b)) => a == b,
            (Val::Null, Literal::Null) => true,
            _ => false,
        }
    }
}

pub(crate) fn matches_attributes(root: &Group, attributes: &BTreeMap<String, AttributeValue>) -> bool {
    if attributes.is_empty() {
        // AWS: "An empty set of attributes results in the filter not matching", even for
        // `exists: false`. Only the empty policy `{}` lets such a message through.
        return is_empty(root);
    }
    group_matches(root, &mut |field: &Field| {
        let attribute = attributes.get(&field.path[0]);
        let Some(attribute) = attribute else {
            return field_matches(field, false, &[]);
        };
        let mut array = Vec::new();
        let single;
        let values: &[Val] = match attribute.data_type.as_str() {
            // AWS documents `Number.Array` next to `String.Array`; both carry a JSON array.
            "String.Array" | "Number.Array" => {
                array = string_array(&attribute.value);
                &array
            }
            t if t == "String" || t.starts_with("String.") => {
                single = Val::Str(Cow::Borrowed(attribute.value.as_str()));
                std::slice::from_ref(&single)
            }
            t if t == "Number" || t.starts_with("Number.") => {
                match attribute.value.trim().parse::<f64>().ok().and_then(scale) {
                    Some(n) => {
                        single = Val::Num(n);
                        std::slice::from_ref(&single)
                    }
                    None => &array,
                }
            }
            // Binary (and anything unknown) is present but never equal to a policy value.
            _ => &array,
        };
        field_matches(field, true, values)
    })
}

/// The elements of a `String.Array` attribute; a value that is not a JSON array has none.
fn string_array(text: &str) -> Vec<Val<'static>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items.iter().filter_map(Val::from_json).map(Val::into_owned).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn matches_body(root: &Group, body: Option<&Value>) -> bool {
    if is_empty(root) {
        // `{}`: no conditions, every message is delivered (see README).
        return true;
    }
    let Some(body) = body else { return false };
    let mut values = Vec::new();
    group_matches(root, &mut |field: &Field| {
        values.clear();
        collect(body, &field.path, &mut values);
        // AWS: `exists: true` needs "a non-null and non-empty value"; a null is not there.
        let present = values.iter().any(|v| *v != Val::Null);
        field_matches(field, present, &values)
    })
}

fn is_empty(root: &Group) -> bool {
    root.fields.is_empty() && root.alternatives.is_empty()
}

/// Every scalar reachable at `path`; arrays anywhere along the way (or at the end) are walked,
/// so a key inside an array of objects matches if any element's value matches.
fn collect<'v>(value: &'v Value, path: &[String], out: &mut Vec<Val<'v>>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, out)),
        Value::Object(map) => {
            if let Some((first, rest)) = path.split_first() {
                if let Some(child) = map.get(first) {
                    collect(child, rest, out);
                }
            }
        }
        scalar if path.is_empty() => out.extend(Val::from_json(scalar)),
        _ => {}
    }
}

fn group_matches(group: &Group, field_ok: &mut dyn FnMut(&Field) -> bool) -> bool {
    group.fields.iter().all(&mut *field_ok)
        && group.alternatives.iter().all(|branches| branches.iter().any(|g| group_matches(g, field_ok)))
}

/// A key matches when any of its conditions holds. A positive condition holds when any of the
/// key's values (array elements count one by one) satisfies it; an anything-but condition holds
/// when the key has values and none of them is excluded (AWS: for String.Array "it matches if
/// none of the array elements are listed in the policy property").
fn field_matches(field: &Field, present: bool, values: &[Val]) -> bool {
    field.conditions.iter().any(|condition| match condition {
        Condition::Exists(wanted) => *wanted == present,
        Condition::AnythingBut(_) | Condition::AnythingButPrefix(_) => {
            !values.is_empty() && values.iter().all(|v| condition_matches(condition, v))
        }
        other => values.iter().any(|v| condition_matches(other, v)),
    })
}

fn condition_matches(condition: &Condition, value: &Val) -> bool {
    match condition {
        Condition::Exact(literal) => value.equals(literal),
        Condition::Prefix(p) => value.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Condition::Suffix(p) => value.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Condition::EqualsIgnoreCase(lower) => value.as_str().is_some_and(|s| {
            if s.is_ascii() && lower.is_ascii() {
                s.eq_ignore_ascii_case(lower)
            } else {
                s.to_lowercase() == *lower
            }
        }),
        Condition::AnythingBut(literals) => !literals.iter().any(|l| value.equals(l)),
        Condition::AnythingButPrefix(p) => value.as_str().is_some_and(|s| !s.starts_with(p.as_str())),
        Condition::Numeric { lower, upper } => match value {
            Val::Num(n) => within(*n, *lower, *upper),
            _ => false,
        },
        Condition::Cidr { network, prefix_len } => value
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|ip| in_network(ip, *network, *prefix_len)),
        Condition::Exists(_) => unreachable!("handled per key"),
    }
}

fn within(n: i64, lower: Option<Bound>, upper: Option<Bound>) -> bool {
    let above = lower.is_none_or(|b| if b.inclusive { n >= b.value } else { n > b.value });
    let below = upper.is_none_or(|b| if b.inclusive { n <= b.value } else { n < b.value });
    above && below
}

fn in_network(ip: IpAddr, network: IpAddr, prefix_len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}
