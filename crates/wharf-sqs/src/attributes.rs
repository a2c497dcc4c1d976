//! Queue attributes: validating what CreateQueue and SetQueueAttributes set, applying it to the
//! engine's [`QueueSettings`], and reading it back for GetQueueAttributes.
//!
//! Attributes the engine acts on (visibility, delay, retention, size, wait, redrive, FIFO
//! deduplication) live in the engine's typed fields; the rest (Policy, KMS, SSE,
//! RedriveAllowPolicy, FifoThroughputLimit, timestamps, tags) are kept verbatim in
//! `QueueSettings::attributes` under an `sqs:` prefix, so other protocols never clash with them
//! and tools like Terraform read back exactly what they wrote.

use std::collections::BTreeMap;

use serde_json::Value;
use wharf_core::{DedupScope, QueueKind, QueueSettings, QueueStats, RedrivePolicy};

use crate::error::{ErrorCode, SqsError, SqsResult};

/// Prefix of every SQS key in `QueueSettings::attributes`.
pub const PREFIX: &str = "sqs:";
pub const TAG_PREFIX: &str = "sqs:tag:";
pub const CREATED: &str = "sqs:CreatedTimestamp";
pub const MODIFIED: &str = "sqs:LastModifiedTimestamp";

/// Every attribute GetQueueAttributes knows, in the order AWS lists them.
pub const READABLE: &[&str] = &[
    "QueueArn",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

pub const MIN_MESSAGE_SIZE: i64 = 1024;
pub const MAX_MESSAGE_SIZE: i64 = 1024 * 1024;
pub const MAX_DELAY_SECONDS: i64 = 900;
pub const MAX_VISIBILITY_SECONDS: i64 = 43_200;
pub const MIN_RETENTION_SECONDS: i64 = 60;
pub const MAX_RETENTION_SECONDS: i64 = 1_209_600;
pub const MAX_WAIT_SECONDS: i64 = 20;
pub const MAX_RECEIVE_COUNT: i64 = 1000;
pub const MAX_REDRIVE_ALLOW_SOURCES: usize = 10;

/// Where queue names and ARNs point.
pub struct ArnContext<'a> {
    pub region: &'a str,
    pub account: &'a str,
}

impl ArnContext<'_> {
    pub fn arn(&self, queue: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{}", self.region, self.account, queue)
    }
}

/// The queue name an SQS ARN names (`arn:aws:sqs:region:account:name`).
pub fn queue_name_from_arn(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, _, name] if !name.is_empty() => Some(name),
        _ => None,
    }
}

fn invalid_value(name: &str) -> SqsError {
    SqsError::new(ErrorCode::InvalidAttributeValue, format!("Invalid value for the parameter {name}."))
}

pub fn unknown_attribute(name: &str) -> SqsError {
    SqsError::new(ErrorCode::InvalidAttributeName, format!("Unknown Attribute {name}."))
}

fn int_in(name: &str, value: &str, lo: i64, hi: i64) -> SqsResult<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid_value(name)),
    }
}

fn boolean(name: &str, value: &str) -> SqsResult<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid_value(name)),
    }
}

fn secs_to_ms(s: i64) -> u64 {
    u64::try_from(s).unwrap_or(0).saturating_mul(1000)
}

/// A parsed RedrivePolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

pub fn parse_redrive(value: &str) -> SqsResult<Redrive> {
    let bad = |why: &str| {
        SqsError::new(
            ErrorCode::InvalidParameterValue,
            format!("Value {value} for parameter RedrivePolicy is invalid. Reason: {why}"),
        )
    };
    let v: Value = serde_json::from_str(value).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let Value::Object(m) = v else { return Err(bad("Redrive policy is not a valid JSON map.")) };
    let arn = m
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn."))?;
    let count = match m.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        None => return Err(bad("Redrive policy does not contain mandatory attribute: maxReceiveCount.")),
        _ => None,
    }
    .filter(|n| (1..=MAX_RECEIVE_COUNT).contains(n))
    .ok_or_else(|| bad("Invalid value for maxReceiveCount: must be an integer from 1 to 1000."))?;
    let name = queue_name_from_arn(arn).ok_or_else(|| bad("Invalid value for deadLetterTargetArn."))?;
    Ok(Redrive { dead_letter_queue: name.to_owned(), max_receive_count: u32::try_from(count).unwrap_or(1) })
}

