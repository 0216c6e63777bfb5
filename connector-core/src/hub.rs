//! Runs discovery, the hub's health and metrics endpoints, and its sources.

use crate::access::Access;
use crate::config::HubConfig;
use crate::deadletter::{DeadLetterSink, FileSink};
use crate::discovery::Discovery;
use crate::dispatcher::Dispatcher;
use crate::gateway::{Gateway, InProcess};
use crate::letters::LetterStore;
use crate::metrics::Metrics;
use crate::replay::Replayer;
use crate::source::{BrokerState, Source, SourceContext, SourceError};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Hub {
    pub config: HubConfig,
    pub access: Arc<Access>,
    /// Who may read, replay and purge dead letters: as `access`, but with
    /// `hub.auth: off` the gateway's credentials when the hub has them, for
    /// letters carry payloads and headers (an admin's API, as /system/* is).
    admin: Arc<Access>,
    pub discovery: Arc<Discovery>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    letters: LetterStore,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Secret(#[from] openfaas::auth::MissingSecret),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    Config(#[from] openfaas::InvalidSetting),
    #[error("cannot listen on {0} (hub.listen): {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("source {0}: {1}")]
    Source(&'static str, SourceError),
    #[error("{0} (hub.dead_letter_store)")]
    DeadLetters(String),
}

impl Hub {
    /// A hub that discovers and invokes through `gateway`: over HTTP at
    /// `hub.gateway`, or in-process when it runs inside the gateway.
    pub fn new(config: HubConfig, gateway: Option<InProcess>, shutdown: CancellationToken) -> Result<Self, HubError> {
        config.validate()?;
        let credentials = if config.basic_auth {
            Some(openfaas::Credentials::from_secret_mount(&config.secret_mount_path)?)
        } else {
            None
        };
        let access = Arc::new(Access::new(&config.auth, &config.secret_mount_path, config.token_file.as_ref())?);
        let admin = match (&*access, &credentials) {
            (Access::Open, Some(credentials)) => Arc::new(Access::Basic(credentials.clone())),
            _ => access.clone(),
        };
        let gateway = match gateway {
            Some(call) => Gateway::in_process(&config.gateway, call, credentials, config.upstream_timeout),
            None => Gateway::new(&config.gateway, config.tls.as_ref(), credentials, config.upstream_timeout)?,
        };
        let metrics = Arc::new(Metrics::default());
        let discovery = Arc::new(Discovery::new(&config, gateway.clone(), metrics.clone()));
        let export = config.dead_letter_file.as_ref().map(|file| FileSink::new(file, config.dead_letter_max_size));
        let letters = LetterStore::open(&config.dead_letter_store(), config.dead_letter_max_size, export)
            .map_err(HubError::DeadLetters)?;
        discovery.restore_paused(letters.paused().map_err(HubError::DeadLetters)?);
        let dispatcher = Dispatcher::new(
            &config,
            gateway,
            discovery.subscribe(),
            Arc::new(letters.clone()),
            metrics.clone(),
            shutdown.clone(),
        );
        Ok(Self { config, access, admin, discovery, dispatcher, metrics, shutdown, letters })
    }

    /// Runs until shutdown, or until a source fails for good.
    pub async fn run(self, sources: Vec<Box<dyn Source>>) -> Result<(), HubError> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| HubError::Listen(self.config.listen, e))?;
        tokio::spawn(self.discovery.clone().run(self.shutdown.clone()));
        let brokers: Vec<BrokerState> =
            sources.iter().map(|s| BrokerState::new(s.name(), self.metrics.source_connected.clone())).collect();
        let replayer = Replayer::new(self.letters.clone(), self.dispatcher.clone(), self.metrics.clone(), &sources);
        let publishers = crate::publish::publishers(&sources);
        self.dispatcher.set_publishers(publishers.clone());
        let state = Ops {
            discovery: self.discovery.clone(),
            metrics: self.metrics.clone(),
            brokers: brokers.clone(),
            letters: self.letters.clone(),
        };
        let guarded = Router::new()
            .route(
                "/metrics",
                get(|State(h): State<Ops>| async move {
                    h.dead_letters_refused();
                    let letters = h.letters.clone();
                    if let Ok(Ok((count, _))) = tokio::task::spawn_blocking(move || letters.size()).await {
                        h.metrics.dead_letters_stored.set(count as i64);
                    }
                    h.metrics.render()
                }),
            )
            .route("/topics", get(topics))
            .route(
                "/refresh",
                post(|State(h): State<Ops>| async move {
                    h.discovery.refresh_now();
                    StatusCode::ACCEPTED
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(self.access.clone(), require));
        // Letters carry payloads, a pause stops events, a publish makes
        // them: an admin's.
        let admin = crate::replay::routes(replayer)
            .merge(crate::pause::routes(self.discovery.clone(), self.letters.clone()))
            .merge(crate::publish::routes(publishers))
            .route_layer(axum::middleware::from_fn_with_state(self.admin.clone(), require));
        let ops = Router::new()
            .route("/healthz", get(|| async { "OK" }))
            .route("/readyz", get(ready))
            .merge(guarded)
            .with_state(state)
            .merge(admin);
        let limits = switchboard_http::Limits {
            hosts: switchboard_http::Hosts::Loopback(Arc::new([])),
            drain: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let stop = self.shutdown.clone().cancelled_owned();
        tokio::spawn(switchboard_http::serve(listener, switchboard_http::Routes(ops), limits, stop));
        tracing::info!(gateway = %self.config.gateway, listen = %self.config.listen, sources = ?sources.iter().map(|s| s.name()).collect::<Vec<_>>(), "hub started");

        // Sources start once functions are known; a message read earlier
        // could only be dead-lettered for want of a subscriber.
        tokio::select! {
            () = self.discovery.wait_ready() => {}
            () = self.shutdown.cancelled() => return Ok(()),
        }
        let mut running = tokio::task::JoinSet::new();
        let mut names = std::collections::HashMap::new();
        for (source, broker) in sources.into_iter().zip(brokers) {
            let name = source.name();
            let ctx = SourceContext {
                dispatcher: self.dispatcher.for_source(name),
                topics: self.discovery.subscribe(),
                broker,
                registry: self.metrics.registry().clone(),
                access: self.access.clone(),
                shutdown: self.shutdown.clone(),
            };
            let task = running.spawn(async move { source.run(ctx).await.map_err(|e| HubError::Source(name, e)) });
            names.insert(task.id(), name);
        }
        while let Some(done) = running.join_next().await {
            // A source that fails or panics stops the hub: running on without
            // it would leave its events unread and nobody told.
            let error = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => HubError::Source(names.get(&e.id()).copied().unwrap_or("source"), e.to_string().into()),
            };
            self.shutdown.cancel();
            return Err(error);
        }
        // Sources that end by themselves (or none at all) leave the hub
        // serving its port and discovery until it is told to stop.
        self.shutdown.cancelled().await;
        Ok(())
    }
}

#[derive(Clone)]
struct Ops {
    discovery: Arc<Discovery>,
    metrics: Arc<Metrics>,
    brokers: Vec<BrokerState>,
    letters: LetterStore,
}

impl Ops {
    /// Why the dead-letter store refuses letters, if it does, kept in its metric.
    fn dead_letters_refused(&self) -> Option<String> {
        let refusing = self.letters.refusing();
        self.metrics.dead_letters_refused.set(refusing.is_some() as i64);
        refusing
    }
}

async fn require(
    State(access): State<Arc<Access>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if access.allows(req.headers()) {
        return next.run(req).await;
    }
    let mut res = (StatusCode::UNAUTHORIZED, "credentials required (hub.auth)\n").into_response();
    res.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static(access.challenge()));
    res
}

/// The topic map as an operator reads it: each topic, the functions that
/// subscribe to it (paused or not), and the sources here that serve it
/// with whether each is connected to its broker.
async fn topics(State(h): State<Ops>) -> axum::Json<serde_json::Value> {
    let map = h.discovery.subscribe().borrow().clone();
    let topics: Vec<serde_json::Value> = map
        .topics()
        .into_iter()
        .map(|topic| {
            let mut functions: Vec<_> = map
                .functions
                .values()
                .filter(|s| s.topics.contains(&topic))
                .map(|s| serde_json::json!({"function": s.function, "paused": s.paused}))
                .collect();
            functions.sort_by(|a, b| a["function"].as_str().cmp(&b["function"].as_str()));
            let (only, plain) = crate::topics::qualified(&topic);
            let serves = |source: &str| match only {
                Some(only) => only == source,
                None => (plain == crate::topics::CRON_TOPIC) == (source == "cron"),
            };
            let sources: Vec<_> = h
                .brokers
                .iter()
                .map(BrokerState::report)
                .filter(|(source, _)| serves(source))
                .map(|(source, connected)| serde_json::json!({"source": source, "connected": connected}))
                .collect();
            serde_json::json!({"topic": topic, "functions": functions, "sources": sources})
        })
        .collect();
    axum::Json(serde_json::json!({ "topics": topics }))
}

/// Ready once functions are known and every broker source is connected.
async fn ready(State(h): State<Ops>) -> (StatusCode, String) {
    if !h.discovery.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first function discovery".into());
    }
    // A full dead-letter store leaves every undeliverable event unsettled:
    // nothing is lost, but nothing moves either.
    let unready: Vec<String> = h
        .brokers
        .iter()
        .filter_map(BrokerState::unready)
        .chain(h.dead_letters_refused().map(|why| format!("dead letters refused: {why}")))
        .collect();
    if unready.is_empty() {
        (StatusCode::OK, "OK".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, unready.join("; "))
    }
}
