use connector_core::TlsFiles;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The `nats:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub enabled: bool,
    /// Comma-separated server URLs.
    pub url: String,
    /// Replicas of the hub share each core subject through this queue group.
    pub queue_group: String,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT and NKey).
    pub creds: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    pub jetstream: Option<JetStreamConfig>,
    /// Publish dead letters to this subject instead of the hub's file.
    pub dead_letter_subject: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "nats://127.0.0.1:4222".into(),
            queue_group: "switchboard".into(),
            token: None,
            user: None,
            password: None,
            creds: None,
            tls: None,
            jetstream: None,
            dead_letter_subject: None,
        }
    }
}

/// At-least-once delivery from a JetStream stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    pub stream: String,
    /// Subjects of the stream, when the hub creates it (it exists otherwise).
    pub subjects: Vec<String>,
    /// Durable consumer names are `<durable>-<topic>`, one per topic.
    pub durable: String,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub ack_wait: Duration,
    /// Deliveries before the server gives up; -1 = no limit (the hub
    /// dead-letters after the function's retry attempts).
    pub max_deliver: i64,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream: "SWITCHBOARD".into(),
            subjects: vec![],
            durable: "switchboard".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
        }
    }
}
