//! HTTP delivery policies: how often and how far apart SNS retries a delivery an endpoint did
//! not accept, and with which Content-Type it posts.
//!
//! A topic's `DeliveryPolicy` is `{"http": {"defaultHealthyRetryPolicy": {…},
//! "disableSubscriptionOverrides": bool, "defaultRequestPolicy": {"headerContentType": …}}}`; a
//! subscription's is `{"healthyRetryPolicy": {…}, "requestPolicy": {…}, "throttlePolicy": {…}}`
//! and wins unless the topic disables overrides. The retry policy has AWS's four phases: 1 +
//! `numRetries` attempts in all; first `numNoDelayRetries` at once, then `numMinDelayRetries`
//! `minDelayTarget` seconds apart, then the backoff phase from `minDelayTarget` to
//! `maxDelayTarget` along `backoffFunction`, then `numMaxDelayRetries` at `maxDelayTarget`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{SnsError, SnsResult};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backoff {
    Linear,
    Arithmetic,
    Geometric,
    Exponential,
}

impl Backoff {
    fn parse(s: &str) -> Option<Backoff> {
        match s {
            "linear" => Some(Backoff::Linear),
            "arithmetic" => Some(Backoff::Arithmetic),
            "geometric" => Some(Backoff::Geometric),
            "exponential" => Some(Backoff::Exponential),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backoff::Linear => "linear",
            Backoff::Arithmetic => "arithmetic",
            Backoff::Geometric => "geometric",
            Backoff::Exponential => "exponential",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPolicy {
    pub min_delay_target: u64,
    pub max_delay_target: u64,
    pub num_retries: u32,
    pub num_no_delay_retries: u32,
    pub num_min_delay_retries: u32,
    pub num_max_delay_retries: u32,
    pub backoff: Backoff,
    pub header_content_type: Option<String>,
    pub max_receives_per_second: Option<u32>,
}

impl Default for DeliveryPolicy {
    /// AWS's default for HTTP/S: 3 retries 20 s apart.
    fn default() -> Self {
        DeliveryPolicy {
            min_delay_target: 20,
            max_delay_target: 20,
            num_retries: 3,
            num_no_delay_retries: 0,
            num_min_delay_retries: 0,
            num_max_delay_retries: 0,
            backoff: Backoff::Linear,
            header_content_type: None,
            max_receives_per_second: None,
        }
    }
}

/// Content types AWS accepts in `headerContentType`.
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/xml",
    "text/html",
    "text/plain",
    "text/plain; charset=UTF-8",
    "text/xml",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
];

fn bad(why: impl std::fmt::Display) -> SnsError {
    SnsError::param(format!("DeliveryPolicy: {why}"))
}

fn uint(v: &Value, key: &str) -> SnsResult<Option<u64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_u64().map(Some).ok_or_else(|| bad(format!("{key} must be a non-negative integer"))),
    }
}

impl DeliveryPolicy {
    /// Apply a `healthyRetryPolicy` object over `self`, checking AWS's bounds.
    fn apply_retry(&mut self, retry: &Value) -> SnsResult<()> {
        if !retry.is_object() {
            return Err(bad("healthyRetryPolicy must be an object"));
        }
        let small = |n: u64, key: &str| -> SnsResult<u32> {
            if n > 100 {
                return Err(bad(format!("{key} must be between 0 and 100")));
            }
            Ok(n as u32)
        };
        if let Some(n) = uint(retry, "minDelayTarget")? {
            self.min_delay_target = n;
        }
        if let Some(n) = uint(retry, "maxDelayTarget")? {
            self.max_delay_target = n;
        }
        if let Some(n) = uint(retry, "numRetries")? {
            self.num_retries = small(n, "numRetries")?;
        }
        if let Some(n) = uint(retry, "numNoDelayRetries")? {
            self.num_no_delay_retries = small(n, "numNoDelayRetries")?;
        }
        if let Some(n) = uint(retry, "numMinDelayRetries")? {
            self.num_min_delay_retries = small(n, "numMinDelayRetries")?;
        }
        if let Some(n) = uint(retry, "numMaxDelayRetries")? {
            self.num_max_delay_retries = small(n, "numMaxDelayRetries")?;
        }
        if let Some(b) = retry.get("backoffFunction") {
            self.backoff = b.as_str().and_then(Backoff::parse).ok_or_else(|| {
                bad("backoffFunction must be one of linear, arithmetic, geometric, exponential")
            })?;
        }
        if self.min_delay_target < 1 || self.min_delay_target > self.max_delay_target {
            return Err(bad("minDelayTarget must be at least 1 and at most maxDelayTarget"));
        }
        if self.max_delay_target > 3600 {
            return Err(bad("maxDelayTarget must be at most 3600"));
        }
        if self.num_no_delay_retries + self.num_min_delay_retries + self.num_max_delay_retries
            > self.num_retries
        {
            return Err(bad(
                "numNoDelayRetries + numMinDelayRetries + numMaxDelayRetries must not exceed numRetries",
            ));
        }
        Ok(())
    }

