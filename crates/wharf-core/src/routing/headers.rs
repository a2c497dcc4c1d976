//! `headers` exchanges: bindings match on message header values, not the routing key.

use crate::message::{AttributeValue, HeaderValue, Headers};

use super::RoutingError;

const X_MATCH: &str = "x-match";

/// A binding's arguments, compiled once at bind time.
#[derive(Clone, Debug)]
pub(super) struct HeaderMatcher {
    any: bool,
    /// The arguments that must match, `x-match` itself never among them.
    conditions: Vec<(String, HeaderValue)>,
}

impl HeaderMatcher {
    pub(super) fn compile(arguments: &Headers) -> Result<Self, RoutingError> {
        let mode = match arguments.get(X_MATCH) {
            None => "all",
            Some(HeaderValue::String(s))
            | Some(HeaderValue::Attribute { value: AttributeValue::String(s), .. }) => s.as_str(),
            Some(other) => {
                return Err(RoutingError::InvalidArgument(format!(
                    "x-match must be a string (all, any, all-with-x or any-with-x), not {other:?}"
                )))
            }
        };
        let (any, with_x) = match mode {
            "all" => (false, false),
            "any" => (true, false),
            "all-with-x" => (false, true),
            "any-with-x" => (true, true),
            other => {
                return Err(RoutingError::InvalidArgument(format!(
                    "x-match must be all, any, all-with-x or any-with-x, not '{other}'"
                )))
            }
        };
        let conditions = arguments
            .iter()
            .filter(|(k, _)| k.as_str() != X_MATCH && (with_x || !k.starts_with("x-")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(HeaderMatcher { any, conditions })
    }

    /// As RabbitMQ: "all" with no conditions matches everything, "any" with none matches
    /// nothing.
    pub(super) fn matches(&self, headers: &Headers) -> bool {
        let holds = |(key, wanted): &(String, HeaderValue)| match headers.get(key) {
            None => false,
            // A void argument asks only that the header be present.
            Some(_) if matches!(wanted, HeaderValue::Void) => true,
            Some(actual) => values_equal(wanted, actual),
        };
        if self.any {
            self.conditions.iter().any(holds)
        } else {
            self.conditions.iter().all(holds)
        }
    }
}

/// How a value compares. RabbitMQ compares header values ignoring their AMQP type, with
/// Erlang's `==`: every integer width and the timestamp are one kind of number, and integers
/// equal floats of the same value; strings and byte strings are both binaries.
enum View<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Bool(bool),
    Other(&'a HeaderValue),
}

fn view(value: &HeaderValue) -> View<'_> {
    match value {
        HeaderValue::Bool(b) => View::Bool(*b),
        HeaderValue::I8(v) => View::Int((*v).into()),
        HeaderValue::U8(v) => View::Int((*v).into()),
        HeaderValue::I16(v) => View::Int((*v).into()),
        HeaderValue::U16(v) => View::Int((*v).into()),
        HeaderValue::I32(v) => View::Int((*v).into()),
        HeaderValue::U32(v) => View::Int((*v).into()),
        HeaderValue::I64(v) => View::Int((*v).into()),
        HeaderValue::Timestamp(v) => View::Int((*v).into()),
        HeaderValue::F32(v) => View::Float((*v).into()),
        HeaderValue::F64(v) => View::Float(*v),
        HeaderValue::String(s) => View::Bytes(s.as_bytes()),
        HeaderValue::Bytes(b) => View::Bytes(b),
        HeaderValue::Attribute { data_type, value: AttributeValue::String(s) } => {
            // An SQS "Number" attribute travels as text; compare it as the number it names so
            // an SQS/SNS publisher can match an AMQP binding on an integer argument.
            if data_type == "Number" || data_type.starts_with("Number.") {
                let text = s.trim();
                if let Ok(i) = text.parse::<i128>() {
                    return View::Int(i);
                }
                if let Ok(f) = text.parse::<f64>() {
                    return View::Float(f);
                }
            }
            View::Bytes(s.as_bytes())
        }
        HeaderValue::Attribute { value: AttributeValue::Binary(b), .. } => View::Bytes(b),
        HeaderValue::Void | HeaderValue::Decimal { .. } | HeaderValue::Array(_) | HeaderValue::Table(_) => {
            View::Other(value)
        }
    }
}

pub(super) fn values_equal(a: &HeaderValue, b: &HeaderValue) -> bool {
    match (view(a), view(b)) {
        (View::Int(x), View::Int(y)) => x == y,
        (View::Float(x), View::Float(y)) => x == y,
        (View::Int(i), View::Float(f)) | (View::Float(f), View::Int(i)) => f.fract() == 0.0 && i as f64 == f,
        (View::Bytes(x), View::Bytes(y)) => x == y,
        (View::Bool(x), View::Bool(y)) => x == y,
        (View::Other(HeaderValue::Array(x)), View::Other(HeaderValue::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (View::Other(HeaderValue::Table(x)), View::Other(HeaderValue::Table(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, vx), (ky, vy))| kx == ky && values_equal(vx, vy))
        }
        (View::Other(x), View::Other(y)) => x == y,
        _ => false,
    }
}
