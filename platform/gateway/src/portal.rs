//! The portal at `/ui/`, as OpenFaaS's gateway has one: a page that lists
//! the functions, invokes one and deploys one through the gateway's own
//! API. It is behind the API's credentials (the browser asks for them), and
//! its policy lets it load only its own files and talk only to this origin.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

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
