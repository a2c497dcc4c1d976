//! Dead-lettering: RabbitMQ's `x-death` bookkeeping.
//!
//! A dead-lettered message is re-published through the queue's dead-letter exchange with an
//! `x-death` header: an array of tables, most recent first, one per (queue, reason) with a
//! `count` that grows each time the message dies the same way in the same queue. The first
//! death is also recorded in `x-first-death-*` and the latest in `x-last-death-*`.

use crate::message::{HeaderValue, Headers};

/// Why a message left its queue other than by being acked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Message TTL (per queue or per message) ran out.
    Expired,
    /// Dropped from the head, or refused, by a max-length limit.
    MaxLen,
    /// Returned more often than the queue's delivery limit allows.
    DeliveryLimit,
    /// SQS redrive: received more than the redrive policy's maxReceiveCount.
    MaxReceives,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
            DeathReason::MaxReceives => "max_receives",
        }
    }
}

fn field<'a>(t: &'a Headers, k: &str) -> Option<&'a str> {
    match t.get(k) {
        Some(HeaderValue::String(s)) => Some(s),
        _ => None,
    }
}

/// Record one death in `headers`.
pub(crate) fn add_x_death(
    headers: &mut Headers,
    queue: &str,
    reason: DeathReason,
    exchange: &str,
    routing_key: &str,
    now_ms: u64,
    original_expiration: Option<u64>,
) {
    let reason = reason.as_str();
    let mut deaths = match headers.remove("x-death") {
        Some(HeaderValue::Array(items)) => items,
        _ => Vec::new(),
    };
    let existing = deaths.iter().position(|d| match d {
        HeaderValue::Table(t) => field(t, "queue") == Some(queue) && field(t, "reason") == Some(reason),
        _ => false,
    });
    let entry = match existing {
        Some(i) => {
            let mut d = deaths.remove(i);
            if let HeaderValue::Table(t) = &mut d {
                let count = match t.get("count") {
                    Some(HeaderValue::I64(c)) => *c,
                    _ => 0,
                };
                t.insert("count".into(), HeaderValue::I64(count.saturating_add(1)));
                t.insert("time".into(), HeaderValue::Timestamp(now_ms / 1000));
            }
            d
        }
        None => {
            let mut t = Headers::new();
            t.insert("count".into(), HeaderValue::I64(1));
            t.insert("reason".into(), HeaderValue::String(reason.into()));
            t.insert("queue".into(), HeaderValue::String(queue.into()));
            t.insert("time".into(), HeaderValue::Timestamp(now_ms / 1000));
            t.insert("exchange".into(), HeaderValue::String(exchange.into()));
            t.insert(
                "routing-keys".into(),
                HeaderValue::Array(vec![HeaderValue::String(routing_key.into())]),
            );
            if let Some(e) = original_expiration {
                t.insert("original-expiration".into(), HeaderValue::String(e.to_string()));
            }
            HeaderValue::Table(t)
        }
    };
    deaths.insert(0, entry);
    headers.insert("x-death".into(), HeaderValue::Array(deaths));
    for (k, v) in [("reason", reason), ("queue", queue), ("exchange", exchange)] {
        headers.entry(format!("x-first-death-{k}")).or_insert_with(|| HeaderValue::String(v.into()));
        headers.insert(format!("x-last-death-{k}"), HeaderValue::String(v.into()));
    }
}

/// RabbitMQ's cycle rule: dead-lettering into a queue the message already died in is a cycle
/// (and dropped) unless one of its deaths was an explicit rejection, which a client can stop.
pub(crate) fn is_cycle(headers: &Headers, target_queue: &str) -> bool {
    let Some(HeaderValue::Array(deaths)) = headers.get("x-death") else {
        return false;
    };
    let mut seen = false;
    for d in deaths {
        if let HeaderValue::Table(t) = d {
            if field(t, "reason") == Some("rejected") {
                return false;
            }
            if field(t, "queue") == Some(target_queue) {
                seen = true;
            }
        }
    }
    seen
}

/// The `count` of the x-death entry for (queue, reason), for tests and front ends.
pub fn death_count(headers: &Headers, queue: &str, reason: DeathReason) -> i64 {
    let Some(HeaderValue::Array(deaths)) = headers.get("x-death") else {
        return 0;
    };
    deaths
        .iter()
        .find_map(|d| match d {
            HeaderValue::Table(t)
                if field(t, "queue") == Some(queue) && field(t, "reason") == Some(reason.as_str()) =>
            {
                match t.get("count") {
                    Some(HeaderValue::I64(c)) => Some(*c),
                    _ => None,
                }
            }
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_queue_and_reason_increment_count_and_move_to_front() {
        let mut h = Headers::new();
        add_x_death(&mut h, "q1", DeathReason::Expired, "ex", "rk", 5_000, Some(100));
        add_x_death(&mut h, "q2", DeathReason::Rejected, "dlx", "rk", 6_000, None);
        add_x_death(&mut h, "q1", DeathReason::Expired, "ex", "rk", 7_000, None);
        assert_eq!(death_count(&h, "q1", DeathReason::Expired), 2);
        assert_eq!(death_count(&h, "q2", DeathReason::Rejected), 1);
        let Some(HeaderValue::Array(d)) = h.get("x-death") else { panic!("no x-death") };
        assert_eq!(d.len(), 2);
        let HeaderValue::Table(first) = &d[0] else { panic!("not a table") };
        assert_eq!(field(first, "queue"), Some("q1"));
        assert_eq!(h.get("x-first-death-queue"), Some(&HeaderValue::String("q1".into())));
        assert_eq!(h.get("x-first-death-reason"), Some(&HeaderValue::String("expired".into())));
        assert_eq!(h.get("x-last-death-queue"), Some(&HeaderValue::String("q1".into())));
    }

    #[test]
    fn cycles_are_detected_unless_rejected() {
        let mut h = Headers::new();
        add_x_death(&mut h, "q1", DeathReason::Expired, "ex", "rk", 0, None);
        assert!(is_cycle(&h, "q1"));
        assert!(!is_cycle(&h, "q2"));
        add_x_death(&mut h, "q2", DeathReason::Rejected, "ex", "rk", 0, None);
        assert!(!is_cycle(&h, "q1"));
    }
}
