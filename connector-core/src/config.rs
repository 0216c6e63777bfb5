use crate::access::AuthMode;
use crate::subscription::LimitSettings;
use crate::tls::TlsFiles;
use openfaas::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The `hub:` section: how the hub finds functions and delivers to them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// The OpenFaaS-compatible gateway to discover and invoke through
    /// (`switchboard up` uses its own).
    pub gateway: String,
    /// For an `https://` gateway: a CA to trust instead of the system's
    /// roots, and a client certificate for gateways that verify clients.
    pub tls: Option<TlsFiles>,
    /// Read gateway credentials from `secret_mount_path` for `/system/*`.
    pub basic_auth: bool,
    pub secret_mount_path: PathBuf,
    /// `/healthz`, `/readyz` and `/metrics` of the hub.
    pub listen: SocketAddr,
    /// Credentials for `/metrics`, `POST /refresh` and the CloudEvents
    /// receiver: `off`, `basic` (the credentials in `secret_mount_path`) or
    /// `token` (`Authorization: Bearer`, the token in `token_file`).
    pub auth: AuthMode,
    pub token_file: Option<PathBuf>,
    /// Separator of topics in the `topic` annotation.
    pub topic_delimiter: String,
    /// Only these namespaces (empty: all the gateway lists).
    pub namespaces: Vec<String>,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub refresh_interval: Duration,
    /// Longest wait for a function's answer.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub upstream_timeout: Duration,
    /// Invoke through `/async-function` (the gateway's queue retries) instead of `/function`.
    pub async_invocation: bool,
    /// `X-Callback-Url` for asynchronous invocations.
    pub callback_url: Option<String>,
    /// `Content-Type` for events that carry none.
    pub content_type: Option<String>,
    /// Events in flight across all sources before sources stop reading.
    pub max_pending: usize,
    /// Deliver events with the same key one after another.
    pub ordered_keys: bool,
    /// Defaults; `com.openfaas.retry.*` annotations override them per function.
    pub retry: RetryPolicy,
    /// Defaults; `com.switchboard.{rate_limit,burst,max_inflight}` annotations override them.
    pub limits: LimitSettings,
    /// The durable store of events that could not be delivered, browsed,
    /// replayed and purged through `/dead-letters`; by default
    /// `data/dead-letters.redb`, and `data/dead-letters-SOURCE-PORT.redb` for a
    /// `connect SOURCE` listening on PORT (one process holds a store at a
    /// time, and no two hubs on one machine listen on one port).
    pub dead_letter_store: Option<PathBuf>,
    /// A JSON-lines copy of each letter stored (none by default).
    pub dead_letter_file: Option<PathBuf>,
    /// The most bytes of letters the store (and the copy) may hold; past
    /// it letters are refused and their events left with their sources.
    pub dead_letter_max_size: u64,
    /// Where deduplication windows (`com.switchboard.dedup.window`) are
    /// kept: `memory`, this hub's own; or the store replicas share, `nats`
    /// (a JetStream key-value bucket) or `redis`, reached through that
    /// source's section, which also outlives a hub killed mid-delivery.
    pub dedup_store: DedupStore,
    /// The store `dedup_store` names, once connected to its section.
    #[serde(skip)]
    pub dedup_shared: Option<crate::shared::Shared>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupStore {
    #[default]
    Memory,
    Nats,
    Redis,
}

impl HubConfig {
    /// Where the dead letters are kept: `hub.dead_letter_store`, or the default.
    pub fn dead_letter_store(&self) -> PathBuf {
        self.dead_letter_store.clone().unwrap_or_else(|| PathBuf::from("data/dead-letters.redb"))
    }

    /// Checks what serde cannot; errors name the key (`hub.retry.max_wait`).
    pub fn validate(&self) -> Result<(), openfaas::InvalidSetting> {
        self.retry.validate().map_err(|e| openfaas::InvalidSetting { key: format!("hub.{}", e.key), ..e })?;
        if self.topic_delimiter.is_empty() {
            // Splitting on "" would make a topic of every character.
            return Err(openfaas::InvalidSetting::new(
                "hub.topic_delimiter",
                "",
                "at least one character, such as \",\"",
            ));
        }
        if self.max_pending == 0 {
            return Err(openfaas::InvalidSetting::new("hub.max_pending", "0", "at least 1 event in flight"));
        }
        if self.dead_letter_max_size == 0 {
            return Err(openfaas::InvalidSetting::new("hub.dead_letter_max_size", "0", "a size in bytes above 0"));
        }
        Ok(())
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            gateway: "http://127.0.0.1:8080".into(),
            tls: None,
            basic_auth: false,
            secret_mount_path: PathBuf::from("/run/secrets"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            auth: AuthMode::Off,
            token_file: None,
            topic_delimiter: ",".into(),
            namespaces: vec![],
            refresh_interval: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            async_invocation: false,
            callback_url: None,
            content_type: None,
            max_pending: 1024,
            ordered_keys: false,
            retry: RetryPolicy {
                attempts: 5,
                codes: vec![408, 429, 500, 502, 503, 504],
                min_wait: Duration::from_millis(100),
                max_wait: Duration::from_secs(10),
            },
            limits: LimitSettings { max_inflight: 256, ..Default::default() },
            dead_letter_store: None,
            dead_letter_file: None,
            dead_letter_max_size: 1 << 30,
            dedup_store: DedupStore::Memory,
            dedup_shared: None,
        }
    }
}
