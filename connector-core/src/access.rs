//! Who may use the hub's own endpoints: `/metrics`, `POST /refresh` and the
//! CloudEvents receiver (`hub.auth`). Probes (`/healthz`, `/readyz`) stay
//! open so an orchestrator can check the hub without credentials.

use openfaas::Credentials;
use openfaas::auth::{constant_time_eq, scheme_param};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `hub.auth` setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who can reach the ports (loopback by default).
    #[default]
    Off,
    /// HTTP basic auth with the credentials in `hub.secret_mount_path`
    /// (under `switchboard up`, the gateway's).
    Basic,
    /// `Authorization: Bearer <token>`, the token read from `hub.token_file`.
    Token,
}

#[derive(Clone, Debug)]
pub enum Access {
    Open,
    Basic(Credentials),
    Token(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Secret(#[from] openfaas::auth::MissingSecret),
    #[error("hub.auth is token but hub.token_file is not set")]
    NoTokenFile,
    #[error("cannot read hub.token_file {0}: {1}")]
    TokenUnreadable(String, std::io::Error),
    #[error("hub.token_file {0} is empty; a token of nothing would let anyone in")]
    TokenEmpty(String),
}

impl Access {
    pub fn new(mode: &AuthMode, secret_mount_path: &Path, token_file: Option<&PathBuf>) -> Result<Self, AccessError> {
        Ok(match mode {
            AuthMode::Off => Access::Open,
            AuthMode::Basic => Access::Basic(Credentials::from_secret_mount(secret_mount_path)?),
            AuthMode::Token => {
                let path = token_file.ok_or(AccessError::NoTokenFile)?;
                let shown = path.display().to_string();
                let token =
                    std::fs::read_to_string(path).map_err(|e| AccessError::TokenUnreadable(shown.clone(), e))?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(AccessError::TokenEmpty(shown));
                }
                Access::Token(token)
            }
        })
    }

    /// Whether the request's `Authorization` header lets it in.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        let header = headers.get(http::header::AUTHORIZATION);
        match self {
            Access::Open => true,
            Access::Basic(credentials) => credentials.accepts(header),
            Access::Token(token) => header
                .and_then(|v| v.to_str().ok())
                .and_then(|v| scheme_param(v, "bearer"))
                .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        }
    }

    /// The 401 answer's `WWW-Authenticate` value.
    pub fn challenge(&self) -> &'static str {
        match self {
            Access::Token(_) => "Bearer realm=\"switchboard\"",
            _ => "Basic realm=\"switchboard\"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &'static str) -> http::HeaderMap {
        [(http::header::AUTHORIZATION, http::HeaderValue::from_static(auth))].into_iter().collect()
    }

    #[test]
    fn tokens_and_credentials() {
        let token = Access::Token("t0ken".into());
        assert!(token.allows(&with("Bearer t0ken")) && token.allows(&with("bearer t0ken")));
        assert!(!token.allows(&with("Bearer t0ke")) && !token.allows(&http::HeaderMap::new()));
        let basic = Access::Basic(Credentials { user: "admin".into(), password: "s3cret".into() });
        assert!(basic.allows(&with("Basic YWRtaW46czNjcmV0")) && !basic.allows(&with("Bearer t0ken")));
        assert!(Access::Open.allows(&http::HeaderMap::new()));
    }
}
