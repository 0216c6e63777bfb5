//! Per-key ordering: each event waits until the previous event with the
//! same topic and key has settled; events with other keys run in parallel.
//! Turns are taken in arrival order (when the source admits the event) and
//! awaited when it is dispatched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The last turn taken for each key: its id and the signal it sends when done.
type Tails = Arc<Mutex<HashMap<String, (u64, watch::Receiver<bool>)>>>;

#[derive(Default)]
pub struct KeyOrder {
    tails: Tails,
    next: AtomicU64,
}

pub struct Turn {
    previous: Option<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
    key: String,
    id: u64,
    tails: Tails,
}

impl KeyOrder {
    pub fn turn(&self, topic: &str, key: &str) -> Turn {
        let key = format!("{topic}\u{0}{key}");
        let (done, rx) = watch::channel(false);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let previous = self.tails.lock().expect("key order lock").insert(key.clone(), (id, rx)).map(|(_, r)| r);
        Turn { previous, done, key, id, tails: self.tails.clone() }
    }
}

impl Turn {
    pub async fn wait(&mut self) {
        if let Some(mut previous) = self.previous.take() {
            // An error means the previous turn was dropped: done as well.
            let _ = previous.wait_for(|done| *done).await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.done.send(true);
        let mut tails = self.tails.lock().expect("key order lock");
        if tails.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            tails.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let order = KeyOrder::default();
        let first = order.turn("t", "a");
        let mut second = order.turn("t", "a");
        let mut other = order.turn("t", "b");
        other.wait().await; // not blocked by key a
        let blocked = tokio::time::timeout(Duration::from_millis(50), second.wait()).await;
        assert!(blocked.is_err(), "second event of key a ran before the first settled");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.wait()).await.expect("released once the first settled");
        drop((second, other));
        assert!(order.tails.lock().unwrap().is_empty(), "finished keys are forgotten");
    }
}
