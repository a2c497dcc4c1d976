//! Validation and compilation of a policy document into [`Group`]s of [`Condition`]s.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::error::{PolicyError, PolicyErrorKind as Kind};
use crate::{FilterScope, MAX_COMBINATIONS, MAX_KEYS, MAX_POLICY_BYTES};

/// All of `fields` must match, and for every entry of `alternatives` at least one of its groups
/// (`$or`). Field paths are absolute (from the top of the body or the attribute name).
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    pub fields: Vec<Field>,
    pub alternatives: Vec<Vec<Group>>,
}

/// One key of the policy: it matches when any of its conditions matches.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub path: Vec<String>,
    pub conditions: Vec<Condition>,
}

/// A literal a message value can equal. Numbers are kept scaled by 10^5 (AWS matches numbers
/// with five digits after the decimal point), so equality and ranges are integer comparisons.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Num(i64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub value: i64,
    pub inclusive: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Condition {
    Exact(Literal),
    Prefix(String),
    Suffix(String),
    /// Stored lower-cased.
    EqualsIgnoreCase(String),
    AnythingBut(Vec<Literal>),
    AnythingButPrefix(String),
    Numeric {
        lower: Option<Bound>,
        upper: Option<Bound>,
    },
    Exists(bool),
    Cidr {
        network: IpAddr,
        prefix_len: u8,
    },
}

/// Scales a number to 10^-5 units, saturating far outside AWS's documented ±10^9 range.
pub(crate) fn scale(n: f64) -> Option<i64> {
    if !n.is_finite() {
        return None;
    }
    // `as` saturates on overflow, which keeps out-of-range values ordered correctly.
    Some((n * 100_000.0).round() as i64)
}

pub(crate) fn compile(policy_json: &str, scope: FilterScope) -> Result<(Group, u64), PolicyError> {
    if policy_json.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::policy(
            Kind::TooLarge,
            format!(
                "Filter policy is too large: {} bytes, the maximum is {MAX_POLICY_BYTES}",
                policy_json.len()
            ),
        ));
    }
    let doc: Value = serde_json::from_str(policy_json)
        .map_err(|e| PolicyError::policy(Kind::InvalidJson, format!("failed to parse JSON. {e}")))?;
    let Value::Object(top) = doc else {
        return Err(PolicyError::policy(Kind::InvalidJson, "Filter policy must be a JSON object"));
    };
    // Only parent keys count (AWS: "For a nested policy, only parent keys are counted").
    check_key_count(&top)?;
    let compiler = Compiler { scope };
    let (group, combinations) = compiler.object(&top, &[], 1, 1)?;
    if combinations > MAX_COMBINATIONS {
        return Err(PolicyError::policy(Kind::TooComplex, "Filter policy is too complex"));
    }
    Ok((group, combinations))
}

struct Compiler {
    scope: FilterScope,
}