/// A parsed RedriveAllowPolicy: which source queues may use this queue as their DLQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedriveAllow {
    AllowAll,
    DenyAll,
    ByQueue(Vec<String>),
}

pub fn parse_redrive_allow(value: &str) -> SqsResult<RedriveAllow> {
    let bad = || invalid_value("RedriveAllowPolicy");
    let v: Value = serde_json::from_str(value).map_err(|_| bad())?;
    let perm = v.get("redrivePermission").and_then(Value::as_str).ok_or_else(bad)?;
    let sources: Option<Vec<String>> = match v.get("sourceQueueArns") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            Some(a.iter().map(|s| s.as_str().map(str::to_owned).ok_or_else(bad)).collect::<SqsResult<_>>()?)
        }
        Some(_) => return Err(bad()),
    };
    match (perm, sources) {
        ("allowAll", None) => Ok(RedriveAllow::AllowAll),
        ("denyAll", None) => Ok(RedriveAllow::DenyAll),
        ("byQueue", Some(s)) if !s.is_empty() && s.len() <= MAX_REDRIVE_ALLOW_SOURCES => {
            Ok(RedriveAllow::ByQueue(s))
        }
        _ => Err(bad()),
    }
}

impl RedriveAllow {
    pub fn allows(&self, source_arn: &str) -> bool {
        match self {
            RedriveAllow::AllowAll => true,
            RedriveAllow::DenyAll => false,
            RedriveAllow::ByQueue(arns) => arns.iter().any(|a| a == source_arn),
        }
    }
}

/// Validate `attrs` and apply them to `settings`. `creating` allows FifoQueue.
pub fn apply(
    settings: &mut QueueSettings,
    attrs: &BTreeMap<String, String>,
    creating: bool,
) -> SqsResult<()> {
    let fifo = settings.kind == QueueKind::Fifo;
    for (name, value) in attrs {
        let name = name.as_str();
        match name {
            "VisibilityTimeout" => {
                settings.visibility_timeout_ms = secs_to_ms(int_in(name, value, 0, MAX_VISIBILITY_SECONDS)?)
            }
            "DelaySeconds" => settings.delay_ms = secs_to_ms(int_in(name, value, 0, MAX_DELAY_SECONDS)?),
            "MaximumMessageSize" => {
                let n = int_in(name, value, MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE)?;
                settings.max_message_size = u32::try_from(n).unwrap_or(u32::MAX);
            }
            "MessageRetentionPeriod" => {
                settings.retention_ms =
                    secs_to_ms(int_in(name, value, MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS)?)
            }
            "ReceiveMessageWaitTimeSeconds" => {
                settings.receive_wait_ms = secs_to_ms(int_in(name, value, 0, MAX_WAIT_SECONDS)?)
            }
            "RedrivePolicy" => {
                settings.redrive = if value.is_empty() {
                    None
                } else {
                    let r = parse_redrive(value)?;
                    Some(RedrivePolicy {
                        dead_letter_queue: r.dead_letter_queue,
                        max_receive_count: r.max_receive_count,
                    })
                };
            }
            "RedriveAllowPolicy" => {
                if !value.is_empty() {
                    parse_redrive_allow(value)?;
                }
                set_verbatim(settings, name, value);
            }
            "Policy" => {
                if !value.is_empty() && !matches!(serde_json::from_str::<Value>(value), Ok(Value::Object(_)))
                {
                    return Err(invalid_value(name));
                }
                set_verbatim(settings, name, value);
            }
            "KmsMasterKeyId" => set_verbatim(settings, name, value),
            "KmsDataKeyReusePeriodSeconds" => {
                let n = int_in(name, value, 60, 86_400)?;
                set_verbatim(settings, name, &n.to_string());
            }
            "SqsManagedSseEnabled" => {
                let b = boolean(name, value)?;
                set_verbatim(settings, name, &b.to_string());
            }
            "FifoQueue" if creating => {
                // The kind was decided from the name and this attribute before we got here.
                if boolean(name, value)? != fifo {
                    return Err(invalid_value(name));
                }
            }
            "ContentBasedDeduplication" if fifo => settings.content_based_dedup = boolean(name, value)?,
            "DeduplicationScope" if fifo => {
                settings.dedup_scope = match value.as_str() {
                    "queue" => DedupScope::Queue,
                    "messageGroup" => DedupScope::MessageGroup,
                    _ => return Err(invalid_value(name)),
                }
            }
            "FifoThroughputLimit" if fifo => {
                if !matches!(value.as_str(), "perQueue" | "perMessageGroupId") {
                    return Err(invalid_value(name));
                }
                set_verbatim(settings, name, value);
            }
            _ => return Err(unknown_attribute(name)),
        }
    }
    // Cross-attribute rules, checked on the result so either order in one request works.
    if attrs.contains_key("KmsMasterKeyId")
        && attrs.get("SqsManagedSseEnabled").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && !attrs["KmsMasterKeyId"].is_empty()
    {
        return Err(SqsError::new(
            ErrorCode::InvalidAttributeValue,
            "You can use one type of server-side encryption (SSE) at one time. You can either enable KMS SSE \
             or SQS SSE.",
        ));
    }
    if attrs.get("KmsMasterKeyId").is_some_and(|v| !v.is_empty())
        && !attrs.contains_key("SqsManagedSseEnabled")
    {
        // Choosing KMS switches SQS-managed SSE off, as AWS does.
        set_verbatim(settings, "SqsManagedSseEnabled", "false");
    }
    if fifo
        && verbatim(settings, "FifoThroughputLimit") == Some("perMessageGroupId")
        && settings.dedup_scope != DedupScope::MessageGroup
    {
        return Err(SqsError::new(
            ErrorCode::InvalidAttributeValue,
            "Invalid value for the parameter FifoThroughputLimit. Reason: perMessageGroupId is only \
             valid with DeduplicationScope messageGroup.",
        ));
    }
    Ok(())
}

