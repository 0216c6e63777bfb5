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
mod letters;
mod metrics;
mod publish;
mod record;
mod sink;

pub use config::{ConfigError, KafkaConfig, OffsetReset, Ordering, Sasl, Tombstones};

use connector_core::{
    BrokerLetters, BrokerState, Event, Outcome, Publisher, Settle, Source, SourceConfig, SourceContext, SourceError,
    Subscribed, Watermark,
};
use futures_util::future::BoxFuture;
use metrics::KafkaMetrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct KafkaSource {
    config: KafkaConfig,
    dead_letters: Option<FutureProducer>,
}

impl KafkaSource {
    /// Checks the section, and lets librdkafka check every property (an
    /// unknown one, a bad value), so a mistake stops the start.
    pub fn new(config: KafkaConfig) -> Result<Self, ConfigError> {
        let librdkafka = |e: KafkaError| ConfigError(format!("kafka: {}", librdkafka_error(&e)));
        config.client_config()?.create::<BaseConsumer>().map_err(librdkafka)?;
        let dead_letters = match config.producer_config()? {
            Some(c) => Some(c.create::<FutureProducer>().map_err(librdkafka)?),
            None => None,
        };
        Ok(Self { config, dead_letters })
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

/// The partitions assigned to this replica, each with its offsets in
/// flight; shared by the poll loop, the records' settle handles and the
/// rebalance callbacks.
type Partitions = Arc<Mutex<HashMap<(Arc<str>, i32), Watermark>>>;

/// Follows the assignment, commits what has settled of partitions being
/// revoked before they go, and reports the connection and the lag.
struct Context {
    partitions: Partitions,
    broker: BrokerState,
    metrics: Arc<KafkaMetrics>,
    /// Every broker connection was lost since the poll loop last looked.
    lost: AtomicBool,
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
            self.lost.store(true, AtomicOrdering::Release);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }

    /// Every `statistics.interval.ms`: connected while a broker connection
    /// is up and the group has its coordinator.
    fn stats(&self, stats: Statistics) {
        let broker_up = stats.brokers.values().any(|b| b.state == "UP" && !b.name.ends_with("/internal"));
        let group_up = stats.cgrp.as_ref().is_none_or(|g| g.state == "up");
        if broker_up && group_up {
            self.broker.connected();
        } else {
            self.broker.disconnected();
        }
        self.metrics.lag_from(&stats);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
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
            for key in &keys {
                if let Some(offset) = partitions.remove(key).and_then(|mut w| w.to_commit()) {
                    let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(offset));
                }
            }
            self.metrics.assigned.set(partitions.len() as i64);
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
        let Rebalance::Assign(assigned) = rebalance else { return };
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        let mut partitions = self.partitions.lock().expect("partitions lock");
        for p in assigned.elements() {
            partitions.entry((Arc::from(p.topic()), p.partition())).or_default();
        }
        self.metrics.assigned.set(partitions.len() as i64);
        tracing::info!(partitions = assigned.count(), "partitions assigned");
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics.commits.with_label_values(&[label]).inc();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot commit offsets; they are committed with the next ones");
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        let dead_letters = self.config.dead_letter_topic.as_ref().map(|t| format!(", dead letters to {t}"));
        format!(
            "{} (group {}, ordering: {:?}{})",
            self.config.bootstrap_servers,
            self.config.group,
            self.config.ordering,
            dead_letters.unwrap_or_default()
        )
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn BrokerLetters>> {
        Some(Arc::new(letters::TopicLetters { config: self.config.clone() }))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(publish::TopicPublisher::new(self.config.clone())))
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let c = &self.config;
            let partitions: Partitions = Arc::default();
            let metrics = Arc::new(KafkaMetrics::new(&ctx.registry)?);
            let context = Context {
                partitions: partitions.clone(),
                broker: ctx.broker.clone(),
                metrics: metrics.clone(),
                lost: AtomicBool::new(false),
            };
            let consumer: Arc<StreamConsumer<Context>> = Arc::new(c.client_config()?.create_with_context(context)?);
            let mut dispatcher = ctx.dispatcher.with_key_order(c.ordering != Ordering::None);
            if let (Some(producer), Some(topic)) = (self.dead_letters, &c.dead_letter_topic) {
                dispatcher = dispatcher.with_dead_letters(Arc::new(sink::TopicSink { producer, topic: topic.clone() }));
            }
            tracing::info!(servers = %c.bootstrap_servers, group = %c.group, client_id = %c.client_id, "consuming from Kafka");
            let mut subscribed: Subscribed<String, ()> = Subscribed::default();
            let mut waiting = Waiting::new(c.read_ahead);
            let mut paused = false;
            let mut commit = tokio::time::interval(c.commit_interval);
            let mut recheck = tokio::time::interval(Duration::from_secs(5));
            // Whether to read the cluster's topics again (the map changed,
            // or a wanted topic may have been created since).
            let mut look = true;
            loop {
                if std::mem::take(&mut look) {
                    let changes = subscribed.update(&existing(&consumer, ctx.wanted_unpaused()).await);
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
                }
                waiting.admit(&dispatcher).await;
                if (!paused && waiting.full()) || (paused && waiting.low()) {
                    paused = !paused;
                    pause(&consumer, paused, &metrics);
                }
                tokio::select! {
                    received = consumer.recv() => match received {
                        Ok(m) => {
                            metrics.records.with_label_values(&[m.topic()]).inc();
                            let mut event = record::event(&m, c.tombstones);
                            if let (Some(e), Ordering::Partition) = (&mut event, c.ordering) {
                                // One ordering key per partition: its records one at a time.
                                e.key = Some(format!("partition-{}", m.partition()));
                            }
                            let key = (Arc::<str>::from(m.topic()), m.partition());
                            waiting.push(event, Record { partitions: partitions.clone(), key, offset: m.offset() });
                            if paused {
                                // Partitions assigned since the pause.
                                pause(&consumer, true, &metrics);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
                    },
                    () = dispatcher.ready(), if !waiting.records.is_empty() => {}
                    _ = commit.tick() => commit_settled(&consumer, &partitions),
                    _ = recheck.tick() => {
                        look = subscribed.keys().count() < ctx.wanted_unpaused().len();
                        // Back after losing every broker: join the group
                        // afresh. A broker restarted mid-rebalance can leave
                        // this replica with no partitions until the next
                        // rebalance (noida-db did, in 3 runs of 10).
                        if ctx.broker.is_connected() && consumer.context().lost.swap(false, AtomicOrdering::AcqRel) {
                            tracing::info!("the brokers are back; joining the group again");
                            consumer.unsubscribe();
                            subscribed.clear();
                            look = true;
                        }
                    }
                    changed = ctx.topics.changed() => match changed {
                        Ok(()) => look = true,
                        Err(_) => break,
                    },
                    () = ctx.shutdown.cancelled() => break,
                }
            }
            commit_settled(&consumer, &partitions);
            Ok(())
        })
    }
}

