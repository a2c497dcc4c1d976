//! Record encoding: how a message plus its system fields becomes the bytes of one store record
//! and back.
//!
//! A hand-written compact binary format, because recovery decodes every live record of every
//! queue at start-up and must do 1,000,000 of them in well under a second. Layout (integers
//! little-endian, `var` = LEB128 varint, `str` = var length + UTF-8 bytes):
//!
//! ```text
//! u8  version (1; 2 when flag 32 is set; 3 when flag 64 is set)
//! u8  flags: 1 persistent, 2 group, 4 dedup, 8 expiry, 16 delay, 32 dead-letter source,
//!            64 body MD5
//! [16] message id (uuid bytes)
//! u64 sequence number (queue-local, strictly increasing)
//! u64 sent time (ms since epoch; kept across redrive so retention counts from the original)
//! u64 expires-at (ms)           if flag 8
//! u64 delay-until (ms)          if flag 16
//! var receive count, var first-receive time (0 = never)
//! u8  priority
//! str group id                  if flag 2
//! str dedup id                  if flag 4
//! var body length               -- end of the metadata that recovery needs
//! str exchange, str routing key
//! properties (u16 presence mask + the present fields)
//! headers (typed table)
//! var n + n × (str, str) system attributes
//! str dead-letter source        if flag 32 (version 2 or 3)
//! [16] MD5 of the body          if flag 64 (version 3 only)
//! [body length] body
//! ```
//!
//! Versions: version 2 added the dead-letter source, version 3 the body's MD5 (SQS keeps the
//! digest it answered the sender with, so a receive need not hash the body again). A record is
//! written in the oldest version that can hold it: one without either field is byte for byte
//! what older builds wrote and read. All three versions are read. Unknown
//! flag bits (for the record's version) are refused, so an older build meets a version 2
//! record as "unknown record version", never as a misread one.
//!
//! The metadata comes first so [`decode_meta`] can rebuild a queue's index without touching
//! headers or bodies. Every read is bounds-checked: garbage decodes to an error, never a panic,
//! never a huge allocation (lengths are checked against the bytes that remain).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::error::CoreError;
use crate::message::{AttributeValue, HeaderValue, Headers, Message, Properties};

/// The newest record version (see the module docs for what each adds).
pub const RECORD_VERSION: u8 = 3;

const F_PERSISTENT: u8 = 1;
const F_GROUP: u8 = 2;
const F_DEDUP: u8 = 4;
const F_EXPIRY: u8 = 8;
const F_DELAY: u8 = 16;
const F_DLQ_SOURCE: u8 = 32;
const F_BODY_MD5: u8 = 64;
const V1_FLAGS: u8 = F_PERSISTENT | F_GROUP | F_DEDUP | F_EXPIRY | F_DELAY;
const V2_FLAGS: u8 = V1_FLAGS | F_DLQ_SOURCE;
const V3_FLAGS: u8 = V2_FLAGS | F_BODY_MD5;

/// Header tables nest; a bound keeps a hostile record from overflowing the stack.
const MAX_DEPTH: u32 = 32;

/// A message id: a v4 uuid, shown in its hyphenated form (SQS MessageId).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u128);

impl MessageId {
    pub fn random() -> Self {
        MessageId(uuid::Uuid::new_v4().as_u128())
    }

    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(|u| MessageId(u.as_u128()))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_u128(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A message as a queue keeps it: the published message plus the engine's system fields.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub seq: u64,
    pub sent_ms: u64,
    /// Absolute per-message expiry (from `properties.expiration_ms` at enqueue), if any.
    pub expires_at_ms: Option<u64>,
    /// Not deliverable before this (0 = no delay).
    pub delay_until_ms: u64,
    pub receive_count: u32,
    /// 0 = never received.
    pub first_receive_ms: u64,
    pub priority: u8,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    /// SQS system attributes supplied by the sender (SenderId, AWSTraceHeader, ...).
    pub system_attributes: BTreeMap<String, String>,
    /// The queue this message was redriven from (SQS redrive after maxReceiveCount), while it
    /// is in that queue's dead-letter queue.
    pub dead_letter_source: Option<String>,
    /// MD5 of the body, computed by the front end that accepted it (SQS), if any.
    pub body_md5: Option<[u8; 16]>,
    pub message: Message,
}

/// The part of a record recovery needs to rebuild a queue's index.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordMeta {
    pub id: MessageId,
    pub seq: u64,
    pub sent_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub delay_until_ms: u64,
    pub receive_count: u32,
    pub first_receive_ms: u64,
    pub priority: u8,
    pub persistent: bool,
    /// Whether the record carries a dead-letter source (read by [`decode`], not here).
    pub dead_letter_source: bool,
    /// The record carries the body's MD5 (version 3).
    pub body_md5: bool,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub body_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad record: {0}")]
pub struct RecordError(pub String);

impl From<RecordError> for CoreError {
    fn from(e: RecordError) -> Self {
        CoreError::Corrupt(e.0)
    }
}

type Res<T> = Result<T, RecordError>;

fn err<T>(what: &str) -> Res<T> {
    Err(RecordError(what.to_owned()))
}

// ---- encoding ------------------------------------------------------------------------------

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: &Option<String>) {
        if let Some(s) = s {
            self.str(s);
        }
    }
}