    fn apply_request(&mut self, request: &Value) -> SnsResult<()> {
        if let Some(ct) = request.get("headerContentType") {
            let ct = ct.as_str().filter(|c| CONTENT_TYPES.contains(c)).ok_or_else(|| {
                bad(format!("headerContentType must be one of {}", CONTENT_TYPES.join(", ")))
            })?;
            self.header_content_type = Some(ct.to_owned());
        }
        Ok(())
    }

    fn apply_throttle(&mut self, throttle: &Value) -> SnsResult<()> {
        if let Some(n) = uint(throttle, "maxReceivesPerSecond")? {
            if n < 1 {
                return Err(bad("maxReceivesPerSecond must be at least 1"));
            }
            self.max_receives_per_second = Some(n.min(u64::from(u32::MAX)) as u32);
        }
        Ok(())
    }

    /// Check a topic's DeliveryPolicy attribute.
    pub fn validate_topic(text: &str) -> SnsResult<()> {
        let v: Value = serde_json::from_str(text).map_err(|_| bad("failed to parse JSON"))?;
        let Value::Object(m) = &v else { return Err(bad("must be a JSON object")) };
        for (protocol, p) in m {
            if !matches!(protocol.as_str(), "http" | "https") {
                continue;
            }
            let mut policy = DeliveryPolicy::default();
            if let Some(r) = p.get("defaultHealthyRetryPolicy") {
                policy.apply_retry(r)?;
            }
            if let Some(r) = p.get("defaultRequestPolicy") {
                policy.apply_request(r)?;
            }
            if let Some(r) = p.get("defaultThrottlePolicy") {
                policy.apply_throttle(r)?;
            }
        }
        Ok(())
    }

    /// Check a subscription's DeliveryPolicy attribute (HTTP/S subscriptions only).
    pub fn validate_subscription(text: &str, protocol: &str) -> SnsResult<()> {
        if !matches!(protocol, "http" | "https") {
            return Err(bad(format!("Delivery protocol [{protocol}] does not support delivery policies.")));
        }
        let v: Value = serde_json::from_str(text).map_err(|_| bad("failed to parse JSON"))?;
        if !v.is_object() {
            return Err(bad("must be a JSON object"));
        }
        let mut policy = DeliveryPolicy::default();
        policy.apply_subscription(&v)
    }

    fn apply_subscription(&mut self, v: &Value) -> SnsResult<()> {
        if let Some(r) = v.get("healthyRetryPolicy") {
            self.apply_retry(r)?;
        }
        if let Some(r) = v.get("requestPolicy") {
            self.apply_request(r)?;
        }
        if let Some(r) = v.get("throttlePolicy") {
            self.apply_throttle(r)?;
        }
        Ok(())
    }

