//! The one message model every protocol maps into and out of.
//!
//! A message is a body plus one typed header map ([`Headers`]) plus the well-known properties
//! that AMQP names (and STOMP/MQTT/SQS map onto), plus the system fields the engine owns.
//! Front ends translate: SQS message attributes become [`HeaderValue::Attribute`] entries so
//! their declared data types ("Number.float", "Binary.gzip") round-trip exactly; AMQP field
//! tables become the typed variants; STOMP headers and MQTT user properties become strings.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Header map. Ordered, so encodings (and the SQS attribute MD5) are deterministic.
pub type Headers = BTreeMap<String, HeaderValue>;

/// A typed header value: the union of AMQP field-table types and SQS attribute values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HeaderValue {
    Void,
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// AMQP decimal: `value / 10^scale`.
    Decimal {
        scale: u8,
        value: u32,
    },
    String(String),
    Bytes(Bytes),
    /// Seconds since the Unix epoch (AMQP timestamp).
    Timestamp(u64),
    Array(Vec<HeaderValue>),
    Table(Headers),
    /// An SQS/SNS message attribute, kept with its declared data type so it round-trips
    /// exactly (`data_type` is "String", "Number", "Binary" or one of those with a custom
    /// ".suffix"). Other protocols see `value`.
    Attribute {
        data_type: String,
        value: AttributeValue,
    },
}

/// The value half of an SQS/SNS message attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    String(String),
    Binary(Bytes),
}

impl HeaderValue {
    /// The value as text, where it has a natural text form (for STOMP headers, filter
    /// matching and logs).
    pub fn as_text(&self) -> Option<String> {
        Some(match self {
            HeaderValue::Void => return None,
            HeaderValue::Bool(b) => b.to_string(),
            HeaderValue::I8(v) => v.to_string(),
            HeaderValue::U8(v) => v.to_string(),
            HeaderValue::I16(v) => v.to_string(),
            HeaderValue::U16(v) => v.to_string(),
            HeaderValue::I32(v) => v.to_string(),
            HeaderValue::U32(v) => v.to_string(),
            HeaderValue::I64(v) => v.to_string(),
            HeaderValue::F32(v) => v.to_string(),
            HeaderValue::F64(v) => v.to_string(),
            HeaderValue::Decimal { scale, value } => {
                let divisor = 10f64.powi(i32::from(*scale));
                (f64::from(*value) / divisor).to_string()
            }
            HeaderValue::String(s) => s.clone(),
            HeaderValue::Bytes(b) => return std::str::from_utf8(b).ok().map(str::to_owned),
            HeaderValue::Timestamp(t) => t.to_string(),
            HeaderValue::Array(_) | HeaderValue::Table(_) => return None,
            HeaderValue::Attribute { value, .. } => match value {
                AttributeValue::String(s) => s.clone(),
                AttributeValue::Binary(b) => return std::str::from_utf8(b).ok().map(str::to_owned),
            },
        })
    }
}

/// AMQP basic properties; the other protocols map what they have onto the same names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// True for AMQP delivery-mode 2. Transient messages never touch the disk.
    pub persistent: bool,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds (AMQP `expiration`, STOMP `expires` translated).
    pub expiration_ms: Option<u64>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
}

/// What a publisher hands the engine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub body: Bytes,
    pub headers: Headers,
    pub properties: Properties,
    /// Where it was published (AMQP exchange and routing key), kept for redelivery and x-death.
    pub exchange: String,
    pub routing_key: String,
}

impl Message {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message { body: body.into(), ..Message::default() }
    }

    /// Bytes this message counts against size limits (body only, as SQS and RabbitMQ count).
    pub fn body_size(&self) -> usize {
        self.body.len()
    }
}
