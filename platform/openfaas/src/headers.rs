//! Header names of the OpenFaaS wire protocol.

pub const CALL_ID: &str = "x-call-id";
pub const START_TIME: &str = "x-start-time";
pub const DURATION_SECONDS: &str = "x-duration-seconds";
pub const CALLBACK_URL: &str = "x-callback-url";
pub const FUNCTION_STATUS: &str = "x-function-status";
pub const FUNCTION_NAME: &str = "x-function-name";
pub const OPENFAAS_INTERNAL: &str = "x-openfaas-internal";
pub const SERVED_BY: &str = "x-served-by";
pub const RETRY: &str = "x-retry";
pub const RETRY_MAX: &str = "x-retry-max";

/// Hop-by-hop headers, dropped by every proxy (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(name);
    }
}
