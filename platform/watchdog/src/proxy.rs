//! `http` mode: start the function's server once and reverse-proxy to it.
//! Requests keep their origin-form URI and go over the downstream
//! connection's own upstream link (see `switchboard_http::Links`).

use crate::{Body, Config, Error, internal};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switchboard_http::{Links, RequestBody};
use tokio::sync::oneshot;

pub struct Upstream {
    base: String,
    authority: String,
    exec_timeout: Duration,
}

/// How long the function's server may take to start listening.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

impl Upstream {
    /// Starts `fprocess`, waits until `upstream_url` accepts connections, and
    /// returns a receiver that fires with the exit status if the process dies.
    pub async fn start(config: &Config) -> Result<(Self, oneshot::Receiver<String>), Error> {
        let base = config.upstream_url.clone().expect("validated in Config").trim_end_matches('/').to_string();
        let command = config.fprocess.join(" ");
        tracing::info!("Forking: {}, arguments: {:?}", config.fprocess[0], &config.fprocess[1..]);
        let mut child = tokio::process::Command::new(&config.fprocess[0])
            .args(&config.fprocess[1..])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn { command: command.clone(), source })?;

        let authority = base.parse::<Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string())).unwrap_or_default();
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if tokio::net::TcpStream::connect(&authority).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::UpstreamExited { command, status: status.to_string() });
            }
            if Instant::now() > deadline {
                return Err(Error::UpstreamNotReady { command, url: base, secs: STARTUP_LIMIT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            let _ = tx.send(status);
        });
        tracing::info!(%base, %command, "upstream ready");
        Ok((Self { base, authority, exec_timeout: config.exec_timeout }, rx))
    }

    pub async fn forward(&self, req: Request<RequestBody>, links: &Links<RequestBody>) -> Response<Body> {
        // A caller may shorten, never lengthen, the function's time limit.
        let timeout = req
            .headers()
            .get("x-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| openfaas::parse_duration("X-Timeout", v).ok())
            .filter(|t| *t <= self.exec_timeout)
            .unwrap_or(self.exec_timeout);
        let (mut parts, body) = req.into_parts();
        openfaas::headers::strip_hop_by_hop(&mut parts.headers);
        let req = Request::from_parts(parts, body);
        match tokio::time::timeout(timeout, links.send(&self.authority, req)).await {
            Ok(Ok(res)) => {
                let (mut parts, body) = res.into_parts();
                openfaas::headers::strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
            }
            Ok(Err(e)) => internal(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the function's upstream at {}: {e}\n", self.base),
            ),
            Err(_) => internal(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the function did not answer within {}\n", humantime::format_duration(timeout)),
            ),
        }
    }
}
