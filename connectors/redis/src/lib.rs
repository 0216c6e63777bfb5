//! The Redis source.
//!
//! Streams (at least once): each topic is a stream, read with `XREADGROUP`
//! in a consumer group. An entry is `XACK`ed (many at a time) once the core
//! has settled it, and kept from other consumers with `XCLAIM` while a long
//! invocation runs. On start the consumer first re-reads its own pending
//! entries (what it had in flight when it last stopped), and every
//! `claim_idle` it takes over entries idle that long in other consumers'
//! lists (`XPENDING … IDLE`, then `XCLAIM`: a dead replica's work). The
//! times Redis has handed an entry out are its delivery count, which the
//! core's retry policy bounds. A stream is created (with its group) only
//! for a topic qualified `redis:`; a plain topic is read once its stream
//! exists. Dead letters go to a Redis stream.
//!
//! Pub/sub (at most once): `SUBSCRIBE`, or `PSUBSCRIBE` for topics with
//! glob characters. Redis keeps nothing for a subscriber that is away.

mod config;
mod publish;
mod store;

pub use config::{ConfigError, Mode, RedisConfig};
pub use store::RedisStore;

use connector_core::{
    Backoff, Batcher, BrokerBatch, BrokerLetters, DeadLetter, DeadLetterSink, Dispatcher, Event, NoAck, Outcome,
    Publisher, Settle, Source, SourceConfig, SourceContext, SourceError, Subscribed,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub struct RedisSource {
    config: RedisConfig,
    client: redis::Client,
    /// Outlives a connection: entries read before a reconnect may still be in flight.
    in_flight: InFlight,
}

impl RedisSource {
    /// Validates the config (URL, mode, names) so a mistake fails at start-up.
    pub fn new(config: RedisConfig) -> Result<Self, config::ConfigError> {
        let client = config.validate()?;
        Ok(Self { config, client, in_flight: InFlight::default() })
    }
}

impl SourceConfig for RedisConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(RedisSource::new(self.clone())?))
    }
}

impl Source for RedisSource {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> String {
        match self.config.mode {
            Mode::Streams => format!("{} (streams, group {})", self.config.redacted_url(), self.config.group),
            Mode::Pubsub => format!("{} (pub/sub, at most once)", self.config.redacted_url()),
        }
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn BrokerLetters>> {
        let streams = self.config.mode == Mode::Streams;
        streams.then(|| Arc::new(StreamLetters { client: self.client.clone() }) as Arc<dyn BrokerLetters>)
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(publish::RedisPublisher::new(self.config.clone(), self.client.clone())))
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let this = Arc::new(*self);
            let mut backoff = Backoff::default();
            ctx.broker.disconnected();
            loop {
                let result = match this.config.mode {
                    Mode::Streams => this.clone().streams(&ctx).await,
                    Mode::Pubsub => this.pubsub(&ctx).await,
                };
                if ctx.shutdown.is_cancelled() {
                    return Ok(());
                }
                if let Err(e) = result {
                    // A connection that was up starts reconnecting from the shortest wait.
                    if ctx.broker.is_connected() {
                        backoff.reset();
                    }
                    ctx.broker.disconnected();
                    tracing::warn!(url = %this.config.redacted_url(), error = %e, "redis connection lost; reconnecting");
                }
                if !backoff.sleep(&ctx.shutdown).await {
                    return Ok(());
                }
            }
        })
    }
}

/// Streams that do not exist yet are looked for again this often.
const MISSING_RECHECK: Duration = Duration::from_secs(1);

