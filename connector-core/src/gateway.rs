//! The hub's one way to the gateway: discovery reads from it and
//! invocations go through it, over a keep-alive HTTP pool, or by calling it
//! in-process when the hub runs inside the gateway (`switchboard up`).

use crate::event::Event;
use crate::tls::TlsFiles;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use openfaas::{Credentials, FunctionStatus, headers as h};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_http::ReadError;

/// A gateway in this process: serves a request and returns the whole response.
pub type InProcess =
    Arc<dyn Fn(Request<Full<Bytes>>) -> BoxFuture<'static, Result<Response<Bytes>, ReadError>> + Send + Sync>;

/// An [`InProcess`] gateway from an async function.
pub fn in_process<F, Fut>(call: F) -> InProcess
where
    F: Fn(Request<Full<Bytes>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Bytes>, ReadError>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(call(req)))
}

#[derive(Clone)]
enum Transport {
    // Boxed: the client is large (hyper-rustls with every feature the workspace enables).
    Http(Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
    InProcess(InProcess),
}

#[derive(Clone)]
pub struct Gateway {
    base: String,
    transport: Transport,
    credentials: Option<Credentials>,
    timeout: Duration,
}

/// The result of one invocation attempt.
#[derive(Debug)]
pub struct Attempt {
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub error: String,
    /// No attempt could end otherwise (an answer too large to read), so
    /// none is made: the event is dead-lettered at once.
    pub last: bool,
    pub retry_after: Option<Duration>,
    pub elapsed: Duration,
}

/// The size of a request's head, for a server that refuses it (431).
struct Head {
    fields: usize,
    bytes: usize,
}

impl Head {
    fn of<B>(req: &Request<B>) -> Self {
        // The request line, each `name: value` line, and the blank line.
        let line = req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n ".len();
        let fields: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        Self { fields: req.headers().len(), bytes: line + fields + 2 }
    }
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gateway {url}: {reason}")]
pub struct GatewayError {
    pub url: String,
    pub reason: String,
}

/// How an invocation is made.
pub struct Invocation<'a> {
    pub function: &'a str,
    pub event: &'a Event,
    /// `X-Connector`, naming the source.
    pub connector: &'a str,
    /// Use `/async-function` with this `X-Callback-Url` (empty: no callback).
    pub asynchronous: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

impl Gateway {
    /// A gateway at `base` (`http://` or `https://`); `tls` overrides the
    /// system's roots and adds a client certificate (`hub.tls`).
    pub fn new(
        base: &str,
        tls: Option<&TlsFiles>,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        let base = base.trim_end_matches('/').to_string();
        let err = |reason: String| GatewayError { url: base.clone(), reason };
        let https = base.starts_with("https://");
        if !(https || base.starts_with("http://")) || url::Url::parse(&base).is_err() {
            return Err(err("expected an http:// or https:// URL such as http://127.0.0.1:8080".into()));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(tls, https).map_err(err)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Ok(Self { base, transport: Transport::Http(Box::new(client)), credentials, timeout })
    }

    /// The gateway of this process; `url` names it in logs and errors.
    pub fn in_process(url: &str, call: InProcess, credentials: Option<Credentials>, timeout: Duration) -> Self {
        let base = url.trim_end_matches('/').to_string();
        Self { base, transport: Transport::InProcess(call), credentials, timeout }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The longest wait for one invocation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` and reads the whole response.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, ReadError> {
        match &self.transport {
            Transport::Http(client) => {
                let res = client
                    .request(req)
                    .await
                    .map_err(|e| ReadError::Failed(format!("unreachable: {}", with_causes(&e))))?;
                let (parts, body) = res.into_parts();
                let body =
                    switchboard_http::read_whole(body, switchboard_http::MAX_ANSWER).await.map_err(|e| match e {
                        ReadError::Failed(e) => ReadError::Failed(format!("response body: {e}")),
                        too_large => too_large,
                    })?;
                Ok(Response::from_parts(parts, body))
            }
            Transport::InProcess(call) => call(req).await,
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.base);
        let err = |reason: String| GatewayError { url: url.clone(), reason };
        let mut req = Request::get(&url);
        if let Some(c) = &self.credentials {
            req = req.header(http::header::AUTHORIZATION, c.header_value());
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| err(e.to_string()))?;
        let res = tokio::time::timeout(self.timeout, self.send(req))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let (status, body) = (res.status(), res.into_body());
        if !status.is_success() {
            return Err(err(format!("answered {status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        serde_json::from_slice(&body).map_err(|e| err(format!("unexpected body: {e}")))
    }

    pub async fn namespaces(&self) -> Result<Vec<String>, GatewayError> {
        self.get_json("/system/namespaces").await
    }

    pub async fn functions(&self, namespace: &str) -> Result<Vec<FunctionStatus>, GatewayError> {
        let ns: String = url::form_urlencoded::byte_serialize(namespace.as_bytes()).collect();
        self.get_json(&format!("/system/functions?namespace={ns}")).await
    }

    pub async fn invoke(&self, inv: &Invocation<'_>) -> Attempt {
        let started = Instant::now();
        let event = inv.event;
        let failed = |error: String| Attempt {
            status: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error,
            last: false,
            retry_after: None,
            elapsed: started.elapsed(),
        };
        let route = if inv.asynchronous.is_some() { "async-function" } else { "function" };
        let url = format!("{}/{route}/{}", self.base, inv.function);
        let mut req = Request::post(&url);
        let headers = req.headers_mut().expect("valid builder");
        let mut set = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        // Source headers first, so the hub's own cannot be overridden or duplicated.
        for (k, v) in &event.headers {
            if let Ok(name) = HeaderName::from_bytes(k.as_bytes()) {
                set(name, v);
            }
        }
        for (name, value) in event.cloudevent.iter().flat_map(|ce| ce.headers()) {
            set(name, value);
        }
        set(HeaderName::from_static("x-topic"), &event.topic);
        set(HeaderName::from_static("x-connector"), inv.connector);
        set(HeaderName::from_static("x-message-id"), &event.id);
        set(http::header::USER_AGENT, concat!("switchboard/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = event.content_type.as_deref().or(inv.content_type) {
            set(http::header::CONTENT_TYPE, ct);
        }
        if let Some(cb) = inv.asynchronous.filter(|c| !c.is_empty()) {
            set(HeaderName::from_static(h::CALLBACK_URL), cb);
        }
        let req = match req.body(Full::new(event.payload.clone())) {
            Ok(r) => r,
            Err(e) => return failed(format!("cannot build the request to {url}: {e}")),
        };
        let head = Head::of(&req);
        let res = match tokio::time::timeout(self.timeout, self.send(req)).await {
            Err(_) => {
                return failed(format!("{url} did not answer within {}", humantime::format_duration(self.timeout)));
            }
            Ok(Err(ReadError::TooLarge(limit))) => {
                // Reading it again would end the same way: not worth a retry.
                let error = format!("{url}: the answer is over {limit} bytes, the most the hub reads; not retried");
                return Attempt { last: true, ..failed(error) };
            }
            Ok(Err(e)) => return failed(format!("{url}: {e}")),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = res.into_parts();
        let status = parts.status.as_u16();
        let answer = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
        Attempt {
            status: Some(status),
            error: match parts.status {
                s if s.is_success() => String::new(),
                // hyper's servers (the gateway's, the watchdog's) answer it bare.
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
                    "HTTP 431: the request's head, {} header fields in {} bytes, is over a server's limit \
                     (Switchboard's gateway and watchdog take gateway.max_headers, {} by default, and \
                     gateway.max_header_size, {} bytes by default); the event's headers come from its broker. {answer}",
                    head.fields,
                    head.bytes,
                    switchboard_http::MAX_HEADERS,
                    switchboard_http::MAX_HEADER_SIZE,
                ),
                _ => format!("HTTP {status}: {answer}"),
            },
            last: false,
            retry_after: parts.headers.get(http::header::RETRY_AFTER).and_then(openfaas::retry::parse_retry_after),
            headers: parts.headers,
            body,
            elapsed: started.elapsed(),
        }
    }
}

/// The TLS client for `https://` gateways: `hub.tls.ca` or the system's roots,
/// and `hub.tls.cert` with `key` when set. An `http://` gateway never uses
/// it, so the system's roots are not read for one.
fn client_tls(files: Option<&TlsFiles>, https: bool) -> Result<rustls::ClientConfig, String> {
    let pem = files.map(|f| f.read("hub")).transpose()?;
    let mut roots = rustls::RootCertStore::empty();
    match pem.as_ref().and_then(|p| p.ca.as_deref()) {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("hub.tls.ca: {e}"))?;
                roots.add(cert).map_err(|e| format!("hub.tls.ca: {e}"))?;
            }
        }
        None if https => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        None => {}
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match pem.and_then(|p| p.client) {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("hub.tls.cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("hub.tls.key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("hub.tls.cert: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// An error and its causes: hyper's client errors keep the reason (refused,
/// an unknown certificate…) in their sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}
