//! Prometheus metrics with OpenFaaS's gateway names, so existing dashboards
//! and autoscaling rules work unchanged.

use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub invocations: CounterVec,
    pub seconds: HistogramVec,
    pub started: CounterVec,
    pub service_count: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let invocations = CounterVec::new(
            Opts::new("gateway_function_invocation_total", "Function invocations by status code"),
            &["function_name", "code"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new("gateway_functions_seconds", "Function invocation time taken"),
            &["function_name", "code"],
        )
        .expect("valid metric");
        let started = CounterVec::new(
            Opts::new("gateway_function_invocation_started", "Function invocations started"),
            &["function_name"],
        )
        .expect("valid metric");
        let service_count =
            GaugeVec::new(Opts::new("gateway_service_count", "Replicas of each function"), &["function_name"])
                .expect("valid metric");
        let registry = Registry::new();
        for c in [
            Box::new(invocations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(seconds.clone()),
            Box::new(started.clone()),
            Box::new(service_count.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self { registry, invocations, seconds, started, service_count }
    }
}

impl Metrics {
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

    pub fn render(&self) -> String {
        let mut out = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