/// Records read while the hub is full, in the order read. The source reads
/// ahead up to `kafka.read_ahead` records (or 64 MiB of payloads), then
/// pauses its assignment until half of them are admitted; the poll goes on
/// meanwhile, so the group keeps this replica however slow the functions
/// are. The bound is generous because a pause costs a stall: librdkafka
/// drops the prefetched records, and the resumed partitions wait
/// `fetch.error.backoff.ms` and any fetch the broker holds
/// (`fetch.wait.max.ms`) before they are fetched again.
struct Waiting {
    records: VecDeque<(Option<Event>, Record)>,
    bytes: usize,
    most: usize,
}

/// The most payload bytes read ahead, as librdkafka's own prefetch
/// (`queued.max.messages.kbytes`).
const READ_AHEAD_BYTES: usize = 64 << 20;

impl Waiting {
    fn new(most: usize) -> Self {
        Self { records: VecDeque::new(), bytes: 0, most }
    }

    fn push(&mut self, event: Option<Event>, record: Record) {
        self.bytes += event.as_ref().map_or(0, |e| e.payload.len());
        self.records.push_back((event, record));
    }

    /// Time to pause.
    fn full(&self) -> bool {
        self.records.len() >= self.most || self.bytes >= READ_AHEAD_BYTES
    }

    /// Time to resume.
    fn low(&self) -> bool {
        self.records.len() <= self.most / 2 && self.bytes <= READ_AHEAD_BYTES / 2
    }

    /// Submits the records, in order, while the hub has room. A record of a
    /// partition revoked meanwhile is dropped: its new owner reads it from
    /// the last commit, which is below it.
    async fn admit(&mut self, dispatcher: &connector_core::Dispatcher) {
        while let Some((event, _)) = self.records.front() {
            let ticket = match event {
                Some(e) => match dispatcher.try_ticket(e) {
                    Some(ticket) => Some(ticket),
                    None => return,
                },
                None => None,
            };
            let (event, record) = self.records.pop_front().expect("a front");
            self.bytes -= event.as_ref().map_or(0, |e| e.payload.len());
            if !record.read() {
                continue;
            }
            match (event, ticket) {
                (Some(event), Some(ticket)) => ticket.spawn(event, record),
                // A tombstone skipped (`kafka.tombstones: skip`).
                _ => record.settle(Outcome::Delivered).await,
            }
        }
    }
}

/// Pauses or resumes fetching for the whole assignment.
fn pause(consumer: &StreamConsumer<Context>, paused: bool, metrics: &KafkaMetrics) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => return tracing::warn!(error = %e, "cannot read the assignment to pause or resume it"),
    };
    let done = if paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
    match done {
        Ok(()) => metrics.paused.set(if paused { assignment.count() as i64 } else { 0 }),
        Err(e) => tracing::warn!(error = %e, paused, "cannot pause or resume the assigned partitions"),
    }
    tracing::debug!(paused, partitions = assignment.count(), "hub full: fetching paused, or resumed");
}

/// The wanted topics that exist on the cluster (subscribing to one that
/// does not would only log errors until it is created), and the patterns.
async fn existing(consumer: &Arc<StreamConsumer<Context>>, wanted: BTreeSet<String>) -> BTreeSet<String> {
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
        // A pattern (`^orders\..*`) is librdkafka's to match against the cluster.
        Ok(Ok(topics)) => wanted.into_iter().filter(|t| t.starts_with('^') || topics.contains(t)).collect(),
        Ok(Err(e)) => {
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
    /// Counts the record in flight; `false` when its partition is no longer assigned here.
    fn read(&self) -> bool {
        let mut partitions = self.partitions.lock().expect("partitions lock");
        partitions.get_mut(&self.key).map(|w| w.read(self.offset)).is_some()
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
