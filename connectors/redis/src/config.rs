use connector_core::TlsFiles;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Streams with a consumer group: at least once.
    Streams,
    /// SUBSCRIBE / PSUBSCRIBE: at most once.
    Pubsub,
}

/// The `redis:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub enabled: bool,
    /// `redis://[:password@]host:port/db` or `rediss://` for TLS.
    pub url: String,
    pub mode: Mode,
    pub group: String,
    /// Unique per replica; the default is the host name, so a restarted
    /// replica finds the entries it had in flight.
    pub consumer: String,
    /// Where a new group starts: `$` (new entries) or `0` (the whole stream).
    pub start: String,
    /// The entry field that is the payload; the others become `X-Redis-Field-*` headers.
    pub payload_field: String,
    /// The entry field that is the ordering key, if any.
    pub key_field: Option<String>,
    /// Entries idle this long in another consumer's pending list are taken over.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub claim_idle: Duration,
    pub dead_letter_stream: String,
    /// Entries read, and acked, per command.
    pub batch: usize,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub block: Duration,
    /// For `rediss://`: a CA to trust instead of the web PKI roots, and a
    /// client certificate for servers that require one.
    pub tls: Option<TlsFiles>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "redis://127.0.0.1:6379".into(),
            mode: Mode::Streams,
            group: "switchboard".into(),
            consumer: connector_core::replica_name(),
            start: "$".into(),
            payload_field: "payload".into(),
            key_field: None,
            claim_idle: Duration::from_secs(30),
            dead_letter_stream: "switchboard:dead-letters".into(),
            batch: 100,
            block: Duration::from_millis(500),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid redis config: {0}")]
pub struct ConfigError(String);

impl RedisConfig {
    pub fn validate(&self) -> Result<redis::Client, ConfigError> {
        if !(self.url.starts_with("redis://")
            || self.url.starts_with("rediss://")
            || self.url.starts_with("redis+unix://"))
        {
            return Err(ConfigError(format!(
                "redis.url {:?}: expected redis://host:port[/db] or rediss:// for TLS",
                self.redacted_url()
            )));
        }
        let client = match &self.tls {
            None => redis::Client::open(self.url.as_str()),
            Some(tls) => redis::Client::build_with_tls(self.url.as_str(), self.certificates(tls)?),
        }
        .map_err(|e| ConfigError(format!("redis.url {:?}: {e}", self.redacted_url())))?;
        if !(self.start == "$" || self.start == "0") {
            return Err(ConfigError(format!(
                "redis.start {:?}: expected $ (new entries) or 0 (from the beginning)",
                self.start
            )));
        }
        if self.batch == 0 {
            return Err(ConfigError("redis.batch: expected at least 1 entry per read".into()));
        }
        if self.claim_idle < Duration::from_millis(100) {
            return Err(ConfigError(format!(
                "redis.claim_idle {:?}: expected at least 100ms, or entries in flight would be taken over at once",
                self.claim_idle
            )));
        }
        if self.group.is_empty() || self.consumer.is_empty() || self.payload_field.is_empty() {
            return Err(ConfigError("redis.group, redis.consumer and redis.payload_field must not be empty".into()));
        }
        Ok(client)
    }

    fn certificates(&self, tls: &TlsFiles) -> Result<redis::TlsCertificates, ConfigError> {
        if !self.url.starts_with("rediss://") {
            return Err(ConfigError(format!(
                "redis.tls is set, so redis.url {:?} must be rediss://",
                self.redacted_url()
            )));
        }
        let pem = tls.read("redis").map_err(ConfigError)?;
        let client_tls = pem.client.map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key });
        Ok(redis::TlsCertificates { client_tls, root_cert: pem.ca })
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &self.url[..scheme], &self.url[at + 1..]),
            _ => self.url.clone(),
        }
    }
}
