//! The accept loop every Switchboard server runs, with its bounds.

use crate::Links;
use crate::body::RequestBody;
use crate::guard::loopback_host;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What each connection's requests are handed to.
pub trait Handler<B>: Clone + Send + Sync + 'static {
    type Body: Body<Data = Bytes> + Send + 'static;
    fn call(
        &self,
        req: http::Request<RequestBody>,
        peer: SocketAddr,
        links: Links<B>,
    ) -> impl Future<Output = http::Response<Self::Body>> + Send;
}

/// Which `Host` names a server answers.
#[derive(Clone, Debug, Default)]
pub enum Hosts {
    /// Any (a server that proxies requests addressed to others, the watchdog).
    #[default]
    Any,
    /// On a loopback bind, loopback names and these only; on any other
    /// bind, any. Protects a local API from DNS rebinding.
    Loopback(Arc<[String]>),
}

/// The bounds of one server. Every one has a default that suits a server
/// on one machine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest wait for a request head, from the connection's start or the
    /// end of the previous response: it is also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// The most time a request body may keep its reader waiting, all
    /// waits together: a body sent a byte at a time ends when it is spent.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog,
    /// but for a few kept for probes ([`PROBES`]).
    pub max_connections: usize,
    /// Connections one client address may hold at once; one more is
    /// answered 503 and closed, so one client cannot take every place.
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers), in bytes; 431 beyond it.
    pub max_header_size: usize,
    /// Most header fields in one request; 431 beyond it. Up to 100 costs
    /// nothing (hyper parses them on the stack); more are allocated per request.
    pub max_headers: usize,
    /// How long requests in flight may take to finish at shutdown.
    pub drain: Duration,
    pub hosts: Hosts,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_client: 1024,
            max_header_size: MAX_HEADER_SIZE,
            max_headers: MAX_HEADERS,
            drain: Duration::from_secs(30),
            hosts: Hosts::Any,
        }
    }
}

/// The default bounds of a request head: what docs/security.md states.
pub const MAX_HEADER_SIZE: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;

/// Connections taken past `max_connections`, which answer only [`PROBES`]:
/// health checks and metrics keep answering while clients hold every
/// place (a drip of slow requests), so an orchestrator does not kill a
/// server that is only busy, and its operator can see why.
pub const PROBE_RESERVE: usize = 8;

/// The paths a reserved connection answers: health, readiness and metrics
/// of every Switchboard server (the watchdog's are under `/_/`).
pub const PROBES: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/_/health", "/_/ready"];

/// Accept errors (out of file descriptors, above all) are retried after a
/// growing pause instead of at once, which would spin a core.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Accepts HTTP/1.1 connections until `shutdown` resolves, then lets the
/// requests in flight finish within `limits.drain`.
pub async fn serve<B, H>(listener: TcpListener, handler: H, limits: Limits, shutdown: impl Future<Output = ()>)
where
    B: Send + 'static,
    H: Handler<B>,
    <H::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The head's size is checked once it is parsed, so the limit is
        // exact whatever the reads brought in; the buffer bound stops a
        // head that never ends.
        .max_header_size(limits.max_header_size)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_size.max(8192));
    let allowed: Option<Arc<[String]>> = match &limits.hosts {
        Hosts::Loopback(also) if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) => Some(also.clone()),
        _ => None,
    };
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(PROBE_RESERVE));
    let clients = Clients::new(limits.max_connections_per_client);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    tokio::pin!(shutdown);
    loop {
        // A place first, so connections past every place wait in the backlog
        // instead of taking memory and descriptors.
        let (permit, probes_only) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => (permit, false),
            permit = reserve.clone().acquire_owned() => (permit, true),
        };
        let permit = permit.expect("never closed");
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, pause = ?backoff, "cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        backoff = ACCEPT_BACKOFF.0;
        let Some(client) = clients.admit(peer.ip()) else {
            tracing::debug!(%peer, limit = limits.max_connections_per_client, "refused a connection: its address holds its limit");
            // Unread, unawaited: a client sending slowly gets no more of
            // this server's time than the one write its socket takes.
            let _ = stream.try_write(TOO_MANY_FROM_CLIENT);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let links = Links::<B>::default();
        let (handler, allowed, body_timeout) = (handler.clone(), allowed.clone(), limits.body_timeout);
        let max_connections = limits.max_connections;
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let (handler, links, allowed) = (handler.clone(), links.clone(), allowed.clone());
            async move {
                if let Some(also) = &allowed
                    && !loopback_host(req.headers(), also)
                {
                    return Ok::<_, Infallible>(misdirected(&req));
                }
                if probes_only && !PROBES.contains(&req.uri().path()) {
                    return Ok(at_capacity(max_connections));
                }
                let (parts, body) = req.into_parts();
                let (body, finished) = RequestBody::new(body, body_timeout);
                let mut res = handler.call(http::Request::from_parts(parts, body), peer, links).await;
                // An answer given before the request body was read (404,
                // 413, 503) ends the connection: say so, or the client's
                // next request on it fails. A reserved place serves one
                // request, so it is free for the next probe.
                if probes_only || !finished.load(Ordering::Acquire) {
                    res.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(res.map(Either::Left))
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop((permit, client));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(drain = ?limits.drain, "requests still in flight after the drain limit; stopping anyway");
    }
}

/// What a connection past its address's limit is told before it is closed.
const TOO_MANY_FROM_CLIENT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 68\r\n\r\n\
this address holds its most connections (max_connections_per_client)";

/// The connections each client address holds, within a limit.
#[derive(Clone)]
struct Clients {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One connection's place in its address's count, given back on drop.
struct ClientPlace {
    clients: Clients,
    ip: IpAddr,
}

impl Clients {
    fn new(limit: usize) -> Self {
        Self { held: Default::default(), limit: limit.max(1) }
    }

    fn admit(&self, ip: IpAddr) -> Option<ClientPlace> {
        let mut held = self.held.lock().expect("clients lock");
        let n = held.entry(ip).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientPlace { clients: self.clone(), ip })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut held = self.clients.held.lock().expect("clients lock");
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// The answer on a reserved connection to anything but a probe.
fn at_capacity<B>(max_connections: usize) -> Response<Either<B, Full<Bytes>>> {
    let message = format!("this server is serving its most connections ({max_connections}, max_connections); retry\n");
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    res.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    res
}

fn misdirected<B>(req: &http::Request<Incoming>) -> Response<Either<B, Full<Bytes>>> {
    let host = req.headers().get(http::header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let message = format!(
        "refused Host {host:?}: this server listens on loopback and answers only localhost, 127.0.0.1 and [::1] \
         (a guard against DNS rebinding); add other names to allowed_hosts\n"
    );
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *res.status_mut() = StatusCode::MISDIRECTED_REQUEST;
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// An axum router as a [`Handler`]: for servers with several routes and no
/// upstream connections (the hub's and the queue-worker's ports).
#[derive(Clone)]
pub struct Routes(pub axum::Router);

impl Handler<()> for Routes {
    type Body = axum::body::Body;

    async fn call(&self, req: http::Request<RequestBody>, _: SocketAddr, _: Links<()>) -> Response<Self::Body> {
        use tower::ServiceExt;
        match self.0.clone().oneshot(req.map(axum::body::Body::new)).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}
