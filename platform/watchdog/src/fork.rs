//! Fork-per-request modes: the request body goes to the process's stdin,
//! its stdout becomes the response, and `Http_*` CGI variables describe the
//! request.

use crate::{Body, Config, Mode, internal, text};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited, StreamBody};
use hyper::body::Frame;
use std::process::Stdio;
use std::time::Duration;
use switchboard_http::RequestBody;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

pub struct Runner {
    program: String,
    args: Vec<String>,
    mode: Mode,
    exec_timeout: Duration,
    content_type: http::HeaderValue,
    max_request_size: usize,
    max_response_size: usize,
}

impl Runner {
    pub fn new(config: &Config) -> Self {
        Self {
            program: config.fprocess[0].clone(),
            args: config.fprocess[1..].to_vec(),
            mode: config.mode,
            exec_timeout: config.exec_timeout,
            max_request_size: config.max_request_size,
            max_response_size: config.max_response_size,
            content_type: http::HeaderValue::from_str(&config.content_type)
                .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
        }
    }

    /// Runs the function for `req`, logging the request as OpenFaaS's
    /// watchdogs do (`Forking fprocess.`, then method, path, status, size and
    /// time), since that is what their users grep `faas-cli logs` for.
    pub async fn run(&self, req: Request<RequestBody>) -> Response<Body> {
        let started = std::time::Instant::now();
        let (method, uri) = (req.method().clone(), req.uri().clone());
        tracing::info!(fprocess = %self.command(), "Forking fprocess.");
        let res = self.fork(req).await;
        let size = hyper::body::Body::size_hint(res.body()).exact().map_or("streamed".into(), |n| format!("{n}B"));
        let took = started.elapsed().as_secs_f64();
        tracing::info!("{method} {uri} - {} - ContentLength: {size} ({took:.4}s)", res.status().as_u16());
        res
    }