fn set_verbatim(settings: &mut QueueSettings, name: &str, value: &str) {
    let key = format!("{PREFIX}{name}");
    if value.is_empty() {
        settings.attributes.remove(&key);
    } else {
        settings.attributes.insert(key, value.to_owned());
    }
}

pub fn verbatim<'a>(settings: &'a QueueSettings, name: &str) -> Option<&'a str> {
    settings.attributes.get(&format!("{PREFIX}{name}")).map(String::as_str)
}

/// Whether `name` is an attribute GetQueueAttributes understands (or "All").
pub fn is_readable(name: &str) -> bool {
    name == "All" || READABLE.contains(&name)
}

/// One attribute's current value; None when it does not apply to this queue or is unset.
pub fn read(
    name: &str,
    queue: &str,
    s: &QueueSettings,
    stats: &QueueStats,
    arn: &ArnContext<'_>,
) -> Option<String> {
    let fifo = s.kind == QueueKind::Fifo;
    let secs = |ms: u64| (ms / 1000).to_string();
    Some(match name {
        "QueueArn" => arn.arn(queue),
        "ApproximateNumberOfMessages" => stats.ready.to_string(),
        "ApproximateNumberOfMessagesNotVisible" => stats.in_flight.to_string(),
        "ApproximateNumberOfMessagesDelayed" => stats.delayed.to_string(),
        "CreatedTimestamp" => s.attributes.get(CREATED).cloned().unwrap_or_else(|| "0".into()),
        "LastModifiedTimestamp" => s.attributes.get(MODIFIED).cloned().unwrap_or_else(|| "0".into()),
        "VisibilityTimeout" => secs(s.visibility_timeout_ms),
        "MaximumMessageSize" => s.max_message_size.to_string(),
        "MessageRetentionPeriod" => secs(s.retention_ms),
        "DelaySeconds" => secs(s.delay_ms),
        "ReceiveMessageWaitTimeSeconds" => secs(s.receive_wait_ms),
        "RedrivePolicy" => {
            let r = s.redrive.as_ref()?;
            serde_json::json!({
                "deadLetterTargetArn": arn.arn(&r.dead_letter_queue),
                "maxReceiveCount": r.max_receive_count,
            })
            .to_string()
        }
        "KmsDataKeyReusePeriodSeconds" => match verbatim(s, name) {
            Some(v) => v.to_owned(),
            None if verbatim(s, "KmsMasterKeyId").is_some() => "300".to_owned(),
            None => return None,
        },
        "SqsManagedSseEnabled" => match verbatim(s, name) {
            Some(v) => v.to_owned(),
            // New queues get SQS-managed encryption by default on AWS (since 2022).
            None => (verbatim(s, "KmsMasterKeyId").is_none()).to_string(),
        },
        "FifoQueue" if fifo => "true".to_owned(),
        "ContentBasedDeduplication" if fifo => s.content_based_dedup.to_string(),
        "DeduplicationScope" if fifo => match s.dedup_scope {
            DedupScope::Queue => "queue".to_owned(),
            DedupScope::MessageGroup => "messageGroup".to_owned(),
        },
        "FifoThroughputLimit" if fifo => verbatim(s, name).unwrap_or("perQueue").to_owned(),
        "RedriveAllowPolicy" | "Policy" | "KmsMasterKeyId" => verbatim(s, name)?.to_owned(),
        _ => return None,
    })
}

