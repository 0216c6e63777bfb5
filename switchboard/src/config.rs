//! One YAML file plus environment overrides. Every option has a default
//! that works on one machine; `switchboard up` with no file uses
//! config/switchboard.yml as built into the binary.

use anyhow::{Context, Result, bail};
use connector_core::config::DedupStore;
use openfaas::{InvalidSetting, RetryPolicy, parse_duration};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_gateway::ProviderConfig;

pub const EMBEDDED: &str = include_str!("../../config/switchboard.yml");

// Every source: a crate, its feature, and this one line (crate::hub::sources).
crate::hub::sources! {
    #[cfg(feature = "cron")] cron: switchboard_cron::CronConfig,
    #[cfg(feature = "cloudevents")] cloudevents: switchboard_cloudevents::CloudEventsConfig,
    #[cfg(feature = "nats")] nats: switchboard_nats::NatsConfig,
    #[cfg(feature = "redis")] redis: switchboard_redis::RedisConfig,
    #[cfg(feature = "mqtt")] mqtt: switchboard_mqtt::MqttConfig,
    #[cfg(feature = "kafka")] kafka: switchboard_kafka::KafkaConfig,
    #[cfg(feature = "sqs")] sqs: switchboard_sqs::SqsConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Serve `/async-function` at all.
    pub enabled: bool,
    /// Where queued calls are kept.
    pub backend: QueueBackend,
    /// Whether this process runs a worker on the queue. With `jetstream`,
    /// a gateway may only publish and leave the calls to queue-workers.
    pub consume: bool,
    /// The embedded durable store.
    pub path: PathBuf,
    /// Publish to a separate `switchboard queue-worker` at this URL instead
    /// of running the store and worker inside the gateway.
    pub url: Option<String>,
    /// Where `switchboard queue-worker` takes requests from gateways.
    pub listen: SocketAddr,
    /// Invocations the worker runs at once.
    pub max_inflight: usize,
    #[serde(with = "openfaas::duration::serde_duration")]
    pub invoke_timeout: Duration,
    /// Default retry policy; `com.openfaas.retry.*` annotations override it per function.
    pub retry: RetryPolicy,
    /// The stream, its limits and the dead letters' stream, for `backend: jetstream`.
    #[cfg(feature = "nats")]
    pub jetstream: switchboard_nats::QueueStreamConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A redb file on this machine, with its worker in the same process
    /// (or in one `switchboard queue-worker` at `queue.url`).
    #[default]
    Embedded,
    /// A NATS JetStream stream, reached through the `nats:` section's URL,
    /// credentials and TLS, shared by every gateway and queue-worker.
    Jetstream,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: QueueBackend::Embedded,
            consume: true,
            path: PathBuf::from("data/queue.redb"),
            url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            max_inflight: 8,
            invoke_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            #[cfg(feature = "nats")]
            jetstream: Default::default(),
        }
    }
}