impl Compiler {
    /// Compiles one policy object found at `path` (nesting `depth`, 1 at the top), returning its
    /// group and the running combination count. The count follows AWS's documented arithmetic:
    /// every value array multiplies it by its length times its nesting depth, and `$or` replaces
    /// it by the sum of its branches' counts.
    fn object(
        &self,
        obj: &Map<String, Value>,
        path: &[String],
        depth: u64,
        mut combinations: u64,
    ) -> Result<(Group, u64), PolicyError> {
        let mut group = Group::default();
        for (key, value) in obj {
            if let Some(branches) = or_branches(key, value) {
                let mut sum = 0u64;
                let mut alternatives = Vec::with_capacity(branches.len());
                for branch in branches {
                    if branch.is_empty() {
                        return Err(PolicyError::policy(
                            Kind::InvalidRule,
                            "Empty objects are not allowed in \"$or\"",
                        ));
                    }
                    check_key_count(branch)?;
                    // A branch is matched at the same level as the object holding `$or`.
                    let (g, c) = self.object(branch, path, depth, combinations)?;
                    sum = sum.saturating_add(c);
                    alternatives.push(g);
                }
                combinations = sum;
                group.alternatives.push(alternatives);
                continue;
            }
            let mut child_path = path.to_vec();
            child_path.push(key.clone());
            match value {
                Value::Object(inner) => {
                    if self.scope == FilterScope::MessageAttributes {
                        return Err(PolicyError::new(
                            Kind::NestedInAttributeScope,
                            "Filter policy scope MessageAttributes does not support nested filter policy"
                                .into(),
                        ));
                    }
                    if inner.is_empty() {
                        return Err(PolicyError::policy(Kind::InvalidRule, "Empty objects are not allowed"));
                    }
                    let (g, c) = self.object(inner, &child_path, depth + 1, combinations)?;
                    combinations = c;
                    group.fields.extend(g.fields);
                    group.alternatives.extend(g.alternatives);
                }
                Value::Array(rules) => {
                    if rules.is_empty() {
                        return Err(PolicyError::policy(Kind::InvalidRule, "Empty arrays are not allowed"));
                    }
                    let conditions = rules.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
                    combinations = combinations.saturating_mul(rules.len() as u64).saturating_mul(depth);
                    group.fields.push(Field { path: child_path, conditions });
                }
                _ => {
                    return Err(PolicyError::policy(
                        Kind::InvalidRule,
                        format!("\"{key}\" must be an object or an array"),
                    ))
                }
            }
        }
        Ok((group, combinations))
    }
}

/// Operator names: a `$or` branch using one as a key is not a sub-policy.
const RESERVED: &[&str] =
    &["prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists", "cidr", "wildcard"];

/// The branches when `key: value` is a real `$or`. AWS recognises `$or` only when its value is an
/// array of at least two objects none of which uses a reserved keyword as a field name; otherwise
/// "$or" is an ordinary key name, validated and matched like any other.
fn or_branches<'v>(key: &str, value: &'v Value) -> Option<Vec<&'v Map<String, Value>>> {
    if key != "$or" {
        return None;
    }
    let items = value.as_array()?;
    let branches: Vec<_> = items.iter().map(Value::as_object).collect::<Option<_>>()?;
    let reserved = branches.iter().any(|b| b.keys().any(|k| RESERVED.contains(&k.as_str())));
    (branches.len() >= 2 && !reserved).then_some(branches)
}

/// At most five keys in the top-level object and in each `$or` branch (`$or` itself counts as one).
fn check_key_count(obj: &Map<String, Value>) -> Result<(), PolicyError> {
    if obj.len() > MAX_KEYS {
        return Err(PolicyError::policy(
            Kind::TooManyKeys,
            format!("Filter policy can not have more than {MAX_KEYS} keys"),
        ));
    }
    Ok(())
}

fn invalid(reason: impl std::fmt::Display) -> PolicyError {
    PolicyError::policy(Kind::InvalidRule, reason)
}

/// A literal match value: string, number, true, false or null.
fn literal(value: &Value) -> Result<Literal, PolicyError> {
    match value {
        Value::String(s) => Ok(Literal::Str(s.clone())),
        Value::Number(n) => number(n.as_f64()).map(Literal::Num),
        Value::Bool(b) => Ok(Literal::Bool(*b)),
        Value::Null => Ok(Literal::Null),
        _ => Err(invalid("Match value must be String, number, true, false, or null")),
    }
}

fn number(n: Option<f64>) -> Result<i64, PolicyError> {
    n.and_then(scale).ok_or_else(|| invalid("Numeric value is out of range"))
}

/// One element of a key's value array.
fn rule(value: &Value) -> Result<Condition, PolicyError> {
    let Value::Object(obj) = value else {
        return literal(value).map(Condition::Exact);
    };
    if obj.len() != 1 {
        return Err(invalid("Only one key allowed in match expression"));
    }
    let (operator, operand) = obj.iter().next().expect("one key");
    match operator.as_str() {
        "prefix" => string_operand(operator, operand).map(Condition::Prefix),
        "suffix" => string_operand(operator, operand).map(Condition::Suffix),
        "equals-ignore-case" => {
            string_operand(operator, operand).map(|s| Condition::EqualsIgnoreCase(s.to_lowercase()))
        }
        "anything-but" => anything_but(operand),
        "exists" => match operand {
            Value::Bool(b) => Ok(Condition::Exists(*b)),
            _ => Err(invalid("exists match pattern must be either true or false.")),
        },
        "numeric" => numeric(operand),
        "cidr" => cidr(operand),
        other => Err(invalid(format!("Unrecognized match type {other}"))),
    }
}