    /// The policy deliveries follow: the default, then the topic's, then the subscription's
    /// unless the topic disables overrides. Invalid text (it was validated when set) is skipped.
    pub fn effective(topic: Option<&str>, subscription: Option<&str>, protocol: &str) -> DeliveryPolicy {
        let mut policy = DeliveryPolicy::default();
        let mut overrides = true;
        let section = if protocol == "https" { "https" } else { "http" };
        if let Some(t) = topic.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
            if let Some(p) = t.get(section).or_else(|| t.get("http")) {
                let mut candidate = policy.clone();
                let ok = p
                    .get("defaultHealthyRetryPolicy")
                    .map_or(Ok(()), |r| candidate.apply_retry(r))
                    .is_ok()
                    && p.get("defaultRequestPolicy").map_or(Ok(()), |r| candidate.apply_request(r)).is_ok()
                    && p.get("defaultThrottlePolicy").map_or(Ok(()), |r| candidate.apply_throttle(r)).is_ok();
                if ok {
                    policy = candidate;
                }
                overrides = !p.get("disableSubscriptionOverrides").and_then(Value::as_bool).unwrap_or(false);
            }
        }
        if overrides {
            if let Some(s) = subscription.and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                let mut candidate = policy.clone();
                if candidate.apply_subscription(&s).is_ok() {
                    policy = candidate;
                }
            }
        }
        policy
    }

    /// How long to wait before retry number `retry` (1-based); None when none is left.
    pub fn delay_before_retry(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.num_retries {
            return None;
        }
        let (min, max) = (self.min_delay_target as f64, self.max_delay_target as f64);
        let no_delay = self.num_no_delay_retries;
        let pre = no_delay + self.num_min_delay_retries;
        let backoff_n = self.num_retries - pre - self.num_max_delay_retries;
        let secs = if retry <= no_delay {
            0.0
        } else if retry <= pre {
            min
        } else if retry <= pre + backoff_n {
            let i = f64::from(retry - pre);
            let n = f64::from(backoff_n);
            let x = if backoff_n <= 1 { 1.0 } else { (i - 1.0) / (n - 1.0) };
            match self.backoff {
                Backoff::Linear => min + (max - min) * x,
                Backoff::Arithmetic => min + (max - min) * x * x,
                Backoff::Geometric => min * (max / min).powf(x.sqrt()),
                Backoff::Exponential => min * (max / min).powf(x),
            }
        } else {
            max
        };
        Some(Duration::from_millis((secs * 1000.0).round() as u64))
    }

    /// The `EffectiveDeliveryPolicy` subscription attribute.
    pub fn to_json(&self) -> Value {
        json!({
            "healthyRetryPolicy": {
                "minDelayTarget": self.min_delay_target,
                "maxDelayTarget": self.max_delay_target,
                "numRetries": self.num_retries,
                "numMaxDelayRetries": self.num_max_delay_retries,
                "numNoDelayRetries": self.num_no_delay_retries,
                "numMinDelayRetries": self.num_min_delay_retries,
                "backoffFunction": self.backoff.name(),
            },
            "sicklyRetryPolicy": null,
            "throttlePolicy": self.max_receives_per_second.map(|n| json!({"maxReceivesPerSecond": n})),
            "requestPolicy": {"headerContentType": self.header_content_type.as_deref().unwrap_or("text/plain; charset=UTF-8")},
            "guaranteed": false,
        })
    }
}

/// The topic's `EffectiveDeliveryPolicy` when none is set.
pub fn default_topic_policy() -> Value {
    json!({"http": {
        "defaultHealthyRetryPolicy": {
            "minDelayTarget": 20, "maxDelayTarget": 20, "numRetries": 3, "numMaxDelayRetries": 0,
            "numNoDelayRetries": 0, "numMinDelayRetries": 0, "backoffFunction": "linear"
        },
        "disableSubscriptionOverrides": false,
        "defaultRequestPolicy": {"headerContentType": "text/plain; charset=UTF-8"}
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        let p = DeliveryPolicy::effective(
            None,
            Some(
                r#"{"healthyRetryPolicy":{"numRetries":6,"numNoDelayRetries":1,"numMinDelayRetries":1,"numMaxDelayRetries":1,"minDelayTarget":1,"maxDelayTarget":5,"backoffFunction":"linear"}}"#,
            ),
            "http",
        );
        let delays: Vec<u64> =
            (1..=7).map(|i| p.delay_before_retry(i).map_or(999, |d| d.as_secs())).collect();
        assert_eq!(delays, [0, 1, 1, 3, 5, 5, 999]);
    }

    #[test]
    fn topic_can_forbid_overrides_and_bad_policies_are_refused() {
        let topic = r#"{"http":{"defaultHealthyRetryPolicy":{"numRetries":1,"minDelayTarget":2,"maxDelayTarget":2},"disableSubscriptionOverrides":true}}"#;
        let p = DeliveryPolicy::effective(
            Some(topic),
            Some(r#"{"healthyRetryPolicy":{"numRetries":9}}"#),
            "http",
        );
        assert_eq!(p.num_retries, 1);
        assert!(DeliveryPolicy::validate_topic(topic).is_ok());
        assert!(DeliveryPolicy::validate_subscription("{}", "sqs").is_err());
        assert!(DeliveryPolicy::validate_subscription(
            r#"{"healthyRetryPolicy":{"minDelayTarget":0}}"#,
            "http"
        )
        .is_err());
        assert!(DeliveryPolicy::validate_subscription(
            r#"{"healthyRetryPolicy":{"numRetries":101}}"#,
            "http"
        )
        .is_err());
        assert!(DeliveryPolicy::validate_subscription("nope", "http").is_err());
    }
}
