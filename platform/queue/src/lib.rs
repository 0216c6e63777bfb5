//! The async queue behind `/async-function`. The gateway publishes through
//! the [`Queue`] trait; [`worker`] takes requests from a [`Backlog`], invokes
//! them with retries, posts results to `X-Callback-Url`, and dead-letters
//! what retries could not deliver. [`EmbeddedQueue`] is both, on a durable
//! redb file; a NATS JetStream queue (in the nats connector) is both across
//! machines; [`RemoteQueue`] publishes to a separate `switchboard queue-worker`.

mod remote;
mod store;
pub mod worker;

/// Where the worker registers its metrics (the gateway's, or a queue-worker's own).
pub use prometheus::Registry;
pub use remote::{RemoteQueue, health_router, intake_router, metrics_router};
pub use store::{Store, now_ms};
pub use worker::{Worker, WorkerConfig};

use futures_util::future::BoxFuture;
use openfaas::QueueRequest;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the queue store {0}: {1}")]
    Open(String, String),
    #[error("queue store: {0}")]
    Store(String),
    #[error("queue record is not valid JSON: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("queue-worker at {url}: {reason}")]
    Remote { url: String, reason: String },
}

macro_rules! store_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for QueueError {
            fn from(e: $t) -> Self { QueueError::Store(e.to_string()) }
        }
    )*};
}
store_errors!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A queued request with its delivery state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub request: QueueRequest,
    /// Attempts made so far.
    pub attempts: u32,
    pub enqueued_at_ms: u64,
    /// The invocation's final answer, kept while its callback is retried,
    /// so a callback that fails never runs the function again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<worker::Answer>,
    /// Callback attempts made so far.
    #[serde(default)]
    pub callbacks: u32,
}

/// A request whose retries ran out, with what went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub call_id: String,
    pub function: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub failed_at_ms: u64,
    pub request: QueueRequest,
}

/// Where `/async-function` puts requests.
pub trait Queue: Send + Sync {
    fn enqueue(&self, request: QueueRequest) -> BoxFuture<'_, Result<(), QueueError>>;
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>>;
    /// Whether the queue can take requests now (the gateway's `/healthz`).
    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Where a worker takes requests from.
pub trait Backlog: Send + Sync + 'static {
    /// Waits for the next request that is due. Cancel-safe: nothing is
    /// taken unless it is returned.
    fn take(&self) -> BoxFuture<'_, Result<Taken, QueueError>>;

    /// The worker stops taking: hand back at once whatever is held for it
    /// but not started, so another worker need not wait for it.
    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A request taken from a [`Backlog`], to be settled through its lease once.
pub struct Taken {
    pub envelope: Envelope,
    pub lease: Box<dyn Lease>,
}

/// How a taken request is settled. Until it is, the backlog keeps it and
/// hands it out again if the worker dies.
pub trait Lease: Send {
    /// Delivered, or answered for good: remove it.
    fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>>;
    /// Run it again after `wait`, as `envelope` now says (its attempt counts,
    /// the answer a callback still needs).
    fn retry(self: Box<Self>, envelope: Envelope, wait: Duration) -> BoxFuture<'static, Result<(), QueueError>>;
    /// Retries ran out: keep it among the dead letters, then remove it.
    fn dead_letter(self: Box<Self>, letter: DeadLetter) -> BoxFuture<'static, Result<(), QueueError>>;
}

/// The durable store on this machine, shared by the gateway and the worker.
#[derive(Clone)]
pub struct EmbeddedQueue {
    store: Arc<Store>,
    ready: Arc<tokio::sync::Notify>,
}

impl EmbeddedQueue {
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        Ok(Self { store: Arc::new(Store::open(path)?), ready: Arc::new(tokio::sync::Notify::new()) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| QueueError::Store(format!("store task failed: {e}")))?
    }
}

impl Queue for EmbeddedQueue {
    fn enqueue(&self, request: QueueRequest) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let envelope =
                Envelope { request, attempts: 0, enqueued_at_ms: store::now_ms(), answer: None, callbacks: 0 };
            self.blocking(move |s| s.push(&envelope, 0)).await?;
            self.ready.notify_one();
            Ok(())
        })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        Box::pin(self.blocking(|s| s.dead_letters()))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.blocking(|s| Ok(s.health())).await.map_err(|e| e.to_string())? })
    }
}

impl Backlog for EmbeddedQueue {
    fn take(&self) -> BoxFuture<'_, Result<Taken, QueueError>> {
        Box::pin(async move {
            loop {
                // Registered before looking, so an enqueue in between wakes us.
                let ready = self.ready.notified();
                match self.blocking(|s| s.lease_due(store::now_ms())).await? {
                    Ok(store::Leased { seq, envelope }) => {
                        return Ok(Taken { envelope, lease: Box::new(EmbeddedLease { queue: self.clone(), seq }) });
                    }
                    Err(next_due) => {
                        let wait = next_due.map_or(Duration::from_secs(3600), |due| {
                            Duration::from_millis(due.saturating_sub(store::now_ms()))
                        });
                        tokio::select! {
                            () = ready => {}
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        })
    }
}

/// An item leased in the embedded store; a crash returns it to pending on the next open.
struct EmbeddedLease {
    queue: EmbeddedQueue,
    seq: u64,
}

impl Lease for EmbeddedLease {
    fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        let seq = self.seq;
        Box::pin(async move { self.queue.blocking(move |s| s.complete(seq)).await })
    }

    fn retry(self: Box<Self>, envelope: Envelope, wait: Duration) -> BoxFuture<'static, Result<(), QueueError>> {
        Box::pin(async move {
            let (due, seq) = (store::now_ms() + wait.as_millis() as u64, self.seq);
            self.queue.blocking(move |s| s.reschedule(seq, &envelope, due)).await?;
            // A worker may be asleep until a later item is due.
            self.queue.ready.notify_one();
            Ok(())
        })
    }

    fn dead_letter(self: Box<Self>, letter: DeadLetter) -> BoxFuture<'static, Result<(), QueueError>> {
        let seq = self.seq;
        Box::pin(async move { self.queue.blocking(move |s| s.dead_letter(seq, &letter)).await })
    }
}
