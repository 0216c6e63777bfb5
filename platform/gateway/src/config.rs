use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where credentials are generated at first start when none exist.
pub const GENERATED_SECRETS: &str = "data/secrets";

/// The `gateway:` section of the config file. Environment variables with
/// OpenFaaS's names override it (see the binary's config loader).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub bind: IpAddr,
    pub port: u16,
    /// Protect `/system/*` with the credentials in `secret_mount_path`.
    pub basic_auth: bool,
    /// Where `basic-auth-user` and `basic-auth-password` are. The default,
    /// `data/secrets`, is filled with generated credentials at first start.
    pub secret_mount_path: PathBuf,
    /// Names besides localhost, 127.0.0.1 and [::1] that a gateway bound to
    /// loopback answers (a proxy in front of it); other `Host` names are
    /// refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a request's head; and the most time, all waits
    /// together, its body may keep the gateway waiting.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub read_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_size: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Longest wait for a function's response headers.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub upstream_timeout: Duration,
    /// How long an invocation waits for a replica that is starting (or
    /// restarting) before it is answered 503, as OpenFaaS holds requests
    /// while a function scales up.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub replica_wait: Duration,
    /// Largest request body accepted by `/function` and `/async-function`, in bytes.
    pub max_body_size: u64,
    /// Send function answers with `Content-Security-Policy: sandbox`: they
    /// share the origin of the portal and the API, whose credentials a
    /// browser sends, so a function's page must not run as that origin.
    pub sandbox_functions: bool,
    /// Namespace of a function named without one.
    pub function_namespace: String,
    /// `gateway`, or `provider` when OpenFaaS's own gateway fronts this one
    /// (its `functions_provider_url`): `/system/info` then has
    /// faas-provider's flat shape, which that gateway reads.
    pub role: Role,
    /// The hub whose topics, event rates, dead letters and pause the portal
    /// shows (its `hub.listen`), reached through `/ui/hub/`; `up` sets it
    /// to its own hub.
    pub hub: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Gateway,
    Provider,
}

impl GatewayConfig {
    /// Bounds of 0 would refuse every connection or request.
    pub fn validate(&self) -> Result<(), openfaas::InvalidSetting> {
        for (key, value) in [
            ("gateway.max_connections", self.max_connections),
            ("gateway.max_connections_per_client", self.max_connections_per_client),
            ("gateway.max_header_size", self.max_header_size),
            ("gateway.max_headers", self.max_headers),
        ] {
            if value == 0 {
                return Err(openfaas::InvalidSetting::new(key, "0", "a whole number above 0"));
            }
        }
        Ok(())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            basic_auth: true,
            secret_mount_path: PathBuf::from(GENERATED_SECRETS),
            allowed_hosts: vec![],
            read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_client: 512,
            max_header_size: switchboard_http::MAX_HEADER_SIZE,
            max_headers: switchboard_http::MAX_HEADERS,
            upstream_timeout: Duration::from_secs(60),
            replica_wait: Duration::from_secs(20),
            max_body_size: 64 * 1024 * 1024,
            sandbox_functions: true,
            function_namespace: "openfaas-fn".into(),
            role: Role::Gateway,
            hub: None,
        }
    }
}

/// How process replicas run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Each replica in namespaces of its own (bubblewrap), seeing its own
    /// secrets and none of the platform's state.
    #[default]
    Sandbox,
    /// As this user, with its view of the disk: for machines that cannot
    /// make namespaces, and code that is trusted.
    None,
}

/// The `provider:` section: where functions come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Functions run as watchdog-fronted local processes.
    Process {
        /// An OpenFaaS stack.yml whose functions are deployed at start.
        #[serde(default)]
        stack: Option<PathBuf>,
        /// How long a replica may take to stop after SIGTERM before SIGKILL.
        #[serde(default = "default_stop_timeout", with = "openfaas::duration::serde_duration")]
        stop_timeout: Duration,
        /// Lines of output kept per function for `/system/logs`.
        #[serde(default = "default_log_lines")]
        log_lines: usize,
        /// The most replicas of one function (`com.openfaas.scale.max` may lower it).
        #[serde(default = "default_max_replicas")]
        max_replicas: u64,
        /// Where functions deployed, updated or scaled through the API are
        /// recorded, to be restored at the next start (null: not recorded).
        #[serde(default = "default_state")]
        state: Option<PathBuf>,
        /// Where `/system/secrets` keeps secrets, readable by their owner only.
        #[serde(default = "default_secrets")]
        secrets: PathBuf,
        /// The watchdog each replica runs: a path to the small
        /// `switchboard-watchdog` binary, or none for this binary's
        /// `watchdog` subcommand.
        #[serde(default)]
        watchdog: Option<PathBuf>,
        /// How replicas are kept from the platform and each other.
        #[serde(default)]
        isolation: Isolation,
    },
    /// Functions run as containers of their images, through the Docker
    /// Engine API (Docker, or podman's compatible service). Its first six
    /// keys are `process`'s: written out, since serde's `flatten` would lose
    /// `deny_unknown_fields`, and a misspelt key would pass silently.
    Container {
        /// An OpenFaaS stack.yml whose functions are deployed at start.
        #[serde(default)]
        stack: Option<PathBuf>,
        /// How long a container may take to stop after SIGTERM before SIGKILL.
        #[serde(default = "default_stop_timeout", with = "openfaas::duration::serde_duration")]
        stop_timeout: Duration,
        /// Lines of output kept per function for `/system/logs`.
        #[serde(default = "default_log_lines")]
        log_lines: usize,
        /// The most replicas of one function (`com.openfaas.scale.max` may lower it).
        #[serde(default = "default_max_replicas")]
        max_replicas: u64,
        /// Where functions deployed, updated or scaled through the API are
        /// recorded, to be restored at the next start (null: not recorded).
        #[serde(default = "default_state")]
        state: Option<PathBuf>,
        /// Where `/system/secrets` keeps secrets, readable by their owner only.
        #[serde(default = "default_secrets")]
        secrets: PathBuf,
        /// The engine's API: `unix:///run/podman/podman.sock`,
        /// `tcp://HOST:2375`; none: `DOCKER_HOST`, else Docker's socket.
        #[serde(default)]
        docker_host: Option<String>,
        /// Names and labels this gateway's containers, so that a restart
        /// removes what a killed run left; one per gateway on an engine.
        #[serde(default = "default_prefix")]
        prefix: String,
    },
    /// Functions declared here, already running at an upstream URL.
    Static {
        #[serde(default)]
        functions: BTreeMap<String, StaticFunction>,
    },
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig::Process {
            stack: None,
            stop_timeout: default_stop_timeout(),
            log_lines: default_log_lines(),
            max_replicas: default_max_replicas(),
            state: default_state(),
            secrets: default_secrets(),
            watchdog: None,
            isolation: Isolation::Sandbox,
        }
    }
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_log_lines() -> usize {
    1000
}

/// Each replica is a process or two: 20 bounds a function to what one
/// machine serves, and a mistaken `replicas: 1000000000` to nothing worse.
fn default_max_replicas() -> u64 {
    20
}

fn default_secrets() -> PathBuf {
    PathBuf::from("data/function-secrets")
}

fn default_prefix() -> String {
    "switchboard".into()
}

fn default_state() -> Option<PathBuf> {
    Some(PathBuf::from("data/functions.json"))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFunction {
    /// Base URL of the function, e.g. `http://thumbnailer:8080`.
    pub upstream: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
