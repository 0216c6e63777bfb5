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
    /// Records read ahead of the hub (beyond `hub.max_pending` in flight)
    /// before the source pauses its partitions; it resumes at half.
    pub read_ahead: usize,
    /// Records with a null value: `deliver` (empty body, `X-Kafka-Tombstone: true`) or `skip`.
    pub tombstones: Tombstones,
    /// Dead letters to this topic (the original record, failure context in
    /// `switchboard.*` headers) instead of `hub.dead_letter_file`.
    pub dead_letter_topic: Option<String>,
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
            read_ahead: 32_768,
            tombstones: Tombstones::Deliver,
            dead_letter_topic: None,
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
        if self.group.is_empty() {
            return Err(ConfigError("kafka.group must not be empty".into()));
        }
        if self.read_ahead == 0 {
            return Err(ConfigError("kafka.read_ahead: expected at least 1 record".into()));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(ConfigError(format!(
                "kafka.commit_interval {:?}: expected at least 10ms",
                self.commit_interval
            )));
        }
        let mut c = self.common()?;
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                match self.offset_reset {
                    OffsetReset::Latest => "latest",
                    OffsetReset::Earliest => "earliest",
                },
            )
            .set("partition.assignment.strategy", &self.assignment)
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string())
            // Feeds the lag metric and the source's readiness.
            .set("statistics.interval.ms", "1000")
            // librdkafka waits this long before fetching a partition resumed
            // after a pause (500 ms by default); the source pauses while
            // the hub is full.
            .set("fetch.error.backoff.ms", "100");
        if self.static_membership {
            c.set("group.instance.id", &self.client_id);
        }
        Ok(self.with_properties(c))
    }

    /// librdkafka's settings for the dead-letter producer.
    pub fn producer_config(&self) -> Result<Option<ClientConfig>, ConfigError> {
        let Some(topic) = &self.dead_letter_topic else { return Ok(None) };
        if topic.is_empty() {
            return Err(ConfigError(
                "kafka.dead_letter_topic must not be empty; leave it out for the hub's sink".into(),
            ));
        }
        self.publisher_config().map(Some)
    }

    /// librdkafka's settings for a producer: of dead letters, and of
    /// `switchboard publish`.
    pub fn publisher_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut c = self.common()?;
        // A record that cannot be written in this time was not written: a
        // letter's record stays unsettled (librdkafka's default is five minutes).
        c.set("message.timeout.ms", "30000");
        Ok(self.with_properties(c))
    }

    /// The connection: servers, identity, TLS and SASL.
    fn common(&self) -> Result<ClientConfig, ConfigError> {
        let err = |m: String| ConfigError(m);
        let servers: Vec<&str> = self.bootstrap_servers.split(',').map(str::trim).collect();
        for s in &servers {
            let port = s.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(err(format!("kafka.bootstrap_servers {s:?}: expected host:port, comma-separated")));
            }
        }
        if self.client_id.is_empty() {
            return Err(err("kafka.client_id must not be empty".into()));
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", servers.join(",")).set("client.id", &self.client_id);
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
        Ok(c)
    }

    /// librdkafka's settings for reading a dead-letter topic back: a group
    /// of its own (`GROUP.dead-letters`), whose committed offsets mark the
    /// letters already moved into the hub's store.
    pub fn letters_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut c = self.common()?;
        c.set("group.id", format!("{}.dead-letters", self.group))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // As the source's own consumer, which kafka.properties may tune around it.
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string());
        Ok(self.with_properties(c))
    }

    /// `kafka.properties` last: they override anything set here.
    fn with_properties(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(config: KafkaConfig) -> String {
        config.client_config().and_then(|_| config.producer_config()).expect_err("refused").to_string()
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        let servers = KafkaConfig { bootstrap_servers: "kafka:9092,kafka2".into(), ..Default::default() };
        assert!(error(servers).contains(r#"kafka.bootstrap_servers "kafka2": expected host:port"#));
        let sasl = Sasl { mechanism: "SCRAM-SHA-256".into(), username: "app".into(), password: String::new() };
        let no_password = KafkaConfig { sasl: Some(sasl), ..Default::default() };
        assert!(error(no_password).contains("kafka.sasl: username and password must both be set"));
        let sasl = Sasl { mechanism: "GSSAPI".into(), username: "app".into(), password: "pw".into() };
        let mechanism = KafkaConfig { sasl: Some(sasl), ..Default::default() };
        assert!(error(mechanism).contains(r#"kafka.sasl.mechanism "GSSAPI": expected one of PLAIN"#));
        let half = TlsFiles { cert: Some("client.pem".into()), ..Default::default() };
        let tls = KafkaConfig { tls: Some(half), ..Default::default() };
        assert!(error(tls).contains("kafka.tls.cert and kafka.tls.key go together"));
        let dead = KafkaConfig { dead_letter_topic: Some(String::new()), ..Default::default() };
        assert!(error(dead).contains("kafka.dead_letter_topic must not be empty"));
        let reset: Result<KafkaConfig, _> = serde_json::from_str(r#"{"offset_reset": "newest"}"#);
        assert!(reset.unwrap_err().to_string().contains("expected `latest` or `earliest`"));
    }

    #[test]
    fn security_follows_the_blocks_and_properties_come_last() {
        let sasl = Sasl { mechanism: "PLAIN".into(), username: "app".into(), password: "pw".into() };
        let tls = TlsFiles { ca: Some("ca.pem".into()), ..Default::default() };
        let mut c = KafkaConfig { sasl: Some(sasl), tls: Some(tls), ..Default::default() };
        c.properties.insert("session.timeout.ms".into(), "7000".into());
        let client = c.client_config().unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("ssl.ca.location"), Some("ca.pem"));
        assert_eq!(client.get("session.timeout.ms"), Some("7000"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
    }
}
