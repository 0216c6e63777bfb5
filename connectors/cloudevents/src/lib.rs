//! CloudEvents over HTTP: binary mode (`ce-*` headers), structured mode
//! (`application/cloudevents+json`) and batched mode
//! (`application/cloudevents-batch+json`). The answer waits until delivery
//! has settled: 200 (202 when the hub invokes asynchronously) once every
//! event is delivered or dead-lettered, 429 with `Retry-After` when the hub
//! is full, 503 when an event could be neither (the sender should retry),
//! 400 naming what is missing or invalid.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudevents::{AttributesReader, Data};
use connector_core::{CloudEventAttrs, Dispatcher, Event, Outcome, Source, SourceContext, SourceError};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEventsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The attribute whose value is the topic: `type` (default), `source`,
    /// `subject`, or an extension's name.
    pub topic_attribute: String,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 8082)), topic_attribute: "type".into() }
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

#[derive(Clone)]
struct Receiver {
    dispatcher: Dispatcher,
    topic_attribute: String,
}

impl Source for CloudEventsSource {
    fn name(&self) -> &'static str {
        "cloudevents"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let listen = self.config.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen} (cloudevents.listen): {e}"))?;
            tracing::info!(%listen, topic_attribute = %self.config.topic_attribute, "receiving CloudEvents over HTTP");
            let receiver = Receiver { dispatcher: ctx.dispatcher, topic_attribute: self.config.topic_attribute };
            let app = Router::new().fallback(receive).with_state(receiver);
            axum::serve(listener, app).with_graceful_shutdown(ctx.shutdown.cancelled_owned()).await?;
            Ok(())
        })
    }
}

/// The answer once every event has settled.
#[derive(Serialize)]
struct Summary {
    delivered: usize,
    dead_lettered: usize,
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn receive(State(r): State<Receiver>, method: http::Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != http::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "CloudEvents are POSTed\n");
    }
    let batch = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/cloudevents-batch+json"));
    let parsed: Result<Vec<cloudevents::Event>, String> = if batch {
        serde_json::from_slice(&body).map_err(|e| format!("invalid CloudEvents batch: {e}"))
    } else {
        cloudevents::binding::http::to_event(&headers, body.to_vec())
            .map(|e| vec![e])
            .map_err(|e| format!("invalid CloudEvent: {e}"))
    };
    let events = match parsed
        .and_then(|ces| ces.iter().map(|ce| convert(ce, &r.topic_attribute)).collect::<Result<Vec<_>, _>>())
    {
        Ok(events) => events,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e + "\n"),
    };
    let mut tickets = Vec::with_capacity(events.len());
    for e in &events {
        match r.dispatcher.try_ticket(e) {
            Some(t) => tickets.push(t),
            None => {
                let mut res =
                    reply(StatusCode::TOO_MANY_REQUESTS, "the hub has too many events in flight; retry later\n");
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return res;
            }
        }
    }
    let outcomes = futures_util::future::join_all(tickets.into_iter().zip(events).map(|(t, e)| t.dispatch(e))).await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::Retry { .. } => Some("retry later".into()),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let mut res = reply(StatusCode::SERVICE_UNAVAILABLE, format!("not delivered: {}\n", failed.join("; ")));
        res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    let delivered = outcomes.iter().filter(|o| matches!(o, Outcome::Delivered(_))).count();
    let summary = Summary { delivered, dead_lettered: outcomes.len() - delivered };
    let status = if r.dispatcher.asynchronous() { StatusCode::ACCEPTED } else { StatusCode::OK };
    (status, axum::Json(summary)).into_response()
}

fn convert(ce: &cloudevents::Event, topic_attribute: &str) -> Result<Event, String> {
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
    let payload = match ce.data() {
        None => Bytes::new(),
        Some(Data::Binary(b)) => Bytes::from(b.clone()),
        Some(Data::String(s)) => Bytes::from(s.clone()),
        Some(Data::Json(v)) => Bytes::from(v.to_string()),
    };
    Ok(Event {
        id: attrs.id.clone(),
        topic,
        key: attrs.extensions.get("partitionkey").cloned(),
        content_type: ce.datacontenttype().map(String::from),
        payload,
        cloudevent: Some(attrs),
        ..Default::default()
    })
}
