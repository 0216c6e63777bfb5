use connector_core::TlsFiles;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `mqtt:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub enabled: bool,
    /// `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: String,
    /// 3 (3.1.1) or 5.
    pub version: u8,
    /// Subscription QoS: 0, 1 or 2. With 1 or 2 a message is acked only once delivered.
    pub qos: u8,
    /// Unique per replica; the default is the host name, so a restarted
    /// replica resumes its persistent session.
    pub client_id: String,
    /// false: a persistent session; unacked messages come back after a reconnect.
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps a persistent session.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub session_expiry: Duration,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub keep_alive: Duration,
    /// Replicas with the same group share each filter (`$share/<group>/<filter>`).
    pub share_group: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsFiles>,
    /// MQTT 5's receive window: unacked QoS 1 and 2 messages the broker
    /// may send the hub at once. Under MQTT 3.1.1 the broker's own
    /// setting decides (Mosquitto's `max_inflight_messages`).
    pub inflight: u16,
    /// The largest payload delivered, in bytes; a larger message is
    /// dead-lettered (without its payload) and acked, so the next flows.
    pub max_payload: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "mqtt://127.0.0.1:1883".into(),
            version: 5,
            qos: 1,
            client_id: connector_core::replica_name(),
            clean_session: false,
            session_expiry: Duration::from_secs(24 * 3600),
            keep_alive: Duration::from_secs(30),
            share_group: None,
            username: None,
            password: None,
            tls: None,
            inflight: 100,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// 16 MiB: above what most brokers take by default (EMQX 1 MiB, AWS IoT
/// 128 KiB), below Mosquitto's and HiveMQ's 256 MiB and the gateway's
/// 64 MiB body limit; with the receive window it bounds what the source holds.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("invalid mqtt config: {0}")]
pub struct ConfigError(pub String);

/// What the config resolves to.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    pub fn validate(&self) -> Result<Endpoint, ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let (tls, rest) = match self.url.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl", rest)) => (true, rest),
            _ => return bad(format!("mqtt.url {:?}: expected mqtt://host:port or mqtts://host:port", self.url)),
        };
        let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) if !h.is_empty() => (h.to_string(), p),
                _ => return bad(format!("mqtt.url {:?}: expected a host and a port number", self.url)),
            },
            None if !rest.is_empty() => (rest.trim_end_matches('/').to_string(), if tls { 8883 } else { 1883 }),
            None => return bad(format!("mqtt.url {:?}: no host", self.url)),
        };
        if self.qos > 2 {
            return bad(format!("mqtt.qos {}: expected 0, 1 or 2", self.qos));
        }
        if !matches!(self.version, 3 | 5) {
            return bad(format!("mqtt.version {}: expected 3 (3.1.1) or 5", self.version));
        }
        if let Some(g) = &self.share_group
            && (g.is_empty() || g.contains(['/', '+', '#']))
        {
            return bad(format!("mqtt.share_group {g:?}: expected a name without '/', '+' or '#'"));
        }
        if self.inflight == 0 {
            return bad("mqtt.inflight 0: expected 1 to 65535 unacked messages".into());
        }
        if self.max_payload == 0 {
            return bad("mqtt.max_payload 0: expected a size in bytes above 0".into());
        }
        if self.client_id.is_empty() {
            return bad("mqtt.client_id must not be empty".into());
        }
        if tls && self.tls.as_ref().is_none_or(|t| t.ca.is_none()) {
            return bad("mqtt.url is mqtts:// but mqtt.tls.ca is not set".into());
        }
        if let Some(Err(e)) = self.tls.as_ref().map(|t| t.client("mqtt")) {
            return bad(e);
        }
        if self.password.is_some() && self.username.is_none() {
            return bad("mqtt.password needs mqtt.username".into());
        }
        Ok(Endpoint { host, port, tls })
    }

    /// The subscription for a topic filter, in this replica's share group if any.
    pub fn subscription(&self, filter: &str) -> String {
        match &self.share_group {
            Some(g) => format!("$share/{g}/{filter}"),
            None => filter.to_string(),
        }
    }
}

/// Whether `filter` is a valid MQTT topic filter: `+` and `#` fill whole
/// levels, and `#` only comes last.
pub fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, l)| match *l {
            "#" => i == levels.len() - 1,
            "+" => true,
            l => !l.contains(['+', '#']),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        let ok = MqttConfig::default();
        assert!(ok.validate().is_ok());
        for (c, key) in [
            (MqttConfig { url: "http://x:1".into(), ..Default::default() }, "mqtt.url"),
            (MqttConfig { qos: 3, ..Default::default() }, "mqtt.qos"),
            (MqttConfig { share_group: Some("a/b".into()), ..Default::default() }, "mqtt.share_group"),
            (MqttConfig { version: 4, ..Default::default() }, "mqtt.version"),
            (MqttConfig { inflight: 0, ..Default::default() }, "mqtt.inflight"),
            (MqttConfig { max_payload: 0, ..Default::default() }, "mqtt.max_payload"),
            (MqttConfig { url: "mqtts://x".into(), ..Default::default() }, "mqtt.tls.ca"),
            (
                MqttConfig {
                    tls: Some(connector_core::TlsFiles { key: Some("k.pem".into()), ..Default::default() }),
                    ..Default::default()
                },
                "mqtt.tls.cert and mqtt.tls.key",
            ),
        ] {
            let err = c.validate().err().unwrap().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(
            valid_filter("sensors/+/temperature")
                && valid_filter("a/#")
                && !valid_filter("a/#/b")
                && !valid_filter("a+/b")
        );
    }
}