/// Encode a message into record bytes.
pub fn encode(m: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + m.message.body.len() + m.message.routing_key.len());
    encode_into(m, &mut out);
    out
}

pub fn encode_into(m: &StoredMessage, out: &mut Vec<u8>) {
    let mut w = W(out);
    let mut flags = 0;
    if m.message.properties.persistent {
        flags |= F_PERSISTENT;
    }
    if m.group_id.is_some() {
        flags |= F_GROUP;
    }
    if m.dedup_id.is_some() {
        flags |= F_DEDUP;
    }
    if m.expires_at_ms.is_some() {
        flags |= F_EXPIRY;
    }
    if m.delay_until_ms != 0 {
        flags |= F_DELAY;
    }
    if m.dead_letter_source.is_some() {
        flags |= F_DLQ_SOURCE;
    }
    if m.body_md5.is_some() {
        flags |= F_BODY_MD5;
    }
    w.u8(if flags & F_BODY_MD5 != 0 {
        3
    } else if flags & F_DLQ_SOURCE != 0 {
        2
    } else {
        1
    });
    w.u8(flags);
    w.0.extend_from_slice(&m.id.0.to_le_bytes());
    w.u64(m.seq);
    w.u64(m.sent_ms);
    if let Some(e) = m.expires_at_ms {
        w.u64(e);
    }
    if m.delay_until_ms != 0 {
        w.u64(m.delay_until_ms);
    }
    w.var(u64::from(m.receive_count));
    w.var(m.first_receive_ms);
    w.u8(m.priority);
    w.opt_str(&m.group_id);
    w.opt_str(&m.dedup_id);
    w.var(m.message.body.len() as u64);
    w.str(&m.message.exchange);
    w.str(&m.message.routing_key);
    encode_properties(&mut w, &m.message.properties);
    encode_table(&mut w, &m.message.headers);
    w.var(m.system_attributes.len() as u64);
    for (k, v) in &m.system_attributes {
        w.str(k);
        w.str(v);
    }
    w.opt_str(&m.dead_letter_source);
    if let Some(md5) = &m.body_md5 {
        w.0.extend_from_slice(md5);
    }
    w.0.extend_from_slice(&m.message.body);
}

fn encode_properties(w: &mut W<'_>, p: &Properties) {
    let mut mask: u16 = 0;
    let strs = [
        &p.content_type,
        &p.content_encoding,
        &p.correlation_id,
        &p.reply_to,
        &p.message_id,
        &p.kind,
        &p.user_id,
        &p.app_id,
    ];
    for (i, s) in strs.iter().enumerate() {
        if s.is_some() {
            mask |= 1 << i;
        }
    }
    if p.priority.is_some() {
        mask |= 1 << 8;
    }
    if p.expiration_ms.is_some() {
        mask |= 1 << 9;
    }
    if p.timestamp.is_some() {
        mask |= 1 << 10;
    }
    w.u16(mask);
    for s in strs {
        w.opt_str(s);
    }
    if let Some(v) = p.priority {
        w.u8(v);
    }
    if let Some(v) = p.expiration_ms {
        w.var(v);
    }
    if let Some(v) = p.timestamp {
        w.var(v);
    }
}

fn encode_table(w: &mut W<'_>, t: &Headers) {
    w.var(t.len() as u64);
    for (k, v) in t {
        w.str(k);
        encode_value(w, v);
    }
}

