//! An OpenFaaS-compatible gateway: `/function`, `/async-function`,
//! `/system/*`, the portal at `/ui/`, `/healthz` and `/metrics`, over a
//! static, process or container provider.

pub mod config;
mod invoke;
mod logs;
pub mod metrics;
mod portal;
pub mod provider;
pub mod stack;
mod system;

pub use config::{GatewayConfig, Isolation, ProviderConfig, StaticFunction};
pub use provider::{Containers, Provider, ReplicaProvider, ReplicaSettings, Runtime, Sandbox, StaticProvider};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::{any, get, post};
use bytes::Bytes;
use openfaas::Credentials;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use switchboard_http::{Links, RequestBody};
use switchboard_queue::Queue;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub struct Gateway {
    pub config: GatewayConfig,
    pub provider: Provider,
    pub queue: Option<Arc<dyn Queue>>,
    pub metrics: metrics::Metrics,
    credentials: Option<Credentials>,
}

pub type Shared = Arc<Gateway>;

impl Gateway {
    /// A gateway whose `/system/*` requires `credentials` (none: open).
    pub fn new(
        config: GatewayConfig,
        provider: Provider,
        queue: Option<Arc<dyn Queue>>,
        credentials: Option<Credentials>,
    ) -> Self {
        Self { config, provider, queue, metrics: Default::default(), credentials }
    }

    /// Scales functions by load and idleness once a second, until `stop`.
    pub async fn autoscale(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.metrics.scaled(&self.provider.autoscale().await),
                () = &mut stop => return,
            }
        }
    }
}

pub(crate) fn text(status: http::StatusCode, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

pub fn router(gw: Shared) -> Router {
    let system = Router::new()
        .route("/system/functions", get(system::list).post(system::deploy).put(system::update).delete(system::delete))
        .route("/system/function/{name}", get(system::get_one))
        .route(
            "/system/secrets",
            get(system::secrets).post(system::create_secret).put(system::update_secret).delete(system::delete_secret),
        )
        .route("/system/namespaces", get(system::namespaces))
        .route("/system/namespace/", post(system::create_namespace))
        .route(
            "/system/namespace/{name}",
            get(system::get_namespace).put(system::update_namespace).delete(system::delete_namespace),
        )
        .route("/system/info", get(system::info))
        .route("/system/scale-function/{name}", post(system::scale))
        .route("/system/logs", get(system::logs))
        .route("/system/async/dead-letters", get(system::dead_letters))
        .route("/system/async-report", post(system::async_report))
        .route("/ui/", get(portal::page))
        .route("/ui/portal.js", get(portal::script))
        .route("/ui/portal.css", get(portal::style))
        .route("/ui/hub/{*path}", any(portal::hub))
        .route_layer(axum::middleware::from_fn_with_state(gw.clone(), system::require_auth))
        .route_layer(axum::middleware::from_fn(system::refuse_browsers));
    Router::new()
        .route("/function/{name}", any(invoke::function))
        .route("/function/{name}/", any(invoke::function))
        .route("/function/{name}/{*path}", any(invoke::function))
        .route("/async-function/{name}", any(invoke::async_function))
        .route("/async-function/{name}/", any(invoke::async_function))
        .route("/async-function/{name}/{*path}", any(invoke::async_function))
        .route("/", get(portal::root))
        .route("/ui", get(portal::root))
        .route("/healthz", get(health))
        .route("/metrics", get(render_metrics))
        .merge(system)
        .with_state(gw)
}

/// Unhealthy while the async queue cannot take requests (a full disk).
async fn health(axum::extract::State(gw): axum::extract::State<Shared>) -> Response {
    match &gw.queue {
        Some(queue) => match queue.health().await {
            Ok(()) => text(http::StatusCode::OK, "OK"),
            Err(e) => text(http::StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        None => text(http::StatusCode::OK, "OK"),
    }
}

async fn render_metrics(axum::extract::State(gw): axum::extract::State<Shared>) -> String {
    for ns in gw.provider.namespaces(&gw.config.function_namespace) {
        for f in gw.provider.list(&ns) {
            gw.metrics.service_count.with_label_values(&[&format!("{}.{ns}", f.name)]).set(f.replicas as f64);
        }
    }
    gw.metrics.render()
}

/// Serves until `shutdown` resolves, then finishes requests in flight
/// (within `upstream_timeout`).
pub async fn serve(gw: Shared, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let c = &gw.config;
    let limits = switchboard_http::Limits {
        header_read_timeout: c.read_timeout,
        body_timeout: c.read_timeout,
        max_connections: c.max_connections,
        max_connections_per_client: c.max_connections_per_client,
        max_header_size: c.max_header_size,
        max_headers: c.max_headers,
        drain: c.upstream_timeout,
        hosts: switchboard_http::Hosts::Loopback(c.allowed_hosts.clone().into()),
    };
    switchboard_http::serve(listener, App(router(gw)), limits, shutdown).await
}

/// The router, handed each connection's peer address and upstream links.
#[derive(Clone)]
struct App(Router);

impl App {
    async fn handle(&self, mut req: http::Request<Body>, peer: SocketAddr, links: Links<Body>) -> Response {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(links);
        match self.0.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

impl switchboard_http::Handler<Body> for App {
    type Body = Body;

    async fn call(&self, req: http::Request<RequestBody>, peer: SocketAddr, links: Links<Body>) -> Response {
        self.handle(req.map(Body::new), peer, links).await
    }
}

/// The gateway called from its own process, by the hub under `switchboard
/// up`: the same router (routes, auth, headers, metrics) without a loopback
/// HTTP hop, which costs 30–55 µs of CPU per event (docs/benchmarks.md).
/// Each call borrows a set of upstream links, as a connection would, so
/// connections to functions are reused.
#[derive(Clone)]
pub struct InProcess {
    app: App,
    idle: Arc<Mutex<Vec<Links<Body>>>>,
}

impl InProcess {
    pub fn new(gw: Shared) -> Self {
        Self { app: App(router(gw)), idle: Default::default() }
    }

    /// Serves `req` (its URI's path and query route it) and reads the whole response.
    pub async fn call<B>(&self, req: http::Request<B>) -> Result<http::Response<Bytes>, switchboard_http::ReadError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let links = self.idle.lock().expect("idle links lock").pop().unwrap_or_default();
        let res = self.app.handle(req.map(Body::new), SocketAddr::from(([127, 0, 0, 1], 0)), links.clone()).await;
        let (parts, body) = res.into_parts();
        let body = switchboard_http::read_whole(body, switchboard_http::MAX_ANSWER).await?;
        self.idle.lock().expect("idle links lock").push(links);
        Ok(http::Response::from_parts(parts, body))
    }
}
