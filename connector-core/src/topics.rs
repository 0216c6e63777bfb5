//! The topic map: which functions subscribe to which topics, built from the
//! `topic` annotation. A topic is exact, or a pattern with NATS wildcards
//! (`*` one token, `>` the rest; `.`-separated), MQTT wildcards (`+` one
//! level, `#` the rest; `/`-separated), or a regular expression starting
//! with `^` (Kafka's pattern subscriptions, as librdkafka takes them).
//!
//! A topic may name its source (`kafka:orders`, `mqtt:sensors/+/temp`):
//! then only that source consumes it and only its events reach it. A plain
//! topic (OpenFaaS's `topic: a,b`) is for any source that can serve it.

use crate::subscription::Subscription;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The reserved topic of scheduled functions (OpenFaaS's name).
pub const CRON_TOPIC: &str = "cron-function";

/// The names a topic can be qualified with: every source's.
pub const SOURCES: [&str; 7] = ["cloudevents", "cron", "kafka", "mqtt", "nats", "redis", "sqs"];

/// The source a topic names, if any, and the topic itself.
pub fn qualified(topic: &str) -> (Option<&'static str>, &str) {
    if let Some((prefix, rest)) = topic.split_once(':')
        && let Some(source) = SOURCES.iter().find(|s| **s == prefix)
    {
        return (Some(source), rest);
    }
    (None, topic)
}

/// A subscription, for one source or any.
type Routed = (Option<&'static str>, Arc<Subscription>);

#[derive(Debug, Default)]
pub struct TopicMap {
    exact: HashMap<String, Vec<Routed>>,
    patterns: Vec<(Pattern, Routed)>,
    /// Every function with a `topic` annotation, by `name.namespace`.
    pub functions: HashMap<String, Arc<Subscription>>,
}

#[derive(Debug, Clone)]
enum Pattern {
    Nats(Vec<String>),
    Mqtt(Vec<String>),
    /// Searched in the topic name as librdkafka does (`^` anchors the
    /// start; add `$` to anchor the end); one that does not compile matches none.
    Regex(Option<regex::Regex>),
}

impl Pattern {
    fn parse(topic: &str) -> Option<Pattern> {
        let tokens = |sep: char| topic.split(sep).map(String::from).collect();
        if topic.starts_with('^') {
            let regex = regex::Regex::new(topic);
            if let Err(e) = &regex {
                tracing::warn!(topic, error = %e, "not a regular expression; nothing matches it");
            }
            Some(Pattern::Regex(regex.ok()))
        } else if topic.split('.').any(|t| t == "*" || t == ">") {
            Some(Pattern::Nats(tokens('.')))
        } else if topic.split('/').any(|t| t == "+" || t == "#") {
            Some(Pattern::Mqtt(tokens('/')))
        } else {
            None
        }
    }

    fn matches(&self, topic: &str) -> bool {
        let (pattern, sep, one, rest) = match self {
            Pattern::Nats(p) => (p, '.', "*", ">"),
            Pattern::Mqtt(p) => (p, '/', "+", "#"),
            Pattern::Regex(r) => return r.as_ref().is_some_and(|r| r.is_match(topic)),
        };
        let mut parts = topic.split(sep);
        for token in pattern {
            if token == rest {
                // `>` needs at least one more token; MQTT's `#` also matches the parent.
                return parts.next().is_some() || sep == '/';
            }
            match parts.next() {
                Some(part) if token == one || token == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl TopicMap {
    pub fn new(subscriptions: Vec<Subscription>) -> Self {
        let mut map = TopicMap::default();
        for s in subscriptions {
            let s = Arc::new(s);
            for topic in &s.topics {
                let (source, topic) = qualified(topic);
                match Pattern::parse(topic) {
                    Some(p) => map.patterns.push((p, (source, s.clone()))),
                    None => map.exact.entry(topic.to_string()).or_default().push((source, s.clone())),
                }
            }
            map.functions.insert(s.function.clone(), s);
        }
        map
    }

    /// Subscribers of a concrete topic of `source`, each once.
    pub fn subscribers(&self, source: &str, topic: &str) -> Vec<Arc<Subscription>> {
        let mine = |s: &Option<&str>| s.is_none_or(|s| s == source);
        let mut out: Vec<Arc<Subscription>> = vec![];
        let exact = self.exact.get(topic).into_iter().flatten();
        let patterns = self.patterns.iter().filter(|(p, _)| p.matches(topic)).map(|(_, r)| r);
        for (s, sub) in exact.chain(patterns) {
            if mine(s) && !out.iter().any(|o| o.function == sub.function) {
                out.push(sub.clone());
            }
        }
        out
    }

    /// Whether both maps hold the same functions with the same topics and
    /// annotations (so sources need not hear about a refresh).
    pub fn same_subscriptions(&self, other: &TopicMap) -> bool {
        self.functions.len() == other.functions.len()
            && self.functions.iter().all(|(f, s)| {
                other
                    .functions
                    .get(f)
                    .is_some_and(|o| o.topics == s.topics && o.annotations == s.annotations && o.paused == s.paused)
            })
    }

    /// Topics `source` consumes: those qualified with its name, and the
    /// plain ones but [`CRON_TOPIC`] (a schedule, not a subject, stream or
    /// filter).
    pub fn topics_for(&self, source: &str) -> BTreeSet<String> {
        let all = self.functions.values().flat_map(|s| s.topics.iter()).map(|t| qualified(t));
        all.filter(|(s, t)| s.map_or(*t != CRON_TOPIC, |s| s == source)).map(|(_, t)| t.to_string()).collect()
    }

    /// [`TopicMap::topics_for`] but those whose every subscriber is paused:
    /// what a source whose broker keeps unread messages (a Kafka topic, a
    /// JetStream consumer, an SQS queue, a Redis stream's group) reads.
    pub fn unpaused_topics_for(&self, source: &str) -> BTreeSet<String> {
        let unpaused = TopicMap {
            functions: self.functions.iter().filter(|(_, s)| !s.paused).map(|(f, s)| (f.clone(), s.clone())).collect(),
            ..Default::default()
        };
        unpaused.topics_for(source)
    }

    /// Whether `function` is paused now.
    pub fn paused(&self, function: &str) -> bool {
        self.functions.get(function).is_some_and(|s| s.paused)
    }

    /// Topics qualified with `source`'s name: the only ones for which it may
    /// create broker objects (streams, groups, queues).
    pub fn own_topics(&self, source: &str) -> BTreeSet<String> {
        let all = self.functions.values().flat_map(|s| s.topics.iter()).map(|t| qualified(t));
        all.filter(|(s, _)| *s == Some(source)).map(|(_, t)| t.to_string()).collect()
    }

    /// Every topic (and pattern) some function subscribes to.
    pub fn topics(&self) -> BTreeSet<String> {
        self.functions.values().flat_map(|s| s.topics.iter().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(function: &str, topics: &[&str]) -> Subscription {
        Subscription::for_test(function, topics)
    }

    #[test]
    fn exact_and_wildcard_matching() {
        let map = TopicMap::new(vec![
            sub("a.ns", &["orders.created", "payments"]),
            sub("b.ns", &["orders.*"]),
            sub("c.ns", &["orders.>"]),
            sub("d.ns", &["sensors/+/temperature"]),
            sub("e.ns", &["sensors/#"]),
        ]);
        let names = |t: &str| {
            let mut v: Vec<String> = map.subscribers("nats", t).iter().map(|s| s.function.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names("orders.created"), ["a.ns", "b.ns", "c.ns"]);
        assert_eq!(names("orders.created.eu"), ["c.ns"]);
        assert_eq!(names("orders"), Vec::<String>::new());
        assert_eq!(names("payments"), ["a.ns"]);
        assert_eq!(names("sensors/kitchen/temperature"), ["d.ns", "e.ns"]);
        assert_eq!(names("sensors/kitchen/humidity"), ["e.ns"]);
        assert_eq!(names("sensors"), ["e.ns"]);
        assert_eq!(map.topics().len(), 6);
    }

    #[test]
    fn a_qualified_topic_belongs_to_its_source() {
        let map = TopicMap::new(vec![
            sub("any.ns", &["orders"]),
            sub("kafka.ns", &["kafka:orders"]),
            sub("mqtt.ns", &["mqtt:sensors/+/temp", "cron-function"]),
            sub("colon.ns", &["urn:example:thing"]),
        ]);
        let names = |source: &str, t: &str| {
            let mut v: Vec<String> = map.subscribers(source, t).iter().map(|s| s.function.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names("kafka", "orders"), ["any.ns", "kafka.ns"]);
        assert_eq!(names("nats", "orders"), ["any.ns"]);
        assert_eq!(names("mqtt", "sensors/a/temp"), ["mqtt.ns"]);
        assert_eq!(names("nats", "sensors/a/temp"), Vec::<String>::new());
        assert_eq!(names("nats", "urn:example:thing"), ["colon.ns"], "not a source's name: part of the topic");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        assert_eq!(map.topics_for("kafka"), set(&["orders", "urn:example:thing"]));
        assert_eq!(map.topics_for("mqtt"), set(&["orders", "sensors/+/temp", "urn:example:thing"]));
        assert_eq!(map.own_topics("kafka"), set(&["orders"]));
        assert_eq!(map.own_topics("nats"), set(&[]));
    }

    #[test]
    fn a_kafka_pattern_matches_as_librdkafka_subscribes() {
        let map = TopicMap::new(vec![
            sub("eu.ns", &[r"kafka:^orders\.(eu|uk)$"]),
            sub("all.ns", &[r"kafka:^payments\."]),
            sub("bad.ns", &["kafka:^orders("]),
        ]);
        let names = |source: &str, t: &str| -> Vec<String> {
            map.subscribers(source, t).iter().map(|s| s.function.clone()).collect()
        };
        assert_eq!(names("kafka", "orders.eu"), ["eu.ns"]);
        assert_eq!(names("kafka", "orders.uk"), ["eu.ns"]);
        assert!(names("kafka", "orders.eu.archive").is_empty(), "matched past the `$`");
        assert!(names("kafka", "orders.us").is_empty());
        assert_eq!(names("kafka", "payments.eu.archive"), ["all.ns"], "unanchored end, as librdkafka's");
        assert!(names("kafka", "xpayments.eu").is_empty());
        assert!(names("nats", "orders.eu").is_empty(), "a qualified pattern is Kafka's only");
        assert!(map.topics_for("kafka").contains(r"^orders\.(eu|uk)$"), "passed on as librdkafka takes it");
    }
}
