//! connector-core: the one event path of the hub.
//!
//! A [`Source`] turns each broker message into an [`Event`] and a
//! [`Settle`] handle and submits both to its [`Dispatcher`]; the dispatcher
//! finds the subscribed functions in the [`TopicMap`] (kept fresh by
//! [`Discovery`] from any OpenFaaS-compatible gateway), applies each
//! function's limits, invokes it through the gateway, retries,
//! dead-letters what cannot be delivered, keeps the message alive
//! meanwhile, and settles it by the [`Outcome`]. Nothing here knows a broker.

pub mod access;
pub mod adaptive;
mod backoff;
mod batch;
pub mod config;
pub mod deadletter;
pub mod dedup;
pub mod discovery;
pub mod dispatcher;
pub mod event;
pub mod gateway;
pub mod hub;
pub mod letters;
pub mod metrics;
mod order;
pub mod pause;
pub mod publish;
mod reconcile;
pub mod replay;
pub mod reply;
mod settle;
pub mod shared;
pub mod source;
pub mod subscription;
pub mod tls;
pub mod topics;
mod watermark;

pub use access::{Access, AuthMode};
pub use backoff::Backoff;
pub use batch::Batcher;
pub use config::HubConfig;
pub use deadletter::{DeadLetter, DeadLetterSink};
pub use discovery::Discovery;
pub use dispatcher::{Dispatcher, Ticket};
pub use event::{CloudEventAttrs, Event, Response};
pub use gateway::InProcess;
pub use hub::{Hub, HubError};
pub use reconcile::{Changes, Subscribed};
pub use settle::{NoAck, Outcome, Settle};
pub use shared::SharedStore;
pub use source::{
    BrokerBatch, BrokerLetters, BrokerState, Published, Publisher, Source, SourceConfig, SourceContext, SourceError,
};
pub use tls::{TlsFiles, TlsPem, install_crypto_provider};
pub use topics::{CRON_TOPIC, TopicMap};
pub use watermark::Watermark;

/// A name unique per replica and stable across its restarts: the host name
/// (a pod's name on Kubernetes), or a random one without it. Consumer names
/// and client ids use it so a restarted replica resumes its own pending work.
pub fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    format!("switchboard-{}", host.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
}