fn string_operand(operator: &str, operand: &Value) -> Result<String, PolicyError> {
    match operand {
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(format!("{operator} match pattern must be a string"))),
    }
}

fn anything_but(operand: &Value) -> Result<Condition, PolicyError> {
    match operand {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid("Empty arrays are not allowed"));
            }
            items.iter().map(literal).collect::<Result<Vec<_>, _>>().map(Condition::AnythingBut)
        }
        Value::Object(obj) => {
            if obj.len() != 1 {
                return Err(invalid("Only one key allowed in match expression"));
            }
            let (operator, inner) = obj.iter().next().expect("one key");
            match operator.as_str() {
                "prefix" => string_operand(operator, inner).map(Condition::AnythingButPrefix),
                other => Err(invalid(format!("Unsupported anything-but pattern: {other}"))),
            }
        }
        single => literal(single).map(|l| Condition::AnythingBut(vec![l])),
    }
}

fn numeric(operand: &Value) -> Result<Condition, PolicyError> {
    let Value::Array(terms) = operand else {
        return Err(invalid("Value of numeric must be an array."));
    };
    let Some(first) = terms.first() else {
        return Err(invalid("Invalid member in numeric match: ]"));
    };
    let op = match first {
        Value::String(s) if ["<", "<=", "=", ">", ">="].contains(&s.as_str()) => s.as_str(),
        Value::String(s) => return Err(invalid(format!("Unrecognized numeric range operator: {s}"))),
        other => return Err(invalid(format!("Invalid member in numeric match: {other}"))),
    };
    let value = numeric_value(op, terms.get(1))?;
    let bound = |inclusive| Some(Bound { value, inclusive });
    let (lower, upper) = match op {
        "=" => (bound(true), bound(true)),
        ">" => (bound(false), None),
        ">=" => (bound(true), None),
        "<" => (None, bound(false)),
        _ => (None, bound(true)),
    };
    if terms.len() == 2 {
        return Ok(Condition::Numeric { lower, upper });
    }
    if upper.is_some() {
        return Err(invalid("Too many elements in numeric expression"));
    }
    let op2 = match &terms[2] {
        Value::String(s) if s == "<" || s == "<=" => s.as_str(),
        Value::String(s) => return Err(invalid(format!("Bad numeric range operator: {s}"))),
        other => return Err(invalid(format!("Bad value in numeric range: {other}"))),
    };
    let top = numeric_value(op2, terms.get(3))?;
    if top <= value {
        return Err(invalid("Bottom must be less than top"));
    }
    if terms.len() > 4 {
        return Err(invalid("Too many terms in numeric range expression"));
    }
    let upper = Some(Bound { value: top, inclusive: op2 == "<=" });
    Ok(Condition::Numeric { lower, upper })
}

fn numeric_value(op: &str, term: Option<&Value>) -> Result<i64, PolicyError> {
    let name = if op == "=" { "equals" } else { op };
    match term {
        Some(Value::Number(n)) => number(n.as_f64()),
        _ => Err(invalid(format!("Value of {name} must be numeric"))),
    }
}

fn cidr(operand: &Value) -> Result<Condition, PolicyError> {
    let Value::String(text) = operand else {
        return Err(invalid("cidr match pattern must be a string"));
    };
    let Some((addr, bits)) = text.split_once('/') else {
        return Err(invalid("Malformed CIDR, one '/' required"));
    };
    let bits: u8 = bits.parse().map_err(|_| invalid("Malformed CIDR, mask bits must be an integer"))?;
    let network: IpAddr = addr.parse().map_err(|_| invalid(format!("Nonstandard IP address: {addr}")))?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(invalid(format!("Malformed CIDR, mask bits must be between 0 and {max}")));
    }
    Ok(Condition::Cidr { network, prefix_len: bits })
}
