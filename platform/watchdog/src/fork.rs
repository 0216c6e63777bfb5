//! Fork-per-request modes: the request body goes to the process's stdin,
//! its stdout becomes the response, and `Http_*` CGI variables describe the
//! request.

use crate::{Body, Config, Mode, internal, text};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub struct Runner {
    program: String,
    args: Vec<String>,
    mode: Mode,
    exec_timeout: Duration,
    content_type: http::HeaderValue,
}

impl Runner {
    pub fn new(config: &Config) -> Self {
        Self {
            program: config.fprocess[0].clone(),
            args: config.fprocess[1..].to_vec(),
            mode: config.mode,
            exec_timeout: config.exec_timeout,
            content_type: http::HeaderValue::from_str(&config.content_type)
                .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
        }
    }

    pub async fn run(&self, req: Request<Incoming>) -> Response<Body> {
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
            Mode::Streaming => self.stream(child, stdin, body),
            _ => self.serialize(child, stdin, body).await,
        }
    }

    fn command(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    async fn serialize(
        &self,
        child: tokio::process::Child,
        mut stdin: tokio::process::ChildStdin,
        body: Incoming,
    ) -> Response<Body> {
        let input = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n"));
            }
        };
        // A process may exit without reading its input; a broken pipe is then
        // not an error of ours, so the write result is ignored.
        let feed = async move {
            let _ = stdin.write_all(&input).await;
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        // On timeout the future is dropped with the child, and kill_on_drop kills it.
        let output = match tokio::time::timeout(self.exec_timeout, run).await {
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
            Ok(Err(e)) => {
                return internal(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot run `{}`: {e}\n", self.command()));
            }
            Ok(Ok(output)) => output,
        };
        if !output.stderr.is_empty() {
            // Line-based log collectors need the last line ended.
            let text = String::from_utf8_lossy(&output.stderr);
            if text.ends_with('\n') { eprint!("{text}") } else { eprintln!("{text}") }
        }
        if !output.status.success() {
            let mut msg = format!("function `{}` failed: {}\n", self.command(), output.status);
            msg.push_str(&String::from_utf8_lossy(&output.stderr));
            return text(StatusCode::INTERNAL_SERVER_ERROR, msg);
        }
        let mut res =
            Response::new(http_body_util::Full::new(Bytes::from(output.stdout)).map_err(|e| match e {}).boxed_unsync());
        res.headers_mut().insert(http::header::CONTENT_TYPE, self.content_type.clone());
        res
    }

    /// Streams stdin and stdout; the status is 200 as soon as the process
    /// starts, so a failure shows only as a truncated body (as in of-watchdog).
    fn stream(
        &self,
        mut child: tokio::process::Child,
        mut stdin: tokio::process::ChildStdin,
        mut body: Incoming,
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
        tokio::spawn(async move {
            match tokio::time::timeout(exec_timeout, child.wait()).await {
                Ok(Ok(status)) if !status.success() => {
                    tracing::warn!(%command, %status, "function failed")
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(%command, ?exec_timeout, "function exceeded exec_timeout; killing it");
                    let _ = child.kill().await;
                }
            }
        });
        let frames = futures_util::StreamExt::map(tokio_util::io::ReaderStream::new(stdout), |chunk| {
            chunk.map(Frame::data).map_err(|e| Box::new(e) as crate::BoxError)
        });
        let mut res = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
        res.headers_mut().insert(http::header::CONTENT_TYPE, self.content_type.clone());
        res
    }
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
