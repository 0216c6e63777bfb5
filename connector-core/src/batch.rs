//! Batched settlement, for brokers that settle many messages in one call
//! (Redis `XACK` of many ids, SQS `DeleteMessageBatch`). Items wait only
//! while the previous batch is being sent: one at a time when quiet, up to
//! `max` together under load, with no timer adding latency.

use std::future::Future;
use tokio::sync::mpsc;

/// The sending side; cheap to clone. The batch task ends when every clone is dropped.
pub struct Batcher<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Spawns the task that calls `flush` with up to `max` items at a time.
    pub fn spawn<F, Fut>(max: usize, mut flush: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let max = max.max(1);
        let (tx, mut rx) = mpsc::channel(max);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max);
            while rx.recv_many(&mut batch, max).await > 0 {
                flush(std::mem::replace(&mut batch, Vec::with_capacity(max))).await;
            }
        });
        Self { tx }
    }

    /// Queues an item; waits while `max` are queued (backpressure). False
    /// when the batch task is gone.
    pub async fn send(&self, item: T) -> bool {
        self.tx.send(item).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn items_queued_during_a_flush_go_together() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let seen = batches.clone();
        let batcher = Batcher::spawn(3, move |items: Vec<u32>| {
            let (seen, mut gate) = (seen.clone(), gate_rx.clone());
            async move {
                seen.lock().unwrap().push(items);
                let _ = gate.wait_for(|open| *open).await; // the first flush is slow
            }
        });
        batcher.send(1).await;
        while batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for i in 2..=6 {
            let b = batcher.clone();
            tokio::spawn(async move { b.send(i).await });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        gate_tx.send(true).unwrap();
        drop(batcher);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches[0], [1]);
        assert!(batches[1..].iter().all(|b| b.len() <= 3), "{batches:?}");
        assert_eq!(batches[1].len(), 3, "the items that waited went in one batch: {batches:?}");
        let mut all: Vec<u32> = batches.concat();
        all.sort();
        assert_eq!(all, [1, 2, 3, 4, 5, 6]);
    }
}
