//! The watchdog: an HTTP server in front of one function, compatible with
//! OpenFaaS's of-watchdog (`/_/health`, `/_/ready`, `max_inflight`, lock file,
//! drain on SIGTERM; `streaming`, `serializing` and `http` modes).

mod config;
mod fork;
mod proxy;

pub use config::{Config, Mode};

/// The identity of this crate's sources (build.rs): two binaries with the
/// same id run the same watchdog.
pub const SOURCE_ID: &str = env!("WATCHDOG_SOURCE_ID");

/// `--help` for the watchdog: its settings, all from the environment.
pub const ENV_HELP: &str = "\
Environment (of-watchdog names):
  fprocess           command to run (required), e.g. \"cat\"
  mode               streaming (default) | serializing | http
  upstream_url       the function's own HTTP server, required in http mode
  port               port to listen on (8080); bind_address (0.0.0.0)
  exec_timeout       limit on one invocation (30s); 504 when exceeded
  read_timeout       limit on reading request headers (30s)
  write_timeout      drain limit on shutdown (30s)
  healthcheck_interval  time reported unhealthy before draining on SIGTERM (= write_timeout)
  max_inflight       concurrent requests before 429 (0 = no limit)
  content_type       response Content-Type in fork modes (application/octet-stream)
  suppress_lock      do not write $TMPDIR/.lock (false)
  max_request_size, max_response_size   serializing mode's bounds in bytes (64 MiB)";

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use switchboard_http::{Links, RequestBody};
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the function process `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the upstream process `{command}` exited ({status}); the watchdog stops so that it can be restarted")]
    UpstreamExited { command: String, status: String },
    #[error("cannot stop with the supervisor: {0}")]
    Parent(String),
    #[error("the upstream process `{command}` did not accept connections at {url} within {secs}s")]
    UpstreamNotReady { command: String, url: String, secs: u64 },
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed_unsync());
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    res
}

/// An error the watchdog itself produced, marked as OpenFaaS does so that
/// retry logic can tell it from a function's own answer.
pub(crate) fn internal(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = text(status, body);
    res.headers_mut().insert(openfaas::headers::OPENFAAS_INTERNAL, http::HeaderValue::from_static("of-watchdog"));
    res
}

enum Handler {
    Fork(fork::Runner),
    Http(proxy::Upstream),
}

struct Watchdog {
    config: Config,
    handler: Handler,
    inflight: AtomicUsize,
    draining: AtomicBool,
    lock_file: Option<PathBuf>,
}

impl Watchdog {
    async fn serve(self: Arc<Self>, req: Request<RequestBody>, links: Links<RequestBody>) -> Response<Body> {
        match req.uri().path() {
            "/_/health" => return self.health(&req),
            "/_/ready" => return self.ready(&req),
            _ => {}
        }
        let in_flight = self.inflight.fetch_add(1, Ordering::AcqRel);
        let _slot = Slot(&self.inflight);
        let max = self.config.max_inflight;
        if max > 0 && in_flight >= max {
            let mut res = text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n"),
            );
            res.headers_mut()
                .insert(openfaas::headers::OPENFAAS_INTERNAL, http::HeaderValue::from_static("faas-middleware"));
            return res;
        }
        let started = std::time::Instant::now();
        let mut res = match &self.handler {
            Handler::Fork(runner) => runner.run(req).await,
            Handler::Http(upstream) => upstream.forward(req, &links).await,
        };
        let secs = format!("{:.6}", started.elapsed().as_secs_f64());
        if let Ok(v) = http::HeaderValue::from_str(&secs) {
            res.headers_mut().insert(openfaas::headers::DURATION_SECONDS, v);
        }
        res
    }

    fn healthy(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.lock_file.as_ref().is_none_or(|p| p.exists())
    }

    fn health(&self, req: &Request<RequestBody>) -> Response<Body> {
        if req.method() != http::Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        if self.healthy() { text(StatusCode::OK, "OK") } else { text(StatusCode::SERVICE_UNAVAILABLE, "") }
    }

    fn ready(&self, req: &Request<RequestBody>) -> Response<Body> {
        if req.method() != http::Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        let max = self.config.max_inflight;
        if !self.healthy() {
            text(StatusCode::SERVICE_UNAVAILABLE, "")
        } else if max > 0 && self.inflight.load(Ordering::Acquire) >= max {
            text(StatusCode::TOO_MANY_REQUESTS, "")
        } else {
            text(StatusCode::OK, "")
        }
    }
}

/// Counts one request in flight for as long as it lives.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks the kernel for SIGTERM when `parent` dies, so that a supervisor
/// killed with SIGKILL (or by the OOM killer) leaves no watchdog, and no
/// function process, holding a port. SIGTERM drains as usual.
pub fn stop_with_parent(parent: i32) -> Result<(), Error> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(|e| Error::Parent(e.to_string()))?;
    // The parent may have died before the request took effect.
    if nix::unistd::getppid().as_raw() != parent {
        return Err(Error::Parent(format!("the supervisor (pid {parent}) is already gone")));
    }
    Ok(())
}

/// What `switchboard watchdog` and `switchboard-watchdog` run: settings
/// from the environment, stopping with `parent` when one is given, until
/// SIGTERM.
pub async fn run_from_env(parent: Option<i32>) -> Result<(), BoxError> {
    if let Some(parent) = parent {
        stop_with_parent(parent)?;
    }
    run(Config::from_env()?, switchboard_http::shutdown_signal()).await?;
    Ok(())
}

/// Runs the watchdog until `shutdown` resolves, then drains: it reports
/// unhealthy for `healthcheck_interval`, stops accepting, and waits up to
/// `write_timeout` for requests in flight.
/// In `http` mode the port opens only once the upstream accepts connections,
/// so a connectable watchdog is a ready one.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let (handler, upstream_exit) = match config.mode {
        Mode::Http => {
            // Told to stop while the function starts: the function is
            // dropped with the start, and killed (kill_on_drop).
            let (upstream, exit) = tokio::select! {
                started = proxy::Upstream::start(&config) => started?,
                () = &mut shutdown => {
                    tracing::info!("stopped while the function was starting");
                    return Ok(());
                }
            };
            (Handler::Http(upstream), Some(exit))
        }
        Mode::Serializing | Mode::Streaming => (Handler::Fork(fork::Runner::new(&config)), None),
    };
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| Error::Listen { addr: config.listen, source })?;
    let lock_file = (!config.suppress_lock).then(|| std::env::temp_dir().join(".lock"));
    if let Some(path) = &lock_file {
        tracing::info!("Writing lock-file to: {}", path.display());
        if let Err(e) = std::fs::write(path, b"") {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the lock file; /_/health will report unhealthy");
        }
    }
    let watchdog = Arc::new(Watchdog {
        config: config.clone(),
        handler,
        inflight: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        lock_file: lock_file.clone(),
    });
    // of-watchdog's start lines, which its users look for.
    let mode = format!("{:?}", config.mode).to_lowercase();
    tracing::info!("Watchdog mode: {mode}\tfprocess: {:?}", config.fprocess.join(" "));
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let (read, write, hard) = (d(config.read_timeout), d(config.write_timeout), d(config.exec_timeout));
    tracing::info!("Timeouts: read: {read} write: {write} hard: {hard} health: {}", d(config.healthcheck_interval));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(config.listen.port());
    tracing::info!("Listening on port: {port}");

    let drain = async {
        shutdown.await;
        let interval = humantime::format_duration(config.healthcheck_interval);
        tracing::info!("SIGTERM: no new connections in {interval}");
        watchdog.draining.store(true, Ordering::Release);
        if let Some(path) = &lock_file {
            let _ = std::fs::remove_file(path);
        }
        tokio::time::sleep(config.healthcheck_interval).await;
    };
    let limits = switchboard_http::Limits {
        header_read_timeout: config.read_timeout,
        body_timeout: config.read_timeout,
        max_header_size: config.max_header_size,
        max_headers: config.max_headers,
        drain: config.write_timeout,
        ..Default::default()
    };
    let server = switchboard_http::serve(listener, Service(watchdog.clone()), limits, drain);
    let upstream_died = async {
        match upstream_exit {
            Some(rx) => rx.await.unwrap_or_else(|_| "unknown".into()),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = server => {
            tracing::info!("watchdog stopped");
            Ok(())
        }
        status = upstream_died => {
            if let Some(path) = &lock_file {
                let _ = std::fs::remove_file(path);
            }
            Err(Error::UpstreamExited { command: config.fprocess.join(" "), status })
        }
    }
}

#[derive(Clone)]
struct Service(Arc<Watchdog>);

impl switchboard_http::Handler<RequestBody> for Service {
    type Body = Body;

    async fn call(
        &self,
        req: Request<RequestBody>,
        _peer: std::net::SocketAddr,
        links: Links<RequestBody>,
    ) -> Response<Body> {
        self.0.clone().serve(req, links).await
    }
}