impl Config {
    /// Loads `path`, or the built-in defaults, then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config: Config = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                parse(&text).with_context(|| format!("invalid config file {}", p.display()))?
            }
            None => parse(EMBEDDED).context("invalid built-in config")?,
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.queue.retry.validate().map_err(|e| InvalidSetting { key: format!("queue.{}", e.key), ..e })?;
        config.gateway.validate()?;
        config.hub.validate()?;
        #[cfg(feature = "cron")]
        {
            use switchboard_cron::Coordination;
            config.cron.store = match config.cron.coordination {
                Coordination::None => None,
                Coordination::Nats => Some(shared_store(&config, "nats", "cron.coordination")?),
                Coordination::Redis => Some(shared_store(&config, "redis", "cron.coordination")?),
            };
        }
        config.hub.dedup_shared = match config.hub.dedup_store {
            DedupStore::Memory => None,
            DedupStore::Nats => Some(shared_store(&config, "nats", "hub.dedup_store")?),
            DedupStore::Redis => Some(shared_store(&config, "redis", "hub.dedup_store")?),
        };
        Ok(config)
    }

    /// Environment overrides, with OpenFaaS's variable names. `basic_auth`,
    /// `secret_mount_path` and `upstream_timeout` mean the same to the
    /// gateway and to OpenFaaS's connectors, so they set both sections: a
    /// `switchboard connect` deployed like the cron-connector reads them.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), InvalidSetting> {
        let (g, h) = (&mut self.gateway, &mut self.hub);
        if let Some(v) = get("basic_auth") {
            g.basic_auth = parse_bool("basic_auth", &v)?;
            h.basic_auth = g.basic_auth;
        }
        if let Some(v) = get("secret_mount_path") {
            g.secret_mount_path = v.into();
            h.secret_mount_path = g.secret_mount_path.clone();
        }
        if let Some(v) = get("upstream_timeout") {
            g.upstream_timeout = parse_duration("upstream_timeout", &v)?;
            h.upstream_timeout = g.upstream_timeout;
        }
        if let Some(v) = get("read_timeout") {
            g.read_timeout = parse_duration("read_timeout", &v)?;
        }
        if let Some(v) = get("function_namespace") {
            g.function_namespace = v;
        }
        if let Some(v) = get("max_body_size") {
            g.max_body_size = v.parse().map_err(|_| InvalidSetting::new("max_body_size", v, "a size in bytes"))?;
        }
        if let Some(v) = get("gateway_url") {
            h.gateway = v;
        }
        if let Some(v) = get("topic_delimiter") {
            h.topic_delimiter = v;
        }
        if let Some(v) = get("rebuild_interval") {
            h.refresh_interval = parse_duration("rebuild_interval", &v)?;
        }
        if let Some(v) = get("asynchronous_invocation") {
            h.async_invocation = parse_bool("asynchronous_invocation", &v)?;
        }
        if let Some(v) = get("content_type") {
            h.content_type = Some(v);
        }
        if let Some(v) = get("max_inflight") {
            self.queue.max_inflight = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| InvalidSetting::new("max_inflight", v, "a whole number above 0"))?;
        }
        Ok(())
    }
}

/// The store replicas share in the `broker` (`nats` or `redis`) that
/// config `key` names, reached through the config's own `nats` or `redis`
/// section (its URL, credentials and TLS), whether or not that source is
/// enabled.
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(unused_variables, unused_imports))]
fn shared_store(config: &Config, broker: &str, key: &str) -> Result<connector_core::shared::Shared> {
    use std::sync::Arc;
    match broker {
        #[cfg(feature = "nats")]
        "nats" => Ok(connector_core::shared::Shared(Arc::new(switchboard_nats::KvStore::new(&config.nats)?))),
        #[cfg(feature = "redis")]
        "redis" => Ok(connector_core::shared::Shared(Arc::new(switchboard_redis::RedisStore::new(&config.redis)?))),
        other => bail!("{key} {other}: this build has no such source (its cargo feature is off)"),
    }
}

/// Parses YAML so that an error names the full key path, e.g.
/// `gateway.upstream_timeout`, after putting the environment into it.
fn parse(text: &str) -> Result<Config> {
    parse_with(text, &|k| std::env::var(k).ok())
}

fn parse_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
    interpolate(&mut value, env, "")?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        // Some YAML errors name the key themselves.
        let (path, inner) = (e.path().to_string(), e.inner().to_string());
        if inner.starts_with(&path) { anyhow::anyhow!(inner) } else { anyhow::anyhow!("{path}: {inner}") }
    })
}

/// Replaces `${NAME}` in every string value with the environment variable
/// NAME, and `${file:PATH}` with the file's text (its final newline
/// dropped), so credentials can live elsewhere than the config (a
/// Kubernetes Secret, mounted or as variables); `$${` is a literal `${`.
/// A variable not set, or a file not read, is an error naming the key.
fn interpolate(value: &mut serde_yaml_ng::Value, env: &dyn Fn(&str) -> Option<String>, path: &str) -> Result<()> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(at) = rest.find("${") {
                if rest[..at].ends_with('$') {
                    out.push_str(&rest[..at]);
                    out.push('{');
                    rest = &rest[at + 2..];
                    continue;
                }
                out.push_str(&rest[..at]);
                let Some(end) = rest[at..].find('}') else {
                    bail!("{path}: {s:?} opens ${{ without closing it; write $${{ for a literal ${{")
                };
                let name = &rest[at + 2..at + end];
                match (name.strip_prefix("file:"), env(name)) {
                    (Some(file), _) => {
                        let text = std::fs::read_to_string(file)
                            .with_context(|| format!("{path}: ${{{name}}}: cannot read {file}"))?;
                        out.push_str(text.trim_end_matches(['\n', '\r']));
                    }
                    (None, Some(v)) => out.push_str(&v),
                    (None, None) => bail!("{path}: ${{{name}}} is not set in the environment"),
                }
                rest = &rest[at + end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
                let path = if path.is_empty() { key } else { format!("{path}.{key}") };
                interpolate(v, env, &path)?;
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, env, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_bool(key: &str, v: &str) -> Result<bool, InvalidSetting> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(InvalidSetting::new(key, v, "true or false")),
    }
}

