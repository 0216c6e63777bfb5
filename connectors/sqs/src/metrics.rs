//! The SQS source's own metrics, beside the hub's per-event ones
//! (`switchboard_events_*{source="sqs"}`), labelled by queue name.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct SqsMetrics {
    pub received: IntCounterVec,
    pub deleted: IntCounterVec,
    pub delete_failures: IntCounterVec,
    /// By `reason` (keep_alive, retry) and `result` (ok, error).
    pub visibility_changes: IntCounterVec,
    /// The queue's own counts, by `state` (visible, in_flight, delayed).
    pub messages: IntGaugeVec,
    /// How long a message waited in the queue before this replica
    /// received it (now − `SentTimestamp`).
    pub age: HistogramVec,
}

impl SqsMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let messages = IntGaugeVec::new(
            Opts::new(
                "switchboard_sqs_messages",
                "Messages in the queue by state (visible, in_flight, delayed), from its Approximate* attributes",
            ),
            &["queue", "state"],
        )?;
        registry.register(Box::new(messages.clone()))?;
        let age = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_sqs_message_age_seconds",
                "How long a received message had waited in its queue since it was sent",
            )
            .buckets(vec![0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0]),
            &["queue"],
        )?;
        registry.register(Box::new(age.clone()))?;
        Ok(Self {
            received: counter("switchboard_sqs_received_total", "Messages received", &["queue"])?,
            deleted: counter("switchboard_sqs_deleted_total", "Messages deleted once settled", &["queue"])?,
            delete_failures: counter(
                "switchboard_sqs_delete_failures_total",
                "Settled messages that could not be deleted (they are delivered again)",
                &["queue"],
            )?,
            visibility_changes: counter(
                "switchboard_sqs_visibility_changes_total",
                "ChangeMessageVisibility calls, by reason (keep_alive, retry) and result (ok, error)",
                &["queue", "reason", "result"],
            )?,
            messages,
            age,
        })
    }
}
