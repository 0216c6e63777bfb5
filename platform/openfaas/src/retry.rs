//! Retries with exponential backoff and full jitter, configured like
//! OpenFaaS Pro: `com.openfaas.retry.{attempts,codes,min_wait,max_wait}`.

use crate::{InvalidSetting, parse_duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

pub const ATTEMPTS: &str = "com.openfaas.retry.attempts";
pub const CODES: &str = "com.openfaas.retry.codes";
pub const MIN_WAIT: &str = "com.openfaas.retry.min_wait";
pub const MAX_WAIT: &str = "com.openfaas.retry.max_wait";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Total attempts, the first one included. 1 means no retry.
    pub attempts: u32,
    /// HTTP status codes worth another attempt. Connection errors always are.
    pub codes: Vec<u16>,
    #[serde(with = "crate::duration::serde_duration")]
    pub min_wait: Duration,
    #[serde(with = "crate::duration::serde_duration")]
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 10,
            codes: vec![408, 429, 502, 503, 504],
            min_wait: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// This policy with a function's `com.openfaas.retry.*` annotations applied.
    pub fn with_annotations(&self, annotations: &BTreeMap<String, String>) -> Result<Self, InvalidSetting> {
        let mut policy = self.clone();
        if let Some(v) = annotations.get(ATTEMPTS) {
            policy.attempts = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| InvalidSetting::new(ATTEMPTS, v, "a whole number of attempts, at least 1"))?;
        }
        if let Some(v) = annotations.get(CODES) {
            policy.codes = parse_codes(v).ok_or_else(|| {
                InvalidSetting::new(CODES, v, "comma-separated HTTP status codes such as 429,502,503")
            })?;
        }
        if let Some(v) = annotations.get(MIN_WAIT) {
            policy.min_wait = parse_duration(MIN_WAIT, v)?;
        }
        if let Some(v) = annotations.get(MAX_WAIT) {
            policy.max_wait = parse_duration(MAX_WAIT, v)?;
        }
        policy.validate()?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.attempts == 0 {
            return Err(InvalidSetting::new("retry.attempts", "0", "at least 1 attempt"));
        }
        if self.max_wait < self.min_wait {
            return Err(InvalidSetting::new(
                "retry.max_wait",
                humantime::format_duration(self.max_wait).to_string(),
                "a wait no shorter than retry.min_wait",
            ));
        }
        Ok(())
    }

    pub fn is_retryable(&self, status: u16) -> bool {
        self.codes.contains(&status)
    }

    /// Whether attempt number `attempt` (1-based, just failed) may be followed by another.
    pub fn has_attempts_after(&self, attempt: u32) -> bool {
        attempt < self.attempts
    }

    /// Wait before the attempt after `attempt` (1-based): full jitter over an
    /// exponentially growing window, or the server's `Retry-After`, kept
    /// within [min_wait, max_wait].
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.clamp(self.min_wait, self.max_wait);
        }
        let window = self.min_wait.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.max_wait);
        let spread = window.saturating_sub(self.min_wait);
        self.min_wait + spread.mul_f64(rand::random::<f64>())
    }
}

fn parse_codes(v: &str) -> Option<Vec<u16>> {
    v.split(',').map(|c| c.trim().parse::<u16>().ok().filter(|c| (100..600).contains(c))).collect()
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_override_defaults() {
        let mut a = BTreeMap::new();
        a.insert(ATTEMPTS.into(), "3".into());
        a.insert(CODES.into(), "500, 503".into());
        a.insert(MIN_WAIT.into(), "100ms".into());
        a.insert(MAX_WAIT.into(), "2s".into());
        let p = RetryPolicy::default().with_annotations(&a).unwrap();
        assert_eq!(p.attempts, 3);
        assert_eq!(p.codes, vec![500, 503]);
        assert!(p.has_attempts_after(2) && !p.has_attempts_after(3));
    }

    #[test]
    fn bad_annotation_is_named() {
        let mut a = BTreeMap::new();
        a.insert(CODES.into(), "5xx".into());
        let err = RetryPolicy::default().with_annotations(&a).unwrap_err().to_string();
        assert!(err.contains(CODES) && err.contains("5xx"), "{err}");
    }

    #[test]
    fn backoff_stays_in_window() {
        let p = RetryPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            ..Default::default()
        };
        for attempt in 1..30 {
            let w = p.backoff(attempt, None);
            assert!(w >= p.min_wait && w <= p.max_wait, "{w:?}");
        }
        assert_eq!(p.backoff(1, Some(Duration::from_secs(60))), p.max_wait);
        assert_eq!(p.backoff(1, Some(Duration::ZERO)), p.min_wait);
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after(&http::HeaderValue::from_static("7")), Some(Duration::from_secs(7)));
        let past = http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&http::HeaderValue::from_static("later")), None);
    }
}
