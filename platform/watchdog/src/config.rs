//! Watchdog settings, read from the environment with of-watchdog's names.

use openfaas::{InvalidSetting, parse_duration};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A process per request; the request body is piped to stdin and stdout
    /// is streamed back as it is written.
    Streaming,
    /// A process per request; stdout is buffered and the exit status decides
    /// the response code.
    Serializing,
    /// One long-running process serving HTTP at `upstream_url`.
    Http,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub fprocess: Vec<String>,
    pub mode: Mode,
    pub upstream_url: Option<String>,
    pub listen: SocketAddr,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub exec_timeout: Duration,
    pub healthcheck_interval: Duration,
    pub max_inflight: usize,
    pub content_type: String,
    pub suppress_lock: bool,
    /// Largest request body a fork mode buffers (serializing), in bytes.
    pub max_request_size: usize,
    /// Largest output a serializing function may write; past it the
    /// process is killed and the caller told why.
    pub max_response_size: usize,
    /// Largest request head, in bytes (431 beyond it).
    pub max_header_size: usize,
    /// Most header fields in one request (431 beyond it).
    pub max_headers: usize,
}

/// Default for both body bounds: the gateway's own request limit.
const MAX_BODY: usize = 64 * 1024 * 1024;

impl Config {
    /// Reads the settings from a variable lookup (the process environment in
    /// production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidSetting> {
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k));
        let duration = |key: &str, default: Duration| match get(key) {
            Some(v) if !v.trim().is_empty() => parse_duration(key, &v),
            _ => Ok(default),
        };

        let mode = match get("mode").as_deref().map(str::trim) {
            None | Some("") | Some("streaming") => Mode::Streaming,
            Some("serializing") => Mode::Serializing,
            Some("http") => Mode::Http,
            Some(other) => {
                return Err(InvalidSetting::new("mode", other, "one of streaming, serializing, http"));
            }
        };
        let fprocess: Vec<String> = first(&["fprocess", "function_process"])
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        if fprocess.is_empty() {
            return Err(InvalidSetting::new("fprocess", "", "the command that runs the function, e.g. `cat`"));
        }
        let upstream_url = first(&["upstream_url", "http_upstream_url"]);
        if mode == Mode::Http {
            match &upstream_url {
                Some(u) if u.starts_with("http://") => {}
                Some(u) => return Err(InvalidSetting::new("upstream_url", u, "an http:// URL")),
                None => {
                    return Err(InvalidSetting::new("upstream_url", "", "an http:// URL (required in http mode)"));
                }
            }
        }
        let port = match get("port") {
            Some(p) => p.trim().parse::<u16>().map_err(|_| InvalidSetting::new("port", p, "a TCP port number"))?,
            None => 8080,
        };
        let bind = get("bind_address").unwrap_or_else(|| "0.0.0.0".into());
        let listen = format!("{bind}:{port}")
            .parse()
            .map_err(|_| InvalidSetting::new("bind_address", bind, "an IP address such as 127.0.0.1"))?;
        let write_timeout = duration("write_timeout", Duration::from_secs(30))?;
        if write_timeout.is_zero() {
            return Err(InvalidSetting::new("write_timeout", "0", "a duration above zero"));
        }
        let max_inflight = match get("max_inflight") {
            Some(v) => {
                v.trim().parse().map_err(|_| InvalidSetting::new("max_inflight", v, "a whole number (0 = no limit)"))?
            }
            None => 0,
        };
        let suppress_lock = match get("suppress_lock").as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(InvalidSetting::new("suppress_lock", other, "true or false"));
            }
        };
        let count = |key: &str, default: usize, expected: &'static str| match get(key) {
            Some(v) => {
                v.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| InvalidSetting::new(key, v, expected))
            }
            None => Ok(default),
        };
        let size = |key: &str, default: usize| count(key, default, "a size in bytes above 0");
        Ok(Self {
            max_request_size: size("max_request_size", MAX_BODY)?,
            max_response_size: size("max_response_size", MAX_BODY)?,
            max_header_size: size("max_header_size", switchboard_http::MAX_HEADER_SIZE)?,
            max_headers: count("max_headers", switchboard_http::MAX_HEADERS, "a whole number above 0")?,
            fprocess,
            mode,
            upstream_url,
            listen,
            read_timeout: duration("read_timeout", Duration::from_secs(30))?,
            write_timeout,
            exec_timeout: duration("exec_timeout", Duration::from_secs(30))?,
            healthcheck_interval: duration("healthcheck_interval", write_timeout)?,
            max_inflight,
            content_type: get("content_type").unwrap_or_else(|| "application/octet-stream".into()),
            suppress_lock,
        })
    }

    pub fn from_env() -> Result<Self, InvalidSetting> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, InvalidSetting> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_match_of_watchdog() {
        let c = cfg(&[("fprocess", "cat")]).unwrap();
        assert_eq!(c.mode, Mode::Streaming);
        assert_eq!(c.exec_timeout, Duration::from_secs(30));
        assert_eq!(c.healthcheck_interval, c.write_timeout);
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn errors_name_the_variable() {
        for (pairs, key) in [
            (vec![("fprocess", "cat"), ("mode", "fast")], "mode"),
            (vec![], "fprocess"),
            (vec![("fprocess", "node"), ("mode", "http")], "upstream_url"),
            (vec![("fprocess", "cat"), ("exec_timeout", "eventually")], "exec_timeout"),
            (vec![("fprocess", "cat"), ("max_inflight", "-1")], "max_inflight"),
            (vec![("fprocess", "cat"), ("max_response_size", "lots")], "max_response_size"),
        ] {
            let err = cfg(&pairs).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
