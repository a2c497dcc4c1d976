//! Message bodies and message attributes: AWS's validation rules, the mapping onto the
//! engine's header map, and back.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use wharf_core::message::AttributeValue;
use wharf_core::{HeaderValue, Headers};

use crate::digest::{md5_of_attributes, DigestValue};
use crate::error::{ErrorCode, SqsError, SqsResult};
use crate::wire::Params;

/// At most this many message attributes per message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// Longest attribute name and data type.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 256;
pub const MAX_DATA_TYPE_LEN: usize = 256;

/// One validated message attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageAttribute {
    pub name: String,
    /// "String", "Number", "Binary", or one of those with a custom ".suffix".
    pub data_type: String,
    pub value: AttributeValue,
}

impl MessageAttribute {
    /// Bytes this attribute counts against MaximumMessageSize: name, type and value.
    pub fn size(&self) -> usize {
        self.name.len()
            + self.data_type.len()
            + match &self.value {
                AttributeValue::String(s) => s.len(),
                AttributeValue::Binary(b) => b.len(),
            }
    }

    fn digest_value(&self) -> DigestValue<'_> {
        match &self.value {
            AttributeValue::String(s) => DigestValue::Text(s),
            AttributeValue::Binary(b) => DigestValue::Binary(b),
        }
    }

    /// The JSON shape of a MessageAttributeValue.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("DataType".into(), Value::String(self.data_type.clone()));
        match &self.value {
            AttributeValue::String(s) => m.insert("StringValue".into(), Value::String(s.clone())),
            AttributeValue::Binary(b) => m.insert(
                "BinaryValue".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            ),
        };
        Value::Object(m)
    }
}

pub fn md5_of(attrs: &[MessageAttribute]) -> Option<String> {
    md5_of_attributes(attrs.iter().map(|a| (a.name.as_str(), a.data_type.as_str(), a.digest_value())))
}

/// SQS's allowed characters: `#x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF`.
/// (Rust `char`s are never surrogates, so the gap D800–DFFF needs no test.)
pub fn valid_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// `valid_char` over a whole string, a byte at a time: in a `str` the only characters outside
/// SQS's set are the C0 controls other than tab, LF and CR (single bytes) and U+FFFE / U+FFFF
/// (surrogates cannot occur). Decoding every character was 2% of the batched send path's CPU.
/// The control scan has no early exit, so the compiler turns it into vector compares (an
/// early-exit `all` ran a byte at a time and was still 1% of that CPU).
pub fn valid_text(s: &str) -> bool {
    let controls =
        s.bytes().fold(false, |found, b| found | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')));
    !controls && (s.is_ascii() || !s.contains(['\u{FFFE}', '\u{FFFF}']))
}

pub fn check_body(body: &str) -> SqsResult<()> {
    if body.is_empty() {
        return Err(SqsError::missing("MessageBody"));
    }
    if !valid_text(body) {
        return Err(SqsError::new(
            ErrorCode::InvalidMessageContents,
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | \
             #xE000 to #xFFFD | #x10000 to #x10FFFF",
        ));
    }
    Ok(())
}

/// Attribute names: `[A-Za-z0-9_.-]`, at most 256, no leading or trailing '.', no "..", and not
/// the reserved `AWS.` / `Amazon.` prefixes (any case).
pub fn check_attribute_name(name: &str) -> SqsResult<()> {
    let bad =
        |why: &str| SqsError::invalid(format!("Message (user) attribute name '{name}' is invalid. {why}"));
    if name.is_empty() {
        return Err(SqsError::invalid("Message (user) attribute name must not be empty."));
    }
    if name.len() > MAX_ATTRIBUTE_NAME_LEN {
        return Err(bad("The attribute name must be at most 256 characters long."));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(bad(
            "The attribute name can contain only alphanumeric characters, hyphens, underscores and periods.",
        ));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(bad("The attribute name must not start or end with a period or contain two in a row."));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return Err(bad("The prefixes 'AWS.' and 'Amazon.' are reserved."));
    }
    Ok(())
}

/// Number attributes: up to 38 significant digits, between -10^128 and 10^126.
fn check_number(name: &str, s: &str) -> SqsResult<()> {
    let bad = || {
        SqsError::invalid(format!(
            "Could not cast message attribute '{name}' value to number: '{s}' is not a valid number."
        ))
    };
    let t = s.trim();
    let f: f64 = t.parse().map_err(|_| bad())?;
    if !f.is_finite()
        || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Err(bad());
    }
    let mantissa = t.split(['e', 'E']).next().unwrap_or("");
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).skip_while(|d| *d == b'0').count();
    if digits > 38 || f >= 1e126 || f <= -1e128 {
        return Err(SqsError::invalid(format!(
            "Value {s} for message attribute '{name}' is out of range: numbers may have up to 38 digits \
             and lie between -10^128 and 10^126."
        )));
    }
    Ok(())
}