fn encode_value(w: &mut W<'_>, v: &HeaderValue) {
    match v {
        HeaderValue::Void => w.u8(0),
        HeaderValue::Bool(b) => {
            w.u8(1);
            w.u8(u8::from(*b));
        }
        HeaderValue::I8(x) => {
            w.u8(2);
            w.u8(*x as u8);
        }
        HeaderValue::U8(x) => {
            w.u8(3);
            w.u8(*x);
        }
        HeaderValue::I16(x) => {
            w.u8(4);
            w.u16(*x as u16);
        }
        HeaderValue::U16(x) => {
            w.u8(5);
            w.u16(*x);
        }
        HeaderValue::I32(x) => {
            w.u8(6);
            w.u32(*x as u32);
        }
        HeaderValue::U32(x) => {
            w.u8(7);
            w.u32(*x);
        }
        HeaderValue::I64(x) => {
            w.u8(8);
            w.u64(*x as u64);
        }
        HeaderValue::F32(x) => {
            w.u8(9);
            w.u32(x.to_bits());
        }
        HeaderValue::F64(x) => {
            w.u8(10);
            w.u64(x.to_bits());
        }
        HeaderValue::Decimal { scale, value } => {
            w.u8(11);
            w.u8(*scale);
            w.u32(*value);
        }
        HeaderValue::String(s) => {
            w.u8(12);
            w.str(s);
        }
        HeaderValue::Bytes(b) => {
            w.u8(13);
            w.bytes(b);
        }
        HeaderValue::Timestamp(t) => {
            w.u8(14);
            w.u64(*t);
        }
        HeaderValue::Array(items) => {
            w.u8(15);
            w.var(items.len() as u64);
            for i in items {
                encode_value(w, i);
            }
        }
        HeaderValue::Table(t) => {
            w.u8(16);
            encode_table(w, t);
        }
        HeaderValue::Attribute { data_type, value } => {
            w.u8(17);
            w.str(data_type);
            match value {
                AttributeValue::String(s) => {
                    w.u8(0);
                    w.str(s);
                }
                AttributeValue::Binary(b) => {
                    w.u8(1);
                    w.bytes(b);
                }
            }
        }
    }
}

// ---- decoding ------------------------------------------------------------------------------

struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.remaining() {
            return err("truncated");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn var(&mut self) -> Res<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err("varint too long")
    }
    fn len(&mut self) -> Res<usize> {
        let n = self.var()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => err("length exceeds record"),
        }
    }
    /// A count of items each taking at least one byte: bounded by what remains.
    fn count(&mut self) -> Res<usize> {
        self.len()
    }
    fn bytes(&mut self) -> Res<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    fn str(&mut self) -> Res<String> {
        let b = self.bytes()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => err("string is not UTF-8"),
        }
    }
}

fn decode_meta_from(r: &mut R<'_>) -> Res<RecordMeta> {
    let version = r.u8()?;
    let known = match version {
        1 => V1_FLAGS,
        2 => V2_FLAGS,
        3 => V3_FLAGS,
        _ => return Err(RecordError(format!("unknown record version {version}"))),
    };
    let flags = r.u8()?;
    if flags & !known != 0 {
        return Err(RecordError(format!("unknown flags {flags:#x} for record version {version}")));
    }
    let id = MessageId(u128::from_le_bytes(r.arr()?));
    let seq = r.u64()?;
    let sent_ms = r.u64()?;
    let expires_at_ms = if flags & F_EXPIRY != 0 { Some(r.u64()?) } else { None };
    let delay_until_ms = if flags & F_DELAY != 0 { r.u64()? } else { 0 };
    let receive_count = u32::try_from(r.var()?).map_err(|_| RecordError("receive count".into()))?;
    let first_receive_ms = r.var()?;
    let priority = r.u8()?;
    let group_id = if flags & F_GROUP != 0 { Some(r.str()?) } else { None };
    let dedup_id = if flags & F_DEDUP != 0 { Some(r.str()?) } else { None };
    let body_len = u32::try_from(r.var()?).map_err(|_| RecordError("body length".into()))?;
    Ok(RecordMeta {
        id,
        seq,
        sent_ms,
        expires_at_ms,
        delay_until_ms,
        receive_count,
        first_receive_ms,
        priority,
        persistent: flags & F_PERSISTENT != 0,
        dead_letter_source: flags & F_DLQ_SOURCE != 0,
        body_md5: flags & F_BODY_MD5 != 0,
        group_id,
        dedup_id,
        body_len,
    })
}

/// Decode only the metadata (recovery's fast path).
pub fn decode_meta(bytes: &[u8]) -> Result<RecordMeta, RecordError> {
    decode_meta_from(&mut R { buf: bytes, pos: 0 })
}

