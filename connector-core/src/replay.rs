//! Dead letters back to their functions, and the routes that browse,
//! replay and purge them on the hub's port (behind `hub.auth`).
//!
//! A replay claims its letters, then hands each to the dispatcher as the
//! event it was (body, headers, key, CloudEvent attributes, with
//! `X-Switchboard-Replay: <letter id>` added) for the function it names,
//! in id order: the hub's limits and retry policy apply, and events of one
//! key are delivered one after another. A letter delivered is removed; one
//! that fails again stays, with its new reason and attempts.

use crate::deadletter::{DeadLetter, DeadLetterSink};
use crate::dispatcher::Dispatcher;
use crate::event::Event;
use crate::letters::MAX_REPLAY;
use crate::letters::{Filter, LetterStore, Stored};
use crate::metrics::Metrics;
use crate::settle::{Outcome, Settle};
use crate::source::{BrokerLetters, Source};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The header that tells a function an event is a replay, and of which letter.
pub const REPLAY_HEADER: &str = "X-Switchboard-Replay";
/// The source label of replayed letters whose source does not run here.
const REPLAY_SOURCE: &str = "replay";

#[derive(Clone)]
pub struct Replayer {
    store: LetterStore,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    /// The sources running here, so that a letter is delivered as its source's.
    sources: Arc<[&'static str]>,
    /// Where their brokers keep dead letters of their own, by source.
    queues: Arc<BTreeMap<&'static str, Arc<dyn BrokerLetters>>>,
}

/// How a replay ended, once every letter it took is settled.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub replay: String,
    /// Letters taken (at most [`crate::letters::MAX_REPLAY`]).
    pub letters: usize,
    /// More letters match than one replay takes: replay again for them.
    pub more: bool,
    pub delivered: usize,
    /// Failed again, or not settled (the hub stopping): still in the store.
    pub failed: usize,
}

struct Progress {
    left: AtomicUsize,
    delivered: AtomicUsize,
    failed: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Progress {
    fn settled(&self, delivered: bool) {
        let count = if delivered { &self.delivered } else { &self.failed };
        count.fetch_add(1, Ordering::SeqCst);
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.done.notify_waiters();
        }
    }
}

impl Replayer {
    pub fn new(store: LetterStore, dispatcher: Dispatcher, metrics: Arc<Metrics>, sources: &[Box<dyn Source>]) -> Self {
        let queues = sources.iter().filter_map(|s| Some((s.name(), s.dead_letter_queue()?))).collect();
        let sources = sources.iter().map(|s| s.name()).collect();
        Self { store, dispatcher: dispatcher.with_key_order(true), metrics, sources, queues: Arc::new(queues) }
    }

    /// Moves the letters a broker keeps at `from` (`SOURCE:PLACE`) into the
    /// store, stored before they are removed there; their ids.
    async fn import(&self, from: &str) -> Result<Vec<u64>, Refusal> {
        let known = || self.queues.keys().map(|s| format!("{s}:")).collect::<Vec<_>>().join(", ");
        let (source, place) = from.split_once(':').filter(|(_, place)| !place.is_empty()).ok_or_else(|| {
            Refusal::BadRequest(format!("from={from}: expected SOURCE:PLACE, such as kafka:switchboard.dead-letters"))
        })?;
        let queue = self.queues.get(source).ok_or_else(|| {
            Refusal::BadRequest(format!(
                "from={from}: no source here reads dead letters from a broker of that name (here: {})",
                if self.queues.is_empty() { "none".into() } else { known() }
            ))
        })?;
        let batch =
            queue.read(place, MAX_REPLAY).await.map_err(|e| Refusal::Unavailable(format!("from={from}: {e}")))?;
        let store = self.store.clone();
        let letters = batch.letters;
        let ids = blocking(move || store.add_all(&letters)).await.map_err(Refusal::Unavailable)?;
        if let Err(e) = batch.remove.await {
            // Kept twice rather than lost: a later import brings them again.
            tracing::warn!(from, error = %e, "dead letters moved into the store could not be removed from the broker");
        }
        tracing::info!(from, letters = ids.len(), "moved a broker's dead letters into the store");
        Ok(ids)
    }