impl RedisSource {
    async fn streams(self: Arc<Self>, ctx: &SourceContext) -> redis::RedisResult<()> {
        let c = &self.config;
        // Blocking reads get a connection of their own; acks and claims share another.
        let mut reader = self.client.get_multiplexed_async_connection().await?;
        let commands = self.client.get_multiplexed_async_connection().await?;
        ctx.broker.connected();
        tracing::info!(url = %c.redacted_url(), group = %c.group, consumer = %c.consumer, "reading Redis streams");
        let dispatcher = ctx
            .dispatcher
            .with_dead_letters(Arc::new(StreamSink { con: commands.clone(), stream: c.dead_letter_stream.clone() }));
        let entry = EntryContext {
            acks: acker(commands.clone(), c.group.clone(), c.batch),
            in_flight: self.in_flight.clone(),
            commands: commands.clone(),
            group: c.group.clone(),
            consumer: c.consumer.clone(),
            claim_idle: c.claim_idle,
        };
        let mut groups: Subscribed<String, ()> = Subscribed::default();
        // Plain topics whose stream did not exist when last looked for.
        let mut missing: BTreeSet<String> = BTreeSet::new();
        let mut missing_checked = Instant::now();
        let mut last_claim = Instant::now();
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            let own = ctx.topics.borrow().own_topics("redis");
            let recheck = missing_checked.elapsed() >= MISSING_RECHECK;
            if recheck {
                missing_checked = Instant::now();
            }
            let wanted = ctx.wanted();
            for s in groups.update(&wanted).added {
                let was_missing = missing.contains(&s);
                if was_missing && !recheck {
                    continue;
                }
                // A stream that appeared after it was looked for holds only
                // entries newer than the subscription: read them all.
                let start = if was_missing { "0" } else { c.start.as_str() };
                let created: redis::RedisResult<()> = if own.contains(&s) {
                    reader.xgroup_create_mkstream(&s, &c.group, start).await
                } else {
                    reader.xgroup_create(&s, &c.group, start).await
                };
                match created {
                    Ok(()) => tracing::info!(stream = %s, group = %c.group, "consumer group created"),
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e),
                    Err(e) if e.to_string().contains("requires the key to exist") => {
                        if missing.insert(s.clone()) {
                            tracing::debug!(stream = %s, "no such stream yet; qualify the topic as redis:{s} to create it");
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(stream = %s, error = %e, "cannot read this topic as a stream");
                        continue;
                    }
                }
                missing.remove(&s);
                // Entries this consumer had in flight when it last stopped.
                self.read_pending(&mut reader, &entry, &dispatcher, &s).await?;
                groups.insert(s, ());
            }
            missing.retain(|s| wanted.contains(s));
            // A stream only paused functions read waits in its group, unread
            // (its group is made all the same, so nothing published
            // meanwhile is skipped by a group made at the resume).
            let unpaused = ctx.wanted_unpaused();
            let streams: Vec<String> = groups.keys().filter(|s| unpaused.contains(*s)).cloned().collect();
            if streams.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = ctx.shutdown.cancelled() => return Ok(()),
                }
                continue;
            }
            if last_claim.elapsed() >= c.claim_idle {
                for s in &streams {
                    self.claim(&entry, &dispatcher, s).await?;
                }
                last_claim = Instant::now();
            }
            let ids = vec![">"; streams.len()];
            let options = StreamReadOptions::default()
                .group(&c.group, &c.consumer)
                .count(c.batch)
                .block(c.block.as_millis() as usize);
            let reply: Option<StreamReadReply> = reader.xread_options(&streams, &ids, &options).await?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for e in key.ids {
                    dispatcher.submit(self.event(&key.key, &e), entry.of(&key.key, e.id, 1)).await;
                }
            }
        }
    }

    /// Re-reads this consumer's own pending entries (id `0`).
    async fn read_pending(
        &self,
        reader: &mut MultiplexedConnection,
        entry: &EntryContext,
        dispatcher: &Dispatcher,
        stream: &str,
    ) -> redis::RedisResult<()> {
        let c = &self.config;
        let options = StreamReadOptions::default().group(&c.group, &c.consumer).count(10_000);
        let reply: Option<StreamReadReply> = reader.xread_options(&[stream], &["0"], &options).await?;
        let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        if !entries.is_empty() {
            tracing::info!(%stream, count = entries.len(), "redelivering entries left pending by this consumer");
        }
        self.redeliver(entry, dispatcher, stream, entries).await;
        Ok(())
    }

    /// Takes over entries other consumers left idle for `claim_idle`. Only
    /// other consumers': this one's are in flight here, kept alive, or
    /// re-read when it reconnects; claiming them would deliver them twice.
    async fn claim(&self, entry: &EntryContext, dispatcher: &Dispatcher, stream: &str) -> redis::RedisResult<()> {
        let c = &self.config;
        let mut con = entry.commands.clone();
        let idle = c.claim_idle.as_millis() as u64;
        let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&c.group)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(c.batch)
            .query_async(&mut con)
            .await?;
        let ids: Vec<String> = pending.ids.into_iter().filter(|p| p.consumer != c.consumer).map(|p| p.id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        // XCLAIM checks the idle time again: an entry acked or claimed meanwhile is left.
        let claimed: redis::streams::StreamClaimReply = con.xclaim(stream, &c.group, &c.consumer, idle, &ids).await?;
        if !claimed.ids.is_empty() {
            tracing::info!(%stream, count = claimed.ids.len(), "claimed entries idle in other consumers");
        }
        self.redeliver(entry, dispatcher, stream, claimed.ids).await;
        Ok(())
    }

    /// Submits entries Redis has handed out before, with their delivery
    /// counts, but for those still in flight here (read before a reconnect).
    async fn redeliver(&self, entry: &EntryContext, dispatcher: &Dispatcher, stream: &str, entries: Vec<StreamId>) {
        for e in entries {
            if entry.in_flight(stream, &e.id) {
                continue;
            }
            let mut con = entry.commands.clone();
            let pending: redis::RedisResult<redis::streams::StreamPendingCountReply> =
                con.xpending_count(stream, &self.config.group, &e.id, &e.id, 1).await;
            let deliveries = pending.ok().and_then(|r| r.ids.first().map(|p| p.times_delivered as u32)).unwrap_or(1);
            dispatcher.submit(self.event(stream, &e), entry.of(stream, e.id, deliveries)).await;
        }
    }

    fn event(&self, stream: &str, entry: &StreamId) -> Event {
        let mut event = Event { id: entry.id.clone(), topic: stream.to_string(), ..Default::default() };
        event.headers.push(("X-Redis-Stream".into(), stream.to_string()));
        event.headers.push(("X-Redis-Id".into(), entry.id.clone()));
        let mut fields: Vec<(&String, &redis::Value)> = entry.map.iter().collect();
        fields.sort_by_key(|(k, _)| k.as_str());
        for (name, value) in fields {
            let bytes: Vec<u8> = redis::from_redis_value(value).unwrap_or_default();
            if *name == self.config.payload_field {
                event.payload = bytes.into();
            } else if name.eq_ignore_ascii_case("content-type") {
                event.content_type = Some(String::from_utf8_lossy(&bytes).into_owned());
            } else {
                if Some(name) == self.config.key_field.as_ref() {
                    event.key = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                event.headers.push((format!("X-Redis-Field-{name}"), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        event
    }

    async fn pubsub(&self, ctx: &SourceContext) -> redis::RedisResult<()> {
        let (mut sink, mut stream) = self.client.get_async_pubsub().await?.split();
        ctx.broker.connected();
        tracing::warn!(url = %self.config.redacted_url(), "Redis pub/sub is at-most-once: messages published while the hub is away are lost; use redis.mode: streams for at-least-once");
        let mut topics = ctx.topics.clone();
        let mut subscribed: Subscribed<String, ()> = Subscribed::default();
        loop {
            let changes = subscribed.update(&ctx.wanted());
            for (t, ()) in changes.removed {
                if is_pattern(&t) { sink.punsubscribe(&t).await? } else { sink.unsubscribe(&t).await? }
            }
            for t in changes.added {
                if is_pattern(&t) {
                    sink.psubscribe(&t).await?
                } else {
                    sink.subscribe(&t).await?
                }
                tracing::info!(channel = %t, "subscribed");
                subscribed.insert(t, ());
            }
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err(redis::RedisError::from((redis::ErrorKind::IoError, "pub/sub connection closed"))) };
                    let channel = msg.get_channel_name().to_string();
                    let payload: Vec<u8> = msg.get_payload().unwrap_or_default();
                    let event = Event {
                        id: uuid::Uuid::new_v4().to_string(),
                        id_made_up: true,
                        topic: channel.clone(),
                        payload: payload.into(),
                        headers: vec![("X-Redis-Channel".into(), channel)],
                        ..Default::default()
                    };
                    ctx.dispatcher.submit(event, NoAck).await;
                }
                changed = topics.changed() => if changed.is_err() { return Ok(()) },
                () = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

fn is_pattern(topic: &str) -> bool {
    topic.contains(['*', '?', '['])
}

/// Entries being delivered by this process, by stream and id.
type InFlight = Arc<Mutex<HashSet<(String, String)>>>;

/// What every entry's settle handle shares.
struct EntryContext {
    acks: Batcher<(String, String)>,
    in_flight: InFlight,
    commands: MultiplexedConnection,
    group: String,
    consumer: String,
    claim_idle: Duration,
}

impl EntryContext {
    fn in_flight(&self, stream: &str, id: &str) -> bool {
        self.in_flight.lock().expect("in-flight lock").contains(&(stream.to_string(), id.to_string()))
    }

    fn of(&self, stream: &str, id: String, deliveries: u32) -> StreamEntry {
        self.in_flight.lock().expect("in-flight lock").insert((stream.to_string(), id.clone()));
        StreamEntry {
            in_flight: self.in_flight.clone(),
            acks: self.acks.clone(),
            commands: self.commands.clone(),
            stream: stream.to_string(),
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            id,
            deliveries,
            claim_idle: self.claim_idle,
        }
    }
}

/// A stream entry in this consumer's pending list.
struct StreamEntry {
    in_flight: InFlight,
    acks: Batcher<(String, String)>,
    commands: MultiplexedConnection,
    stream: String,
    group: String,
    consumer: String,
    id: String,
    deliveries: u32,
    claim_idle: Duration,
}

impl Settle for StreamEntry {
    fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// Another consumer takes over an entry idle for `claim_idle`.
    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.claim_idle / 2)
    }

    /// Claiming the entry for this consumer again resets its idle time.
    async fn keep_alive(&self) {
        let mut con = self.commands.clone();
        let claimed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(&self.id)
            .arg("JUSTID")
            .query_async(&mut con)
            .await;
        if let Err(e) = claimed {
            tracing::warn!(stream = %self.stream, id = %self.id, error = %e, "cannot keep a long-running entry claimed");
        }
    }

    /// Acks a settled entry; leaves the others pending, to be redelivered.
    async fn settle(self, outcome: Outcome) {
        self.in_flight.lock().expect("in-flight lock").remove(&(self.stream.clone(), self.id.clone()));
        if let Outcome::Redeliver { reason, .. } = outcome {
            tracing::warn!(stream = %self.stream, id = %self.id, %reason, "not acknowledged; the entry stays pending and will be redelivered");
        } else if !self.acks.send((self.stream, self.id)).await {
            tracing::warn!("the ack task has stopped; the entry stays pending and will be redelivered");
        }
    }
}

/// Acks settled entries, as many per `XACK` as have settled meanwhile.
fn acker(con: MultiplexedConnection, group: String, max: usize) -> Batcher<(String, String)> {
    Batcher::spawn(max, move |entries: Vec<(String, String)>| {
        let (mut con, group) = (con.clone(), group.clone());
        async move {
            let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (stream, id) in entries {
                by_stream.entry(stream).or_default().push(id);
            }
            for (stream, ids) in by_stream {
                let acked: redis::RedisResult<i64> = con.xack(&stream, &group, &ids).await;
                if let Err(e) = acked {
                    tracing::warn!(%stream, count = ids.len(), error = %e, "cannot XACK; the entries will be redelivered");
                }
            }
        }
    })
}

/// Dead letters as entries of a Redis stream: field `letter` holds the JSON,
/// with `topic`, `function` and `error` beside it for XRANGE readers.
struct StreamSink {
    con: MultiplexedConnection,
    stream: String,
}

impl DeadLetterSink for StreamSink {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let json = serde_json::to_string(&letter).map_err(|e| e.to_string())?;
            let mut con = self.con.clone();
            let fields = [
                ("letter", json.as_str()),
                ("topic", letter.topic.as_str()),
                ("function", letter.function.as_deref().unwrap_or("")),
                ("error", letter.error.as_str()),
            ];
            let _: String = con.xadd(&self.stream, "*", &fields).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("redis stream {}", self.stream)
    }
}

/// The letters of a dead-letter stream, read back for a replay (`"from":
/// "redis:STREAM"`): each entry's `letter` field, as [`StreamSink`] writes
/// it; entries removed (`XDEL`) once the hub has stored them.
struct StreamLetters {
    client: redis::Client,
}

impl BrokerLetters for StreamLetters {
    fn read(&self, stream: &str, max: usize) -> BoxFuture<'_, Result<BrokerBatch, String>> {
        let stream = stream.to_string();
        Box::pin(async move {
            let mut con = self.client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
            let reply: redis::streams::StreamRangeReply =
                con.xrange_count(&stream, "-", "+", max).await.map_err(|e| e.to_string())?;
            let (mut letters, mut ids) = (vec![], vec![]);
            for entry in reply.ids {
                let letter = entry.get::<String>("letter").and_then(|json| serde_json::from_str(&json).ok());
                match letter {
                    Some(letter) => {
                        letters.push(letter);
                        ids.push(entry.id);
                    }
                    None => tracing::warn!(stream, id = %entry.id, "not a dead letter (no letter field); left there"),
                }
            }
            let remove = Box::pin(async move {
                if !ids.is_empty() {
                    let _: usize = con.xdel(&stream, &ids).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            });
            Ok(BrokerBatch { letters, remove })
        })
    }
}