    async fn fork(&self, req: Request<RequestBody>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(cgi_env(&parts)).stdin(Stdio::piped()).stdout(Stdio::piped()).kill_on_drop(true);
        match self.mode {
            Mode::Streaming => command.stderr(Stdio::inherit()),
            _ => command.stderr(Stdio::piped()),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return internal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot start fprocess `{}`: {e}\n", self.command()),
                );
            }
        };
        let stdin = child.stdin.take().expect("stdin is piped");
        match self.mode {
            Mode::Streaming => self.stream(child, stdin, body).await,
            _ => self.serialize(child, stdin, body).await,
        }
    }

    fn command(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    async fn serialize(
        &self,
        mut child: tokio::process::Child,
        mut stdin: tokio::process::ChildStdin,
        body: RequestBody,
    ) -> Response<Body> {
        let input = match Limited::new(body, self.max_request_size).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                let limit = self.max_request_size;
                return internal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over max_request_size ({limit} bytes)\n"),
                );
            }
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n"));
            }
        };
        // A process may exit without reading its input; a broken pipe is then
        // not an error of ours, so the write result is ignored.
        let feed = async move {
            let _ = stdin.write_all(&input).await;
            Ok(())
        };
        let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let limit = self.max_response_size;
        let collect = futures_util::future::try_join3(read_at_most(stdout, limit), keep_head(stderr), feed);
        // On timeout the future is dropped with the child, and kill_on_drop kills it.
        let (stdout, stderr, ()) = match tokio::time::timeout(self.exec_timeout, collect).await {
            Err(_) => {
                return internal(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "function `{}` exceeded exec_timeout ({}) and was killed\n",
                        self.command(),
                        humantime::format_duration(self.exec_timeout)
                    ),
                );
            }
            Ok(Err(TooLarge)) => {
                let _ = child.kill().await;
                return internal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "function `{}` wrote more than max_response_size ({limit} bytes) and was killed\n",
                        self.command()
                    ),
                );
            }
            Ok(Ok(output)) => output,
        };
        let status = match child.wait().await {
            Ok(status) => status,
            Err(e) => {
                return internal(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot run `{}`: {e}\n", self.command()));
            }
        };
        if !stderr.is_empty() {
            // Line-based log collectors need the last line ended.
            let text = String::from_utf8_lossy(&stderr);
            if text.ends_with('\n') { eprint!("{text}") } else { eprintln!("{text}") }
        }
        if !status.success() {
            let mut msg = format!("function `{}` failed: {status}\n", self.command());
            msg.push_str(&String::from_utf8_lossy(&stderr));
            return text(StatusCode::INTERNAL_SERVER_ERROR, msg);
        }
        let mut res =
            Response::new(http_body_util::Full::new(Bytes::from(stdout)).map_err(|e| match e {}).boxed_unsync());
        res.headers_mut().insert(http::header::CONTENT_TYPE, self.content_type.clone());
        res
    }

    /// Streams stdin and stdout. The response head waits for the function's
    /// first output, as of-watchdog's does (Go writes it at the first write):
    /// until then the request body flows, so a client that sent `Expect:
    /// 100-continue` is told to continue rather than answered before it
    /// sent its body; and a function that fails before writing anything is
    /// answered 500, not an empty 200. After the head, a failure shows only
    /// as a truncated body.
    async fn stream(
        &self,
        mut child: tokio::process::Child,
        mut stdin: tokio::process::ChildStdin,
        mut body: RequestBody,
    ) -> Response<Body> {
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && stdin.write_all(&data).await.is_err()
                {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let exec_timeout = self.exec_timeout;
        let command = self.command();
        let (exited, exit) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            match tokio::time::timeout(exec_timeout, child.wait()).await {
                Ok(Ok(status)) => {
                    if !status.success() {
                        tracing::warn!(%command, %status, "function failed");
                    }
                    let _ = exited.send(status);
                }
                Ok(Err(e)) => tracing::warn!(%command, error = %e, "cannot wait for the function"),
                Err(_) => {
                    tracing::warn!(%command, ?exec_timeout, "function exceeded exec_timeout; killing it");
                    let _ = child.kill().await;
                }
            }
        });
        let mut output = tokio_util::io::ReaderStream::new(stdout);
        let first = match tokio::time::timeout(exec_timeout, output.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                return internal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read the function's output: {e}\n"),
                );
            }
            Ok(None) => match exit.await {
                Ok(status) if !status.success() => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("function `{}` failed: {status}\n", self.command()),
                    );
                }
                _ => Bytes::new(),
            },
            Err(_) => {
                return internal(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "function `{}` wrote nothing within exec_timeout ({}) and was killed\n",
                        self.command(),
                        humantime::format_duration(exec_timeout)
                    ),
                );
            }
        };
        let frames = futures_util::stream::once(async { Ok(first) })
            .chain(output)
            .map(|chunk| chunk.map(Frame::data).map_err(|e| Box::new(e) as crate::BoxError));
        let mut res = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
        res.headers_mut().insert(http::header::CONTENT_TYPE, self.content_type.clone());
        res
    }
}

/// Output over a bound.
struct TooLarge;

/// How much of a serializing function's stderr is kept for the log and the
/// error answer; the rest is read and dropped, so the process never blocks.
const STDERR_KEPT: usize = 64 * 1024;

/// All of `r`, or `TooLarge` as soon as it passes `limit` bytes.
async fn read_at_most(r: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, TooLarge> {
    let mut out = vec![];
    let _ = r.take(limit as u64 + 1).read_to_end(&mut out).await;
    if out.len() > limit { Err(TooLarge) } else { Ok(out) }
}

/// The first `STDERR_KEPT` bytes of `r`, read to its end.
async fn keep_head(mut r: impl AsyncRead + Unpin) -> Result<Vec<u8>, TooLarge> {
    let mut out = vec![];
    let mut chunk = [0u8; 8192];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..n.min(room)]);
    }
    Ok(out)
}

/// CGI variables as of-watchdog sets them: `Http_<Header>` with the
/// canonical header name and `-` as `_`, plus method, path and query.
fn cgi_env(parts: &http::request::Parts) -> Vec<(String, String)> {
    let mut env = vec![
        ("Http_Method".to_string(), parts.method.to_string()),
        ("Http_Path".to_string(), parts.uri.path().to_string()),
    ];
    if let Some(q) = parts.uri.query() {
        env.push(("Http_Query".into(), q.into()));
    }
    for name in parts.headers.keys() {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            env.push((format!("Http_{}", canonical(name.as_str())), value.to_string()));
        }
    }
    env
}

/// `x-call-id` → `X_Call_Id`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_names() {
        assert_eq!(super::canonical("content-type"), "Content_Type");
        assert_eq!(super::canonical("x-call-id"), "X_Call_Id");
    }
}
