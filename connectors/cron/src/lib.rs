//! The cron source, compatible with OpenFaaS's cron-connector: a function
//! annotated `topic: cron-function` and `schedule: "*/5 * * * *"` is invoked
//! on that schedule. Beyond it: a seconds field, `@hourly`-style descriptors,
//! `@every 30s`, `CRON_TZ=Area/City` with a bundled time-zone database,
//! several schedules separated by `;`, and an overlap policy; and, with a
//! store the replicas share (`coordination: nats | redis`), each slot fired
//! once across replicas and a policy for slots missed while all were down.

mod schedule;

pub use schedule::Schedule;

use chrono::{DateTime, Utc};
use connector_core::shared::Shared;
use connector_core::{Event, Outcome, Settle, Source, SourceConfig, SourceContext, SourceError, Subscribed, TopicMap};
use futures_util::future::BoxFuture;
use prometheus::{CounterVec, Opts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use connector_core::CRON_TOPIC as TOPIC;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CronConfig {
    pub enabled: bool,
    /// What to do when a tick comes while the previous run is in flight.
    pub overlap: Overlap,
    /// What a function receives: a JSON description of the tick, or
    /// nothing, as OpenFaaS's cron-connector sends.
    pub body: Body,
    /// Where replicas agree on who fires each slot: nowhere (one replica),
    /// or the store at the `nats.url` or `redis.url` of this config.
    pub coordination: Coordination,
    /// How long a replica's claim on a slot lasts: a replica that dies
    /// between claiming a slot and firing it leaves the slot to another
    /// once this has passed.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub lease: Duration,
    /// What happens to the slots missed while every replica was down.
    pub missed: Missed,
    /// The most a function's runs are put off, by an amount fixed per
    /// function, so functions on one schedule do not all fire at once.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub jitter: Duration,
    /// The store `coordination` names, once connected to its config.
    #[serde(skip)]
    pub store: Option<Shared>,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            overlap: Overlap::Skip,
            body: Body::Json,
            coordination: Coordination::None,
            lease: Duration::from_secs(10),
            missed: Missed::Skip,
            jitter: Duration::ZERO,
            store: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coordination {
    /// Every replica fires every slot: for one replica.
    None,
    Nats,
    Redis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Missed slots are logged and not run.
    Skip,
    /// The latest missed slot runs once when a replica comes back.
    RunOnce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    Json,
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the tick (logged); the default.
    Skip,
    /// Run anyway.
    Allow,
}

pub struct CronSource {
    config: CronConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid cron config: {0}")]
pub struct ConfigError(String);

impl CronSource {
    pub fn new(config: CronConfig) -> Result<Self, ConfigError> {
        let c = &config;
        if c.coordination != Coordination::None && c.store.is_none() {
            return Err(ConfigError(format!("cron.coordination {:?}: its store was not set up", c.coordination)));
        }
        if c.missed == Missed::RunOnce && c.coordination == Coordination::None {
            return Err(ConfigError(
                "cron.missed run_once: needs cron.coordination (nats or redis), where the last run is kept".into(),
            ));
        }
        if c.lease < Duration::from_secs(1) {
            return Err(ConfigError(format!("cron.lease {}: at least 1s", humantime::format_duration(c.lease))));
        }
        Ok(Self { config })
    }
}

impl SourceConfig for CronConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(CronSource::new(self.clone())?))
    }
}

impl Source for CronSource {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let coordination = match &c.store {
            Some(store) => format!("slots claimed in {} (missed: {:?})", store.0.describe(), c.missed),
            None => "every slot fired by this replica".into(),
        };
        format!("functions with topic {TOPIC} and a schedule annotation (overlap: {:?}; {coordination})", c.overlap)
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let errors = CounterVec::new(
                Opts::new("switchboard_cron_schedule_errors_total", "Invalid cron schedules"),
                &["function"],
            )?;
            ctx.registry.register(Box::new(errors.clone()))?;
            let runs = CounterVec::new(
                Opts::new("switchboard_cron_slots_total", "Scheduled slots, by what this replica did with them"),
                &["function", "outcome"],
            )?;
            ctx.registry.register(Box::new(runs.clone()))?;
            let metrics = Metrics { errors, runs };
            // One task per (function, schedule annotation); a changed annotation is a new key.
            let mut jobs: Subscribed<(String, String), CancellationToken> = Subscribed::default();
            loop {
                let map = ctx.topics.borrow_and_update().clone();
                reconcile(&map, &mut jobs, &ctx, &self.config, &metrics);
                tokio::select! {
                    changed = ctx.topics.changed() => if changed.is_err() { break },
                    () = ctx.shutdown.cancelled() => break,
                }
            }
            for (_, token) in jobs.clear() {
                token.cancel();
            }
            Ok(())
        })
    }
}

