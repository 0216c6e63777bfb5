//! The async queue behind `/async-function`. The gateway publishes through
//! the [`Queue`] trait; [`EmbeddedQueue`] keeps requests in a durable redb
//! file and [`worker`] invokes them with retries, posts results to
//! `X-Callback-Url`, and dead-letters what retries could not deliver.
//! [`RemoteQueue`] publishes to a separate `switchboard queue-worker`.

mod remote;
mod store;
pub mod worker;

pub use remote::{RemoteQueue, intake_router};
pub use store::Store;
pub use worker::{Worker, WorkerConfig};

use futures_util::future::BoxFuture;
use openfaas::QueueRequest;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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

/// Where `/async-function` puts requests. A NATS JetStream backend implements
/// this trait beside the embedded store.
pub trait Queue: Send + Sync {
    fn enqueue(&self, request: QueueRequest) -> BoxFuture<'_, Result<(), QueueError>>;
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>>;
    /// Whether the queue can take requests now (the gateway's `/healthz`).
    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
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
