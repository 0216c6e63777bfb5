//! The queue worker: takes due requests, invokes the function through the
//! gateway with the original method, path, query, headers and body, retries
//! by the function's retry policy, and reports the result to its callback.

use crate::store::now_ms;
use crate::{Backlog, DeadLetter, Envelope, Taken};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use openfaas::{QueueRequest, RetryPolicy, headers as h};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
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
    backlog: Arc<dyn Backlog>,
    config: WorkerConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: Metrics,
}

/// What the worker did with each call, by function.
struct Metrics {
    calls: IntCounterVec,
    in_flight: IntGauge,
}

impl Metrics {
    fn new(registry: &Registry) -> Self {
        let calls = IntCounterVec::new(
            Opts::new(
                "switchboard_queue_calls_total",
                "Queued calls the worker ran, by what became of them: answered, retried, callback_retried, dead_lettered, unsettled",
            ),
            &["function_name", "outcome"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("switchboard_queue_in_flight", "Queued calls the worker is running").expect("valid metric");
        for m in [Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>, Box::new(in_flight.clone())] {
            registry.register(m).expect("the queue's metrics are registered once");
        }
        Self { calls, in_flight }
    }
}

/// What an invocation produced: the function's answer, or why there was none.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    #[serde(with = "openfaas::types::base64_bytes")]
    pub body: Vec<u8>,
    pub error: String,
    pub duration_ms: u64,
    /// Retries ran out (or the function is gone): the request ends among
    /// the dead letters once its callback is settled.
    pub dead: bool,
    #[serde(skip)]
    retry_after: Option<Duration>,
}

impl Worker {
    /// A worker taking from `backlog`, its metrics in `registry`.
    pub fn new(backlog: Arc<dyn Backlog>, config: WorkerConfig, registry: &Registry) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self { backlog, config, client, metrics: Metrics::new(registry) }
    }

