//! The Kafka source (librdkafka, bundled).
//!
//! One consumer in `kafka.group` subscribes to the topics of the topic map
//! that exist on the cluster, and looks again when the map changes and
//! every few seconds for those that do not exist yet. Records of a
//! partition are delivered concurrently, one key after another
//! (`kafka.ordering`), and a partition's offset is committed only up to its
//! lowest unsettled record ([`Watermark`]): delivery is at least once, with
//! no gap, even with records in flight out of order. Offsets are committed
//! every `kafka.commit_interval` and for partitions being revoked.

mod config;
mod record;

pub use config::{ConfigError, KafkaConfig, OffsetReset, Ordering, Sasl, Tombstones};

use connector_core::{
    BrokerState, Outcome, Settle, Source, SourceConfig, SourceContext, SourceError, Subscribed, Watermark,
};
use futures_util::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct KafkaSource {
    config: KafkaConfig,
}

impl KafkaSource {
    /// Checks the section, and lets librdkafka check every property (an
    /// unknown one, a bad value), so a mistake stops the start.
    pub fn new(config: KafkaConfig) -> Result<Self, ConfigError> {
        let client = config.client_config()?;
        client.create::<BaseConsumer>().map_err(|e| ConfigError(format!("kafka: {}", librdkafka_error(&e))))?;
        Ok(Self { config })
    }
}

impl SourceConfig for KafkaConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(KafkaSource::new(self.clone())?))
    }
}

/// How long a revoke waits for the records in flight of its partitions.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// Each partition's offsets in flight, shared by the poll loop, the
/// records' settle handles and the rebalance callback.
type Partitions = Arc<Mutex<HashMap<(Arc<str>, i32), Watermark>>>;

/// Commits what has settled of partitions being revoked, before they go.
struct Context {
    partitions: Partitions,
    broker: BrokerState,
}

impl ClientContext for Context {
    /// librdkafka's log lines, into the hub's own log.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(facility, "librdkafka: {message}"),
            L::Warning => tracing::warn!(facility, "librdkafka: {message}"),
            L::Notice | L::Info => tracing::info!(facility, "librdkafka: {message}"),
            L::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)) {
            self.broker.disconnected();
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        let keys: Vec<(Arc<str>, i32)> =
            revoked.elements().iter().map(|p| (Arc::from(p.topic()), p.partition())).collect();
        // Records of these partitions in flight get a while to settle, so
        // their offsets are committed before the partitions go.
        let settled = || {
            let partitions = self.partitions.lock().expect("partitions lock");
            keys.iter().all(|k| partitions.get(k).is_none_or(|w| w.in_flight() == 0))
        };
        let wait = || {
            let deadline = std::time::Instant::now() + REVOKE_WAIT;
            while !settled() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // This runs inside the poll, on a runtime worker: let the runtime
        // move its other tasks (the deliveries being waited for) elsewhere.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
        let mut tpl = TopicPartitionList::new();
        {
            let mut partitions = self.partitions.lock().expect("partitions lock");
            for p in revoked.elements() {
                let key = (Arc::from(p.topic()), p.partition());
                if let Some(offset) = partitions.remove(&key).and_then(|mut w| w.to_commit()) {
                    let _ = tpl.add_partition_offset(p.topic(), p.partition(), Offset::Offset(offset));
                }
            }
        }
        // Records still in flight after the wait are not committed: the
        // next owner delivers them again (at least once).
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "cannot commit the offsets of revoked partitions; their records will be delivered again");
        }
        tracing::info!(partitions = revoked.count(), "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        format!("{} (group {}, ordering: {:?})", self.config.bootstrap_servers, self.config.group, self.config.ordering)
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let c = &self.config;
            let partitions: Partitions = Arc::default();
            let context = Context { partitions: partitions.clone(), broker: ctx.broker.clone() };
            let consumer: Arc<StreamConsumer<Context>> = Arc::new(c.client_config()?.create_with_context(context)?);
            let dispatcher = ctx.dispatcher.with_key_order(c.ordering != Ordering::None);
            tracing::info!(servers = %c.bootstrap_servers, group = %c.group, client_id = %c.client_id, "consuming from Kafka");
            let mut subscribed: Subscribed<String, ()> = Subscribed::default();
            let mut commit = tokio::time::interval(c.commit_interval);
            let mut recheck = tokio::time::interval(Duration::from_secs(5));
            loop {
                let wanted = existing(&consumer, ctx.wanted(), &ctx.broker).await;
                let changes = subscribed.update(&wanted);
                if !changes.added.is_empty() || !changes.removed.is_empty() {
                    for t in &changes.added {
                        subscribed.insert(t.clone(), ());
                    }
                    let topics: Vec<&str> = subscribed.keys().map(String::as_str).collect();
                    if topics.is_empty() {
                        consumer.unsubscribe();
                    } else {
                        consumer.subscribe(&topics)?;
                    }
                    tracing::info!(?topics, "subscribed");
                }
                tokio::select! {
                    received = consumer.recv() => match received {
                        Ok(m) => {
                            let mut event = record::event(&m, c.tombstones);
                            if let (Some(e), Ordering::Partition) = (&mut event, c.ordering) {
                                // One ordering key per partition: its records one at a time.
                                e.key = Some(format!("partition-{}", m.partition()));
                            }
                            let key = (Arc::<str>::from(m.topic()), m.partition());
                            let handle = Record { partitions: partitions.clone(), key, offset: m.offset() };
                            handle.read();
                            match event {
                                Some(event) => dispatcher.submit(event, handle).await,
                                None => handle.settle(Outcome::Delivered).await,
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
                    },
                    _ = commit.tick() => commit_settled(&consumer, &partitions),
                    _ = recheck.tick() => {}
                    changed = ctx.topics.changed() => if changed.is_err() { break },
                    () = ctx.shutdown.cancelled() => break,
                }
            }
            commit_settled(&consumer, &partitions);
            Ok(())
        })
    }
}