fn decode_base64(name: &str, s: &str) -> SqsResult<Bytes> {
    base64::engine::general_purpose::STANDARD.decode(s.trim()).map(Bytes::from).map_err(|_| {
        SqsError::invalid(format!("Message (user) attribute '{name}' has an invalid binary value."))
    })
}

/// Parse and validate one MessageAttributeValue.
pub fn parse_attribute(name: &str, p: Params<'_>) -> SqsResult<MessageAttribute> {
    check_attribute_name(name)?;
    let data_type = p.str_opt("DataType")?.filter(|t| !t.is_empty()).ok_or_else(|| {
        SqsError::invalid(format!(
            "The message attribute '{name}' must contain non-empty message attribute type."
        ))
    })?;
    let base = data_type.split('.').next().unwrap_or("");
    if data_type.len() > MAX_DATA_TYPE_LEN
        || !matches!(base, "String" | "Number" | "Binary")
        || !data_type.chars().all(|c| valid_char(c) && c != '\t' && c != '\n' && c != '\r')
    {
        return Err(SqsError::invalid(format!(
            "The type of message (user) attribute '{name}' is invalid. You must use only the following \
             supported type prefixes: Binary, Number, String."
        )));
    }
    let value = if base == "Binary" {
        let raw = p.str_opt("BinaryValue")?.ok_or_else(|| {
            SqsError::invalid(format!(
                "The message attribute '{name}' with type 'Binary' must use field 'Binary'."
            ))
        })?;
        let bytes = decode_base64(name, raw)?;
        if bytes.is_empty() {
            return Err(SqsError::invalid(format!(
                "Message (user) attribute '{name}' must contain a non-empty value of type 'Binary'."
            )));
        }
        AttributeValue::Binary(bytes)
    } else {
        let s = p.str_opt("StringValue")?.filter(|s| !s.is_empty()).ok_or_else(|| {
            SqsError::invalid(format!(
                "Message (user) attribute '{name}' must contain a non-empty value of type '{base}'."
            ))
        })?;
        if !valid_text(s) {
            return Err(SqsError::invalid(format!(
                "Message (user) attribute '{name}' contains characters SQS does not allow."
            )));
        }
        if base == "Number" {
            check_number(name, s)?;
        }
        AttributeValue::String(s.to_owned())
    };
    Ok(MessageAttribute { name: name.to_owned(), data_type: data_type.to_owned(), value })
}

/// The MessageAttributes member of a send.
pub fn parse_attributes(p: Params<'_>, member: &str) -> SqsResult<Vec<MessageAttribute>> {
    let entries = p.struct_map(member)?;
    if entries.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(SqsError::invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_MESSAGE_ATTRIBUTES}].",
            entries.len()
        )));
    }
    entries.into_iter().map(|(name, v)| parse_attribute(name, v)).collect()
}

/// The MessageSystemAttributes member of a send: only AWSTraceHeader, a String.
pub fn parse_system_attributes(p: Params<'_>) -> SqsResult<Vec<MessageAttribute>> {
    let entries = p.struct_map("MessageSystemAttributes")?;
    let mut out = Vec::new();
    for (name, v) in entries {
        if name != "AWSTraceHeader" {
            return Err(SqsError::invalid(format!(
                "Message system attribute name '{name}' is invalid. The only supported one is AWSTraceHeader."
            )));
        }
        let data_type = v.str_opt("DataType")?.unwrap_or("");
        let value = v.str_opt("StringValue")?.unwrap_or("");
        if data_type != "String" || value.is_empty() {
            return Err(SqsError::invalid(
                "Message system attribute AWSTraceHeader must have DataType String and a non-empty StringValue.",
            ));
        }
        out.push(MessageAttribute {
            name: name.to_owned(),
            data_type: "String".to_owned(),
            value: AttributeValue::String(value.to_owned()),
        });
    }
    Ok(out)
}

pub fn to_headers(attrs: &[MessageAttribute]) -> Headers {
    attrs
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                HeaderValue::Attribute { data_type: a.data_type.clone(), value: a.value.clone() },
            )
        })
        .collect()
}

