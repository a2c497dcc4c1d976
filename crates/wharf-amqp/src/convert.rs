//! AMQP values to engine values and back: field tables and headers, basic properties, and
//! the `x-` arguments of queue.declare.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use wharf_core::{HeaderValue, Headers, Message, Overflow, Properties};

use crate::error::AmqpError;

pub fn value_from_amqp(value: &AMQPValue) -> HeaderValue {
    match value {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(v) => HeaderValue::I8(*v),
        AMQPValue::ShortShortUInt(v) => HeaderValue::U8(*v),
        AMQPValue::ShortInt(v) => HeaderValue::I16(*v),
        AMQPValue::ShortUInt(v) => HeaderValue::U16(*v),
        AMQPValue::LongInt(v) => HeaderValue::I32(*v),
        AMQPValue::LongUInt(v) => HeaderValue::U32(*v),
        AMQPValue::LongLongInt(v) => HeaderValue::I64(*v),
        AMQPValue::Float(v) => HeaderValue::F32(*v),
        AMQPValue::Double(v) => HeaderValue::F64(*v),
        AMQPValue::DecimalValue(d) => HeaderValue::Decimal { scale: d.scale, value: d.value },
        AMQPValue::ShortString(s) => HeaderValue::String(s.as_str().to_owned()),
        // Text is the common case (every client sends str headers as long strings); bytes
        // that are not UTF-8 stay bytes.
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => HeaderValue::String(text.to_owned()),
            Err(_) => HeaderValue::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(a) => HeaderValue::Array(a.as_slice().iter().map(value_from_amqp).collect()),
        AMQPValue::Timestamp(t) => HeaderValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => HeaderValue::Table(table_from_amqp(t)),
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => HeaderValue::Void,
    }
}

pub fn table_from_amqp(table: &FieldTable) -> Headers {
    table.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value_from_amqp(v))).collect()
}

pub fn value_to_amqp(value: &HeaderValue) -> AMQPValue {
    match value {
        HeaderValue::Void => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::I8(v) => AMQPValue::ShortShortInt(*v),
        HeaderValue::U8(v) => AMQPValue::ShortShortUInt(*v),
        HeaderValue::I16(v) => AMQPValue::ShortInt(*v),
        HeaderValue::U16(v) => AMQPValue::ShortUInt(*v),
        HeaderValue::I32(v) => AMQPValue::LongInt(*v),
        HeaderValue::U32(v) => AMQPValue::LongUInt(*v),
        HeaderValue::I64(v) => AMQPValue::LongLongInt(*v),
        HeaderValue::F32(v) => AMQPValue::Float(*v),
        HeaderValue::F64(v) => AMQPValue::Double(*v),
        HeaderValue::Decimal { scale, value } => {
            AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value })
        }
        HeaderValue::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::Bytes(b) => AMQPValue::ByteArray(b.to_vec().into()),
        HeaderValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        HeaderValue::Array(items) => {
            AMQPValue::FieldArray(FieldArray::from(items.iter().map(value_to_amqp).collect::<Vec<_>>()))
        }
        HeaderValue::Table(t) => AMQPValue::FieldTable(table_to_amqp(t)),
        // An SQS message attribute: its value, typed as text or bytes.
        HeaderValue::Attribute { value, .. } => match value {
            wharf_core::message::AttributeValue::String(s) => {
                AMQPValue::LongString(LongString::from(s.as_bytes()))
            }
            wharf_core::message::AttributeValue::Binary(b) => AMQPValue::ByteArray(b.to_vec().into()),
        },
    }
}

pub fn table_to_amqp(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(short(k), value_to_amqp(v));
    }
    table
}

fn owned(s: &Option<ShortString>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_owned())
}

/// A short string holds at most 255 bytes. Values that came from AMQP always fit; values other
/// protocols stored (an SQS attribute name may have 256 characters) are cut at a character
/// boundary rather than making the frame unwritable.
pub fn short(s: &str) -> ShortString {
    ShortString::from(fit_short(s))
}