/// Fails unless `path` (a stack file named in the config) exists, with advice.
pub fn check_stack(config: &Config) -> Result<()> {
    if let ProviderConfig::Process { stack: Some(stack), .. } | ProviderConfig::Container { stack: Some(stack), .. } =
        &config.provider
        && !stack.exists()
    {
        bail!(
            "stack file {} not found (relative paths are resolved from the current directory; run from the repository root or pass --config)",
            stack.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_environment_fills_in_credentials() {
        let env = |k: &str| (k == "PASSWORD").then(|| "s3cr#t: {x}".to_string());
        let text = "hub:\n  gateway: http://u:${PASSWORD}@gw:8080\n  dead_letter_file: a$${b}\n";
        let config = parse_with(text, &env).unwrap();
        assert_eq!(config.hub.gateway, "http://u:s3cr#t: {x}@gw:8080", "the value is taken as it is, YAML or not");
        assert_eq!(config.hub.dead_letter_file, Some(std::path::PathBuf::from("a${b}")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "from a file\n").unwrap();
        let text = format!("hub:\n  gateway: \"${{file:{}/password}}\"\n", dir.path().display());
        assert_eq!(parse_with(&text, &env).unwrap().hub.gateway, "from a file");
        let err = parse_with("hub:\n  gateway: ${file:/nonexistent/pw}\n", &env).unwrap_err();
        assert!(
            format!("{err:#}").contains("hub.gateway") && format!("{err:#}").contains("/nonexistent/pw"),
            "{err:#}"
        );
        let err = parse_with("hub:\n  gateway: ${GATEWAY}\n", &env).unwrap_err().to_string();
        assert!(err.contains("hub.gateway") && err.contains("${GATEWAY} is not set"), "{err}");
        let err = parse_with("hub:\n  gateway: ${GATEWAY\n", &env).unwrap_err().to_string();
        assert!(err.contains("hub.gateway") && err.contains("without closing"), "{err}");
    }
    use super::*;

    /// The sample config documents the defaults: it may not say one thing
    /// while the code does another. Only what the sample chooses on purpose
    /// differs, and is listed here.
    #[test]
    fn the_embedded_config_says_what_the_defaults_are() {
        let embedded = serde_json::to_value(parse(EMBEDDED).unwrap()).unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let chosen = ["/provider"];
        let mut differences = vec![];
        diff("", &embedded, &defaults, &mut differences);
        differences.retain(|path| !chosen.iter().any(|c| path.starts_with(c)));
        assert!(differences.is_empty(), "config/switchboard.yml disagrees with the defaults at {differences:?}");
    }

    fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for key in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
                    let null = serde_json::Value::Null;
                    diff(&format!("{path}/{key}"), a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
                }
            }
            (a, b) if a != b => out.push(format!("{path}: {a} vs {b}")),
            _ => {}
        }
    }

    #[test]
    fn a_bad_address_is_named_once() {
        let err = parse("cloudevents:\n  listen: nonsense\n").unwrap_err().to_string();
        assert_eq!(err.matches("cloudevents.listen").count(), 1, "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("gateway:\n  prot: 1\n").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = parse("queue:\n  retry:\n    min_wait: soon\n").unwrap_err().to_string();
        assert!(err.contains("queue.retry.min_wait") && err.contains("soon"), "{err}");
    }

    #[test]
    fn env_overrides_use_openfaas_names() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "basic_auth" => Some("true".into()),
            "upstream_timeout" => Some("1m30s".into()),
            _ => None,
        })
        .unwrap();
        assert!(c.gateway.basic_auth && c.hub.basic_auth);
        assert_eq!(c.gateway.upstream_timeout, Duration::from_secs(90));
        assert_eq!(c.hub.upstream_timeout, Duration::from_secs(90));
        let err = c.apply_env(|k| (k == "basic_auth").then(|| "yes".into())).unwrap_err().to_string();
        assert!(err.contains("basic_auth") && err.contains("yes"), "{err}");
    }
}
