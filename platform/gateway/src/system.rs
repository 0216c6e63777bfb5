//! `/system/*`: the OpenFaaS provider API, behind basic auth when enabled.

use crate::config::Role;
use crate::provider::ProviderError;
use crate::{Shared, text};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use openfaas::{
    AsyncReport, DeleteFunctionRequest, FunctionDeployment, FunctionNamespace, FunctionStatus, LogMessage,
    ScaleServiceRequest, Secret,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::SystemTime;

pub async fn require_auth(State(gw): State<Shared>, req: Request, next: Next) -> Response {
    match &gw.credentials {
        Some(c) if !c.accepts(req.headers().get(http::header::AUTHORIZATION)) => {
            let mut res = text(StatusCode::UNAUTHORIZED, "invalid credentials");
            res.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Restricted\""));
            res
        }
        _ => next.run(req).await,
    }
}

/// The API answers no browser page of another site: a cross-site form post
/// or `fetch` would otherwise deploy a command (with auth off) or read the
/// functions' settings.
pub async fn refuse_browsers(req: Request, next: Next) -> Response {
    if switchboard_http::from_other_site(req.headers()) {
        return text(
            StatusCode::FORBIDDEN,
            "refused: a browser request from a page of another site (Origin or Sec-Fetch-Site); \
             the API answers its own origin and non-browser clients such as faas-cli and curl\n",
        );
    }
    next.run(req).await
}

impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        let status = match self {
            ProviderError::NotFound(_) | ProviderError::Missing(_) => StatusCode::NOT_FOUND,
            ProviderError::Exists(_) | ProviderError::Conflict(_) => StatusCode::CONFLICT,
            ProviderError::Invalid(_) => StatusCode::BAD_REQUEST,
            ProviderError::Unsupported(..) => StatusCode::NOT_IMPLEMENTED,
            ProviderError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        text(status, format!("{self}\n"))
    }
}

#[derive(Deserialize)]
pub struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    fn or_default(&self, gw: &Shared) -> Result<String, BadName> {
        namespace(gw, self.namespace.as_deref())
    }
}

/// A name or namespace from a request, checked once here, before any
/// provider uses it to name a file, a folder or a container: every route
/// refuses `..`, `/etc`, `a/b` and the like with the same 400.
fn checked(key: &str, value: &str) -> Result<String, BadName> {
    openfaas::check_name(key, value).map_err(BadName)?;
    Ok(value.to_string())
}

/// A name or namespace refused: 400, naming the field and what was expected.
struct BadName(openfaas::InvalidSetting);

impl IntoResponse for BadName {
    fn into_response(self) -> Response {
        text(StatusCode::BAD_REQUEST, format!("{}\n", self.0))
    }
}

/// The request's namespace (the default one when it names none), checked.
fn namespace(gw: &Shared, requested: Option<&str>) -> Result<String, BadName> {
    checked("namespace", requested.filter(|n| !n.is_empty()).unwrap_or(&gw.config.function_namespace))
}

/// Answers a refused name, or runs on with the checked one.
macro_rules! or_answer {
    ($checked:expr) => {
        match $checked {
            Ok(v) => v,
            Err(bad) => return bad.into_response(),
        }
    };
}

/// A function as the API lists it: with its invocation count, and with
/// the values of secret-looking environment variables masked.
fn listed(gw: &Shared, mut f: FunctionStatus) -> FunctionStatus {
    let ns = f.namespace.clone().unwrap_or_default();
    f.invocation_count = gw.metrics.invocation_count(&format!("{}.{ns}", f.name));
    for (key, value) in &mut f.env_vars {
        if looks_secret(key) {
            *value = MASK.into();
        } else if let Some(masked) = without_url_password(value) {
            *value = masked;
        }
    }
    f
}

const MASK: &str = "********";

/// Names of variables that usually hold credentials, in any case and
/// position (`DB_PASSWORD`, `MYSQL_PWD`, `SMTP_PASS`, `api-key`). A name
/// masked for nothing costs less than a password shown.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "pwd", "key", "secret", "token", "credential", "private", "auth"].iter().any(|w| k.contains(w))
}

/// A URL's value with the password of its user info masked
/// (`postgres://u:********@db/app`), or all of the user info when it has
/// no password part (a token as the user name); `None` when there is none.
fn without_url_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_string(),
    };
    Some(format!("{scheme}://{masked}{}", &rest[userinfo.len()..]))
}

pub async fn list(State(gw): State<Shared>, Query(q): Query<NamespaceQuery>) -> Response {
    let ns = or_answer!(q.or_default(&gw));
    Json(gw.provider.list(&ns).into_iter().map(|f| listed(&gw, f)).collect::<Vec<_>>()).into_response()
}