/// The wanted topics that exist on the cluster: subscribing to one that
/// does not would only log errors until it is created.
async fn existing(
    consumer: &Arc<StreamConsumer<Context>>,
    wanted: BTreeSet<String>,
    broker: &BrokerState,
) -> BTreeSet<String> {
    if wanted.is_empty() {
        return wanted;
    }
    let c = consumer.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        c.fetch_metadata(None, Duration::from_secs(5)).map(|m| {
            m.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name().to_string()).collect::<BTreeSet<_>>()
        })
    })
    .await;
    match metadata {
        Ok(Ok(topics)) => {
            broker.connected();
            wanted.into_iter().filter(|t| topics.contains(t)).collect()
        }
        Ok(Err(e)) => {
            broker.disconnected();
            tracing::warn!(error = %e, "cannot read the cluster's topics");
            BTreeSet::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's topics");
            BTreeSet::new()
        }
    }
}

/// Commits each partition up to its lowest unsettled record, where that moved.
fn commit_settled(consumer: &StreamConsumer<Context>, partitions: &Partitions) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), w) in partitions.lock().expect("partitions lock").iter_mut() {
        if let Some(offset) = w.to_commit() {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
    {
        tracing::warn!(error = %e, "cannot commit offsets; they are committed with the next ones");
    }
}

/// A record in flight: settling it lets its partition's watermark pass it.
struct Record {
    partitions: Partitions,
    key: (Arc<str>, i32),
    offset: i64,
}

impl Record {
    fn read(&self) {
        self.partitions.lock().expect("partitions lock").entry(self.key.clone()).or_default().read(self.offset);
    }
}

impl Settle for Record {
    async fn settle(self, outcome: Outcome) {
        if let Outcome::Redeliver { reason, .. } = outcome {
            // Never committed: the partition's commits stop below it, and
            // the group delivers it again after a restart or rebalance.
            tracing::warn!(topic = %self.key.0, partition = self.key.1, offset = self.offset, %reason, "not settled; it will be delivered again");
            return;
        }
        if let Some(w) = self.partitions.lock().expect("partitions lock").get_mut(&self.key) {
            w.settle(self.offset);
        }
    }
}

/// librdkafka's own words for a configuration error (they name the property).
fn librdkafka_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, key, value) => {
            format!("property {key:?} = {value:?}: {description}")
        }
        e => e.to_string(),
    }
}
