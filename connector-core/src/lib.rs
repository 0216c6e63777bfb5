//! connector-core: the one event path of the hub.
//!
//! A [`Source`] turns broker messages into [`Event`]s and hands them to its
//! [`Dispatcher`]; the dispatcher finds the subscribed functions in the
//! [`TopicMap`] (kept fresh by [`Discovery`] from any OpenFaaS-compatible
//! gateway), applies each function's limits, invokes it through the
//! gateway, retries, dead-letters what cannot be delivered, and returns the
//! [`Outcome`] the source acks or redelivers by. Nothing here knows a broker.

pub mod config;
pub mod deadletter;
pub mod discovery;
pub mod dispatcher;
pub mod event;
pub mod gateway;
pub mod hub;
pub mod metrics;
mod order;
pub mod source;
pub mod subscription;
pub mod topics;

pub use config::HubConfig;
pub use deadletter::{DeadLetter, DeadLetterSink};
pub use discovery::Discovery;
pub use dispatcher::{Dispatcher, Ticket};
pub use event::{CloudEventAttrs, Event, Outcome, Response};
pub use hub::{Hub, HubError};
pub use source::{Source, SourceContext, SourceError};
pub use topics::TopicMap;
