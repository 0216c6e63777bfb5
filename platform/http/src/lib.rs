//! HTTP plumbing shared by the gateway and the watchdog.
//!
//! Both are reverse proxies on the invocation path. An HTTP/1.1 connection
//! carries one request at a time, so each downstream connection keeps its
//! own upstream connections ([`Links`]): the hot path takes no pool lock,
//! and a slow function never holds a connection another caller needs.

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Upstream connections owned by one downstream connection, by authority.
pub struct Links<B>(Arc<Mutex<Vec<Link<B>>>>);

/// An open upstream connection and the `host:port` it goes to.
type Link<B> = (String, SendRequest<B>);

impl<B> Clone for Links<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B> Default for Links<B> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<B> Links<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sends `req` (origin-form URI) to `authority` (`host:port`), reusing
    /// this connection's link to it when it is still open.
    pub async fn send(&self, authority: &str, req: http::Request<B>) -> Result<http::Response<Incoming>, String> {
        let cached = {
            let mut links = self.0.lock().expect("links lock");
            links.iter().position(|(a, _)| a == authority).map(|i| links.swap_remove(i).1)
        };
        let mut sender = match cached.filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => connect(authority).await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        self.0.lock().expect("links lock").push((authority.to_string(), sender));
        Ok(res)
    }
}

async fn connect<B>(authority: &str) -> Result<SendRequest<B>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// What each connection's requests are handed to.
pub trait Handler<B>: Clone + Send + Sync + 'static {
    type Body: Body<Data = hyper::body::Bytes> + Send + 'static;
    fn call(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        links: Links<B>,
    ) -> impl Future<Output = http::Response<Self::Body>> + Send;
}

/// Accepts HTTP/1.1 connections until `shutdown` resolves, then lets the
/// requests in flight finish within `drain`.
pub async fn serve<B, H>(
    listener: TcpListener,
    handler: H,
    header_read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) where
    B: Send + 'static,
    H: Handler<B>,
    <H::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let links = Links::<B>::default();
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |req| {
                    let (handler, links) = (handler.clone(), links.clone());
                    async move { Ok::<_, Infallible>(handler.call(req, peer, links).await) }
                });
                tokio::spawn(graceful.watch(http.serve_connection(TokioIo::new(stream), service)));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "requests still in flight after the drain limit; stopping anyway");
    }
}
