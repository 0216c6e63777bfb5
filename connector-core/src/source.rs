//! The contract between the hub and a source.

use crate::access::Access;
use crate::dispatcher::Dispatcher;
use crate::topics::TopicMap;
use futures_util::future::BoxFuture;
use prometheus::GaugeVec;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// A source's section of the config file. The binary's one registration
/// entry per source derives the rest (the `connect` subcommand, the
/// feature, the banner, the enabled check) from it.
pub trait SourceConfig: Default + Clone + serde::Serialize + serde::de::DeserializeOwned {
    /// Whether `switchboard up` runs this source.
    fn enabled(&self) -> bool;
    /// Checks the section and builds the source; errors name the key and
    /// what was expected, so a mistake stops the start.
    fn build(&self) -> Result<Box<dyn Source>, SourceError>;
}

/// What a source is given to run.
pub struct SourceContext {
    /// Where events go: [`Dispatcher::submit`] an event with its settle handle.
    pub dispatcher: Dispatcher,
    /// The live topic map: the topics to subscribe to change while running.
    pub topics: watch::Receiver<Arc<TopicMap>>,
    /// For a source with a broker: whether it is connected to it.
    pub broker: BrokerState,
    /// Who may send requests, for a source that serves HTTP (`hub.auth`).
    pub access: Arc<Access>,
    /// The hub's metrics registry, for the source's own metrics
    /// (`switchboard_<source>_*`), served on the hub's `/metrics`.
    pub registry: prometheus::Registry,
    pub shutdown: CancellationToken,
}

impl SourceContext {
    /// The topics this source consumes now ([`TopicMap::topics_for`]),
    /// paused functions' included: for a source that must stay subscribed
    /// so as not to lose what is published meanwhile (MQTT, core NATS,
    /// Redis pub/sub); their events wait in the hub until the resume.
    pub fn wanted(&self) -> BTreeSet<String> {
        self.topics.borrow().topics_for(self.dispatcher.source())
    }

    /// The topics this source consumes now but those only paused functions
    /// subscribe to: for a source whose broker keeps what is not read.
    pub fn wanted_unpaused(&self) -> BTreeSet<String> {
        self.topics.borrow().unpaused_topics_for(self.dispatcher.source())
    }
}

/// A source's connection to its broker, as `/readyz` and the
/// `switchboard_source_connected` gauge report it. A source with no broker
/// (cron, CloudEvents) never reports, and never makes the hub unready.
#[derive(Clone)]
pub struct BrokerState {
    source: &'static str,
    state: Arc<AtomicU8>,
    /// Why messages the broker holds for the hub are not moving, while
    /// connected: a stall is as unready as a lost connection.
    stall: Arc<Mutex<Option<String>>>,
    gauge: GaugeVec,
}

const SILENT: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;

impl BrokerState {
    pub(crate) fn new(source: &'static str, gauge: GaugeVec) -> Self {
        Self { source, state: Arc::new(AtomicU8::new(SILENT)), stall: Default::default(), gauge }
    }

    pub fn connected(&self) {
        self.set(UP);
    }

    pub fn disconnected(&self) {
        self.set(DOWN);
    }

    pub fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// The source's name; whether it is connected to its broker (none for
    /// a source without one, which never reports).
    pub fn report(&self) -> (&'static str, Option<bool>) {
        let state = self.state.load(Ordering::Acquire);
        (self.source, (state != SILENT).then_some(state == UP))
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.gauge.with_label_values(&[self.source]).set(f64::from(u8::from(state == UP)));
    }

    /// Connected, but its messages are not moving (`why` says how): `/readyz` fails until [`BrokerState::flowing`].
    pub fn stalled(&self, why: String) {
        *self.stall.lock().expect("stall lock") = Some(why);
    }

    pub fn flowing(&self) {
        *self.stall.lock().expect("stall lock") = None;
    }

    /// What `/readyz` says of this source while it is not ready: disconnected, or stalled.
    pub fn unready(&self) -> Option<String> {
        if self.state.load(Ordering::Acquire) == DOWN {
            return Some(format!("not connected to the broker: {}", self.source));
        }
        self.stall.lock().expect("stall lock").as_ref().map(|why| format!("{} stalled: {why}", self.source))
    }
}

/// A broker, schedule or endpoint that produces events. A source owns its
/// protocol: it subscribes to [`SourceContext::wanted`], turns each message
/// into an [`crate::Event`] and a [`crate::Settle`] handle, and submits
/// both; the core delivers and settles.
pub trait Source: Send + 'static {
    /// Names the source in metrics, in `X-Connector` and in topic
    /// qualifiers (`nats:orders`); one of [`crate::topics::SOURCES`].
    fn name(&self) -> &'static str;
    /// Where it reads from, for the start-up banner.
    fn describe(&self) -> String;
    /// Runs until `ctx.shutdown`; an error is fatal (connection problems
    /// are retried inside the source).
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>>;
    /// Where this source's broker keeps dead letters of its own (a Kafka
    /// topic, a Redis stream, a JetStream stream, an SQS queue), read back
    /// so that a replay can take them; none for a source without.
    fn dead_letter_queue(&self) -> Option<Arc<dyn BrokerLetters>> {
        None
    }
    /// How to send an event through this source's broker, as any producer
    /// would (`switchboard publish`); none for a source without a broker.
    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        None
    }
}

/// Sends a message to a topic of a source's broker, so a trigger can be
/// tried end to end: the hub then receives it like any other.
pub trait Publisher: Send + Sync {
    /// Publishes `message` to `topic`; once the broker has it, says where
    /// (a partition and offset, an entry id, a sequence, a message id).
    fn publish(&self, topic: &str, message: Published) -> BoxFuture<'_, Result<String, String>>;
}

/// What [`Publisher::publish`] sends.
pub struct Published {
    pub body: bytes::Bytes,
    /// Message headers (user properties in MQTT, attributes in SQS, fields
    /// beside `payload` in a Redis stream entry). Those named `ce-*` are a
    /// CloudEvent's attributes: each publisher writes them in its broker's
    /// binding (`ce_*` headers in Kafka, unprefixed user properties in MQTT).
    pub headers: Vec<(String, String)>,
    /// The record key (Kafka), message group (SQS FIFO), or none.
    pub key: Option<String>,
}

/// A broker's own dead letters, as a replay takes them (`"from":
/// "kafka:switchboard.dead-letters"`): read, moved into the hub's store,
/// then removed from the broker, so that none is lost on the way.
pub trait BrokerLetters: Send + Sync {
    /// Up to `max` letters kept at `place` (a topic, stream or queue),
    /// oldest first, and how to remove them once they are stored.
    fn read(&self, place: &str, max: usize) -> BoxFuture<'_, Result<BrokerBatch, String>>;
}

/// Letters read from a broker, still there until [`BrokerBatch::remove`].
pub struct BrokerBatch {
    pub letters: Vec<crate::DeadLetter>,
    pub remove: BoxFuture<'static, Result<(), String>>,
}
