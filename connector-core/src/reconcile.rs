//! Keeping a source's subscriptions in line with the topic map: what to
//! subscribe to, what to drop. Every source that subscribes uses it.

use std::collections::{BTreeMap, BTreeSet};

/// What a source holds for each subscribed topic (a task's stop token, a
/// consumer, nothing at all), by topic.
#[derive(Debug)]
pub struct Subscribed<K, V> {
    held: BTreeMap<K, V>,
}

impl<K, V> Default for Subscribed<K, V> {
    fn default() -> Self {
        Self { held: BTreeMap::new() }
    }
}

/// The difference between what is held and what is wanted.
#[derive(Debug, PartialEq)]
pub struct Changes<K, V> {
    /// Wanted and not held: subscribe, then [`Subscribed::insert`].
    pub added: Vec<K>,
    /// Held and no longer wanted: already forgotten; unsubscribe or stop them.
    pub removed: Vec<(K, V)>,
}

impl<K: Ord + Clone, V> Subscribed<K, V> {
    /// Forgets what is no longer wanted (returned, to be let go) and lists
    /// what is wanted but not held yet.
    pub fn update(&mut self, wanted: &BTreeSet<K>) -> Changes<K, V> {
        let gone: Vec<K> = self.held.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        let removed = gone.into_iter().filter_map(|k| self.held.remove_entry(&k)).collect();
        let added = wanted.iter().filter(|k| !self.held.contains_key(*k)).cloned().collect();
        Changes { added, removed }
    }

    /// Records a subscription made; one that failed is left out and tried
    /// again at the next update.
    pub fn insert(&mut self, key: K, value: V) {
        self.held.insert(key, value);
    }

    /// Forgets everything (a new connection has no subscriptions) and returns it.
    pub fn clear(&mut self) -> Vec<(K, V)> {
        std::mem::take(&mut self.held).into_iter().collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.held.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_new_and_returns_what_went() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        let mut s: Subscribed<String, u32> = Subscribed::default();
        let c = s.update(&set(&["a", "b"]));
        assert_eq!(c.added, ["a", "b"]);
        s.insert("a".into(), 1);
        // b failed to subscribe: it is offered again.
        let c = s.update(&set(&["a", "b", "c"]));
        assert_eq!((c.added, c.removed), (vec!["b".to_string(), "c".into()], vec![]));
        s.insert("c".into(), 3);
        let c = s.update(&set(&["c"]));
        assert_eq!((c.added, c.removed), (vec![], vec![("a".to_string(), 1)]));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["c"]);
    }
}
