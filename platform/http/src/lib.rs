//! HTTP plumbing shared by every server in Switchboard (gateway, watchdog,
//! CloudEvents receiver, the hub's and queue-worker's ports).
//!
//! [`serve`] is the one accept loop, and it bounds what a client can hold:
//! connections, time to send a request head, time between pieces of a
//! body, header size. [`Links`] serve the reverse proxies on the invocation
//! path: an HTTP/1.1 connection carries one request at a time, so each
//! downstream connection keeps its own upstream connections, the hot path
//! takes no pool lock, and a slow function never holds a connection another
//! caller needs.

mod body;
mod guard;
mod server;

pub use body::{BodyTimeout, MAX_ANSWER, ReadError, RequestBody, read_whole};
pub use guard::{from_other_site, loopback_host};
pub use server::{Handler, Hosts, Limits, MAX_HEADER_SIZE, MAX_HEADERS, Routes, serve};

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};

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

/// Resolves on Ctrl-C or SIGTERM: when a server should drain and stop.
///
/// The handlers are installed when this is called, not when it is first
/// awaited: a signal that comes early (a watchdog still starting its
/// function) is kept for later instead of killing the process on the spot,
/// which left its function running under pid 1.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}
