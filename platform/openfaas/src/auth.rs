//! Basic auth with OpenFaaS's secret files: `basic-auth-user` and
//! `basic-auth-password` in `secret_mount_path`, whitespace trimmed.

use base64::Engine;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read basic-auth secret {path}: {source} (basic_auth is on; put basic-auth-user and basic-auth-password in secret_mount_path)"
)]
pub struct MissingSecret {
    path: String,
    source: std::io::Error,
}

impl Credentials {
    pub fn from_secret_mount(dir: &Path) -> Result<Self, MissingSecret> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|source| MissingSecret { path: path.display().to_string(), source })
        };
        Ok(Self { user: read("basic-auth-user")?, password: read("basic-auth-password")? })
    }

    /// The `Authorization` header value a client sends.
    pub fn header_value(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// Whether an `Authorization` header carries these credentials.
    pub fn accepts(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(value) = header.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_header() {
        let c = Credentials { user: "admin".into(), password: "s3cret".into() };
        let v = http::HeaderValue::from_str(&c.header_value()).unwrap();
        assert!(c.accepts(Some(&v)));
        let wrong = Credentials { user: "admin".into(), password: "nope".into() };
        assert!(!wrong.accepts(Some(&v)));
        assert!(!c.accepts(None));
    }
}
