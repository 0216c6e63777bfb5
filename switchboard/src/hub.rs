//! Running the hub's sources, beside our gateway (`up`) or any
//! OpenFaaS-compatible one (`connect`), and the one table of sources.

use crate::config::Config;
use anyhow::Result;
use connector_core::{Hub, InProcess, Source};
use tokio_util::sync::CancellationToken;

/// Derives, from one line per source, the config file (its section), the
/// `connect` subcommand's choices, building a source, and which ones `up`
/// runs. A line is `#[cfg(feature = "NAME")] NAME: CRATE::CONFIG`; the
/// config type implements [`connector_core::SourceConfig`].
macro_rules! sources {
    ($(#[cfg(feature = $feature:literal)] $name:ident: $config:ty),* $(,)?) => {
        /// The sources' sections of the config file.
        #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            pub gateway: switchboard_gateway::GatewayConfig,
            pub provider: switchboard_gateway::ProviderConfig,
            pub queue: crate::config::QueueConfig,
            pub hub: connector_core::HubConfig,
            $(#[cfg(feature = $feature)] pub $name: $config,)*
        }

        /// The sources `switchboard connect` can run.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
        #[allow(non_camel_case_types)]
        pub enum SourceKind {
            $(#[cfg(feature = $feature)] $name,)*
        }

        // `config` and the import are unused in a build with no source.
        #[allow(unused_variables)]
        pub(crate) fn build(config: &Config, kind: SourceKind) -> anyhow::Result<Box<dyn connector_core::Source>> {
            #[allow(unused_imports)]
            use connector_core::SourceConfig;
            match kind {
                $(#[cfg(feature = $feature)] SourceKind::$name => {
                    config.$name.build().map_err(|e| anyhow::anyhow!(e))
                })*
            }
        }

        /// The sources `switchboard up` runs: every one enabled in the config.
        pub fn enabled(config: &Config) -> anyhow::Result<Vec<Box<dyn connector_core::Source>>> {
            #[allow(unused_imports)]
            use connector_core::SourceConfig;
            let kinds: Vec<SourceKind> = vec![$(#[cfg(feature = $feature)] SourceKind::$name,)*];
            kinds.into_iter().filter(|k| match *k {
                $(#[cfg(feature = $feature)] SourceKind::$name => config.$name.enabled(),)*
            }).map(|k| build(config, k)).collect()
        }
    };
}
pub(crate) use sources;

/// Starts the hub; `gateway` when it runs inside the gateway's process.
pub fn start(
    config: &Config,
    sources: Vec<Box<dyn Source>>,
    gateway: Option<InProcess>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), connector_core::HubError>>> {
    let hub = Hub::new(config.hub.clone(), gateway, stop)?;
    Ok(tokio::spawn(hub.run(sources)))
}

/// `switchboard connect SOURCE --gateway URL`: one source as a sidecar.
pub async fn connect(mut config: Config, kind: crate::config::SourceKind, gateway: Option<String>) -> Result<()> {
    if let Some(g) = gateway {
        config.hub.gateway = g;
    }
    let source = crate::config::build(&config, kind)?;
    // Sidecars may share a working folder, replicas of one source too; on
    // one machine no two listen on one port.
    let store = format!("data/dead-letters-{}-{}.redb", source.name(), config.hub.listen.port());
    config.hub.dead_letter_store.get_or_insert_with(|| store.into());
    println!(
        "switchboard connect {}: {}; gateway {}, health and metrics on http://{}",
        source.name(),
        source.describe(),
        config.hub.gateway,
        config.hub.listen
    );
    let stop = CancellationToken::new();
    let mut hub = start(&config, vec![source], None, stop.clone())?;
    tokio::select! {
        () = switchboard_http::shutdown_signal() => stop.cancel(),
        done = &mut hub => return Ok(done??),
    }
    Ok(hub.await??)
}