    /// Runs until `shutdown` resolves, then waits for invocations in flight.
    /// Anything taken but unsettled when the process dies is handed out
    /// again by the backlog.
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
            let taken = tokio::select! {
                taken = worker.backlog.take() => taken,
                () = &mut shutdown => break,
            };
            match taken {
                Ok(taken) => {
                    let w = worker.clone();
                    tokio::spawn(async move {
                        w.metrics.in_flight.inc();
                        w.deliver(taken).await;
                        w.metrics.in_flight.dec();
                        drop(slot);
                    });
                }
                Err(e) => {
                    drop(slot);
                    tracing::error!(error = %e, "cannot read the queue; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        worker.backlog.release().await;
        let all = worker.config.max_inflight.max(1) as u32;
        let _ = tokio::time::timeout(worker.config.invoke_timeout, slots.acquire_many(all)).await;
        tracing::info!("queue worker stopped");
    }

    async fn deliver(&self, taken: Taken) {
        let Taken { mut envelope, lease } = taken;
        let req = envelope.request.clone();
        let policy = self.config.retry.with_annotations(&req.annotations).unwrap_or_else(|e| {
            tracing::warn!(function = %req.function, error = %e, "ignoring the function's retry annotations");
            self.config.retry.clone()
        });
        let call_id = req.call_id().unwrap_or_default().to_string();
        let answer = match envelope.answer.clone() {
            Some(answer) => answer,
            None => {
                tracing::debug!(function = %req.function, %call_id, attempt = envelope.attempts + 1, "invoking");
                let mut answer = self.invoke(&req).await;
                envelope.attempts += 1;
                let n = envelope.attempts;
                // An answer already dead can never succeed.
                let retryable = !answer.dead && (gone(&answer) || answer.status.is_none_or(|s| policy.is_retryable(s)));
                if retryable && policy.has_attempts_after(n) {
                    let wait = policy.backoff(n, answer.retry_after);
                    tracing::info!(function = %req.function, %call_id, attempt = n, status = ?answer.status, error = %answer.error, ?wait, "retrying");
                    return self.settle(&req.function, "retried", lease.retry(envelope, wait).await);
                }
                answer.dead |= retryable;
                envelope.answer = Some(answer.clone());
                answer
            }
        };
        if let Some(url) = req.callback_url.as_deref()
            && let Err(e) = self.callback(url, &envelope, &answer, &policy).await
        {
            envelope.callbacks += 1;
            let n = envelope.callbacks;
            if policy.has_attempts_after(n) {
                let wait = policy.backoff(n, None);
                tracing::info!(function = %req.function, %call_id, %url, attempt = n, error = %e, ?wait, "retrying the callback");
                return self.settle(&req.function, "callback_retried", lease.retry(envelope, wait).await);
            }
            tracing::warn!(function = %req.function, %call_id, %url, attempts = n, error = %e, "callback never landed; dead-lettered");
            let error = format!("callback to {url} failed {n} times ({e}); the function answered {:?}", answer.status);
            let letter = dead_letter(&envelope, answer.status, error);
            return self.settle(&req.function, "dead_lettered", lease.dead_letter(letter).await);
        }
        if answer.dead {
            tracing::warn!(function = %req.function, %call_id, attempts = envelope.attempts, status = ?answer.status, error = %answer.error, "retries exhausted; dead-lettered");
            let letter = dead_letter(&envelope, answer.status, answer.error.clone());
            return self.settle(&req.function, "dead_lettered", lease.dead_letter(letter).await);
        }
        self.settle(&req.function, "answered", lease.complete().await);
    }

    fn settle(&self, function: &str, outcome: &str, result: Result<(), crate::QueueError>) {
        let outcome = match result {
            Ok(()) => outcome,
            Err(e) => {
                // Unsettled, the request stays in the backlog, which hands it out again.
                tracing::error!(%function, error = %e, "cannot record the outcome of an invocation");
                "unsettled"
            }
        };
        self.metrics.calls.with_label_values(&[function, outcome]).inc();
    }

    async fn invoke(&self, req: &QueueRequest) -> Answer {
        let started = Instant::now();
        let failed = |error: String| Answer {
            status: None,
            headers: vec![],
            body: vec![],
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            dead: false,
            retry_after: None,
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
        let body = match switchboard_http::read_whole(body, switchboard_http::MAX_ANSWER).await {
            Ok(b) => b,
            // The function ran and would answer as much again: not retried,
            // since a function with side effects would repeat them for nothing.
            Err(e @ switchboard_http::ReadError::TooLarge(_)) => {
                let error = format!(
                    "the function answered {} with an {e}, more than the queue keeps; dead-lettered without a retry",
                    parts.status
                );
                return Answer { status: Some(502), body: error.clone().into_bytes(), dead: true, ..failed(error) };
            }
            Err(e) => return failed(format!("cannot read the answer from {uri}: {e}")),
        };
        let status = parts.status.as_u16();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let internal = parts.headers.get(h::OPENFAAS_INTERNAL).is_some_and(|v| v == "gateway");
        Answer {
            status: Some(status),
            retry_after: parts.headers.get(http::header::RETRY_AFTER).and_then(openfaas::retry::parse_retry_after),
            error: match (parts.status.is_success(), internal && status == 404) {
                (true, _) => String::new(),
                (false, true) => format!("function {} not found (HTTP 404 from the gateway)", req.function),
                (false, false) => format!("HTTP {status}"),
            },
            headers,
            body: body.to_vec(),
            duration_ms: started.elapsed().as_millis() as u64,
            dead: false,
        }
    }

    /// Posts the final result to `X-Callback-Url` the way OpenFaaS does: the
    /// function's body and headers plus `X-Function-Status` and friends. An
    /// invocation that never got a response reports 503 with an empty body.
    /// Only a 2xx answer counts as landed.
    async fn callback(
        &self,
        url: &str,
        envelope: &Envelope,
        answer: &Answer,
        policy: &RetryPolicy,
    ) -> Result<(), String> {
        let req = &envelope.request;
        let mut builder = Request::builder().method(http::Method::POST).uri(url);
        let headers = builder.headers_mut().expect("builder is valid so far");
        for (name, value) in &answer.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
                && name != http::header::CONTENT_LENGTH
            {
                headers.append(name, value);
            }
        }
        h::strip_hop_by_hop(headers);
        let status = answer.status.unwrap_or(503);
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(h::FUNCTION_STATUS, status.to_string());
        set(h::FUNCTION_NAME, req.function.clone());
        set(h::CALL_ID, req.call_id().unwrap_or_default().to_string());
        set(h::DURATION_SECONDS, format!("{:.6}", answer.duration_ms as f64 / 1000.0));
        set(h::RETRY, envelope.attempts.saturating_sub(1).to_string());
        set(h::RETRY_MAX, policy.attempts.saturating_sub(1).to_string());
        let request = builder.body(Full::new(Bytes::from(answer.body.clone()))).map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.config.invoke_timeout, self.client.request(request)).await {
            Ok(Ok(res)) if res.status().is_success() => Ok(()),
            Ok(Ok(res)) => Err(format!("answered {}", res.status())),
            Ok(Err(e)) => Err(format!("unreachable: {e}")),
            Err(_) => Err(format!("no answer within {:?}", self.config.invoke_timeout)),
        }
    }
}

fn dead_letter(envelope: &Envelope, last_status: Option<u16>, last_error: String) -> DeadLetter {
    let req = &envelope.request;
    DeadLetter {
        call_id: req.call_id().unwrap_or_default().to_string(),
        function: req.function.clone(),
        attempts: envelope.attempts,
        last_status,
        last_error,
        failed_at_ms: now_ms(),
        request: req.clone(),
    }
}

/// The gateway's own 404: the function does not exist (any more). Retried,
/// since a function may be in the middle of being redeployed, then
/// dead-lettered; never settled as if the function had answered.
fn gone(answer: &Answer) -> bool {
    answer.status == Some(404) && answer.headers.iter().any(|(k, v)| k == h::OPENFAAS_INTERNAL && v == "gateway")
}
