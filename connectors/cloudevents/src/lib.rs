//! CloudEvents over HTTP: binary mode (`ce-*` headers), structured mode
//! (`application/cloudevents+json`) and batched mode
//! (`application/cloudevents-batch+json`). The answer waits until delivery
//! has settled: 200 (202 when the hub invokes asynchronously) once every
//! event is delivered or dead-lettered, 429 with `Retry-After` when the hub
//! is full, 503 when an event could be neither (the sender should retry),
//! 400 naming what is missing or invalid, 413 over `max_body_size`.

use bytes::Bytes;
use cloudevents::{AttributesReader, Data};
use connector_core::{
    Access, CloudEventAttrs, Dispatcher, Event, Outcome, Settle, Source, SourceConfig, SourceContext, SourceError,
};
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_http::{Links, RequestBody};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEventsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The attribute whose value is the topic: `type` (default), `source`,
    /// `subject`, or an extension's name.
    pub topic_attribute: String,
    /// Largest request body in bytes (then 413); a whole batch counts as one.
    pub max_body_size: usize,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            topic_attribute: "type".into(),
            max_body_size: 4 * 1024 * 1024,
        }
    }
}

pub struct CloudEventsSource {
    config: CloudEventsConfig,
}

impl CloudEventsSource {
    pub fn new(config: CloudEventsConfig) -> Self {
        Self { config }
    }
}

/// Answers every request on the listener: one endpoint, so no router.
#[derive(Clone)]
struct Receiver {
    dispatcher: Dispatcher,
    access: Arc<Access>,
    topic_attribute: Arc<str>,
    max_body_size: usize,
}

/// W3C trace context, carried from the request to the function.
const TRACE_CONTEXT: [HeaderName; 2] = [HeaderName::from_static("traceparent"), HeaderName::from_static("tracestate")];

/// The answer to a request in no CloudEvents mode at all.
const NOT_A_CLOUDEVENT: &str = "not a CloudEvent: expected the ce-specversion, ce-id, ce-source and ce-type \
    headers (binary mode), or Content-Type application/cloudevents+json or application/cloudevents-batch+json";

impl SourceConfig for CloudEventsConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        let valid = ["type", "source", "subject"].contains(&self.topic_attribute.as_str())
            || is_extension_name(&self.topic_attribute);
        if !valid {
            return Err(format!(
                "cloudevents.topic_attribute {:?}: expected type, source, subject or an extension's name (lower-case letters and digits)",
                self.topic_attribute
            )
            .into());
        }
        if self.max_body_size == 0 {
            return Err("cloudevents.max_body_size: expected a size in bytes above 0".into());
        }
        Ok(Box::new(CloudEventsSource::new(self.clone())))
    }
}

/// CloudEvents attribute names: lower-case ASCII letters and digits.
fn is_extension_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Source for CloudEventsSource {
    fn name(&self) -> &'static str {
        "cloudevents"
    }

    fn describe(&self) -> String {
        format!("http://{} (topic: the {} attribute)", self.config.listen, self.config.topic_attribute)
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let listen = self.config.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen} (cloudevents.listen): {e}"))?;
            tracing::info!(%listen, topic_attribute = %self.config.topic_attribute, "receiving CloudEvents over HTTP");
            // Requests in flight at shutdown settle within one invocation's time.
            let drain = ctx.dispatcher.upstream_timeout();
            let receiver = Receiver {
                dispatcher: ctx.dispatcher,
                access: ctx.access,
                topic_attribute: self.config.topic_attribute.into(),
                max_body_size: self.config.max_body_size,
            };
            let stop = ctx.shutdown.cancelled_owned();
            let limits = switchboard_http::Limits {
                drain,
                hosts: switchboard_http::Hosts::Loopback(Arc::new([])),
                ..Default::default()
            };
            switchboard_http::serve(listener, receiver, limits, stop).await;
            Ok(())
        })
    }
}

impl switchboard_http::Handler<Full<Bytes>> for Receiver {
    type Body = Full<Bytes>;

    async fn call(&self, req: Request<RequestBody>, _: SocketAddr, _: Links<Full<Bytes>>) -> Response<Full<Bytes>> {
        self.receive(req).await
    }
}

