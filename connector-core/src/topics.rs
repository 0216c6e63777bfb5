//! The topic map: which functions subscribe to which topics, built from the
//! `topic` annotation. A topic is exact, or a pattern with NATS wildcards
//! (`*` one token, `>` the rest; `.`-separated) or MQTT wildcards (`+` one
//! level, `#` the rest; `/`-separated).

use crate::subscription::Subscription;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The reserved topic of scheduled functions (OpenFaaS's name).
pub const CRON_TOPIC: &str = "cron-function";

#[derive(Debug, Default)]
pub struct TopicMap {
    exact: HashMap<String, Vec<Arc<Subscription>>>,
    patterns: Vec<(Pattern, Arc<Subscription>)>,
    /// Every function with a `topic` annotation, by `name.namespace`.
    pub functions: HashMap<String, Arc<Subscription>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Pattern {
    Nats(Vec<String>),
    Mqtt(Vec<String>),
}

impl Pattern {
    fn parse(topic: &str) -> Option<Pattern> {
        let tokens = |sep: char| topic.split(sep).map(String::from).collect();
        if topic.split('.').any(|t| t == "*" || t == ">") {
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
                match Pattern::parse(topic) {
                    Some(p) => map.patterns.push((p, s.clone())),
                    None => map.exact.entry(topic.clone()).or_default().push(s.clone()),
                }
            }
            map.functions.insert(s.function.clone(), s);
        }
        map
    }

    /// Subscribers of a concrete topic, each once.
    pub fn subscribers(&self, topic: &str) -> Vec<Arc<Subscription>> {
        let mut out: Vec<Arc<Subscription>> = self.exact.get(topic).cloned().unwrap_or_default();
        for (p, s) in &self.patterns {
            if p.matches(topic) && !out.iter().any(|o| o.function == s.function) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Whether both maps hold the same functions with the same topics and
    /// annotations (so sources need not hear about a refresh).
    pub fn same_subscriptions(&self, other: &TopicMap) -> bool {
        self.functions.len() == other.functions.len()
            && self.functions.iter().all(|(f, s)| {
                other.functions.get(f).is_some_and(|o| o.topics == s.topics && o.annotations == s.annotations)
            })
    }

    /// Topics a broker source subscribes to: all but [`CRON_TOPIC`], which
    /// names a schedule, not a subject, stream or filter.
    pub fn broker_topics(&self) -> BTreeSet<String> {
        let mut topics = self.topics();
        topics.remove(CRON_TOPIC);
        topics
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
            let mut v: Vec<String> = map.subscribers(t).iter().map(|s| s.function.clone()).collect();
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
}