/// The engine's headers as SQS message attributes. Headers set by other protocols are mapped
/// to the nearest SQS type; nested tables and arrays have none and are left out.
pub fn from_headers(headers: &Headers) -> Vec<MessageAttribute> {
    let mut out = Vec::new();
    for (name, v) in headers {
        let (data_type, value) = match v {
            HeaderValue::Attribute { data_type, value } => (data_type.clone(), value.clone()),
            HeaderValue::String(s) => ("String".to_owned(), AttributeValue::String(s.clone())),
            HeaderValue::Bool(b) => ("String".to_owned(), AttributeValue::String(b.to_string())),
            HeaderValue::Bytes(b) => ("Binary".to_owned(), AttributeValue::Binary(b.clone())),
            HeaderValue::Void | HeaderValue::Array(_) | HeaderValue::Table(_) => continue,
            other => match other.as_text() {
                Some(t) => ("Number".to_owned(), AttributeValue::String(t)),
                None => continue,
            },
        };
        out.push(MessageAttribute { name: name.clone(), data_type, value });
    }
    out
}

/// Which message attributes a receive asked for: "All", ".*", exact names, or "prefix.*".
pub fn attribute_selected(patterns: &[&str], name: &str) -> bool {
    patterns.iter().any(|p| {
        *p == "All"
            || *p == ".*"
            || *p == name
            || p.strip_suffix(".*")
                .is_some_and(|prefix| name.starts_with(prefix) && name[prefix.len()..].starts_with('.'))
    })
}

/// FIFO ids (MessageGroupId, MessageDeduplicationId, ReceiveRequestAttemptId): 1–128
/// characters, alphanumeric and punctuation.
pub fn check_fifo_id(param: &str, value: &str) -> SqsResult<()> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SqsError::invalid_param(
            param,
            value,
            "must be 1 to 128 characters long and contain only alphanumeric characters and punctuation",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attr(v: Value) -> SqsResult<MessageAttribute> {
        let Value::Object(m) = v else { panic!("object") };
        parse_attribute("a", Params::new(&crate::wire::Node::fields_of(&m)))
    }

    #[test]
    fn body_charset() {
        assert!(check_body("hello\t\r\n€𝄞").is_ok());
        // The byte-wise check agrees with `valid_char` on every character, alone and in text.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let alone = c.to_string();
            assert_eq!(valid_text(&alone), valid_char(c), "{:#x}", c as u32);
            assert_eq!(valid_text(&format!("ok {c} é")), valid_char(c), "{:#x} in text", c as u32);
        }
        assert_eq!(check_body("a\u{1}b").expect_err("control").code, ErrorCode::InvalidMessageContents);
        assert_eq!(check_body("\u{FFFF}").expect_err("ffff").code, ErrorCode::InvalidMessageContents);
        assert_eq!(check_body("").expect_err("empty").code, ErrorCode::MissingParameter);
    }

    #[test]
    fn attribute_names() {
        assert!(check_attribute_name("a.b-c_D9").is_ok());
        for bad in ["", ".a", "a.", "a..b", "AWS.x", "amazon.y", "sp ace", &"x".repeat(257)] {
            assert!(check_attribute_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_types_and_values() {
        let a = attr(json!({"DataType": "Number.float", "StringValue": "1.5"})).expect("number");
        assert_eq!(a.value, AttributeValue::String("1.5".into()));
        let b = attr(json!({"DataType": "Binary.gz", "BinaryValue": "aGk="})).expect("binary");
        assert_eq!(b.value, AttributeValue::Binary(Bytes::from_static(b"hi")));
        assert!(attr(json!({"DataType": "Number", "StringValue": "abc"})).is_err());
        assert!(attr(json!({"DataType": "Number", "StringValue": "1".repeat(39)})).is_err());
        assert!(attr(json!({"DataType": "Blob", "StringValue": "x"})).is_err());
        assert!(attr(json!({"DataType": "String"})).is_err());
        assert!(attr(json!({"DataType": "Binary", "BinaryValue": "!!"})).is_err());
        assert!(attr(json!({"StringValue": "x"})).is_err());
    }

    #[test]
    fn attribute_selection() {
        assert!(attribute_selected(&["All"], "x"));
        assert!(attribute_selected(&[".*"], "x"));
        assert!(attribute_selected(&["foo.*"], "foo.bar"));
        assert!(!attribute_selected(&["foo.*"], "foobar"));
        assert!(attribute_selected(&["x"], "x"));
        assert!(!attribute_selected(&[], "x"));
    }

    #[test]
    fn headers_round_trip() {
        let attrs = vec![MessageAttribute {
            name: "n".into(),
            data_type: "Number.int".into(),
            value: AttributeValue::String("7".into()),
        }];
        assert_eq!(from_headers(&to_headers(&attrs)), attrs);
        assert_eq!(attrs[0].size(), 1 + 10 + 1);
    }
}
