//! The contract between the hub and a source.

use crate::dispatcher::Dispatcher;
use crate::topics::TopicMap;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What a source is given to run.
pub struct SourceContext {
    /// Where events go; each dispatch returns the outcome to ack by.
    pub dispatcher: Dispatcher,
    /// The live topic map: the topics to subscribe to change while running.
    pub topics: watch::Receiver<Arc<TopicMap>>,
    pub shutdown: CancellationToken,
}

/// A broker, schedule or endpoint that produces events. A source owns its
/// protocol and its acknowledgements; it subscribes to the topics in
/// `ctx.topics`, turns each message into an [`crate::Event`], and acks or
/// redelivers by the [`crate::Outcome`] of its dispatch.
pub trait Source: Send + 'static {
    /// Names the source in metrics and in `X-Connector`.
    fn name(&self) -> &'static str;
    /// Runs until `ctx.shutdown`; an error is fatal (connection problems
    /// are retried inside the source).
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>>;
}
