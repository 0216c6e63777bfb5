//! Autoscaling by load, with OpenFaaS's labels: replicas follow a function's
//! load between `com.openfaas.scale.min` and `.max`, as OpenFaaS Pro's
//! autoscaler computes them (`ceil(load / (target × target-proportion))`),
//! up at once (by at most `.factor` % of the maximum a second, CE's step)
//! and down only to the most replicas wanted over the last
//! `.down.window`, so a dip does not stop replicas a rise needs again.

use openfaas::FunctionDeployment;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCALE_TYPE: &str = "com.openfaas.scale.type";
const SCALE_TARGET: &str = "com.openfaas.scale.target";
const SCALE_PROPORTION: &str = "com.openfaas.scale.target-proportion";
const SCALE_FACTOR: &str = "com.openfaas.scale.factor";
const SCALE_DOWN_WINDOW: &str = "com.openfaas.scale.down.window";

/// The labels that ask for scaling by load; `com.openfaas.scale.max` is one.
const SCALING_LABELS: [&str; 4] = [SCALE_TYPE, SCALE_TARGET, SCALE_PROPORTION, SCALE_FACTOR];

/// Load is the mean over this window: CE's alert rule takes `rate(…[10s])`.
pub(super) const LOAD_WINDOW: Duration = Duration::from_secs(10);
/// Pro's default proportion of the target at which replicas are added.
const DEFAULT_PROPORTION: f64 = 0.9;
/// CE's default step: a fifth of the maximum per decision.
const DEFAULT_FACTOR: u64 = 20;
/// How long a scale-down waits for the load to stay low (Pro's is off by
/// default and Kubernetes' HPA waits 5 minutes; this is between, so a dip
/// does not stop a replica and a quiet function is back to its minimum
/// within a minute).
const DEFAULT_DOWN_WINDOW: Duration = Duration::from_secs(30);
/// Pro's longest `com.openfaas.scale.down.window`.
const MAX_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// What a function's load is measured in (`com.openfaas.scale.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Calls per second.
    Rps,
    /// Calls in flight.
    Capacity,
    /// CPU used, in milli-CPUs (1000 is one core busy).
    Cpu,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rps => "rps",
            Kind::Capacity => "capacity",
            Kind::Cpu => "cpu",
        }
    }

    /// The load one replica is meant to carry when the label does not say:
    /// CE's alert fires above 5 calls a second per replica, so functions
    /// written for CE scale as they did; the others take Pro's 50.
    fn default_target(self) -> f64 {
        match self {
            Kind::Rps => 5.0,
            Kind::Capacity | Kind::Cpu => 50.0,
        }
    }
}

/// How one function scales by load.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub kind: Kind,
    min: u64,
    max: u64,
    /// The load one replica is meant to carry.
    pub target: f64,
    /// Replicas are added at this load per replica: `target × target-proportion`.
    per_replica: f64,
    /// The most replicas one decision adds.
    step: u64,
    down_window: Duration,
}

impl Policy {
    /// How `d` scales by load between `min` and `max` replicas: none when
    /// no scaling label asks for it (a function's replicas stay as deployed,
    /// as on faasd), when `min == max` or when `com.openfaas.scale.factor`
    /// is 0 (CE's two ways to turn it off). A bad label is an error naming it.
    pub fn of(d: &FunctionDeployment, min: u64, max: u64, max_set: bool) -> Result<Option<Self>, String> {
        let label = |key: &str| d.labels.get(key).map(|v| v.trim());
        let kind = match label(SCALE_TYPE) {
            None | Some("rps") => Kind::Rps,
            Some("capacity") => Kind::Capacity,
            Some("cpu") => Kind::Cpu,
            Some(v) => return Err(format!("labels.{SCALE_TYPE} {v:?}: expected rps, capacity or cpu")),
        };
        let positive = |key: &str, default: f64| match label(key) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
                _ => Err(format!("labels.{key} {v:?}: expected a number above 0")),
            },
        };
        let target = positive(SCALE_TARGET, kind.default_target())?;
        let proportion = positive(SCALE_PROPORTION, DEFAULT_PROPORTION)?;
        let factor = match label(SCALE_FACTOR) {
            None => DEFAULT_FACTOR,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= 100 => n,
                _ => return Err(format!("labels.{SCALE_FACTOR} {v:?}: expected a whole percentage from 0 to 100")),
            },
        };
        let down_window = match label(SCALE_DOWN_WINDOW) {
            None => DEFAULT_DOWN_WINDOW,
            Some(v) => match openfaas::parse_duration(SCALE_DOWN_WINDOW, v) {
                Ok(w) if w <= MAX_DOWN_WINDOW => w,
                Ok(_) => return Err(format!("labels.{SCALE_DOWN_WINDOW} {v:?}: at most 5m, as on OpenFaaS")),
                Err(e) => return Err(format!("labels: {e}")),
            },
        };
        let asked = max_set || SCALING_LABELS.iter().any(|k| d.labels.contains_key(*k));
        let min = min.max(1);
        if !asked || max <= min || factor == 0 {
            return Ok(None);
        }
        let step = (max * factor).div_ceil(100).max(1);
        Ok(Some(Self { kind, min, max, target, per_replica: target * proportion, step, down_window }))
    }

    /// The replicas `load` asks for, within the bounds.
    fn wanted(&self, load: f64) -> u64 {
        ((load / self.per_replica).ceil() as u64).clamp(self.min, self.max)
    }
}