/// `s` cut to at most 255 bytes at a character boundary.
pub fn fit_short(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A published message: body, headers and properties as the engine keeps them.
pub fn message_from_publish(props: &AMQPProperties, body: Bytes) -> Result<Message, String> {
    let expiration_ms = match props.expiration() {
        None => None,
        Some(text) => Some(
            text.as_str().parse::<u64>().map_err(|_| format!("invalid expiration '{}'", text.as_str()))?,
        ),
    };
    let properties = Properties {
        content_type: owned(props.content_type()),
        content_encoding: owned(props.content_encoding()),
        persistent: *props.delivery_mode() == Some(2),
        priority: *props.priority(),
        correlation_id: owned(props.correlation_id()),
        reply_to: owned(props.reply_to()),
        expiration_ms,
        message_id: owned(props.message_id()),
        timestamp: *props.timestamp(),
        kind: owned(props.kind()),
        user_id: owned(props.user_id()),
        app_id: owned(props.app_id()),
    };
    let headers = props.headers().as_ref().map(table_from_amqp).unwrap_or_default();
    Ok(Message { body, headers, properties, exchange: String::new(), routing_key: String::new() })
}

/// The basic properties a delivery carries. `extra` headers (x-delivery-count) are added to
/// the message's own.
pub fn properties_for_delivery(message: &Message, extra: Option<(&str, HeaderValue)>) -> AMQPProperties {
    let p = &message.properties;
    let mut out = AMQPProperties::default();
    if let Some(v) = &p.content_type {
        out = out.with_content_type(short(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(short(v));
    }
    if !message.headers.is_empty() || extra.is_some() {
        let mut table = table_to_amqp(&message.headers);
        if let Some((k, v)) = extra {
            table.insert(k.into(), value_to_amqp(&v));
        }
        out = out.with_headers(table);
    }
    out = out.with_delivery_mode(if p.persistent { 2 } else { 1 });
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(short(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(short(v));
    }
    if let Some(v) = p.expiration_ms {
        out = out.with_expiration(v.to_string().into());
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(short(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(short(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(short(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(short(v));
    }
    out
}

/// A non-negative integer argument, whatever integer type the client encoded it as.
pub fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    })
}

pub fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        _ => None,
    }
}

/// The queue type asked for with `x-queue-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

/// What queue.declare's arguments ask for, checked. Every argument listed here is honoured by
/// the engine; any other is refused rather than silently ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueArguments {
    pub message_ttl_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub single_active_consumer: bool,
    pub max_priority: Option<u8>,
    pub queue_type: Option<QueueType>,
    pub delivery_limit: Option<u32>,
    /// `x-queue-mode`: `lazy` is what every wharf queue already is (bodies live on disk).
    pub queue_mode: Option<String>,
    /// `x-consumer-timeout` in ms: this queue's deliveries may stay unacked that long (0: no
    /// limit), instead of the server's `consumer_timeout`.
    pub consumer_timeout_ms: Option<u64>,
}

/// Arguments wharf honours, for the error that lists them.
pub const QUEUE_ARGUMENTS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-single-active-consumer",
    "x-max-priority",
    "x-queue-type",
    "x-delivery-limit",
    "x-queue-mode",
    "x-consumer-timeout",
];

impl QueueArguments {
    pub fn parse(table: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArguments, AmqpError> {
        let mut out = QueueArguments::default();
        for (key, value) in table.inner() {
            let key = key.as_str();
            let invalid = |why: &str| {
                AmqpError::precondition(format!(
                    "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
                ))
            };
            let non_negative = || match integer(value) {
                Some(v) if v >= 0 => Ok(v as u64),
                Some(_) => Err(invalid("must be zero or more")),
                None => Err(invalid("must be an integer")),
            };
            let string = || text(value).ok_or_else(|| invalid("must be a string"));
            match key {
                "x-message-ttl" => out.message_ttl_ms = Some(non_negative()?),
                "x-expires" => match non_negative()? {
                    0 => return Err(invalid("must be positive")),
                    v => out.expires_ms = Some(v),
                },
                "x-max-length" => out.max_length = Some(non_negative()?),
                "x-max-length-bytes" => out.max_length_bytes = Some(non_negative()?),
                "x-overflow" => {
                    out.overflow = Some(match string()?.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err(invalid("must be drop-head, reject-publish or reject-publish-dlx")),
                    })
                }
                "x-dead-letter-exchange" => out.dead_letter_exchange = Some(string()?),
                "x-dead-letter-routing-key" => out.dead_letter_routing_key = Some(string()?),
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => out.single_active_consumer = *b,
                    _ => return Err(invalid("must be a boolean")),
                },
                "x-max-priority" => match non_negative()? {
                    p @ 1..=255 => out.max_priority = Some(p as u8),
                    _ => return Err(invalid("must be between 1 and 255")),
                },
                "x-queue-type" => {
                    out.queue_type = Some(match string()?.as_str() {
                        "classic" => QueueType::Classic,
                        "quorum" => QueueType::Quorum,
                        "stream" => return Err(invalid("stream queues are not supported by wharf")),
                        _ => return Err(invalid("must be classic or quorum")),
                    })
                }
                "x-delivery-limit" => {
                    out.delivery_limit =
                        Some(u32::try_from(non_negative()?).map_err(|_| invalid("too large"))?)
                }
                "x-consumer-timeout" => out.consumer_timeout_ms = Some(non_negative()?),
                "x-queue-mode" => match string()?.as_str() {
                    mode @ ("default" | "lazy") => out.queue_mode = Some(mode.to_owned()),
                    _ => return Err(invalid("must be default or lazy")),
                },
                _ => {
                    return Err(AmqpError::precondition(format!(
                        "unsupported arg '{key}' for queue '{queue}' in vhost '{vhost}': wharf supports {}",
                        QUEUE_ARGUMENTS.join(", ")
                    )))
                }
            }
        }
        if out.delivery_limit.is_some() && out.queue_type != Some(QueueType::Quorum) {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-delivery-limit' for queue '{queue}' in vhost '{vhost}': only quorum queues have a delivery limit"
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_field_tables() {
        let mut nested = Headers::new();
        nested.insert("n".into(), HeaderValue::I64(-3));
        let mut headers = Headers::new();
        headers.insert("s".into(), HeaderValue::String("text".into()));
        headers.insert("b".into(), HeaderValue::Bool(true));
        headers.insert("f".into(), HeaderValue::F64(1.5));
        headers.insert("t".into(), HeaderValue::Table(nested));
        headers.insert("a".into(), HeaderValue::Array(vec![HeaderValue::I32(1), HeaderValue::Void]));
        headers.insert("bytes".into(), HeaderValue::Bytes(Bytes::from_static(&[0xff, 0])));
        assert_eq!(table_from_amqp(&table_to_amqp(&headers)), headers);
    }

    #[test]
    fn publish_properties_map_to_the_engine_and_back() {
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_expiration("1500".into())
            .with_message_id("m-1".into())
            .with_type("order".into());
        let message = message_from_publish(&props, Bytes::from_static(b"{}")).unwrap();
        assert!(message.properties.persistent);
        assert_eq!(message.properties.expiration_ms, Some(1500));
        assert_eq!(properties_for_delivery(&message, None), props);
        let bad = AMQPProperties::default().with_expiration("soon".into());
        assert!(message_from_publish(&bad, Bytes::new()).is_err());
    }

    #[test]
    fn values_other_protocols_stored_are_cut_to_fit_short_strings() {
        let mut message = Message::new(Bytes::from_static(b"x"));
        let long_name = "é".repeat(150); // 300 bytes
        message.headers.insert(long_name.clone(), HeaderValue::Bool(true));
        message.properties.message_id = Some(long_name.clone());
        let props = properties_for_delivery(&message, None);
        let key = props.headers().as_ref().unwrap().inner().keys().next().unwrap().as_str().to_owned();
        assert!(key.len() <= 255 && long_name.starts_with(&key));
        assert!(props.message_id().as_ref().unwrap().as_str().len() <= 255);
        let mut out = Vec::new();
        crate::codec::write_content(&mut out, 1, props, b"x", 4096);
        assert!(!out.is_empty());
    }

    #[test]
    fn queue_arguments_are_checked_and_unknown_ones_refused() {
        let mut table = FieldTable::default();
        table.insert("x-max-length".into(), AMQPValue::LongInt(10));
        table.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let args = QueueArguments::parse(&table, "q", "/").unwrap();
        assert_eq!((args.max_length, args.overflow), (Some(10), Some(Overflow::RejectPublish)));

        let mut unknown = FieldTable::default();
        unknown.insert("x-made-up".into(), AMQPValue::Boolean(true));
        let err = QueueArguments::parse(&unknown, "q", "/").unwrap_err();
        assert!(err.to_string().contains("unsupported arg 'x-made-up'"), "{err}");

        let mut negative = FieldTable::default();
        negative.insert("x-message-ttl".into(), AMQPValue::LongLongInt(-1));
        assert!(QueueArguments::parse(&negative, "q", "/").is_err());

        let mut limit = FieldTable::default();
        limit.insert("x-delivery-limit".into(), AMQPValue::LongInt(3));
        assert!(QueueArguments::parse(&limit, "q", "/").is_err());
        limit.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        assert_eq!(QueueArguments::parse(&limit, "q", "/").unwrap().delivery_limit, Some(3));
    }
}