/// An HTTP request's event: its outcome is the answer (200 once delivered
/// or dead-lettered, 503 with Retry-After to redeliver), so there is
/// nothing else to settle.
struct Answer;

impl Settle for Answer {
    async fn settle(self, _: Outcome) {}
}

/// The answer once every event has settled.
#[derive(Serialize)]
struct Summary {
    delivered: usize,
    dead_lettered: usize,
}

fn reply(status: StatusCode, message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(message.into()));
    *res.status_mut() = status;
    let content_type = if status.is_success() { "application/json" } else { "text/plain; charset=utf-8" };
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// An answer the sender should retry after a second.
fn retry_later(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut res = reply(status, message);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

impl Receiver {
    async fn receive(&self, req: Request<RequestBody>) -> Response<Full<Bytes>> {
        if !self.access.allows(req.headers()) {
            let mut res = reply(StatusCode::UNAUTHORIZED, "credentials required (hub.auth)\n");
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(self.access.challenge()));
            return res;
        }
        if req.method() != http::Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "CloudEvents are POSTed\n");
        }
        let (parts, body) = req.into_parts();
        let body = match self.read_body(&parts.headers, body).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        let mut events = match parse(&parts.headers, body, &self.topic_attribute) {
            Ok(events) => events,
            Err(e) => return reply(StatusCode::BAD_REQUEST, e + "\n"),
        };
        // Trace context travels in its own headers, beside the CloudEvent, or
        // in the event's Distributed Tracing extension (`ce-traceparent`);
        // the request's wins, as the hop that carried it.
        for e in &mut events {
            for name in &TRACE_CONTEXT {
                let value = match parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                    Some(v) => Some(v.to_string()),
                    None => e.cloudevent.as_ref().and_then(|c| c.extensions.get(name.as_str()).cloned()),
                };
                if let Some(value) = value {
                    e.headers.push((name.to_string(), value));
                }
            }
        }
        // A batch larger than the hub's admission limit could never be
        // admitted: refuse it for what it is.
        let max = self.dispatcher.max_pending();
        if events.len() > max {
            let message = format!(
                "batch of {} events is over hub.max_pending ({max}), the most the hub admits at once; send smaller batches\n",
                events.len()
            );
            return reply(StatusCode::PAYLOAD_TOO_LARGE, message);
        }
        // The sender has the answer: an event nobody subscribes to is
        // refused, not written to the dead letters (which anyone who can
        // send could fill). A batch is admitted whole or not at all.
        let unrouted = self.dispatcher.unrouted(&events);
        if !unrouted.is_empty() {
            let message = format!(
                "no function subscribes to {unrouted:?} (the events' {:?} attribute, cloudevents.topic_attribute); \
                 nothing was delivered\n",
                self.topic_attribute
            );
            return reply(StatusCode::NOT_FOUND, message);
        }
        // A paused function's events are not taken: the sender keeps them
        // and sends them again (HTTP cannot be held until the resume).
        let paused = self.dispatcher.paused(&events);
        if !paused.is_empty() {
            let message = format!("a function subscribed to {paused:?} is paused; send again after it is resumed\n");
            return retry_later(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        let mut tickets = Vec::with_capacity(events.len());
        for e in &events {
            match self.dispatcher.try_ticket(e) {
                Some(t) => tickets.push(t),
                None => {
                    let busy = "the hub has too many events in flight; retry later\n";
                    return retry_later(StatusCode::TOO_MANY_REQUESTS, busy.into());
                }
            }
        }
        let deliveries = tickets.into_iter().zip(events).map(|(ticket, event)| ticket.deliver(event, Answer));
        let outcomes = futures_util::future::join_all(deliveries).await;
        let failed: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Redeliver { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            return retry_later(StatusCode::SERVICE_UNAVAILABLE, format!("not delivered: {}\n", failed.join("; ")));
        }
        let delivered = outcomes.iter().filter(|o| **o == Outcome::Delivered).count();
        let summary = Summary { delivered, dead_lettered: outcomes.len() - delivered };
        let status = if self.dispatcher.asynchronous() { StatusCode::ACCEPTED } else { StatusCode::OK };
        reply(status, serde_json::to_vec(&summary).expect("a summary serializes"))
    }

    /// The whole body, or 413 when it is over `max_body_size` (refused
    /// before reading when its Content-Length says so).
    async fn read_body(&self, headers: &http::HeaderMap, body: RequestBody) -> Result<Bytes, Response<Full<Bytes>>> {
        let limit = self.max_body_size;
        let too_large =
            || reply(StatusCode::PAYLOAD_TOO_LARGE, format!("body over cloudevents.max_body_size ({limit} bytes)\n"));
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match Limited::new(body, limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(reply(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n"))),
        }
    }
}

/// The events of one request, in any of the three modes, or what is wrong
/// with it. The topic of each is its `topic_attribute`.
pub fn parse(headers: &http::HeaderMap, body: Bytes, topic_attribute: &str) -> Result<Vec<Event>, String> {
    let batch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/cloudevents-batch+json"));
    let structured = !batch
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/cloudevents+json"));
    // The SDK re-serialises JSON data (keys reordered, spaces dropped), which
    // breaks a signature or hash over the payload: keep the bytes as sent.
    let (parsed, raw): (Vec<cloudevents::Event>, Vec<Option<Box<RawValue>>>) = if batch {
        let events = serde_json::from_slice(&body).map_err(|e| format!("invalid CloudEvents batch: {e}"))?;
        let raw: Vec<RawData> = serde_json::from_slice(&body).map_err(|e| format!("invalid CloudEvents batch: {e}"))?;
        (events, raw.into_iter().map(|r| r.data).collect())
    } else {
        let raw = if structured { serde_json::from_slice::<RawData>(&body).ok().and_then(|r| r.data) } else { None };
        let event = cloudevents::binding::http::to_event(headers, body.into()).map_err(|e| match e {
            cloudevents::message::Error::WrongEncoding {} => NOT_A_CLOUDEVENT.to_string(),
            e => format!("invalid CloudEvent: {e}"),
        })?;
        (vec![event], vec![raw])
    };
    parsed.into_iter().zip(raw).map(|(ce, raw)| convert(ce, raw, topic_attribute)).collect()
}

/// The `data` member of a structured event, as it was written.
#[derive(Deserialize)]
struct RawData {
    data: Option<Box<RawValue>>,
}

fn convert(mut ce: cloudevents::Event, raw: Option<Box<RawValue>>, topic_attribute: &str) -> Result<Event, String> {
    let extensions: std::collections::BTreeMap<String, String> =
        ce.iter_extensions().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let attrs = CloudEventAttrs {
        id: ce.id().to_string(),
        source: ce.source().to_string(),
        ty: ce.ty().to_string(),
        specversion: ce.specversion().to_string(),
        subject: ce.subject().map(String::from),
        time: ce.time().map(|t| t.to_rfc3339()),
        dataschema: ce.dataschema().map(|u| u.to_string()),
        extensions,
    };
    // The SDK accepts empty ones; the specification requires all three.
    for (name, value) in [("id", &attrs.id), ("source", &attrs.source), ("type", &attrs.ty)] {
        if value.is_empty() {
            return Err(format!(
                "event {:?}: the {name} attribute is empty; CloudEvents requires a non-empty {name}",
                attrs.id
            ));
        }
    }
    let topic = match topic_attribute {
        "type" => Some(attrs.ty.clone()),
        "source" => Some(attrs.source.clone()),
        "subject" => attrs.subject.clone(),
        ext => attrs.extensions.get(ext).cloned(),
    }
    .filter(|t| !t.is_empty())
    .ok_or_else(|| {
        format!(
            "event {} has no attribute {topic_attribute:?}, which names the topic (cloudevents.topic_attribute)",
            attrs.id
        )
    })?;
    let (content_type, _, data) = ce.take_data();
    let payload = match data {
        None => Bytes::new(),
        Some(Data::Binary(b)) => Bytes::from(b),
        Some(Data::String(s)) => Bytes::from(s),
        Some(Data::Json(v)) => match raw {
            Some(raw) => Bytes::from(raw.get().to_string()),
            None => Bytes::from(v.to_string()),
        },
    };
    Ok(Event {
        id: attrs.id.clone(),
        topic,
        key: attrs.extensions.get("partitionkey").cloned(),
        content_type,
        payload,
        cloudevent: Some(attrs),
        ..Default::default()
    })
}
