//! Function output for `/system/logs`: the last lines of each function,
//! plus a live feed for `follow=true`.

use openfaas::LogMessage;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

pub struct LogStore {
    lines: Mutex<HashMap<String, VecDeque<LogMessage>>>,
    live: broadcast::Sender<LogMessage>,
    capacity: usize,
}

impl LogStore {
    pub fn new(capacity: usize) -> Self {
        Self { lines: Mutex::new(HashMap::new()), live: broadcast::channel(1024).0, capacity }
    }

    pub fn push(&self, msg: LogMessage) {
        let key = format!("{}.{}", msg.name, msg.namespace);
        {
            let mut lines = self.lines.lock().expect("log store lock");
            let buf = lines.entry(key).or_default();
            if buf.len() == self.capacity {
                buf.pop_front();
            }
            buf.push_back(msg.clone());
        }
        let _ = self.live.send(msg);
    }

    /// Lines kept for `name.namespace`, oldest first.
    pub fn history(&self, name: &str, namespace: &str) -> Vec<LogMessage> {
        let lines = self.lines.lock().expect("log store lock");
        lines.get(&format!("{name}.{namespace}")).map(|b| b.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogMessage> {
        self.live.subscribe()
    }
}