fn reconcile(
    map: &TopicMap,
    jobs: &mut Subscribed<(String, String), CancellationToken>,
    ctx: &SourceContext,
    config: &CronConfig,
    metrics: &Metrics,
) {
    let wanted: BTreeSet<(String, String)> = map
        .functions
        .values()
        .filter(|s| s.topics.iter().any(|t| t == TOPIC))
        .filter_map(|s| s.annotations.get("schedule").map(|sched| (s.function.clone(), sched.clone())))
        .collect();
    let changes = jobs.update(&wanted);
    for ((function, schedule), token) in changes.removed {
        tracing::info!(%function, %schedule, "schedule removed");
        token.cancel();
    }
    for (function, annotation) in changes.added {
        let token = ctx.shutdown.child_token();
        for expression in annotation.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            match Schedule::parse(expression) {
                Ok(schedule) => {
                    tracing::info!(%function, %expression, "scheduled");
                    let job = Job {
                        key: slot_key(&function, expression),
                        function: function.clone(),
                        schedule,
                        config: config.clone(),
                        running: Arc::new(AtomicBool::new(false)),
                        dispatcher: ctx.dispatcher.clone(),
                        metrics: metrics.clone(),
                    };
                    tokio::spawn(Arc::new(job).run(token.clone()));
                }
                Err(e) => {
                    tracing::error!(%function, %expression, error = %e, "invalid schedule; this schedule will not run");
                    metrics.errors.with_label_values(&[&function]).inc();
                }
            }
        }
        jobs.insert((function, annotation), token);
    }
}

#[derive(Clone)]
struct Metrics {
    errors: CounterVec,
    runs: CounterVec,
}

/// The shared store's key for one schedule of one function,
/// `cron.NAME.NS.HASH`: it holds the last slot fired, and `KEY.SECONDS`
/// claims one slot. The hash (FNV-1a, the same in every build) names the
/// expression, which has characters no key may hold.
fn slot_key(function: &str, expression: &str) -> String {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    hash.write(expression.as_bytes());
    format!("cron.{function}.{:016x}", hash.finish())
}

/// How long `function`'s runs are put off: the same on every replica,
/// under `most`.
fn jitter(function: &str, most: Duration) -> Duration {
    use std::hash::Hasher;
    let most = most.as_millis() as u64;
    if most == 0 {
        return Duration::ZERO;
    }
    let mut hash = fnv::FnvHasher::default();
    hash.write(function.as_bytes());
    Duration::from_millis(hash.finish() % most)
}

struct Job {
    key: String,
    function: String,
    schedule: Schedule,
    config: CronConfig,
    running: Arc<AtomicBool>,
    dispatcher: connector_core::Dispatcher,
    metrics: Metrics,
}

/// A tick has no broker message: settling it ends the run, so the next
/// tick may start (overlap: skip), and logs what happened.
struct Run {
    function: String,
    running: Arc<AtomicBool>,
}

impl Settle for Run {
    async fn settle(self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => tracing::debug!(function = %self.function, "cron run delivered"),
            other => tracing::warn!(function = %self.function, outcome = ?other, "cron run not delivered"),
        }
        self.running.store(false, Ordering::Release);
    }
}