/// What calls add to a function's load, counted as they are made: what
/// it scales by, and whether it is idle (every call counts, from the hub
/// and the queue too, since they call through `/function/`).
pub struct Load {
    calls: AtomicU64,
    in_flight: AtomicU64,
    /// When a call last began or ended, in milliseconds after `since`.
    last_call: AtomicU64,
    since: Instant,
}

impl Load {
    pub(super) fn new() -> Self {
        let (calls, in_flight, last_call) = Default::default();
        Self { calls, in_flight, last_call, since: Instant::now() }
    }

    /// A call begins; it is in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        self.last_call.store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long it has had no call in flight.
    pub(super) fn idle(&self) -> Duration {
        if self.in_flight() > 0 {
            return Duration::ZERO;
        }
        self.since.elapsed().saturating_sub(Duration::from_millis(self.last_call.load(Ordering::Relaxed)))
    }

    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A call in flight.
pub struct InFlight(Arc<Load>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A function's scaler: its policy and what it has seen, touched by the
/// provider's tick alone.
pub(super) struct Scaler {
    pub policy: Policy,
    /// Load measured at each tick within [`LOAD_WINDOW`], as an amount:
    /// calls, call-seconds in flight, or milli-CPU-seconds.
    amounts: VecDeque<(Instant, f64)>,
    /// The replicas wanted at each tick within the down window.
    wanted: VecDeque<(Instant, u64)>,
    /// The call count at the last tick.
    calls_seen: u64,
    last_tick: Instant,
}

/// One tick's outcome for a function.
pub struct Scaled {
    /// `name.namespace`.
    pub function: String,
    pub kind: Kind,
    /// The mean load over the window, in the kind's unit.
    pub load: f64,
    pub target: f64,
    /// Its replicas before the decision.
    pub replicas: u64,
    /// The replicas it was scaled to, when it was.
    pub scaled_to: Option<u64>,
}

impl Scaler {
    pub fn new(policy: Policy) -> Self {
        Self { policy, amounts: VecDeque::new(), wanted: VecDeque::new(), calls_seen: 0, last_tick: Instant::now() }
    }

    /// Measures the load since the last tick (the function's calls; the
    /// `cpu_nanos` its replicas used since then) and decides for a function running
    /// `current` replicas: see [`Scaler::decide`].
    pub fn observe(&mut self, now: Instant, load: &Load, cpu_nanos: u64, current: u64) -> (f64, Option<(u64, String)>) {
        let amount = match self.policy.kind {
            Kind::Rps => {
                let seen = std::mem::replace(&mut self.calls_seen, load.calls());
                self.calls_seen.saturating_sub(seen) as f64
            }
            Kind::Capacity => load.in_flight() as f64 * now.duration_since(self.last_tick).as_secs_f64(),
            // Nanoseconds of CPU are millionths of a milli-CPU-second.
            Kind::Cpu => cpu_nanos as f64 / 1e6,
        };
        self.last_tick = now;
        self.decide(now, amount, current)
    }

    /// Notes `amount` of load since the last tick and decides, for a
    /// function running `current` replicas: the mean load, and the replicas
    /// to scale to with why, when they differ from `current`.
    fn decide(&mut self, now: Instant, amount: f64, current: u64) -> (f64, Option<(u64, String)>) {
        self.amounts.push_back((now, amount));
        while self.amounts.front().is_some_and(|(t, _)| now.duration_since(*t) >= LOAD_WINDOW) {
            self.amounts.pop_front();
        }
        // Over the whole window from the first tick on, so a burst in a
        // function's first second does not read as a second-long rate.
        let load = self.amounts.iter().map(|(_, a)| a).sum::<f64>() / LOAD_WINDOW.as_secs_f64();
        let p = &self.policy;
        let wanted = p.wanted(load);
        self.wanted.push_back((now, wanted));
        while self.wanted.front().is_some_and(|(t, _)| now.duration_since(*t) > p.down_window) {
            self.wanted.pop_front();
        }
        let why = format!(
            "{} load {load:.1} over the last {}s, a replica per {:.1}: wants {wanted}",
            p.kind.name(),
            LOAD_WINDOW.as_secs(),
            p.per_replica
        );
        if wanted > current {
            let to = wanted.min(current + p.step);
            let why = if to < wanted { format!("{why}, {} more at a time (factor)", p.step) } else { why };
            return (load, Some((to, why)));
        }
        // Down only as far as the most wanted lately.
        let to = self.wanted.iter().map(|(_, w)| *w).max().unwrap_or(wanted).max(p.min);
        if to < current {
            let window = humantime::format_duration(p.down_window);
            return (load, Some((to, format!("{why}, and no more than {to} over the last {window}"))));
        }
        (load, None)
    }

    /// Forgets what it saw: the function went to zero, and its next load
    /// starts from nothing.
    pub fn reset(&mut self, calls_seen: u64) {
        self.amounts.clear();
        self.wanted.clear();
        self.calls_seen = calls_seen;
        self.last_tick = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(labels: &[(&str, &str)]) -> FunctionDeployment {
        let mut d = FunctionDeployment { service: "f".into(), ..Default::default() };
        d.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        d
    }

    #[test]
    fn scaling_is_asked_for_by_a_label_and_off_when_min_is_max_or_factor_is_zero() {
        assert_eq!(Policy::of(&deployment(&[]), 1, 20, false), Ok(None));
        assert!(Policy::of(&deployment(&[]), 1, 2, true).unwrap().is_some());
        assert_eq!(Policy::of(&deployment(&[]), 2, 2, true), Ok(None));
        assert_eq!(Policy::of(&deployment(&[(SCALE_FACTOR, "0")]), 1, 5, true), Ok(None));
        let p = Policy::of(&deployment(&[(SCALE_TYPE, "capacity")]), 1, 20, false).unwrap().unwrap();
        assert_eq!((p.kind, p.per_replica, p.step), (Kind::Capacity, 45.0, 4));
    }

    #[test]
    fn bad_labels_are_named() {
        for (key, value) in [
            (SCALE_TYPE, "memory"),
            (SCALE_TARGET, "-1"),
            (SCALE_PROPORTION, "most"),
            (SCALE_FACTOR, "101"),
            (SCALE_DOWN_WINDOW, "10m"),
        ] {
            let e = Policy::of(&deployment(&[(key, value)]), 1, 5, true).unwrap_err();
            assert!(e.contains(key) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn replicas_rise_at_once_and_fall_after_the_down_window() {
        let labels = [(SCALE_FACTOR, "100"), (SCALE_DOWN_WINDOW, "5s")];
        let p = Policy::of(&deployment(&labels), 1, 4, true).unwrap().unwrap();
        let mut s = Scaler::new(p);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // 5 calls a second for ten seconds: 5 per replica (4.5 with the
        // proportion) wants 2 once the window is full.
        let mut replicas = 1;
        for t in 1..=10 {
            if let (_, Some((to, _))) = s.decide(at(t), 5.0, replicas) {
                replicas = to;
            }
        }
        assert_eq!(replicas, 2);
        // 20 a second: straight to the maximum.
        let (_, to) = s.decide(at(11), 200.0, replicas);
        assert_eq!(to.map(|(n, _)| n), Some(4));
        // Quiet: held for the down window, then back to the minimum.
        let mut fell = None;
        for t in 12..40 {
            if let (_, Some((to, why))) = s.decide(at(t), 0.0, 4) {
                fell = Some((t, to, why));
                break;
            }
        }
        let (t, to, why) = fell.expect("scaled down");
        assert_eq!(to, 1, "{why}");
        assert!(t >= 11 + 10 + 5 - 1, "scaled down at {t}s, before the load and the window passed: {why}");
    }

    #[test]
    fn a_step_bounds_each_rise() {
        let p = Policy::of(&deployment(&[(SCALE_FACTOR, "10")]), 1, 20, true).unwrap().unwrap();
        let mut s = Scaler::new(p);
        let (_, to) = s.decide(Instant::now(), 1000.0, 1);
        assert_eq!(to.map(|(n, _)| n), Some(3), "10% of 20 is 2 at a time");
    }
}
