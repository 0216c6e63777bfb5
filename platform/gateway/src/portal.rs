//! The portal at `/ui/`, as OpenFaaS's gateway has one: a page that lists,
//! shows, invokes and deploys functions through the gateway's own API, and
//! shows the events through the hub's (`/ui/hub/`, gateway.hub): the topic
//! map, event rates, dead letters to replay or purge, pause and resume. It
//! is behind the API's credentials (the browser asks for them), and its
//! policy lets it load only its own files and talk only to this origin.

use crate::{Shared, text};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

const PAGE: &str = include_str!("portal/index.html");
const SCRIPT: &str = include_str!("portal/portal.js");
const STYLE: &str = include_str!("portal/portal.css");

/// `GET /`: OpenFaaS's redirect to the portal.
pub async fn root() -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    res
}

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

pub async fn page() -> Response {
    file(PAGE, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

/// Largest request the portal sends the hub (a replay or purge selection).
const HUB_REQUEST_LIMIT: usize = 64 * 1024;

/// `/ui/hub/PATH`: the hub's own `/PATH`, for the portal on this origin.
/// The browser's credentials go along: the hub checks them itself.
pub async fn hub(State(gw): State<Shared>, req: Request) -> Response {
    let Some(hub) = gw.config.hub else {
        return text(StatusCode::NOT_FOUND, "no hub beside this gateway (gateway.hub)\n");
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = path.strip_prefix("/ui/hub").unwrap_or(path);
    let body = match http_body_util::Limited::new(body, HUB_REQUEST_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large for the hub\n"),
    };
    let mut forward = http::Request::builder().method(parts.method).uri(path);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            forward = forward.header(name, v);
        }
    }
    let Ok(forward) = forward.header(header::HOST, hub.to_string()).body(Body::from(body)) else {
        return text(StatusCode::BAD_REQUEST, "not a request the hub takes\n");
    };
    let links = switchboard_http::Links::<Body>::default();
    // A replay that waits for its letters' outcome takes as long as they do.
    match tokio::time::timeout(gw.config.upstream_timeout, links.send(&hub.to_string(), forward)).await {
        Ok(Ok(res)) => res.map(Body::new),
        Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("the hub at {hub} did not answer: {e}\n")),
        Err(_) => text(StatusCode::GATEWAY_TIMEOUT, format!("the hub at {hub} took too long\n")),
    }
}
