//! A queue owned by a separate `switchboard queue-worker` process: the
//! gateway publishes over HTTP to its intake.

use crate::{DeadLetter, Queue, QueueError};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use openfaas::QueueRequest;
use prometheus::Encoder;
use std::sync::Arc;

pub struct RemoteQueue {
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RemoteQueue {
    pub fn new(url: &str) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        Self { url: url.trim_end_matches('/').to_string(), client }
    }

    async fn call(&self, method: http::Method, path: &str, body: Vec<u8>) -> Result<Bytes, QueueError> {
        let err = |reason: String| QueueError::Remote { url: self.url.clone(), reason };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err(e.to_string()))?;
        let res = self.client.request(req).await.map_err(|e| err(e.to_string()))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
        if !status.is_success() {
            return Err(err(format!("{status}: {}", String::from_utf8_lossy(&body))));
        }
        Ok(body)
    }
}

impl Queue for RemoteQueue {
    fn enqueue(&self, request: QueueRequest) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            self.call(http::Method::POST, "/queue", serde_json::to_vec(&request)?).await?;
            Ok(())
        })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        Box::pin(async move {
            let body = self.call(http::Method::GET, "/dead-letters", vec![]).await?;
            Ok(serde_json::from_slice(&body)?)
        })
    }
}

type Shared = Arc<dyn Queue>;

/// The queue-worker's intake: `POST /queue` (a QueueRequest), `GET /dead-letters`, `GET /healthz`.
pub fn intake_router(queue: Shared) -> Router {
    async fn enqueue(State(q): State<Shared>, Json(req): Json<QueueRequest>) -> (StatusCode, String) {
        match q.enqueue(req).await {
            Ok(()) => (StatusCode::ACCEPTED, String::new()),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    async fn dead(State(q): State<Shared>) -> Result<Json<Vec<DeadLetter>>, (StatusCode, String)> {
        q.dead_letters().await.map(Json).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
    Router::new()
        .route("/queue", post(enqueue))
        .route("/dead-letters", get(dead))
        .with_state(queue.clone())
        .merge(health_router(queue))
}

/// `GET /metrics`: the worker's metrics, in Prometheus's text format.
pub fn metrics_router(registry: prometheus::Registry) -> Router {
    async fn metrics(State(registry): State<prometheus::Registry>) -> String {
        let mut out = vec![];
        let encoded = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
        encoded.expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

/// `GET /healthz`: 200 while the queue can take calls, else 503 saying why.
pub fn health_router(queue: Shared) -> Router {
    async fn health(State(q): State<Shared>) -> (StatusCode, String) {
        match q.health().await {
            Ok(()) => (StatusCode::OK, "OK".into()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
    Router::new().route("/healthz", get(health)).with_state(queue)
}
