//! The accept loop every Switchboard server runs, with its bounds.

use crate::Links;
use crate::body::RequestBody;
use crate::guard::loopback_host;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    /// Longest wait for the next piece of a request body being read.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request head (request line and headers); 431 beyond it.
    pub max_header_size: usize,
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
            max_header_size: 64 * 1024,
            drain: Duration::from_secs(30),
            hosts: Hosts::Any,
        }
    }
}

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
        .max_buf_size(limits.max_header_size.max(8192));
    let allowed: Option<Arc<[String]>> = match &limits.hosts {
        Hosts::Loopback(also) if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) => Some(also.clone()),
        _ => None,
    };
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
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
        let _ = stream.set_nodelay(true);
        let links = Links::<B>::default();
        let (handler, allowed, body_timeout) = (handler.clone(), allowed.clone(), limits.body_timeout);
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let (handler, links, allowed) = (handler.clone(), links.clone(), allowed.clone());
            async move {
                if let Some(also) = &allowed
                    && !loopback_host(req.headers(), also)
                {
                    return Ok::<_, Infallible>(misdirected(&req));
                }
                let (parts, body) = req.into_parts();
                let (body, finished) = RequestBody::new(body, body_timeout);
                let mut res = handler.call(http::Request::from_parts(parts, body), peer, links).await;
                // An answer given before the request body was read (404,
                // 413, 503) ends the connection: say so, or the client's
                // next request on it fails.
                if !finished.load(Ordering::Acquire) {
                    res.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(res.map(Either::Left))
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(drain = ?limits.drain, "requests still in flight after the drain limit; stopping anyway");
    }
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
