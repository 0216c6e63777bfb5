//! `POST /publish/SOURCE?topic=T[&key=K]` on the hub's port (an admin's,
//! as `/dead-letters`): the request's body and headers sent to a topic of
//! that source's broker, as any producer would send them. The quickest way
//! to see a trigger work: the hub then receives the message like any other
//! (`switchboard publish`).

use crate::source::{Published, Publisher, Source};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Each source's publisher, by the source's name; `None` for one without
/// a broker. One each, shared by this route and replies (its connection).
pub type Publishers = Arc<BTreeMap<&'static str, Option<Arc<dyn Publisher>>>>;

/// The publishers of `sources`.
pub fn publishers(sources: &[Box<dyn Source>]) -> Publishers {
    Arc::new(sources.iter().map(|s| (s.name(), s.publisher())).collect())
}

/// Request headers that are the request's own, not the message's.
const NOT_SENT: [&str; 9] = [
    "authorization",
    "host",
    "content-length",
    "connection",
    "accept",
    "accept-encoding",
    "user-agent",
    "transfer-encoding",
    "expect",
];

#[derive(serde::Deserialize)]
struct Target {
    topic: String,
    key: Option<String>,
}

pub fn routes<S: Clone + Send + Sync + 'static>(publishers: Publishers) -> axum::Router<S> {
    axum::Router::new().route("/publish/{source}", post(publish)).with_state(publishers)
}

async fn publish(
    State(publishers): State<Publishers>,
    Path(source): Path<String>,
    Query(target): Query<Target>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = |status: StatusCode, message: String| (status, Json(json!({ "error": message }))).into_response();
    let publisher = match publishers.get(source.as_str()) {
        Some(Some(p)) => p,
        Some(None) => {
            return error(StatusCode::BAD_REQUEST, format!("{source} has no broker to publish to"));
        }
        None => {
            let here: Vec<&str> = publishers.keys().copied().collect();
            return error(StatusCode::NOT_FOUND, format!("no source {source} here (here: {})", here.join(", ")));
        }
    };
    // `kafka:orders` is the topic orders of the source kafka.
    let topic = target.topic.strip_prefix(&format!("{source}:")).unwrap_or(&target.topic).to_string();
    if topic.is_empty() {
        return error(StatusCode::BAD_REQUEST, "topic: expected the topic to publish to".into());
    }
    let headers = headers
        .iter()
        .filter(|(k, _)| !NOT_SENT.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let message = Published { body, headers, key: target.key };
    match publisher.publish(&topic, message).await {
        Ok(at) => Json(json!({ "source": source, "topic": topic, "at": at })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("{source} did not take the message: {e}")),
    }
}
