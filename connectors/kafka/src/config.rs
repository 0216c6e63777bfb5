use connector_core::TlsFiles;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `kafka:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub enabled: bool,
    /// Comma-separated `host:port` of some of the cluster's brokers.
    pub bootstrap_servers: String,
    /// The consumer group: replicas in one group split the partitions.
    pub group: String,
    /// Unique per replica; the host name by default.
    pub client_id: String,
    /// Static group membership (`group.instance.id` = `client_id`): a
    /// replica restarted under its name takes its partitions back at once,
    /// without a rebalance; a replica that stays away loses them after
    /// `session_timeout`.
    pub static_membership: bool,
    /// Where a group without a committed offset starts: `latest` (Kafka's
    /// default) or `earliest`.
    pub offset_reset: OffsetReset,
    /// `partition.assignment.strategy`: `range,roundrobin` (librdkafka's
    /// default) or `cooperative-sticky`.
    pub assignment: String,
    /// Which records wait for which: `key` (same key in order, other keys
    /// of a partition in parallel), `partition` (one at a time per
    /// partition) or `none`.
    pub ordering: Ordering,
    /// Offsets of settled records are committed this often, and on revoke.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub commit_interval: Duration,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub session_timeout: Duration,
    /// Records with a null value: `deliver` (empty body, `X-Kafka-Tombstone: true`) or `skip`.
    pub tombstones: Tombstones,
    /// A CA to trust and a client certificate (`security.protocol` SSL, or SASL_SSL with `sasl`).
    pub tls: Option<TlsFiles>,
    pub sasl: Option<Sasl>,
    /// Any other librdkafka property, passed through as is.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bootstrap_servers: "127.0.0.1:9092".into(),
            group: "switchboard".into(),
            client_id: connector_core::replica_name(),
            static_membership: true,
            offset_reset: OffsetReset::Latest,
            assignment: "range,roundrobin".into(),
            ordering: Ordering::Key,
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(45),
            tombstones: Tombstones::Deliver,
            tls: None,
            sasl: None,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Latest,
    Earliest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    Key,
    Partition,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tombstones {
    Deliver,
    Skip,
}

/// SASL over TLS or plain text: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid kafka config: {0}")]
pub struct ConfigError(pub String);

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaConfig {
    /// librdkafka's settings for the consumer, after checking what it
    /// would not (or would only say at the first connection).
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let err = |m: String| ConfigError(m);
        let servers: Vec<&str> = self.bootstrap_servers.split(',').map(str::trim).collect();
        for s in &servers {
            let port = s.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(err(format!("kafka.bootstrap_servers {s:?}: expected host:port, comma-separated")));
            }
        }
        if self.group.is_empty() || self.client_id.is_empty() {
            return Err(err("kafka.group and kafka.client_id must not be empty".into()));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(err(format!("kafka.commit_interval {:?}: expected at least 10ms", self.commit_interval)));
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", servers.join(","))
            .set("group.id", &self.group)
            .set("client.id", &self.client_id)
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                match self.offset_reset {
                    OffsetReset::Latest => "latest",
                    OffsetReset::Earliest => "earliest",
                },
            )
            .set("partition.assignment.strategy", &self.assignment)
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string());
        if self.static_membership {
            c.set("group.instance.id", &self.client_id);
        }
        let mut protocol = "plaintext";
        if let Some(tls) = &self.tls {
            protocol = "ssl";
            if let Some(ca) = &tls.ca {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some((cert, key)) = tls.client("kafka").map_err(err)? {
                c.set("ssl.certificate.location", cert.display().to_string());
                c.set("ssl.key.location", key.display().to_string());
            }
        }
        if let Some(sasl) = &self.sasl {
            if !MECHANISMS.contains(&sasl.mechanism.as_str()) {
                return Err(err(format!(
                    "kafka.sasl.mechanism {:?}: expected one of {}",
                    sasl.mechanism,
                    MECHANISMS.join(", ")
                )));
            }
            if sasl.username.is_empty() || sasl.password.is_empty() {
                return Err(err("kafka.sasl: username and password must both be set".into()));
            }
            protocol = if protocol == "ssl" { "sasl_ssl" } else { "sasl_plaintext" };
            c.set("sasl.mechanisms", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        c.set("security.protocol", protocol);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }
}
