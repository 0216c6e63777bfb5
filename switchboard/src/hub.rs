//! Running the hub's sources, beside our gateway (`up`) or any
//! OpenFaaS-compatible one (`connect`).

use crate::config::Config;
use anyhow::Result;
use connector_core::{Hub, InProcess, Source};
use tokio_util::sync::CancellationToken;

/// The sources `switchboard connect` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    #[cfg(feature = "cron")]
    Cron,
    #[cfg(feature = "cloudevents")]
    Cloudevents,
    #[cfg(feature = "nats")]
    Nats,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "mqtt")]
    Mqtt,
}

fn build(config: &Config, kind: SourceKind) -> Result<Box<dyn Source>> {
    Ok(match kind {
        #[cfg(feature = "cron")]
        SourceKind::Cron => Box::new(switchboard_cron::CronSource::new(config.cron.clone())),
        #[cfg(feature = "cloudevents")]
        SourceKind::Cloudevents => {
            Box::new(switchboard_cloudevents::CloudEventsSource::new(config.cloudevents.clone()))
        }
        #[cfg(feature = "nats")]
        SourceKind::Nats => Box::new(switchboard_nats::NatsSource::new(config.nats.clone())?),
        #[cfg(feature = "redis")]
        SourceKind::Redis => Box::new(switchboard_redis::RedisSource::new(config.redis.clone())?),
        #[cfg(feature = "mqtt")]
        SourceKind::Mqtt => Box::new(switchboard_mqtt::MqttSource::new(config.mqtt.clone())?),
    })
}

/// The sources `switchboard up` runs: every one enabled in the config.
pub fn enabled(config: &Config) -> Result<Vec<Box<dyn Source>>> {
    let mut kinds = vec![];
    #[cfg(feature = "cron")]
    if config.cron.enabled {
        kinds.push(SourceKind::Cron);
    }
    #[cfg(feature = "cloudevents")]
    if config.cloudevents.enabled {
        kinds.push(SourceKind::Cloudevents);
    }
    #[cfg(feature = "nats")]
    if config.nats.enabled {
        kinds.push(SourceKind::Nats);
    }
    #[cfg(feature = "redis")]
    if config.redis.enabled {
        kinds.push(SourceKind::Redis);
    }
    #[cfg(feature = "mqtt")]
    if config.mqtt.enabled {
        kinds.push(SourceKind::Mqtt);
    }
    kinds.into_iter().map(|k| build(config, k)).collect()
}

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
pub async fn connect(mut config: Config, kind: SourceKind, gateway: Option<String>) -> Result<()> {
    if let Some(g) = gateway {
        config.hub.gateway = g;
    }
    let source = build(&config, kind)?;
    let stop = CancellationToken::new();
    let mut hub = start(&config, vec![source], None, stop.clone())?;
    println!(
        "switchboard connect {kind:?}: gateway {}, health and metrics on http://{}",
        config.hub.gateway, config.hub.listen
    );
    tokio::select! {
        () = switchboard_http::shutdown_signal() => stop.cancel(),
        done = &mut hub => return Ok(done??),
    }
    Ok(hub.await??)
}
