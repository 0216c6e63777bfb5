//! The cron source, compatible with OpenFaaS's cron-connector: a function
//! annotated `topic: cron-function` and `schedule: "*/5 * * * *"` is invoked
//! on that schedule. Beyond it: a seconds field, `@hourly`-style descriptors,
//! `@every 30s`, `CRON_TZ=Area/City` with a bundled time-zone database,
//! several schedules separated by `;`, and an overlap policy.

mod schedule;

pub use schedule::Schedule;

use chrono::Utc;
use connector_core::{Event, Outcome, Settle, Source, SourceConfig, SourceContext, SourceError, Subscribed, TopicMap};
use futures_util::future::BoxFuture;
use prometheus::{CounterVec, Opts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl Default for CronConfig {
    fn default() -> Self {
        Self { enabled: true, overlap: Overlap::Skip, body: Body::Json }
    }
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

impl CronSource {
    pub fn new(config: CronConfig) -> Self {
        Self { config }
    }
}

impl SourceConfig for CronConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(CronSource::new(self.clone())))
    }
}

impl Source for CronSource {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn describe(&self) -> String {
        format!("functions with topic {TOPIC} and a schedule annotation (overlap: {:?})", self.config.overlap)
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let errors = CounterVec::new(
                Opts::new("switchboard_cron_schedule_errors_total", "Invalid cron schedules"),
                &["function"],
            )?;
            ctx.registry.register(Box::new(errors.clone()))?;
            // One task per (function, schedule annotation); a changed annotation is a new key.
            let mut jobs: Subscribed<(String, String), CancellationToken> = Subscribed::default();
            loop {
                let map = ctx.topics.borrow_and_update().clone();
                reconcile(&map, &mut jobs, &ctx, &self.config, &errors);
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
    errors: &CounterVec,
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
                        function: function.clone(),
                        schedule,
                        overlap: config.overlap,
                        body: config.body,
                        running: Arc::new(AtomicBool::new(false)),
                        dispatcher: ctx.dispatcher.clone(),
                        errors: errors.clone(),
                    };
                    tokio::spawn(job.run(token.clone()));
                }
                Err(e) => {
                    tracing::error!(%function, %expression, error = %e, "invalid schedule; this schedule will not run");
                    errors.with_label_values(&[&function]).inc();
                }
            }
        }
        jobs.insert((function, annotation), token);
    }
}

struct Job {
    function: String,
    schedule: Schedule,
    overlap: Overlap,
    body: Body,
    running: Arc<AtomicBool>,
    dispatcher: connector_core::Dispatcher,
    errors: CounterVec,
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
    async fn run(self, stop: CancellationToken) {
        loop {
            let Some(next) = self.schedule.next_after(Utc::now()) else {
                tracing::error!(function = %self.function, schedule = %self.schedule, "schedule has no future time");
                self.errors.with_label_values(&[&self.function]).inc();
                return;
            };
            let wait = (next.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            if self.overlap == Overlap::Skip && self.running.swap(true, Ordering::AcqRel) {
                tracing::warn!(function = %self.function, scheduled = %next.to_rfc3339(), "previous run still in flight; tick skipped");
                continue;
            }
            self.running.store(true, Ordering::Release);
            let fired = Utc::now();
            let (payload, content_type) = match self.body {
                Body::Json => {
                    let tick = serde_json::json!({
                        "function": self.function,
                        "schedule": self.schedule.to_string(),
                        "scheduled_time": next.to_rfc3339(),
                        "fire_time": fired.to_rfc3339(),
                    });
                    (tick.to_string().into(), Some("application/json".into()))
                }
                Body::Empty => (Default::default(), None),
            };
            let event = Event {
                id: uuid::Uuid::new_v4().to_string(),
                topic: TOPIC.into(),
                headers: vec![
                    ("X-Cron-Schedule".into(), self.schedule.to_string()),
                    ("X-Cron-Scheduled-Time".into(), next.to_rfc3339()),
                ],
                payload,
                content_type,
                function: Some(self.function.clone()),
                ..Default::default()
            };
            let run = Run { function: self.function.clone(), running: self.running.clone() };
            tokio::select! {
                () = self.dispatcher.submit(event, run) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