    /// Claims the letters `filter` names and replays them in a task of its
    /// own; waits for them to settle when `wait`.
    pub async fn replay(&self, filter: Filter, wait: bool) -> Result<Summary, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let store = self.store.clone();
        let claim_id = id.clone();
        let (letters, more) = tokio::task::spawn_blocking(move || store.claim(&filter, &claim_id))
            .await
            .map_err(|e| format!("the dead-letter store's task failed: {e}"))??;
        let count = letters.len();
        tracing::info!(replay = %id, letters = count, more, "replaying dead letters");
        let progress = Arc::new(Progress {
            left: AtomicUsize::new(count),
            delivered: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            done: tokio::sync::Notify::new(),
        });
        let done = progress.done.notified();
        let this = self.clone();
        let running = progress.clone();
        tokio::spawn(async move {
            // One at a time into the dispatcher, in id order: each waits for
            // its place, and a key's letters take their turns in that order.
            for stored in letters {
                this.submit(stored, running.clone()).await;
            }
        });
        if wait && count > 0 {
            done.await;
        }
        let delivered = progress.delivered.load(Ordering::SeqCst);
        let failed = progress.failed.load(Ordering::SeqCst);
        Ok(Summary { replay: id, letters: count, more, delivered, failed })
    }

    async fn submit(&self, stored: Stored, progress: Arc<Progress>) {
        let source = self.sources.iter().copied().find(|s| *s == stored.letter.source).unwrap_or(REPLAY_SOURCE);
        let function = stored.letter.function.clone().unwrap_or_default();
        let event = event_of(&stored);
        let sink = Arc::new(FailedAgain { store: self.store.clone(), id: stored.id });
        let handle =
            Replaying { store: self.store.clone(), id: stored.id, function, metrics: self.metrics.clone(), progress };
        self.dispatcher.for_source(source).with_dead_letters(sink).submit(event, handle).await;
    }
}

/// The event a letter was, marked as a replay.
fn event_of(stored: &Stored) -> Event {
    let e = &stored.letter.event;
    let payload = if e.payload_base64 {
        base64::engine::general_purpose::STANDARD.decode(&e.payload).unwrap_or_default()
    } else {
        e.payload.clone().into_bytes()
    };
    let mut headers = e.headers.clone();
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(REPLAY_HEADER));
    headers.push((REPLAY_HEADER.into(), stored.id.to_string()));
    Event {
        id: e.id.clone(),
        topic: stored.letter.topic.clone(),
        key: e.key.clone(),
        headers,
        payload: payload.into(),
        content_type: e.content_type.clone(),
        cloudevent: e.cloudevent.clone(),
        function: stored.letter.function.clone(),
        // A letter was never delivered: its id is no delivery's to repeat.
        id_made_up: false,
    }
}

/// Where a replayed letter's new failure goes: onto the letter itself.
struct FailedAgain {
    store: LetterStore,
    id: u64,
}

impl DeadLetterSink for FailedAgain {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        let (store, id) = (self.store.clone(), self.id);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.failed_again(id, &letter))
                .await
                .map_err(|e| format!("the dead-letter store's task failed: {e}"))?
        })
    }

    fn describe(&self) -> String {
        format!("dead letter {} in the {}", self.id, self.store.describe())
    }
}