/// Decode a whole record. Takes `Bytes` so the body is a slice of it, not a copy.
pub fn decode(bytes: Bytes) -> Result<StoredMessage, RecordError> {
    let mut r = R { buf: &bytes, pos: 0 };
    let meta = decode_meta_from(&mut r)?;
    let exchange = r.str()?;
    let routing_key = r.str()?;
    let properties = decode_properties(&mut r, meta.persistent)?;
    let headers = decode_table(&mut r, 0)?;
    let n = r.count()?;
    let mut system_attributes = BTreeMap::new();
    for _ in 0..n {
        let k = r.str()?;
        let v = r.str()?;
        system_attributes.insert(k, v);
    }
    let dead_letter_source = if meta.dead_letter_source { Some(r.str()?) } else { None };
    let body_md5 = if meta.body_md5 { Some(r.arr()?) } else { None };
    let body_len = meta.body_len as usize;
    if r.remaining() != body_len {
        return err("body length does not match the record");
    }
    let body = bytes.slice(r.pos..);
    Ok(StoredMessage {
        id: meta.id,
        seq: meta.seq,
        sent_ms: meta.sent_ms,
        expires_at_ms: meta.expires_at_ms,
        delay_until_ms: meta.delay_until_ms,
        receive_count: meta.receive_count,
        first_receive_ms: meta.first_receive_ms,
        priority: meta.priority,
        group_id: meta.group_id,
        dedup_id: meta.dedup_id,
        system_attributes,
        dead_letter_source,
        body_md5,
        message: Message { body, headers, properties, exchange, routing_key },
    })
}

fn decode_properties(r: &mut R<'_>, persistent: bool) -> Res<Properties> {
    let mask = r.u16()?;
    if mask >> 11 != 0 {
        return err("unknown property bits");
    }
    let mut strs: [Option<String>; 8] = Default::default();
    for (i, slot) in strs.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *slot = Some(r.str()?);
        }
    }
    let priority = if mask & (1 << 8) != 0 { Some(r.u8()?) } else { None };
    let expiration_ms = if mask & (1 << 9) != 0 { Some(r.var()?) } else { None };
    let timestamp = if mask & (1 << 10) != 0 { Some(r.var()?) } else { None };
    let [content_type, content_encoding, correlation_id, reply_to, message_id, kind, user_id, app_id] = strs;
    Ok(Properties {
        content_type,
        content_encoding,
        persistent,
        priority,
        correlation_id,
        reply_to,
        expiration_ms,
        message_id,
        timestamp,
        kind,
        user_id,
        app_id,
    })
}

fn decode_table(r: &mut R<'_>, depth: u32) -> Res<Headers> {
    if depth > MAX_DEPTH {
        return err("headers nested too deeply");
    }
    let n = r.count()?;
    let mut t = Headers::new();
    for _ in 0..n {
        let k = r.str()?;
        let v = decode_value(r, depth + 1)?;
        t.insert(k, v);
    }
    Ok(t)
}

