//! The deduplication window (`com.switchboard.dedup.window: 10m`): an
//! event whose identity a function was delivered within the window is
//! settled without invoking it again. Kept in memory, or, with
//! `hub.dedup_store`, in the store replicas share (NATS KV or Redis, as
//! cron coordination), so a hub restarted after a kill, or another
//! replica, knows what was delivered too.

use crate::event::Event;
use crate::shared::Shared;
use base64::Engine;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The annotation: how long a delivered event's identity is remembered.
pub const DEDUP_WINDOW: &str = "com.switchboard.dedup.window";

/// Identities one function's window keeps in memory at most: past this the
/// oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

/// What tells an event from a redelivery of it: a CloudEvent's source and
/// id, else the broker's own message id with its source and topic (a
/// Kafka partition and offset, a JetStream `Nats-Msg-Id` or stream
/// sequence, an SQS message id, a Redis entry id). `None` for a message
/// with no id of its own (MQTT without a CloudEvent, core NATS without
/// `Nats-Msg-Id`, Redis pub/sub): nothing tells its redelivery apart.
pub fn identity(source: &str, event: &Event) -> Option<String> {
    if let Some(ce) = &event.cloudevent {
        return Some(format!("ce\n{}\n{}", ce.source, ce.id));
    }
    (!event.id_made_up && !event.id.is_empty()).then(|| format!("{source}\n{}\n{}", event.topic, event.id))
}

#[derive(Default)]
pub struct Dedup {
    /// Per function: when each identity was delivered, and in what order.
    local: Mutex<HashMap<String, Window>>,
    shared: Option<Shared>,
}

#[derive(Default)]
struct Window {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Window {
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < window && self.order.len() <= MAX_REMEMBERED {
                break;
            }
            let (at, id) = self.order.pop_front().expect("front exists");
            if self.seen.get(&id) == Some(&at) {
                self.seen.remove(&id);
            }
        }
    }
}

impl Dedup {
    pub fn new(shared: Option<Shared>) -> Self {
        Self { local: Mutex::default(), shared }
    }

    /// The key of `identity` for `function` in the shared store: the
    /// identity base64url-encoded, for NATS KV takes only plain keys.
    fn key(function: &str, identity: &str) -> String {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(identity);
        format!("dedup.{function}.{id}")
    }

    /// Whether `function` was delivered `identity` within `window`. A
    /// shared store that cannot be asked is no hit: the event is
    /// delivered (at least once), and the error logged.
    pub async fn seen(&self, function: &str, identity: &str, window: Duration) -> bool {
        if let Some(store) = &self.shared {
            return match store.0.claimed(&Self::key(function, identity), window).await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(%function, error = %e, "cannot ask the dedup store; delivering");
                    false
                }
            };
        }
        let mut local = self.local.lock().expect("dedup lock");
        let w = local.entry(function.to_string()).or_default();
        let now = Instant::now();
        w.expire(window, now);
        w.seen.get(identity).is_some_and(|at| now.duration_since(*at) < window)
    }

    /// Remembers that `function` was delivered `identity`, for `window`.
    pub async fn remember(&self, function: &str, identity: &str, window: Duration) {
        if let Some(store) = &self.shared {
            if let Err(e) = store.0.claim(&Self::key(function, identity), window).await {
                tracing::warn!(%function, error = %e, "cannot keep a delivery in the dedup store");
            }
            return;
        }
        let mut local = self.local.lock().expect("dedup lock");
        let w = local.entry(function.to_string()).or_default();
        let now = Instant::now();
        w.seen.insert(identity.to_string(), now);
        w.order.push_back((now, identity.to_string()));
        w.expire(window, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CloudEventAttrs;

    #[test]
    fn identity_is_the_cloudevent_else_the_brokers_own_id() {
        let ce = CloudEventAttrs { id: "1".into(), source: "/shop".into(), ..Default::default() };
        let e = Event { id: "x".into(), cloudevent: Some(ce), ..Default::default() };
        assert_eq!(identity("kafka", &e).as_deref(), Some("ce\n/shop\n1"));
        let e = Event { id: "orders-0-42".into(), topic: "orders".into(), ..Default::default() };
        assert_eq!(identity("kafka", &e).as_deref(), Some("kafka\norders\norders-0-42"));
        let e = Event { id: "random".into(), id_made_up: true, ..Default::default() };
        assert_eq!(identity("mqtt", &e), None);
    }

    #[tokio::test]
    async fn an_identity_is_remembered_for_its_window_only() {
        let d = Dedup::default();
        let w = Duration::from_millis(200);
        assert!(!d.seen("f", "a", w).await);
        d.remember("f", "a", w).await;
        assert!(d.seen("f", "a", w).await);
        assert!(!d.seen("g", "a", w).await, "each function has its own window");
        tokio::time::sleep(w).await;
        assert!(!d.seen("f", "a", w).await);
    }
}