impl Job {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        if let Some(store) = &self.config.store {
            self.catch_up(store, &stop).await;
        }
        let delay = jitter(&self.function, self.config.jitter);
        let mut after = Utc::now();
        // The latest slot passed while the function was paused.
        let mut paused_slot: Option<DateTime<Utc>> = None;
        loop {
            let Some(next) = self.schedule.next_after(after) else {
                tracing::error!(function = %self.function, schedule = %self.schedule, "schedule has no future time");
                self.metrics.errors.with_label_values(&[&self.function]).inc();
                return;
            };
            let slot = next.with_timezone(&Utc);
            let wait = (slot - Utc::now()).to_std().unwrap_or_default() + delay;
            let catch_up = paused_slot.is_some() && self.config.missed == Missed::RunOnce;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Resumed: the latest slot missed while paused runs once now.
                true = self.dispatcher.wait_resumed(&self.function), if catch_up => {
                    if let Some(missed) = paused_slot.take() {
                        tracing::info!(function = %self.function, slot = %missed.to_rfc3339(), "resumed; the latest slot missed while paused runs once (cron.missed: run_once)");
                        self.clone().take(missed, &stop).await;
                    }
                    continue;
                }
                () = stop.cancelled() => return,
            }
            // Slots passed while this process was not scheduled (a
            // suspended machine) are not fired in a burst.
            after = slot.max(Utc::now() - delay);
            if self.dispatcher.is_paused(&self.function) {
                // A slot of a paused function is missed, as cron.missed says.
                self.count("paused");
                paused_slot = Some(slot);
                continue;
            }
            paused_slot = None;
            self.clone().take(slot, &stop).await;
        }
    }

    /// Fires `slot` when this replica is the one to: always without a
    /// store; with one, when its claim on the slot is taken here. A replica
    /// still running its previous run (`overlap: skip`) claims nothing and
    /// leaves the slot to the others. Another replica's claim is watched,
    /// and the slot taken over if that replica dies before firing it.
    async fn take(self: Arc<Self>, slot: DateTime<Utc>, stop: &CancellationToken) {
        if !self.begin() {
            // With a store, another replica takes the slot.
            if self.config.store.is_none() {
                tracing::warn!(function = %self.function, slot = %slot.to_rfc3339(), "previous run still in flight; tick skipped");
            }
            return self.count("overlapped");
        }
        let Some(store) = self.config.store.clone() else {
            return self.fire(slot, stop).await;
        };
        match self.claim(&store, slot).await {
            Some(true) => self.fire(slot, stop).await,
            Some(false) => {
                self.end();
                self.count("elsewhere");
                tokio::spawn(self.clone().watch(store, slot, stop.clone()));
            }
            None => self.end(),
        }
    }

    /// Marks a run begun: false, and nothing marked, while the previous one
    /// is in flight and runs may not overlap (`overlap: skip`).
    fn begin(&self) -> bool {
        !self.running.swap(true, Ordering::AcqRel) || self.config.overlap == Overlap::Allow
    }

    /// A run begun and not fired after all.
    fn end(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// Claims `slot` in the store (none: the store cannot be reached, which
    /// is logged). A slot claimed here is marked fired, and recorded as the
    /// last one, before it is fired: a replica that dies after this may
    /// leave it unfired, but no replica fires it again; one that dies
    /// before leaves it to the others once its claim lapses.
    async fn claim(&self, store: &Shared, slot: DateTime<Utc>) -> Option<bool> {
        let key = format!("{}.{}", self.key, slot.timestamp());
        let claimed = match self.within(store.0.claim(&key, self.config.lease)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(function = %self.function, slot = %slot.to_rfc3339(), error = %e,
                    "cannot claim the slot in the coordination store; not fired");
                self.count("store_error");
                return None;
            }
        };
        if claimed && let Err(e) = self.within(store.0.claim(&format!("{key}.fired"), self.fired_kept())).await {
            tracing::warn!(function = %self.function, slot = %slot.to_rfc3339(), error = %e,
                "cannot mark the slot fired; it fires, and another replica may fire it too after cron.lease");
        }
        if claimed && let Err(e) = self.within(store.0.put(&self.key, &slot.to_rfc3339())).await {
            tracing::warn!(function = %self.function, slot = %slot.to_rfc3339(), error = %e,
                "cannot record the slot as the last fired; it fires, and may count as missed at a restart");
        }
        Some(claimed)
    }

    /// Waits out another replica's claim on `slot`, and fires the slot late
    /// when that replica did not mark it fired before its claim lapsed.
    /// Looks a few times: the claim may outlive the lease by a little, or
    /// this replica be busy with a run of its own.
    async fn watch(self: Arc<Self>, store: Shared, slot: DateTime<Utc>, stop: CancellationToken) {
        let fired = format!("{}.{}.fired", self.key, slot.timestamp());
        let mut wait = self.config.lease + Duration::from_millis(200);
        for _ in 0..5 {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            wait = self.config.lease / 2;
            if self.within(store.0.claimed(&fired, self.fired_kept())).await.unwrap_or(true) {
                return;
            }
            if !self.begin() {
                continue;
            }
            if self.claim(&store, slot).await == Some(true) {
                tracing::warn!(function = %self.function, slot = %slot.to_rfc3339(),
                    "the replica that claimed this slot did not fire it within cron.lease; firing it late");
                return self.fire(slot, &stop).await;
            }
            self.end();
        }
    }

    /// A call to the store, given up after a lease: a store that hangs
    /// (an address that drops packets) is one that cannot be reached.
    async fn within<T>(&self, call: impl Future<Output = Result<T, String>>) -> Result<T, String> {
        let lease = self.config.lease;
        let late = || format!("no answer within cron.lease ({})", humantime::format_duration(lease));
        tokio::time::timeout(lease, call).await.unwrap_or_else(|_| Err(late()))
    }

    /// How long a slot's fired mark is kept: past the time replicas look
    /// for it, and no longer, so marks do not pile up.
    fn fired_kept(&self) -> Duration {
        self.config.lease * 10
    }

    /// The last slot fired by any replica.
    async fn last(&self, store: &Shared) -> Result<Option<DateTime<Utc>>, String> {
        let value = self.within(store.0.get(&self.key)).await?;
        Ok(value.and_then(|v| DateTime::parse_from_rfc3339(&v).ok()).map(|t| t.with_timezone(&Utc)))
    }

    /// The slots missed while every replica was down, handled by
    /// `cron.missed`. A slot within the lease of now is not missed: another
    /// replica may be firing it.
    async fn catch_up(self: &Arc<Self>, store: &Shared, stop: &CancellationToken) {
        let last = match self.last(store).await {
            Ok(Some(last)) => last,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(function = %self.function, error = %e, "cannot read the last slot fired; missed slots are not looked for");
                return;
            }
        };
        let horizon = Utc::now() - self.config.lease;
        let (mut missed, mut latest, mut after) = (0u64, None, last);
        // Bounded: a schedule of seconds down for a day is 86,400 slots.
        while let Some(next) = self.schedule.next_after(after).map(|t| t.with_timezone(&Utc))
            && next <= horizon
            && missed < 1_000_000
        {
            (missed, latest, after) = (missed + 1, Some(next), next);
        }
        let Some(latest) = latest else { return };
        let since = last.to_rfc3339();
        match self.config.missed {
            Missed::Skip => {
                tracing::info!(function = %self.function, missed, %since, "slots missed while no replica ran; skipped (cron.missed: skip)");
                self.metrics.runs.with_label_values(&[&self.function, "missed"]).inc_by(missed as f64);
            }
            Missed::RunOnce if self.begin() => {
                if self.claim(store, latest).await == Some(true) {
                    tracing::info!(function = %self.function, missed, %since, slot = %latest.to_rfc3339(),
                        "slots missed while no replica ran; the latest runs once (cron.missed: run_once)");
                    return self.fire(latest, stop).await;
                }
                self.end();
            }
            Missed::RunOnce => {}
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.runs.with_label_values(&[&self.function, outcome]).inc();
    }

    /// Invokes the function for `slot`, its run begun ([`Job::begin`]).
    async fn fire(&self, slot: DateTime<Utc>, stop: &CancellationToken) {
        let scheduled = slot.with_timezone(&self.schedule.zone()).to_rfc3339();
        self.count("fired");
        let (payload, content_type) = match self.config.body {
            Body::Json => {
                let tick = serde_json::json!({
                    "function": self.function,
                    "schedule": self.schedule.to_string(),
                    "scheduled_time": scheduled,
                    "fire_time": Utc::now().to_rfc3339(),
                });
                (tick.to_string().into(), Some("application/json".into()))
            }
            Body::Empty => (Default::default(), None),
        };
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            id_made_up: true,
            topic: TOPIC.into(),
            headers: vec![
                ("X-Cron-Schedule".into(), self.schedule.to_string()),
                ("X-Cron-Scheduled-Time".into(), scheduled),
            ],
            payload,
            content_type,
            function: Some(self.function.clone()),
            ..Default::default()
        };
        let run = Run { function: self.function.clone(), running: self.running.clone() };
        tokio::select! {
            () = self.dispatcher.submit(event, run) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_once_needs_a_store_to_keep_the_last_run_in() {
        let config = CronConfig { missed: Missed::RunOnce, ..Default::default() };
        let e = CronSource::new(config).err().expect("refused");
        assert!(e.to_string().contains("cron.missed run_once: needs cron.coordination"), "{e}");
        let config = CronConfig { coordination: Coordination::Redis, ..Default::default() };
        assert!(CronSource::new(config).is_err(), "a coordination without its store");
    }

    #[test]
    fn jitter_spreads_functions_the_same_way_on_every_replica() {
        let most = Duration::from_secs(60);
        let delays: BTreeSet<Duration> = (0..50).map(|i| jitter(&format!("f{i}.ns"), most)).collect();
        assert!(delays.len() > 40 && delays.iter().all(|d| *d < most), "{delays:?}");
        assert_eq!(jitter("f1.ns", most), jitter("f1.ns", most));
        assert_eq!(jitter("f1.ns", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn keys_name_the_function_and_its_expression_the_same_in_every_build() {
        assert_eq!(slot_key("tick.openfaas-fn", "* * * * * *"), "cron.tick.openfaas-fn.9a8519a577167d57");
        assert_ne!(slot_key("tick.openfaas-fn", "*/5 * * * *"), slot_key("tick.openfaas-fn", "*/6 * * * *"));
    }
}
