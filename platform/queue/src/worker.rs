//! The queue worker: takes due requests, invokes the function through the
//! gateway with the original method, path, query, headers and body, retries
//! by the function's retry policy, and reports the result to its callback.

use crate::store::{Lease, now_ms};
use crate::{DeadLetter, EmbeddedQueue, Envelope};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use openfaas::{QueueRequest, RetryPolicy, headers as h};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The gateway the worker invokes functions through.
    pub gateway_url: String,
    /// Invocations running at once.
    pub max_inflight: usize,
    /// Defaults; a function's `com.openfaas.retry.*` annotations override them.
    pub retry: RetryPolicy,
    /// Limit on one invocation.
    pub invoke_timeout: Duration,
}

pub struct Worker {
    queue: EmbeddedQueue,
    config: WorkerConfig,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What one attempt produced.
struct Attempt {
    status: Option<u16>,
    headers: HeaderMap,
    body: Bytes,
    error: String,
    retry_after: Option<Duration>,
    duration: Duration,
}

impl Worker {
    pub fn new(queue: EmbeddedQueue, config: WorkerConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self { queue, config, client }
    }

    /// Runs until `shutdown` resolves, then waits for invocations in flight.
    /// Anything still leased when the process dies is redelivered on restart.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let worker = Arc::new(self);
        let slots = Arc::new(Semaphore::new(worker.config.max_inflight.max(1)));
        tokio::pin!(shutdown);
        tracing::info!(gateway = %worker.config.gateway_url, max_inflight = worker.config.max_inflight, "queue worker started");
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let taken = worker.queue.blocking(|s| s.lease_due(now_ms())).await;
            match taken {
                Ok(Ok(lease)) => {
                    let w = worker.clone();
                    tokio::spawn(async move {
                        w.deliver(lease).await;
                        drop(slot);
                    });
                }
                Ok(Err(next_due)) => {
                    drop(slot);
                    let wait = next_due
                        .map_or(Duration::from_secs(3600), |due| Duration::from_millis(due.saturating_sub(now_ms())));
                    tokio::select! {
                        () = worker.queue.ready.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                        () = &mut shutdown => break,
                    }
                }
                Err(e) => {
                    drop(slot);
                    tracing::error!(error = %e, "cannot read the queue; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let all = worker.config.max_inflight.max(1) as u32;
        let _ = tokio::time::timeout(worker.config.invoke_timeout, slots.acquire_many(all)).await;
        tracing::info!("queue worker stopped");
    }

    async fn deliver(&self, lease: Lease) {
        let Lease { seq, mut envelope } = lease;
        let req = &envelope.request;
        let policy = self.config.retry.with_annotations(&req.annotations).unwrap_or_else(|e| {
            tracing::warn!(function = %req.function, error = %e, "ignoring the function's retry annotations");
            self.config.retry.clone()
        });
        let attempt = self.invoke(req).await;
        envelope.attempts += 1;
        let n = envelope.attempts;
        let retryable = attempt.status.is_none_or(|s| policy.is_retryable(s));
        let call_id = req.call_id().unwrap_or_default().to_string();

        let settled = if retryable && policy.has_attempts_after(n) {
            let wait = policy.backoff(n, attempt.retry_after);
            tracing::info!(function = %req.function, %call_id, attempt = n, status = ?attempt.status, error = %attempt.error, ?wait, "retrying");
            let due = now_ms() + wait.as_millis() as u64;
            let env = envelope.clone();
            let rescheduled = self.queue.blocking(move |s| s.reschedule(seq, &env, due)).await;
            // The run loop may be asleep until a later item is due.
            self.queue.ready.notify_one();
            rescheduled
        } else {
            self.callback(&envelope, &attempt, &policy).await;
            if retryable {
                tracing::warn!(function = %req.function, %call_id, attempts = n, status = ?attempt.status, error = %attempt.error, "retries exhausted; dead-lettered");
                let letter = DeadLetter {
                    call_id,
                    function: req.function.clone(),
                    attempts: n,
                    last_status: attempt.status,
                    last_error: attempt.error.clone(),
                    failed_at_ms: now_ms(),
                    request: req.clone(),
                };
                self.queue.blocking(move |s| s.dead_letter(seq, &letter)).await
            } else {
                self.queue.blocking(move |s| s.complete(seq)).await
            }
        };
        if let Err(e) = settled {
            // The lease stays in the store and is redelivered on restart.
            tracing::error!(error = %e, "cannot record the outcome of an invocation");
        }
    }

    async fn invoke(&self, req: &QueueRequest) -> Attempt {
        let started = Instant::now();
        let failed = |error: String| Attempt {
            status: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error,
            retry_after: None,
            duration: started.elapsed(),
        };
        let mut uri =
            format!("{}/function/{}{}", self.config.gateway_url.trim_end_matches('/'), req.function, req.path);
        if !req.query_string.is_empty() {
            uri.push('?');
            uri.push_str(&req.query_string);
        }
        let mut builder = Request::builder().method(req.method.as_str()).uri(&uri);
        let headers = builder.headers_mut().expect("builder is valid so far");
        for (name, values) in &req.header {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
                continue;
            }
            for v in values {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.append(name.clone(), v);
                }
            }
        }
        h::strip_hop_by_hop(headers);
        headers.insert(http::header::USER_AGENT, HeaderValue::from_static("switchboard/queue-worker"));
        let request = match builder.body(Full::new(Bytes::from(req.body.clone()))) {
            Ok(r) => r,
            Err(e) => return failed(format!("cannot build the request to {uri}: {e}")),
        };
        let response = match tokio::time::timeout(self.config.invoke_timeout, self.client.request(request)).await {
            Err(_) => {
                return failed(format!("no answer from {uri} within {:?}", self.config.invoke_timeout));
            }
            Ok(Err(e)) => return failed(format!("cannot reach {uri}: {e}")),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let status = parts.status.as_u16();
        Attempt {
            status: Some(status),
            retry_after: parts.headers.get(http::header::RETRY_AFTER).and_then(openfaas::retry::parse_retry_after),
            error: if parts.status.is_success() { String::new() } else { format!("HTTP {status}") },
            headers: parts.headers,
            body,
            duration: started.elapsed(),
        }
    }

    /// Posts the final result to `X-Callback-Url` the way OpenFaaS does: the
    /// function's body and headers plus `X-Function-Status` and friends. An
    /// invocation that never got a response reports 503 with an empty body.
    async fn callback(&self, envelope: &Envelope, attempt: &Attempt, policy: &RetryPolicy) {
        let req = &envelope.request;
        let Some(url) = req.callback_url.as_deref() else {
            return;
        };
        let mut builder = Request::builder().method(http::Method::POST).uri(url);
        let headers = builder.headers_mut().expect("builder is valid so far");
        for (name, value) in &attempt.headers {
            if name != http::header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
        h::strip_hop_by_hop(headers);
        let status = attempt.status.unwrap_or(503);
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(h::FUNCTION_STATUS, status.to_string());
        set(h::FUNCTION_NAME, req.function.clone());
        set(h::CALL_ID, req.call_id().unwrap_or_default().to_string());
        set(h::DURATION_SECONDS, format!("{:.6}", attempt.duration.as_secs_f64()));
        set(h::RETRY, envelope.attempts.saturating_sub(1).to_string());
        set(h::RETRY_MAX, policy.attempts.saturating_sub(1).to_string());
        let body = if attempt.status.is_some() { attempt.body.clone() } else { Bytes::new() };
        let request = match builder.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(%url, error = %e, "invalid callback request"),
        };
        match tokio::time::timeout(self.config.invoke_timeout, self.client.request(request)).await {
            Ok(Ok(res)) if res.status().is_success() => {}
            Ok(Ok(res)) => {
                tracing::warn!(%url, status = %res.status(), "callback rejected the result")
            }
            Ok(Err(e)) => tracing::warn!(%url, error = %e, "cannot reach the callback"),
            Err(_) => tracing::warn!(%url, "callback timed out"),
        }
    }
}
