//! The contract between the hub and a source.

use crate::access::Access;
use crate::dispatcher::Dispatcher;
use crate::topics::TopicMap;
use futures_util::future::BoxFuture;
use prometheus::GaugeVec;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What a source is given to run.
pub struct SourceContext {
    /// Where events go; each dispatch returns the outcome to ack by.
    pub dispatcher: Dispatcher,
    /// The live topic map: the topics to subscribe to change while running.
    pub topics: watch::Receiver<Arc<TopicMap>>,
    /// For a source with a broker: whether it is connected to it.
    pub link: Link,
    /// Who may send requests, for a source that serves HTTP (`hub.auth`).
    pub access: Arc<Access>,
    pub shutdown: CancellationToken,
}

/// A source's connection to its broker, as `/readyz` and the
/// `switchboard_source_connected` gauge report it. A source with no broker
/// (cron, CloudEvents) never reports, and never makes the hub unready.
#[derive(Clone)]
pub struct Link {
    source: &'static str,
    state: Arc<AtomicU8>,
    gauge: GaugeVec,
}

const SILENT: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;

impl Link {
    pub(crate) fn new(source: &'static str, gauge: GaugeVec) -> Self {
        Self { source, state: Arc::new(AtomicU8::new(SILENT)), gauge }
    }

    pub fn up(&self) {
        self.set(UP);
    }

    pub fn down(&self) {
        self.set(DOWN);
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.gauge.with_label_values(&[self.source]).set(f64::from(u8::from(state == UP)));
    }

    /// The source's name while it reports being disconnected.
    pub fn down_source(&self) -> Option<&'static str> {
        (self.state.load(Ordering::Acquire) == DOWN).then_some(self.source)
    }
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
