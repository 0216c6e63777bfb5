//! `/function/NAME[.NS][/path]` (proxied to a replica) and
//! `/async-function/NAME[.NS][/path]` (queued, answered with 202).

use crate::provider::{Load, Route};
use crate::{Shared, text};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use openfaas::{QueueRequest, headers as h, is_valid_function_name, split_function_name};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard_http::Links;

/// `/function/fn.ns/a/b` → (`fn.ns`, `/a/b`).
fn split_route<'a>(path: &'a str, prefix: &str) -> (&'a str, &'a str) {
    let rest = path.strip_prefix(prefix).unwrap_or_default();
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// The caller's `X-Call-Id`, or a new one set on the request.
fn ensure_call_id(headers: &mut HeaderMap) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(h::CALL_ID) {
        return (v.clone(), false);
    }
    let v = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid header");
    headers.insert(h::CALL_ID, v.clone());
    (v, true)
}

fn start_time() -> HeaderValue {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    HeaderValue::from_str(&nanos.to_string()).expect("digits are a valid header")
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn too_large(limit: u64) -> Response {
    text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds max_body_size ({limit} bytes)\n"))
}

/// Buffers a body of unknown length within the limit; a body with a
/// Content-Length over the limit is refused before it is read.
async fn bounded_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<bytes::Bytes, Response> {
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    match Limited::new(body, limit as usize).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n"))),
    }
}

enum Target {
    Ready { label: String, base: String, load: Option<std::sync::Arc<Load>> },
    Missing(Response),
}

/// How often a request waiting for a starting replica looks again.
const REPLICA_POLL: Duration = Duration::from_millis(25);

/// The function's ready replica. A function whose replicas are starting, or
/// that has none (scaled to zero: one is started), is waited for, up to
/// `replica_wait`, when `wait` (a synchronous call); queued work goes in at
/// once and waits in the queue instead.
async fn resolve(gw: &Shared, qualified: &str, wait: bool) -> Target {
    if !is_valid_function_name(qualified) {
        return Target::Missing(text(StatusCode::NOT_FOUND, format!("invalid function name {qualified:?}\n")));
    }
    let (name, ns) = split_function_name(qualified, &gw.config.function_namespace);
    let label = format!("{name}.{ns}");
    let deadline = tokio::time::Instant::now() + gw.config.replica_wait;
    loop {
        match gw.provider.route(name, ns) {
            Route::Ready(base, load) => return Target::Ready { label, base, load },
            Route::Starting if wait && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(REPLICA_POLL).await;
            }
            // Scale from zero: a replica starts, and the call waits for it.
            Route::NoReplicas if wait && tokio::time::Instant::now() < deadline => {
                gw.provider.wake(name, ns);
                tokio::time::sleep(REPLICA_POLL).await;
            }
            Route::Starting | Route::NoReplicas => {
                let mut res = text(StatusCode::SERVICE_UNAVAILABLE, format!("No endpoints available for: {label}.\n"));
                res.headers_mut().insert(h::OPENFAAS_INTERNAL, HeaderValue::from_static("proxy"));
                return Target::Missing(res);
            }
            // Marked as the gateway's own answer, so the queue worker can tell a
            // missing function from a function that answers 404.
            Route::Unknown => {
                let mut res = text(StatusCode::NOT_FOUND, format!("function {label} not found\n"));
                res.headers_mut().insert(h::OPENFAAS_INTERNAL, HeaderValue::from_static("gateway"));
                return Target::Missing(res);
            }
        }
    }
}