fn decode_value(r: &mut R<'_>, depth: u32) -> Res<HeaderValue> {
    if depth > MAX_DEPTH {
        return err("headers nested too deeply");
    }
    Ok(match r.u8()? {
        0 => HeaderValue::Void,
        1 => HeaderValue::Bool(r.u8()? != 0),
        2 => HeaderValue::I8(r.u8()? as i8),
        3 => HeaderValue::U8(r.u8()?),
        4 => HeaderValue::I16(r.u16()? as i16),
        5 => HeaderValue::U16(r.u16()?),
        6 => HeaderValue::I32(r.u32()? as i32),
        7 => HeaderValue::U32(r.u32()?),
        8 => HeaderValue::I64(r.u64()? as i64),
        9 => HeaderValue::F32(f32::from_bits(r.u32()?)),
        10 => HeaderValue::F64(f64::from_bits(r.u64()?)),
        11 => HeaderValue::Decimal { scale: r.u8()?, value: r.u32()? },
        12 => HeaderValue::String(r.str()?),
        13 => HeaderValue::Bytes(Bytes::copy_from_slice(r.bytes()?)),
        14 => HeaderValue::Timestamp(r.u64()?),
        15 => {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                items.push(decode_value(r, depth + 1)?);
            }
            HeaderValue::Array(items)
        }
        16 => HeaderValue::Table(decode_table(r, depth + 1)?),
        17 => {
            let data_type = r.str()?;
            let value = match r.u8()? {
                0 => AttributeValue::String(r.str()?),
                1 => AttributeValue::Binary(Bytes::copy_from_slice(r.bytes()?)),
                t => return Err(RecordError(format!("unknown attribute value tag {t}"))),
            };
            HeaderValue::Attribute { data_type, value }
        }
        t => return Err(RecordError(format!("unknown header value tag {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> StoredMessage {
        let mut headers = Headers::new();
        headers.insert("a".into(), HeaderValue::I32(-5));
        headers.insert(
            "nested".into(),
            HeaderValue::Array(vec![HeaderValue::Table(Headers::from([(
                "x".to_string(),
                HeaderValue::Attribute {
                    data_type: "Number.float".into(),
                    value: AttributeValue::String("1.5".into()),
                },
            )]))]),
        );
        StoredMessage {
            id: MessageId::random(),
            seq: 42,
            sent_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_005_000),
            delay_until_ms: 0,
            receive_count: 3,
            first_receive_ms: 1_700_000_001_000,
            priority: 4,
            group_id: Some("g".into()),
            dedup_id: None,
            system_attributes: BTreeMap::from([("SenderId".to_string(), "me".to_string())]),
            dead_letter_source: Some("src".into()),
            body_md5: Some([7; 16]),
            message: Message {
                body: Bytes::from_static(b"hello"),
                headers,
                properties: Properties {
                    persistent: true,
                    content_type: Some("text/plain".into()),
                    expiration_ms: Some(5000),
                    ..Properties::default()
                },
                exchange: "ex".into(),
                routing_key: "rk".into(),
            },
        }
    }

    #[test]
    fn round_trip_sample() {
        let m = sample();
        let bytes = encode(&m);
        assert_eq!(decode(Bytes::from(bytes.clone())).expect("decode"), m);
        let meta = decode_meta(&bytes).expect("meta");
        assert_eq!(meta.seq, 42);
        assert_eq!(meta.body_len, 5);
        assert!(meta.persistent);
        assert_eq!(meta.group_id.as_deref(), Some("g"));
    }

    #[test]
    fn version_1_records_still_read_and_are_still_written() {
        // A version 1 record as the previous build wrote it (no dead-letter source).
        let v1: &[u8] = &[
            1, 1, // version, flags: persistent
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // id 1
            42, 0, 0, 0, 0, 0, 0, 0, // seq
            7, 0, 0, 0, 0, 0, 0, 0, // sent
            0, 0, 0, // receive count, first receive, priority
            2, // body length
            1, b'x', 0, // exchange "x", routing key ""
            0, 0, // no properties
            0, // no headers
            1, 1, b'k', 1, b'v', // system attributes k=v
            b'h', b'i',
        ];
        let m = decode(Bytes::from_static(v1)).expect("v1 decodes");
        assert_eq!((m.id, m.seq, m.sent_ms), (MessageId(1), 42, 7));
        assert_eq!(m.dead_letter_source, None);
        assert_eq!(&m.message.body[..], b"hi");
        assert_eq!(m.system_attributes["k"], "v");
        // Without a source it is written as version 1, byte for byte.
        assert_eq!(encode(&m), v1);
        // With one it is version 2 and keeps it.
        let moved = StoredMessage { dead_letter_source: Some("src".into()), ..m };
        let bytes = encode(&moved);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode(Bytes::from(bytes.clone())).expect("v2"), moved);
        assert!(decode_meta(&bytes).expect("meta").dead_letter_source);
        // Version 1 with the version 2 flag, and unknown versions, are refused.
        let mut bad = v1.to_vec();
        bad[1] |= F_DLQ_SOURCE;
        assert!(decode(Bytes::from(bad)).is_err());
        let mut bad = v1.to_vec();
        bad[0] = 4;
        assert!(decode_meta(&bad).is_err());
    }

    #[test]
    fn version_3_carries_the_body_md5() {
        let plain = StoredMessage { dead_letter_source: None, body_md5: None, ..sample() };
        assert_eq!(encode(&plain)[0], 1);
        let with_md5 = StoredMessage { body_md5: Some([9; 16]), ..plain.clone() };
        let bytes = encode(&with_md5);
        assert_eq!(bytes[0], 3);
        // Exactly the 16 digest bytes more, and they come back.
        assert_eq!(bytes.len(), encode(&plain).len() + 16);
        assert_eq!(decode(Bytes::from(bytes.clone())).expect("v3"), with_md5);
        assert!(decode_meta(&bytes).expect("meta").body_md5);
        // The digest flag is not a version 1 or 2 flag.
        for version in [1, 2] {
            let mut bad = bytes.clone();
            bad[0] = version;
            assert!(decode(Bytes::from(bad)).is_err(), "version {version} with the digest flag");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(Bytes::copy_from_slice(&bytes[..cut])).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // Array tag with count 1, repeated: 10,000 levels deep.
        let mut bytes = encode(&StoredMessage { message: Message::new(""), ..sample() });
        let body_start = bytes.len();
        bytes.truncate(body_start);
        let mut r = Vec::new();
        for _ in 0..10_000 {
            r.extend_from_slice(&[15, 1]);
        }
        r.push(0);
        assert!(decode_value(&mut R { buf: &r, pos: 0 }, 0).is_err());
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        let leaf = prop_oneof![
            Just(HeaderValue::Void),
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<i8>().prop_map(HeaderValue::I8),
            any::<u16>().prop_map(HeaderValue::U16),
            any::<i64>().prop_map(HeaderValue::I64),
            prop::num::f64::NORMAL.prop_map(HeaderValue::F64),
            prop::num::f32::NORMAL.prop_map(HeaderValue::F32),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| HeaderValue::Decimal { scale, value }),
            ".{0,12}".prop_map(HeaderValue::String),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| HeaderValue::Bytes(b.into())),
            any::<u64>().prop_map(HeaderValue::Timestamp),
            (".{0,8}", ".{0,8}")
                .prop_map(|(d, v)| HeaderValue::Attribute { data_type: d, value: AttributeValue::String(v) }),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| HeaderValue::Attribute {
                data_type: "Binary".into(),
                value: AttributeValue::Binary(b.into())
            }),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(HeaderValue::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(HeaderValue::Table),
            ]
        })
    }

    fn stored() -> impl Strategy<Value = StoredMessage> {
        (
            (any::<u128>(), any::<u64>(), any::<u64>(), any::<Option<u64>>(), any::<u64>()),
            (any::<u32>(), any::<u64>(), any::<u8>(), any::<Option<String>>(), any::<Option<String>>()),
            prop::collection::btree_map(".{0,6}", ".{0,6}", 0..3),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::btree_map(".{0,6}", header_value(), 0..4),
            (any::<bool>(), any::<Option<u8>>(), any::<Option<u64>>(), any::<Option<String>>()),
            (".{0,8}", ".{0,8}", any::<Option<String>>(), any::<Option<[u8; 16]>>()),
        )
            .prop_map(|(a, b, sys, body, headers, p, (exchange, routing_key, source, body_md5))| {
                StoredMessage {
                    id: MessageId(a.0),
                    seq: a.1,
                    sent_ms: a.2,
                    expires_at_ms: a.3,
                    delay_until_ms: a.4,
                    receive_count: b.0,
                    first_receive_ms: b.1,
                    priority: b.2,
                    group_id: b.3,
                    dedup_id: b.4,
                    system_attributes: sys,
                    dead_letter_source: source,
                    body_md5,
                    message: Message {
                        body: body.into(),
                        headers,
                        properties: Properties {
                            persistent: p.0,
                            priority: p.1,
                            expiration_ms: p.2,
                            reply_to: p.3.clone(),
                            app_id: p.3,
                            ..Properties::default()
                        },
                        exchange,
                        routing_key,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(m in stored()) {
            let bytes = encode(&m);
            prop_assert_eq!(decode(Bytes::from(bytes.clone())).expect("decode"), m.clone());
            let meta = decode_meta(&bytes).expect("meta");
            prop_assert_eq!(meta.seq, m.seq);
            prop_assert_eq!(meta.body_len as usize, m.message.body.len());
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(bytes.clone()));
            let _ = decode_meta(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(m in stored(), at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut bytes = encode(&m);
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            let _ = decode(Bytes::from(bytes));
        }
    }

    #[test]
    fn decoding_a_million_metas_is_fast() {
        let mut m = sample();
        m.message.body = Bytes::from(vec![7u8; 1024]);
        let bytes = encode(&m);
        let start = std::time::Instant::now();
        let mut total = 0u64;
        for _ in 0..1_000_000 {
            total += decode_meta(&bytes).map(|m| m.seq).unwrap_or(0);
        }
        assert_eq!(total, 42_000_000);
        // Generous for unoptimised test builds on a shared machine; release is ~50x faster.
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
    }
}
