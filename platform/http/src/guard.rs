//! What a server's own API must refuse from browsers: requests from pages
//! of other sites (cross-site request forgery), and, on a loopback bind,
//! requests addressed to a name that merely resolves to loopback (DNS
//! rebinding: a page on `evil.example` re-pointed at 127.0.0.1 sends
//! `Host: evil.example`).

use http::HeaderMap;
use http::header::{HOST, ORIGIN};
use std::net::IpAddr;

/// Whether a browser sent this request from a page of another origin. A
/// browser says so in `Sec-Fetch-Site`; older ones only send `Origin`.
/// Non-browser clients (curl, faas-cli, connectors) send neither.
pub fn from_other_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !(site == "same-origin" || site == "none");
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, authority)| authority);
    match (origin, headers.get(HOST).and_then(|h| h.to_str().ok())) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
        // `Origin: null` (sandboxed frames, file:// pages) or no Host.
        _ => true,
    }
}

/// Whether `Host` names this machine's loopback (`localhost`, a loopback
/// address) or one of `also`. A request without `Host` (HTTP/1.0, the hub
/// calling its gateway in-process) passes.
pub fn loopback_host(headers: &HeaderMap, also: &[String]) -> bool {
    let Some(host) = headers.get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || also.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn other_sites_are_told_apart() {
        assert!(!from_other_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!from_other_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(from_other_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])));
        assert!(from_other_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(from_other_site(&headers(&[("sec-fetch-site", "cross-site")])));
        // Another port of the same host is "same-site", and still another origin.
        assert!(from_other_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!from_other_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!from_other_site(&headers(&[("sec-fetch-site", "none")])));
    }

    #[test]
    fn loopback_names() {
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080", "127.1.2.3"] {
            assert!(loopback_host(&headers(&[("host", ok)]), &[]), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "10.0.0.1:8080", "localhost.evil.example"] {
            assert!(!loopback_host(&headers(&[("host", bad)]), &[]), "{bad}");
        }
        assert!(loopback_host(&headers(&[("host", "gw.internal:443")]), &["gw.internal".into()]));
        assert!(loopback_host(&HeaderMap::new(), &[]));
    }
}