pub async fn function(State(gw): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (qualified, rest) = split_route(req.uri().path(), "/function/");
    let (label, base, load) = match resolve(&gw, qualified, true).await {
        Target::Ready { label, base, load } => (label, base, load),
        Target::Missing(res) => return res,
    };
    // Replicas and static upstreams are `http://host:port[/prefix]`.
    let Some((authority, prefix)) = base.strip_prefix("http://").map(|b| b.split_at(b.find('/').unwrap_or(b.len())))
    else {
        return text(StatusCode::BAD_GATEWAY, format!("function {label} has a non-http upstream {base}\n"));
    };
    let path = if rest.is_empty() && prefix.is_empty() { "/" } else { rest };
    let uri = match req.uri().query() {
        Some(q) => format!("{prefix}{path}?{q}"),
        None => format!("{prefix}{path}"),
    };
    let links = req.extensions().get::<Links<Body>>().cloned().unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let limit = gw.config.max_body_size;
    let body =
        if content_length(&parts.headers).is_some() || !parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            if content_length(&parts.headers).is_some_and(|n| n > limit) {
                return too_large(limit);
            }
            body
        } else {
            match bounded_body(&parts.headers, body, limit).await {
                Ok(bytes) => Body::from(bytes),
                Err(res) => return res,
            }
        };
    let (call_id, generated) = ensure_call_id(&mut parts.headers);
    let start = start_time();
    parts.headers.insert(h::START_TIME, start.clone());
    if !parts.headers.contains_key("x-forwarded-for")
        && let Ok(v) = HeaderValue::from_str(&peer.ip().to_string())
    {
        parts.headers.insert("x-forwarded-for", v);
    }
    if let Some(host) = parts.headers.get(http::header::HOST).cloned() {
        parts.headers.entry("x-forwarded-host").or_insert(host);
    }
    h::strip_hop_by_hop(&mut parts.headers);
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(e) => {
            return text(StatusCode::BAD_REQUEST, format!("invalid request path: {e}\n"));
        }
    };

    gw.metrics.started.with_label_values(&[&label]).inc();
    // Counted for autoscaling until the answer's head is back.
    let in_flight = load.as_ref().map(Load::begin);
    let began = Instant::now();
    let timeout = gw.config.upstream_timeout;
    let mut res = match tokio::time::timeout(timeout, links.send(authority, Request::from_parts(parts, body))).await {
        Ok(Ok(res)) => {
            let (mut parts, body) = res.into_parts();
            h::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("cannot reach function {label} at {base}: {e}\n")),
        Err(_) => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "function {label} did not answer within upstream_timeout ({})\n",
                humantime::format_duration(timeout)
            ),
        ),
    };
    drop(in_flight);
    let code = res.status();
    gw.metrics.invocations.with_label_values(&[&label, code.as_str()]).inc();
    gw.metrics.seconds.with_label_values(&[&label, code.as_str()]).observe(began.elapsed().as_secs_f64());
    if generated {
        res.headers_mut().insert(h::CALL_ID, call_id);
    }
    res.headers_mut().insert(h::START_TIME, start);
    if gw.config.sandbox_functions {
        // Appended, not set: a function's own policy still holds beside it.
        res.headers_mut().append(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
    res
}

pub async fn async_function(State(gw): State<Shared>, req: Request) -> Response {
    let Some(queue) = gw.queue.clone() else {
        return text(StatusCode::NOT_FOUND, "asynchronous invocation is not enabled on this gateway\n");
    };
    let (qualified, rest) = split_route(req.uri().path(), "/async-function/");
    let rest = rest.to_string();
    let label = match resolve(&gw, qualified, false).await {
        Target::Ready { label, .. } => label,
        Target::Missing(res) if res.status() == StatusCode::NOT_FOUND => return res,
        // Queued work waits for replicas to come back.
        Target::Missing(_) => {
            let (name, ns) = split_function_name(qualified, &gw.config.function_namespace);
            format!("{name}.{ns}")
        }
    };
    let callback_url = match req.headers().get(h::CALLBACK_URL) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| url::Url::parse(s).ok()).filter(|u| u.scheme() == "http") {
            Some(u) => Some(u.to_string()),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("invalid X-Callback-Url {v:?}: expected an absolute http:// URL\n"),
                );
            }
        },
    };
    let (mut parts, body) = req.into_parts();
    let body = match bounded_body(&parts.headers, body, gw.config.max_body_size).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let (call_id, _) = ensure_call_id(&mut parts.headers);
    parts.headers.insert(h::START_TIME, start_time());
    h::strip_hop_by_hop(&mut parts.headers);
    let mut header = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            header.entry(name.as_str().to_string()).or_default().push(v.to_string());
        }
    }
    let (name, ns) = split_function_name(&label, "");
    let annotations = gw.provider.get(name, ns).map(|f| f.annotations).unwrap_or_default();
    let request = QueueRequest {
        header,
        host: parts.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string(),
        body: body.to_vec(),
        method: parts.method.to_string(),
        path: rest,
        query_string: parts.uri.query().unwrap_or_default().to_string(),
        function: label,
        annotations,
        callback_url,
    };
    match queue.enqueue(request).await {
        Ok(()) => {
            let mut res = text(StatusCode::ACCEPTED, "");
            res.headers_mut().insert(h::CALL_ID, call_id);
            res
        }
        // A full disk, say: nothing was queued, and the caller may try again.
        Err(e) => {
            let mut res = text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot queue the request: {e}\n"));
            res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_routes() {
        assert_eq!(super::split_route("/function/echo", "/function/"), ("echo", ""));
        assert_eq!(super::split_route("/function/echo.ns/a/b", "/function/"), ("echo.ns", "/a/b"));
        assert_eq!(super::split_route("/function/echo/", "/function/"), ("echo", "/"));
    }
}
