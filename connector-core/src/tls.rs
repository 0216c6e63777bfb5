//! The `tls:` blocks of the config (`hub.tls` for an https:// gateway;
//! `nats.tls`, `redis.tls`, `mqtt.tls`): PEM files, read the same way for each.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// A CA to trust instead of the client's default roots.
    pub ca: Option<PathBuf>,
    /// A client certificate, for servers that verify clients; with `key`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The contents of [`TlsFiles`].
pub struct TlsPem {
    pub ca: Option<Vec<u8>>,
    /// Certificate and key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// The client certificate and key; an error naming `<section>.tls` when
    /// only one of them is set.
    pub fn client(&self, section: &str) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(format!("{section}.tls.cert and {section}.tls.key go together")),
        }
    }

    /// Reads the files; an error names the key (`redis.tls.ca`) and the path.
    pub fn read(&self, section: &str) -> Result<TlsPem, String> {
        let read = |key: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{section}.tls.{key} {}: {e}", path.display()))
        };
        let client = match self.client(section)? {
            Some((cert, key)) => Some((read("cert", cert)?, read("key", key)?)),
            None => None,
        };
        Ok(TlsPem { ca: self.ca.as_deref().map(|ca| read("ca", ca)).transpose()?, client })
    }
}

/// Chooses rustls's crypto provider for the process, before any TLS
/// connection: the broker clients bring both ring (async-nats) and
/// aws-lc-rs (redis), and rustls, unable to pick one, would panic at the
/// first TLS handshake. ring is the one the gateway client is built on.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let half = TlsFiles { cert: Some("c.pem".into()), ..Default::default() };
        assert_eq!(half.client("nats").unwrap_err(), "nats.tls.cert and nats.tls.key go together");
        let missing = TlsFiles { ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = missing.read("redis").err().unwrap();
        assert!(e.starts_with("redis.tls.ca /nonexistent/ca.pem: "), "{e}");
        let none = TlsFiles::default().read("mqtt").unwrap();
        assert!(none.ca.is_none() && none.client.is_none());
    }
}