/// GetQueueAttributes for `names` ("All" = everything that applies).
pub fn read_many(
    names: &[&str],
    queue: &str,
    s: &QueueSettings,
    stats: &QueueStats,
    arn: &ArnContext<'_>,
) -> SqsResult<BTreeMap<String, String>> {
    if let Some(bad) = names.iter().find(|n| !is_readable(n)) {
        return Err(unknown_attribute(bad));
    }
    let all = names.contains(&"All");
    let mut out = BTreeMap::new();
    for name in READABLE {
        if all || names.contains(name) {
            if let Some(v) = read(name, queue, s, stats, arn) {
                out.insert((*name).to_owned(), v);
            }
        }
    }
    Ok(out)
}

/// Whether the requested CreateQueue attribute equals what the existing queue has, compared
/// by meaning (numbers as numbers, JSON as JSON) so "60" and " 60" or reordered policy keys do
/// not make an idempotent CreateQueue fail.
pub fn same_value(name: &str, requested: &str, existing: Option<&str>) -> bool {
    let existing = existing.unwrap_or("");
    if requested == existing {
        return true;
    }
    if let (Ok(a), Ok(b)) = (requested.trim().parse::<i64>(), existing.trim().parse::<i64>()) {
        return a == b;
    }
    if name == "RedrivePolicy" {
        return match (parse_redrive(requested), parse_redrive(existing)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
    }
    if requested.eq_ignore_ascii_case(existing) && matches!(existing, "true" | "false") {
        return true;
    }
    match (serde_json::from_str::<Value>(requested), serde_json::from_str::<Value>(existing)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const CTX: ArnContext<'static> = ArnContext { region: "us-east-1", account: "000000000000" };

    #[test]
    fn numeric_ranges() {
        let mut s = QueueSettings::default();
        apply(&mut s, &attrs(&[("VisibilityTimeout", "60"), ("DelaySeconds", "900")]), true).expect("ok");
        assert_eq!(s.visibility_timeout_ms, 60_000);
        assert_eq!(s.delay_ms, 900_000);
        for (k, v) in [
            ("DelaySeconds", "901"),
            ("VisibilityTimeout", "43201"),
            ("MaximumMessageSize", "1023"),
            ("MaximumMessageSize", "1048577"),
            ("MessageRetentionPeriod", "59"),
            ("ReceiveMessageWaitTimeSeconds", "21"),
            ("VisibilityTimeout", "abc"),
        ] {
            let e = apply(&mut QueueSettings::default(), &attrs(&[(k, v)]), true).expect_err(k);
            assert_eq!(e.code, ErrorCode::InvalidAttributeValue, "{k}={v}");
        }
    }

    #[test]
    fn unknown_and_fifo_only_names() {
        let e = apply(&mut QueueSettings::default(), &attrs(&[("Bogus", "1")]), true).expect_err("bogus");
        assert_eq!(e.code, ErrorCode::InvalidAttributeName);
        let e = apply(&mut QueueSettings::default(), &attrs(&[("ContentBasedDeduplication", "true")]), true)
            .expect_err("standard");
        assert_eq!(e.code, ErrorCode::InvalidAttributeName);
        let mut f = QueueSettings::fifo();
        apply(&mut f, &attrs(&[("ContentBasedDeduplication", "true"), ("FifoQueue", "true")]), true)
            .expect("fifo");
        assert!(f.content_based_dedup);
        let e = apply(&mut f, &attrs(&[("FifoQueue", "true")]), false).expect_err("set fifo");
        assert_eq!(e.code, ErrorCode::InvalidAttributeName);
    }

    #[test]
    fn verbatim_round_trip() {
        let mut s = QueueSettings::default();
        let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
        apply(&mut s, &attrs(&[("Policy", policy), ("KmsMasterKeyId", "alias/aws/sqs")]), true).expect("ok");
        let stats = QueueStats::default();
        assert_eq!(read("Policy", "q", &s, &stats, &CTX).as_deref(), Some(policy));
        assert_eq!(read("SqsManagedSseEnabled", "q", &s, &stats, &CTX).as_deref(), Some("false"));
        assert_eq!(read("KmsDataKeyReusePeriodSeconds", "q", &s, &stats, &CTX).as_deref(), Some("300"));
        assert!(apply(&mut s, &attrs(&[("Policy", "not json")]), false).is_err());
    }

    #[test]
    fn redrive_policy() {
        let r = parse_redrive(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#,
        )
        .expect("ok");
        assert_eq!(r, Redrive { dead_letter_queue: "dlq".into(), max_receive_count: 3 });
        assert!(parse_redrive(r#"{"deadLetterTargetArn":"x","maxReceiveCount":3}"#).is_err());
        assert!(parse_redrive(r#"{"deadLetterTargetArn":"arn:aws:sqs:r:a:d","maxReceiveCount":0}"#).is_err());
        assert!(parse_redrive("nope").is_err());
        assert!(same_value(
            "RedrivePolicy",
            r#"{"maxReceiveCount":3,"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq"}"#,
            Some(r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#)
        ));
    }

    #[test]
    fn redrive_allow_policy() {
        assert_eq!(
            parse_redrive_allow(r#"{"redrivePermission":"allowAll"}"#).expect("ok"),
            RedriveAllow::AllowAll
        );
        let by =
            parse_redrive_allow(r#"{"redrivePermission":"byQueue","sourceQueueArns":["a"]}"#).expect("ok");
        assert!(by.allows("a") && !by.allows("b"));
        assert!(parse_redrive_allow(r#"{"redrivePermission":"byQueue"}"#).is_err());
        assert!(parse_redrive_allow(r#"{"redrivePermission":"maybe"}"#).is_err());
    }

    #[test]
    fn get_all_on_standard_and_fifo() {
        let stats = QueueStats::default();
        let s = QueueSettings::default();
        let all = read_many(&["All"], "q", &s, &stats, &CTX).expect("all");
        assert_eq!(all["QueueArn"], "arn:aws:sqs:us-east-1:000000000000:q");
        assert_eq!(all["VisibilityTimeout"], "30");
        assert_eq!(all["MessageRetentionPeriod"], "345600");
        assert!(!all.contains_key("FifoQueue"));
        let f = read_many(&["All"], "q.fifo", &QueueSettings::fifo(), &stats, &CTX).expect("all");
        assert_eq!(f["FifoQueue"], "true");
        assert_eq!(f["DeduplicationScope"], "queue");
        assert_eq!(f["FifoThroughputLimit"], "perQueue");
        assert_eq!(
            read_many(&["Nope"], "q", &s, &stats, &CTX).expect_err("bad").code,
            ErrorCode::InvalidAttributeName
        );
    }
}
