//! The Redis source.
//!
//! Streams (at least once): each discovered topic is a stream, read with
//! `XREADGROUP` in a consumer group. An entry is `XACK`ed only once delivery
//! has settled. On start the consumer first re-reads its own pending
//! entries (what it had in flight when it last stopped), and every
//! `claim_idle` it takes over entries idle that long in other consumers'
//! lists (`XAUTOCLAIM`: a dead replica's work). An entry delivered more than
//! `max_deliveries` times goes to the dead letters without another
//! invocation. Dead letters go to a Redis stream.
//!
//! Pub/sub (at most once): `SUBSCRIBE`, or `PSUBSCRIBE` for topics with
//! glob characters. Redis keeps nothing for a subscriber that is away.

mod config;

pub use config::{Mode, RedisConfig};

use connector_core::{DeadLetter, DeadLetterSink, Dispatcher, Event, Outcome, Source, SourceContext, SourceError};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub struct RedisSource {
    config: RedisConfig,
    client: redis::Client,
}

impl RedisSource {
    /// Validates the config (URL, mode, names) so a mistake fails at start-up.
    pub fn new(config: RedisConfig) -> Result<Self, config::ConfigError> {
        let client = config.validate()?;
        Ok(Self { config, client })
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Source for RedisSource {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let this = Arc::new(*self);
            let mut backoff = Duration::from_millis(250);
            ctx.link.down();
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
                    if ctx.link.down_source().is_none() {
                        backoff = Duration::from_millis(250);
                    }
                    ctx.link.down();
                    tracing::warn!(url = %this.config.redacted_url(), error = %e, retry_in = ?backoff, "redis connection lost; reconnecting");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = ctx.shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
    }
}

fn wanted(ctx: &SourceContext) -> BTreeSet<String> {
    ctx.topics.borrow().broker_topics()
}

impl RedisSource {
    async fn streams(self: Arc<Self>, ctx: &SourceContext) -> redis::RedisResult<()> {
        let c = &self.config;
        // Blocking reads get a connection of their own; acks and claims share another.
        let mut reader = self.client.get_multiplexed_async_connection().await?;
        let commands = self.client.get_multiplexed_async_connection().await?;
        ctx.link.up();
        tracing::info!(url = %c.redacted_url(), group = %c.group, consumer = %c.consumer, "reading Redis streams");
        let dispatcher = ctx
            .dispatcher
            .with_dead_letters(Arc::new(StreamSink { con: commands.clone(), stream: c.dead_letter_stream.clone() }));
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            let streams: Vec<String> = wanted(ctx).into_iter().collect();
            let new: Vec<String> = streams.iter().filter(|s| !groups.contains(*s)).cloned().collect();
            for s in &new {
                let created: redis::RedisResult<()> =
                    reader.xgroup_create_mkstream(s, &c.group, c.start.as_str()).await;
                match created {
                    Ok(()) => tracing::info!(stream = %s, group = %c.group, "consumer group created"),
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => return Err(e),
                }
                // Entries this consumer had in flight when it last stopped.
                self.read_pending(&mut reader, &commands, &dispatcher, s).await?;
                groups.insert(s.clone());
            }
            groups.retain(|s| streams.contains(s));
            if streams.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if last_claim.elapsed() >= c.claim_idle {
                for s in &streams {
                    self.claim(&commands, &dispatcher, s).await?;
                }
                last_claim = tokio::time::Instant::now();
            }
            let ids = vec![">"; streams.len()];
            let options = StreamReadOptions::default()
                .group(&c.group, &c.consumer)
                .count(c.batch)
                .block(c.block.as_millis() as usize);
            let reply: Option<StreamReadReply> = reader.xread_options(&streams, &ids, &options).await?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    self.deliver(&commands, &dispatcher, &key.key, entry, 1).await;
                }
            }
        }
    }

    /// Re-reads this consumer's own pending entries (id `0`).
    async fn read_pending(
        &self,
        reader: &mut MultiplexedConnection,
        commands: &MultiplexedConnection,
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
        for entry in entries {
            let deliveries = self.deliveries(commands, stream, &entry.id).await;
            self.deliver(commands, dispatcher, stream, entry, deliveries).await;
        }
        Ok(())
    }

    /// Takes over entries other consumers left idle for `claim_idle`.
    async fn claim(
        &self,
        commands: &MultiplexedConnection,
        dispatcher: &Dispatcher,
        stream: &str,
    ) -> redis::RedisResult<()> {
        let c = &self.config;
        let mut con = commands.clone();
        let reply: redis::streams::StreamAutoClaimReply = con
            .xautoclaim_options(
                stream,
                &c.group,
                &c.consumer,
                c.claim_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(c.batch),
            )
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(%stream, count = reply.claimed.len(), "claimed entries idle in other consumers");
        }
        for entry in reply.claimed {
            let deliveries = self.deliveries(commands, stream, &entry.id).await;
            self.deliver(commands, dispatcher, stream, entry, deliveries).await;
        }
        Ok(())
    }

    async fn deliveries(&self, commands: &MultiplexedConnection, stream: &str, id: &str) -> u32 {
        let mut con = commands.clone();
        let reply: redis::RedisResult<redis::streams::StreamPendingCountReply> =
            con.xpending_count(stream, &self.config.group, id, id, 1).await;
        reply.ok().and_then(|r| r.ids.first().map(|p| p.times_delivered as u32)).unwrap_or(1)
    }

    async fn deliver(
        &self,
        commands: &MultiplexedConnection,
        dispatcher: &Dispatcher,
        stream: &str,
        entry: StreamId,
        deliveries: u32,
    ) {
        let event = self.event(stream, &entry);
        let (con, stream, group, id) = (commands.clone(), stream.to_string(), self.config.group.clone(), entry.id);
        if deliveries > self.config.max_deliveries {
            let reason = format!(
                "delivered {deliveries} times, more than redis.max_deliveries ({})",
                self.config.max_deliveries
            );
            let outcome = dispatcher.reject(&event, deliveries, reason).await;
            settle(con, &stream, &group, &id, &outcome).await;
            return;
        }
        let ticket = dispatcher.ticket(&event).await;
        tokio::spawn(async move {
            let outcome = ticket.dispatch(event).await;
            settle(con, &stream, &group, &id, &outcome).await;
        });
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
        ctx.link.up();
        tracing::warn!(url = %self.config.redacted_url(), "Redis pub/sub is at-most-once: messages published while the hub is away are lost; use redis.mode: streams for at-least-once");
        let mut topics = ctx.topics.clone();
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        loop {
            let want = wanted(ctx);
            for t in subscribed.difference(&want).cloned().collect::<Vec<_>>() {
                if is_pattern(&t) {
                    sink.punsubscribe(&t).await?
                } else {
                    sink.unsubscribe(&t).await?
                }
                subscribed.remove(&t);
            }
            for t in want.difference(&subscribed).cloned().collect::<Vec<_>>() {
                if is_pattern(&t) {
                    sink.psubscribe(&t).await?
                } else {
                    sink.subscribe(&t).await?
                }
                tracing::info!(channel = %t, "subscribed");
                subscribed.insert(t);
            }
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err(redis::RedisError::from((redis::ErrorKind::IoError, "pub/sub connection closed"))) };
                    let channel = msg.get_channel_name().to_string();
                    let payload: Vec<u8> = msg.get_payload().unwrap_or_default();
                    let event = Event {
                        id: uuid::Uuid::new_v4().to_string(),
                        topic: channel.clone(),
                        payload: payload.into(),
                        headers: vec![("X-Redis-Channel".into(), channel)],
                        ..Default::default()
                    };
                    let ticket = ctx.dispatcher.ticket(&event).await;
                    tokio::spawn(ticket.dispatch(event));
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

/// Acks a settled entry; leaves the others pending, to be redelivered.
async fn settle(mut con: MultiplexedConnection, stream: &str, group: &str, id: &str, outcome: &Outcome) {
    if !outcome.settled() {
        tracing::warn!(%stream, %id, ?outcome, "not acknowledged; the entry stays pending and will be redelivered");
        return;
    }
    let acked: redis::RedisResult<i64> = con.xack(stream, group, &[id]).await;
    if let Err(e) = acked {
        tracing::warn!(%stream, %id, error = %e, "cannot XACK; the entry will be redelivered");
    }
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
