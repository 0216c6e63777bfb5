//! Prometheus metrics with OpenFaaS's gateway names, so existing dashboards
//! and autoscaling rules work unchanged.

use crate::provider::Scaled;
use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub invocations: CounterVec,
    pub seconds: HistogramVec,
    pub started: CounterVec,
    pub service_count: GaugeVec,
    /// The load each replica of an autoscaled function is meant to carry
    /// (OpenFaaS Pro's name), its load now, and the autoscaler's decisions.
    target_load: GaugeVec,
    load: GaugeVec,
    decisions: CounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        // Each made and registered at once: a name given twice is a bug.
        fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
            registry.register(Box::new(m.clone())).expect("metric registered once");
            m
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, CounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let seconds = HistogramVec::new(
            HistogramOpts::new("gateway_functions_seconds", "Function invocation time taken"),
            &["function_name", "code"],
        )
        .expect("valid metric");
        let by_type = ["function_name", "scaling_type"];
        Self {
            invocations: counter(
                "gateway_function_invocation_total",
                "Function invocations by status code",
                &["function_name", "code"],
            ),
            seconds: registered(&registry, seconds),
            started: counter("gateway_function_invocation_started", "Function invocations started", &["function_name"]),
            service_count: gauge("gateway_service_count", "Replicas of each function", &["function_name"]),
            target_load: gauge(
                "gateway_service_target_load",
                "Load per replica an autoscaled function is meant to carry",
                &by_type,
            ),
            load: gauge(
                "switchboard_function_load",
                "An autoscaled function's load: the mean over the last 10 s",
                &by_type,
            ),
            decisions: counter(
                "switchboard_autoscaler_decisions_total",
                "Replica changes the autoscaler made",
                &["function_name", "direction"],
            ),
            registry,
        }
    }
}

impl Metrics {
    /// Where other parts in the gateway's process (the queue's worker) register theirs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Invocations of `function_name` (name.namespace) so far, all codes.
    pub fn invocation_count(&self, function_name: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "gateway_function_invocation_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.name() == "function_name" && l.value() == function_name))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Records a turn of the autoscaler: every autoscaled function's load
    /// and target (the series of functions gone since go with them) and
    /// its decisions.
    pub fn scaled(&self, report: &[Scaled]) {
        self.target_load.reset();
        self.load.reset();
        for s in report {
            let labels = [s.function.as_str(), s.kind.name()];
            self.target_load.with_label_values(&labels).set(s.target);
            self.load.with_label_values(&labels).set(s.load);
            if let Some(to) = s.scaled_to {
                let direction = if to > s.replicas { "up" } else { "down" };
                self.decisions.with_label_values(&[&s.function, direction]).inc();
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