pub async fn get_one(State(gw): State<Shared>, Path(name): Path<String>, Query(q): Query<NamespaceQuery>) -> Response {
    let (name, ns) = (or_answer!(checked("name", &name)), or_answer!(q.or_default(&gw)));
    match gw.provider.get(&name, &ns) {
        Some(f) => Json(listed(&gw, f)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A JSON body whose errors answer 400 with serde's message (naming the
/// field and position), where axum's own `Json` answers 422. Only a body
/// sent as JSON is read: the content types a browser form may send without
/// asking first (`text/plain`, form encodings) are refused with 415.
pub struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let what = std::any::type_name::<T>().rsplit("::").next().unwrap_or("body");
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let media = content_type.and_then(|v| v.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
        if !media.is_some_and(|m| m == "application/json" || m.ends_with("+json")) {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{what}: expected Content-Type: application/json, got {}\n", content_type.unwrap_or("none")),
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| text(StatusCode::BAD_REQUEST, format!("invalid {what}: {e}\n")))
    }
}

fn accepted(result: Result<(), ProviderError>) -> Response {
    result.map_or_else(IntoResponse::into_response, |()| StatusCode::ACCEPTED.into_response())
}

/// The provider checks a deployment's names (`ReplicaProvider::validate`)
/// before anything else; the static provider deploys nothing.
pub async fn deploy(State(gw): State<Shared>, JsonBody(d): JsonBody<FunctionDeployment>) -> Response {
    accepted(gw.provider.deploy(d).await)
}

pub async fn update(State(gw): State<Shared>, JsonBody(d): JsonBody<FunctionDeployment>) -> Response {
    accepted(gw.provider.update(d).await)
}

pub async fn delete(State(gw): State<Shared>, JsonBody(d): JsonBody<DeleteFunctionRequest>) -> Response {
    let (name, ns) =
        (or_answer!(checked("functionName", &d.function_name)), or_answer!(namespace(&gw, d.namespace.as_deref())));
    accepted(gw.provider.delete(&name, &ns).await)
}

pub async fn scale(
    State(gw): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    JsonBody(req): JsonBody<ScaleServiceRequest>,
) -> Response {
    let name = or_answer!(checked("name", &name));
    let ns = or_answer!(match req.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => checked("namespace", ns),
        None => q.or_default(&gw),
    });
    accepted(gw.provider.scale(&name, &ns, req.replicas).await)
}

pub async fn namespaces(State(gw): State<Shared>) -> Json<Vec<String>> {
    Json(gw.provider.namespaces(&gw.config.function_namespace))
}

/// `GET /system/namespace/NAME`.
pub async fn get_namespace(State(gw): State<Shared>, Path(name): Path<String>) -> Response {
    let name = or_answer!(checked("namespace", &name));
    match gw.provider.namespace(&name, &gw.config.function_namespace).await {
        Some(ns) => Json(ns).into_response(),
        None => ProviderError::Missing(format!("namespace {name} not found")).into_response(),
    }
}

/// `POST /system/namespace/` creates; `PUT /system/namespace/NAME` replaces.
pub async fn create_namespace(State(gw): State<Shared>, JsonBody(ns): JsonBody<FunctionNamespace>) -> Response {
    accepted(gw.provider.put_namespace(ns, false).await)
}

pub async fn update_namespace(
    State(gw): State<Shared>,
    Path(name): Path<String>,
    JsonBody(mut ns): JsonBody<FunctionNamespace>,
) -> Response {
    ns.name = or_answer!(checked("namespace", &name));
    accepted(gw.provider.put_namespace(ns, true).await)
}

pub async fn delete_namespace(State(gw): State<Shared>, Path(name): Path<String>) -> Response {
    let name = or_answer!(checked("namespace", &name));
    accepted(gw.provider.delete_namespace(&name).await)
}

/// `GET /system/secrets?namespace=`: names, never values.
pub async fn secrets(State(gw): State<Shared>, Query(q): Query<NamespaceQuery>) -> Response {
    let ns = or_answer!(q.or_default(&gw));
    gw.provider.secrets(&ns).map_or_else(IntoResponse::into_response, |s| Json(s).into_response())
}

/// A secret's namespace, checked; its name is checked by the store, which
/// takes DNS subdomains (`db.password`) as Kubernetes does.
fn secret_namespace(gw: &Shared, s: &Secret) -> Result<String, BadName> {
    namespace(gw, s.namespace.as_deref())
}

pub async fn create_secret(State(gw): State<Shared>, JsonBody(s): JsonBody<Secret>) -> Response {
    let ns = or_answer!(secret_namespace(&gw, &s));
    accepted(gw.provider.put_secret(&ns, s, false).await)
}

pub async fn update_secret(State(gw): State<Shared>, JsonBody(s): JsonBody<Secret>) -> Response {
    let ns = or_answer!(secret_namespace(&gw, &s));
    accepted(gw.provider.put_secret(&ns, s, true).await)
}

pub async fn delete_secret(State(gw): State<Shared>, JsonBody(s): JsonBody<Secret>) -> Response {
    let ns = or_answer!(secret_namespace(&gw, &s));
    accepted(gw.provider.delete_secret(&ns, &s.name).await)
}

/// `POST /system/async-report`: an asynchronous invocation that OpenFaaS's
/// queue-worker ran counts in the gateway's metrics like a synchronous one.
pub async fn async_report(State(gw): State<Shared>, JsonBody(r): JsonBody<AsyncReport>) -> Response {
    let (name, ns) = openfaas::split_function_name(&r.function_name, &gw.config.function_namespace);
    let (label, code) = (format!("{name}.{ns}"), r.status_code.to_string());
    gw.metrics.invocations.with_label_values(&[&label, &code]).inc();
    gw.metrics.seconds.with_label_values(&[&label, &code]).observe(r.time_taken.max(0.0));
    StatusCode::ACCEPTED.into_response()
}

/// `GET /system/info`: the gateway's shape, or, for a Switchboard that is
/// the provider behind OpenFaaS's own gateway, faas-provider's flat one,
/// which that gateway reads and wraps (`gateway.role: provider`).
pub async fn info(State(gw): State<Shared>) -> Response {
    let version = openfaas::VersionInfo {
        commit_message: String::new(),
        sha: option_env!("SWITCHBOARD_GIT_SHA").unwrap_or("unknown").to_string(),
        release: env!("CARGO_PKG_VERSION").to_string(),
    };
    let provider = openfaas::ProviderInfo {
        provider: format!("switchboard-{}", gw.provider.name()),
        orchestration: gw.provider.name().to_string(),
        version: version.clone(),
    };
    match gw.config.role {
        Role::Provider => Json(provider).into_response(),
        Role::Gateway => {
            Json(openfaas::GatewayInfo { provider, version, arch: std::env::consts::ARCH.to_string() }).into_response()
        }
    }
}

pub async fn dead_letters(State(gw): State<Shared>) -> Response {
    let Some(queue) = gw.queue.clone() else {
        return text(StatusCode::NOT_FOUND, "asynchronous invocation is not enabled on this gateway\n");
    };
    match queue.dead_letters().await {
        Ok(letters) => Json(letters).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `GET /system/logs?name&namespace&tail&follow&since` as NDJSON.
pub async fn logs(State(gw): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(store) = gw.provider.logs() else {
        return text(StatusCode::NOT_IMPLEMENTED, format!("the {} provider keeps no logs\n", gw.provider.name()));
    };
    let bad = |key: &str, expected: &str| {
        text(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid query parameter `{key}`: expected {expected}\n"))
    };
    let Some(name) = q.get("name").filter(|n| !n.is_empty()) else {
        return bad("name", "the function's name");
    };
    let name = or_answer!(checked("name", name));
    let namespace = or_answer!(namespace(&gw, q.get("namespace").map(String::as_str)));
    let tail: Option<usize> = match q.get("tail") {
        None => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => return bad("tail", "a whole number"),
        },
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad("follow", "true or false"),
    };
    let since: Option<SystemTime> = match q.get("since") {
        None => None,
        Some(s) => match humantime::parse_rfc3339_weak(s) {
            Ok(t) => Some(t),
            Err(_) => return bad("since", "an RFC 3339 time such as 2026-01-01T00:00:00Z"),
        },
    };
    let after_since =
        move |m: &LogMessage| since.is_none_or(|s| humantime::parse_rfc3339_weak(&m.timestamp).is_ok_and(|t| t >= s));
    // Subscribe before reading history so no line falls between the two.
    let live = store.subscribe();
    let mut lines: Vec<LogMessage> = store.history(&name, &namespace).into_iter().filter(&after_since).collect();
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let encode = |m: &LogMessage| {
        Ok::<_, std::convert::Infallible>(Bytes::from(serde_json::to_string(m).expect("serializable") + "\n"))
    };
    let history = futures_util::stream::iter(lines.iter().map(encode).collect::<Vec<_>>());
    let body = if follow {
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |m| {
            let keep = m.ok().filter(|m| m.name == name && m.namespace == namespace);
            async move { keep.as_ref().map(encode) }
        });
        Body::from_stream(history.chain(live))
    } else {
        Body::from_stream(history)
    };
    let mut res = Response::new(body);
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_looking_names() {
        for k in [
            "DB_PASSWORD",
            "api_key",
            "GITHUB_TOKEN",
            "aws_secret_access_key",
            "Authorization",
            "KEY",
            "MYSQL_PWD",
            "SMTP_PASS",
            "PASSPHRASE",
            "api-key",
            "Client_Credentials",
        ] {
            assert!(super::looks_secret(k), "{k}");
        }
        for k in ["PATH", "mode", "RECORD_FILE", "DATABASE_URL", "fprocess"] {
            assert!(!super::looks_secret(k), "{k}");
        }
    }

    #[test]
    fn url_passwords() {
        let masked = |v: &str| super::without_url_password(v);
        assert_eq!(masked("postgres://u:pw@db:5432/app?x=1").as_deref(), Some("postgres://u:********@db:5432/app?x=1"));
        assert_eq!(masked("redis://:pw@cache:6379").as_deref(), Some("redis://:********@cache:6379"));
        assert_eq!(masked("https://ghp_token@github.com/x").as_deref(), Some("https://********@github.com/x"));
        assert_eq!(masked("amqp://u:p@ss@host/").as_deref(), Some("amqp://u:********@host/"));
        assert_eq!(masked("http://host/a@b"), None, "an @ in the path is no user info");
        assert_eq!(masked("plain value"), None);
    }
}
