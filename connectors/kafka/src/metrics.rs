//! The Kafka source's own metrics, beside the hub's per-event ones
//! (`switchboard_events_*{source="kafka"}`).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::statistics::Statistics;

pub struct KafkaMetrics {
    pub records: IntCounterVec,
    pub commits: IntCounterVec,
    pub rebalances: IntCounterVec,
    pub assigned: IntGauge,
    pub paused: IntGauge,
    lag: IntGaugeVec,
}

impl KafkaMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let lag = IntGaugeVec::new(
            Opts::new(
                "switchboard_kafka_consumer_lag",
                "Records of an assigned partition not yet committed (high watermark - committed offset)",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(lag.clone()))?;
        Ok(Self {
            records: counter("switchboard_kafka_records_total", "Records consumed", &["topic"])?,
            commits: counter("switchboard_kafka_commits_total", "Offset commits, by result (ok, error)", &["result"])?,
            rebalances: counter(
                "switchboard_kafka_rebalances_total",
                "Partitions assigned and revoked, by kind (assign, revoke)",
                &["kind"],
            )?,
            assigned: gauge("switchboard_kafka_assigned_partitions", "Partitions assigned to this replica")?,
            paused: gauge(
                "switchboard_kafka_paused_partitions",
                "Partitions paused because hub.max_pending events are in flight",
            )?,
            lag,
        })
    }

    /// The lag of each assigned partition, from librdkafka's statistics.
    pub fn lag_from(&self, stats: &Statistics) {
        self.lag.reset();
        for (name, topic) in &stats.topics {
            for p in topic.partitions.values() {
                // -1: the internal "unassigned" partition, or not yet known.
                if p.partition >= 0 && p.consumer_lag >= 0 && p.fetch_state != "none" {
                    self.lag.with_label_values(&[name.as_str(), &p.partition.to_string()]).set(p.consumer_lag);
                }
            }
        }
    }
}