/// A replayed letter's settling: removed once delivered.
struct Replaying {
    store: LetterStore,
    id: u64,
    function: String,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl Settle for Replaying {
    async fn settle(self, outcome: Outcome) {
        let (store, id) = (self.store.clone(), self.id);
        let delivered = outcome == Outcome::Delivered;
        let written = tokio::task::spawn_blocking(move || match outcome {
            Outcome::Delivered => store.delivered(id),
            // Already written back with its new failure (FailedAgain).
            Outcome::DeadLettered => Ok(()),
            Outcome::Redeliver { .. } => store.release(id),
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = written {
            // Still claimed: given back when the store is next opened.
            tracing::error!(letter = id, error = %e, "cannot record a replayed dead letter's outcome");
        }
        let counter = if delivered { &self.metrics.letters_replayed } else { &self.metrics.replay_failures };
        counter.with_label_values(&[&self.function]).inc();
        self.progress.settled(delivered);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    function: Option<String>,
    topic: Option<String>,
    source: Option<String>,
    status: Option<u16>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// A replay or purge request: letters by id, by filter, or `all`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    ids: Option<Vec<u64>>,
    function: Option<String>,
    topic: Option<String>,
    source: Option<String>,
    status: Option<u16>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    all: bool,
    /// A broker's own dead letters (`SOURCE:PLACE`), moved into the store and replayed.
    from: Option<String>,
    /// Answer once every letter is settled, with the counts.
    #[serde(default)]
    wait: bool,
}

/// The letters a replay or purge request names, and whether to wait; or
/// why the request is not one.
fn selection(body: Result<Json<Selection>, JsonRejection>) -> Result<Selected, String> {
    let Json(Selection { ids, function, topic, source, status, since, until, all, from, wait }) =
        body.map_err(|e| e.body_text())?;
    let filter = Filter { function, topic, source, status, since, until, ids };
    filter.validate()?;
    match from {
        Some(from) if filter.is_empty() && !all => return Ok(Selected { filter, from: Some(from), wait }),
        Some(from) => return Err(format!("from={from} takes every letter there: no filter, ids or all beside it")),
        None => {}
    }
    if filter.is_empty() && !all {
        return Err("name the letters: ids, a filter (function, topic, source, status, since, until), \"all\": true, \
                    or a broker's (\"from\": \"SOURCE:PLACE\")"
            .into());
    }
    Ok(Selected { filter, from: None, wait })
}

struct Selected {
    filter: Filter,
    from: Option<String>,
    wait: bool,
}

/// Why a replay was not made: the request's fault (400) or the store's or
/// broker's (503).
enum Refusal {
    BadRequest(String),
    Unavailable(String),
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable(e: String) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e)
}

/// `/dead-letters` and below.
pub fn routes<S: Clone + Send + Sync + 'static>(replayer: Replayer) -> axum::Router<S> {
    axum::Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/{id}", get(show).delete(remove))
        .route("/dead-letters/replay", post(replay))
        .route("/dead-letters/purge", post(purge))
        .with_state(replayer)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

async fn list(State(r): State<Replayer>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}; expected function, topic, source, status, since, until, after, limit"),
            );
        }
    };
    let filter = Filter {
        function: q.function,
        topic: q.topic,
        source: q.source,
        status: q.status,
        since: q.since,
        until: q.until,
        ids: None,
    };
    if let Err(why) = filter.validate() {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = r.store.clone();
    match blocking(move || store.list(&filter, q.after, limit)).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn show(State(r): State<Replayer>, Path(id): Path<u64>) -> Response {
    let store = r.store.clone();
    match blocking(move || store.get(id)).await {
        Ok(Some(letter)) => Json(letter).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => unavailable(e),
    }
}

async fn remove(State(r): State<Replayer>, Path(id): Path<u64>) -> Response {
    let store = r.store.clone();
    let filter = Filter { ids: Some(vec![id]), ..Default::default() };
    match blocking(move || store.purge(&filter)).await {
        Ok((1, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((_, 1)) => error(StatusCode::CONFLICT, format!("dead letter {id} is being replayed")),
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => unavailable(e),
    }
}

async fn replay(State(r): State<Replayer>, body: Result<Json<Selection>, JsonRejection>) -> Response {
    let Selected { mut filter, from, wait } = match selection(body) {
        Ok(selected) => selected,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if let Some(from) = from {
        match r.import(&from).await {
            Ok(ids) => filter.ids = Some(ids),
            Err(Refusal::BadRequest(why)) => return error(StatusCode::BAD_REQUEST, why),
            Err(Refusal::Unavailable(why)) => return unavailable(why),
        }
    }
    match r.replay(filter, wait).await {
        Ok(summary) => (if wait { StatusCode::OK } else { StatusCode::ACCEPTED }, Json(summary)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn purge(State(r): State<Replayer>, body: Result<Json<Selection>, JsonRejection>) -> Response {
    let filter = match selection(body) {
        Ok(Selected { from: Some(from), .. }) => {
            return error(StatusCode::BAD_REQUEST, format!("from={from}: a broker's letters are purged on the broker"));
        }
        Ok(selected) => selected.filter,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let store = r.store.clone();
    match blocking(move || store.purge(&filter)).await {
        Ok((purged, replaying)) => Json(json!({ "purged": purged, "replaying": replaying })).into_response(),
        Err(e) => unavailable(e),
    }
}
