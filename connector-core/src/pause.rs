//! Pausing and resuming a function's events, on the hub's port (behind
//! `hub.auth`, or the gateway's credentials as `/dead-letters`): while a
//! function is paused the hub takes none of its events and dead-letters
//! none; they wait where their brokers keep them, or unsettled in the hub
//! (docs/hub.md says which, source by source). The annotation
//! `com.switchboard.paused: "true"` pauses too. A pause through the API is
//! kept in the hub's store, so it outlives a restart.

use crate::discovery::Discovery;
use crate::letters::LetterStore;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
struct Pauses {
    discovery: Arc<Discovery>,
    store: LetterStore,
}

/// `/functions/NAME/{pause,resume}`; `GET /topics` shows who is paused.
pub fn routes<S: Clone + Send + Sync + 'static>(discovery: Arc<Discovery>, store: LetterStore) -> axum::Router<S> {
    axum::Router::new()
        .route("/functions/{name}/pause", post(|s, n| set(s, n, true)))
        .route("/functions/{name}/resume", post(|s, n| set(s, n, false)))
        .with_state(Pauses { discovery, store })
}

async fn set(State(p): State<Pauses>, Path(name): Path<String>, paused: bool) -> Response {
    let error = |status: StatusCode, message: String| (status, Json(json!({ "error": message }))).into_response();
    let map = p.discovery.subscribe().borrow().clone();
    let function = {
        let mut found: Vec<&String> = map
            .functions
            .keys()
            .filter(|f| **f == name || f.strip_prefix(&name).is_some_and(|r| r.starts_with('.')))
            .collect();
        found.sort();
        match found.as_slice() {
            [one] => one.to_string(),
            [] => return error(StatusCode::NOT_FOUND, format!("no function {name} subscribes to a topic here")),
            many => {
                let names: Vec<&str> = many.iter().map(|f| f.as_str()).collect();
                return error(
                    StatusCode::CONFLICT,
                    format!("{name} is in several namespaces ({}): name one", names.join(", ")),
                );
            }
        }
    };
    let annotated = map
        .functions
        .get(&function)
        .is_some_and(|s| s.annotations.get(crate::subscription::PAUSED).is_some_and(|v| v.trim() == "true"));
    if !paused && annotated {
        let why = format!("{function} is paused by its annotation com.switchboard.paused; remove it to resume");
        return error(StatusCode::CONFLICT, why);
    }
    let (store, f) = (p.store.clone(), function.clone());
    let kept = tokio::task::spawn_blocking(move || store.set_paused(&f, paused)).await.map_err(|e| e.to_string());
    if let Err(e) = kept.and_then(|r| r) {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot keep the pause of {function}: {e}"));
    }
    if !p.discovery.set_paused(&function, paused).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{function}: the topic map did not show the change in time"),
        );
    }
    tracing::info!(%function, paused, "{}", if paused { "paused" } else { "resumed" });
    Json(json!({ "function": function, "paused": paused })).into_response()
}
