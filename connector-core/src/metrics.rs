//! The hub's Prometheus metrics.

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub received: CounterVec,
    pub delivered: CounterVec,
    pub retried: CounterVec,
    pub dead_lettered: CounterVec,
    pub failed: CounterVec,
    pub invocation_seconds: HistogramVec,
    pub in_flight: GaugeVec,
    pub topics: Gauge,
    pub functions: Gauge,
    pub discovery_errors: IntCounter,
    pub source_connected: GaugeVec,
    pub dead_letters_refused: IntGauge,
    pub dead_letters_stored: IntGauge,
    pub paused: GaugeVec,
    pub held: GaugeVec,
    pub letters_replayed: CounterVec,
    pub replay_failures: CounterVec,
    pub replies: CounterVec,
    pub dedup_hits: CounterVec,
    pub concurrency_limit: GaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let by_fn = &["source", "topic", "function"];
        let invocation_seconds = HistogramVec::new(
            HistogramOpts::new("switchboard_invocation_seconds", "Time for one invocation attempt"),
            &["function", "code"],
        )
        .expect("valid metric");
        r.register(Box::new(invocation_seconds.clone())).expect("registered once");
        let in_flight =
            GaugeVec::new(Opts::new("switchboard_invocations_in_flight", "Invocations in flight"), &["function"])
                .expect("valid metric");
        r.register(Box::new(in_flight.clone())).expect("registered once");
        let concurrency_limit = GaugeVec::new(
            Opts::new(
                "switchboard_concurrency_limit",
                "The in-flight cap of a function with com.switchboard.concurrency: adaptive, now",
            ),
            &["function"],
        )
        .expect("valid metric");
        r.register(Box::new(concurrency_limit.clone())).expect("registered once");
        let topics = Gauge::new("switchboard_topic_map_topics", "Topics in the topic map").expect("valid metric");
        r.register(Box::new(topics.clone())).expect("registered once");
        let functions =
            Gauge::new("switchboard_topic_map_functions", "Functions with a topic annotation").expect("valid metric");
        r.register(Box::new(functions.clone())).expect("registered once");
        let discovery_errors =
            IntCounter::new("switchboard_discovery_errors_total", "Failed function discoveries").expect("valid metric");
        r.register(Box::new(discovery_errors.clone())).expect("registered once");
        let source_connected = GaugeVec::new(
            Opts::new("switchboard_source_connected", "1 while a source is connected to its broker"),
            &["source"],
        )
        .expect("valid metric");
        r.register(Box::new(source_connected.clone())).expect("registered once");
        let dead_letters_refused = IntGauge::new(
            "switchboard_dead_letters_refused",
            "1 while the dead-letter store is full and refuses letters (their events stay with their sources)",
        )
        .expect("valid metric");
        r.register(Box::new(dead_letters_refused.clone())).expect("registered once");
        let dead_letters_stored =
            IntGauge::new("switchboard_dead_letters_stored", "Dead letters in the hub's store").expect("valid metric");
        r.register(Box::new(dead_letters_stored.clone())).expect("registered once");
        let paused = GaugeVec::new(
            Opts::new("switchboard_function_paused", "1 while a function is paused (its events wait)"),
            &["function"],
        )
        .expect("valid metric");
        r.register(Box::new(paused.clone())).expect("registered once");
        let held = GaugeVec::new(
            Opts::new("switchboard_events_held", "Events the hub holds for a paused function, unsettled"),
            &["function"],
        )
        .expect("valid metric");
        r.register(Box::new(held.clone())).expect("registered once");
        Self {
            paused,
            held,
            letters_replayed: counter(
                &r,
                "switchboard_dead_letters_replayed_total",
                "Dead letters replayed and delivered (then removed from the store)",
                &["function"],
            ),
            replay_failures: counter(
                &r,
                "switchboard_dead_letter_replay_failures_total",
                "Dead letters replayed that failed again (kept in the store with the new failure)",
                &["function"],
            ),
            dead_letters_stored,
            replies: counter(
                &r,
                "switchboard_replies_total",
                "Function answers published where com.switchboard.reply-to says, or not",
                &["function", "to", "outcome"],
            ),
            concurrency_limit,
            dedup_hits: counter(
                &r,
                "switchboard_dedup_hits_total",
                "Events settled without an invocation: delivered to the function within its dedup window",
                &["function"],
            ),
            received: counter(&r, "switchboard_events_received_total", "Events received", &["source", "topic"]),
            delivered: counter(&r, "switchboard_events_delivered_total", "Events delivered", by_fn),
            retried: counter(&r, "switchboard_events_retried_total", "Delivery attempts retried", by_fn),
            dead_lettered: counter(&r, "switchboard_events_dead_lettered_total", "Events dead-lettered", by_fn),
            failed: counter(&r, "switchboard_events_failed_total", "Events left for redelivery", by_fn),
            invocation_seconds,
            in_flight,
            topics,
            functions,
            discovery_errors,
            source_connected,
            dead_letters_refused,
            registry: r,
        }
    }
}

impl Metrics {
    /// Where sources register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        let mut out = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
