//! A function's subscription: its topics and the delivery settings its
//! annotations choose (retry policy, rate limit, in-flight limit).

use crate::adaptive::{Adaptive, Signal, Slot};
use governor::{DefaultDirectRateLimiter, Quota};
use openfaas::RetryPolicy;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Events per second a function receives at most (a token bucket).
pub const RATE_LIMIT: &str = "com.switchboard.rate_limit";
/// Events the bucket lets through at once after a quiet spell.
pub const BURST: &str = "com.switchboard.burst";
/// Invocations of the function in flight at once.
pub const MAX_INFLIGHT: &str = "com.switchboard.max_inflight";
/// `adaptive`: the in-flight cap follows the function's own signals
/// (429/503, latency), up to `max_inflight` ([`crate::adaptive`]).
pub const CONCURRENCY: &str = "com.switchboard.concurrency";
/// `"true"`: the hub takes none of the function's events until it is resumed.
pub const PAUSED: &str = "com.switchboard.paused";

#[derive(Debug)]
pub struct Subscription {
    /// `name.namespace`, as the gateway addresses it.
    pub function: String,
    pub topics: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub retry: RetryPolicy,
    pub limits: Arc<Limits>,
    /// Paused, by its annotation or through the hub's API: its events wait
    /// where their brokers keep them, or in the hub, until it is resumed.
    pub paused: bool,
    /// Where its answers are published (`com.switchboard.reply-to`), or
    /// why the annotation is not a place to publish to.
    pub reply_to: Option<Result<crate::reply::ReplyTo, String>>,
    /// How long a delivered event's identity is remembered, so that a
    /// redelivery of it is not delivered again (`com.switchboard.dedup.window`).
    pub dedup: Option<Duration>,
}

impl Subscription {
    #[cfg(test)]
    pub fn for_test(function: &str, topics: &[&str]) -> Self {
        Subscription {
            function: function.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            annotations: BTreeMap::new(),
            retry: RetryPolicy::default(),
            limits: Arc::new(Limits::new(LimitSettings::default())),
            paused: false,
            reply_to: None,
            dedup: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Events per second; 0 = unlimited.
    pub rate_limit: f64,
    /// Bucket size; 0 = one second's worth of `rate_limit` (at least 1).
    pub burst: u32,
    /// 0 = unlimited.
    pub max_inflight: usize,
    /// `fixed`: `max_inflight` is the cap; `adaptive`: it is the ceiling
    /// of a cap that follows the function's own signals.
    pub concurrency: Concurrency,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    #[default]
    Fixed,
    Adaptive,
}

/// The ceiling of an adaptive cap when `max_inflight` is 0 (unlimited).
const ADAPTIVE_CEILING: usize = 1024;

impl LimitSettings {
    /// These defaults with a function's annotations applied.
    pub fn with_annotations(self, a: &BTreeMap<String, String>) -> Result<Self, openfaas::InvalidSetting> {
        let mut s = self;
        if let Some(v) = a.get(RATE_LIMIT) {
            s.rate_limit = v.trim().parse().ok().filter(|r: &f64| r.is_finite() && *r >= 0.0).ok_or_else(|| {
                openfaas::InvalidSetting::new(RATE_LIMIT, v, "events per second, a number ≥ 0 (0 = unlimited)")
            })?;
        }
        if let Some(v) = a.get(BURST) {
            s.burst =
                v.trim().parse().map_err(|_| openfaas::InvalidSetting::new(BURST, v, "a whole number of events"))?;
        }
        if let Some(v) = a.get(CONCURRENCY) {
            s.concurrency = match v.trim() {
                "fixed" => Concurrency::Fixed,
                "adaptive" => Concurrency::Adaptive,
                _ => return Err(openfaas::InvalidSetting::new(CONCURRENCY, v, "fixed or adaptive")),
            };
        }
        if let Some(v) = a.get(MAX_INFLIGHT) {
            s.max_inflight = v
                .trim()
                .parse()
                .map_err(|_| openfaas::InvalidSetting::new(MAX_INFLIGHT, v, "a whole number (0 = unlimited)"))?;
        }
        Ok(s)
    }
}

/// The live limiters of one function; kept across discovery refreshes while
/// the settings stay the same, so a refresh neither refills the bucket nor
/// forgets invocations in flight.
#[derive(Debug)]
pub struct Limits {
    pub settings: LimitSettings,
    rate: Option<DefaultDirectRateLimiter>,
    inflight: Option<Arc<Semaphore>>,
    adaptive: Option<Adaptive>,
}

/// A place among a function's invocations in flight; [`Permit::done`]
/// gives it back saying how the call went (an adaptive cap moves by it).
pub struct Permit<'a> {
    _fixed: Option<OwnedSemaphorePermit>,
    adaptive: Option<(&'a Adaptive, Slot)>,
}

impl Permit<'_> {
    /// The call ended with `status` (none: no answer) after `took`; the
    /// cap now, when it is adaptive.
    pub fn done(self, status: Option<u16>, took: Duration) -> Option<usize> {
        let (adaptive, slot) = self.adaptive?;
        let signal = match status {
            Some(429 | 503) => Signal::Rejected,
            _ => Signal::Answered(took),
        };
        adaptive.done(slot, signal);
        Some(adaptive.limit())
    }
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let rate = (settings.rate_limit > 0.0).then(|| {
            let burst = if settings.burst > 0 { settings.burst } else { settings.rate_limit.ceil().max(1.0) as u32 };
            let period = Duration::from_secs_f64(1.0 / settings.rate_limit);
            let quota = Quota::with_period(period)
                .expect("period above zero")
                .allow_burst(NonZeroU32::new(burst).expect("burst ≥ 1"));
            DefaultDirectRateLimiter::direct(quota)
        });
        let (inflight, adaptive) = match settings.concurrency {
            Concurrency::Adaptive => {
                let ceiling = if settings.max_inflight > 0 { settings.max_inflight } else { ADAPTIVE_CEILING };
                (None, Some(Adaptive::new(ceiling)))
            }
            Concurrency::Fixed => {
                ((settings.max_inflight > 0).then(|| Arc::new(Semaphore::new(settings.max_inflight))), None)
            }
        };
        Self { settings, rate, inflight, adaptive }
    }

    /// Waits for an in-flight slot, then for a token.
    pub async fn acquire(&self) -> Permit<'_> {
        let fixed = match &self.inflight {
            Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore is never closed")),
            None => None,
        };
        let adaptive = match &self.adaptive {
            Some(a) => Some((a, a.acquire().await)),
            None => None,
        };
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        Permit { _fixed: fixed, adaptive }
    }
}
