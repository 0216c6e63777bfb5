//! The NATS source.
//!
//! Core NATS: each discovered topic is a subject (wildcards are NATS's own),
//! subscribed in a queue group so replicas share it. Core NATS has no
//! acknowledgement: delivery is **at most once**.
//!
//! JetStream: one durable pull consumer per topic on the configured stream.
//! A message is acked once delivered, nakked with the backoff delay when a
//! retry is due, terminated once dead-lettered, and kept alive with
//! in-progress acks while a long invocation runs: **at least once**.
//!
//! Both: NATS headers reach the function as `X-Nats-<Name>`, `ce-*` headers
//! are read as a CloudEvent in binary mode, and a message with a reply
//! subject gets the function's response published to it.

mod config;
mod letters;
mod publish;
mod queue;
mod sink;
mod store;

pub use config::{JetStreamConfig, NatsConfig};
pub use queue::{JetStreamQueue, QueueStreamConfig};
pub use sink::NatsSink;
pub use store::KvStore;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use connector_core::{
    Backoff, BrokerLetters, BrokerState, CloudEventAttrs, Dispatcher, Event, NoAck, Outcome, Publisher, Response,
    Settle, Source, SourceContext, SourceError, Subscribed,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct NatsSource {
    config: NatsConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid nats config: {0}")]
pub struct ConfigError(String);

impl NatsSource {
    pub fn new(config: NatsConfig) -> Result<Self, ConfigError> {
        check(&config)?;
        Ok(Self { config })
    }
}

/// What connecting needs of `config`, checked before it is tried.
fn check(config: &NatsConfig) -> Result<(), ConfigError> {
    for url in config.url.split(',') {
        let url = url.trim();
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(ConfigError(format!("nats.url {url:?}: expected nats://host:port or tls://host:port")));
        }
    }
    if config.password.is_some() != config.user.is_some() {
        return Err(ConfigError("nats.user and nats.password go together".into()));
    }
    if let Some(tls) = &config.tls {
        tls.client("nats").map_err(ConfigError)?;
    }
    Ok(())
}

/// A client of the servers at `c.url`, with its credentials and TLS;
/// `broker` hears of the connection's state, when given.
async fn connect(c: &NatsConfig, broker: Option<BrokerState>) -> Result<async_nats::Client, SourceError> {
    let mut options = async_nats::ConnectOptions::new().name("switchboard").retry_on_initial_connect();
    if let Some(token) = &c.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&c.user, &c.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(creds) = &c.creds {
        options = options.credentials_file(creds).await.map_err(|e| format!("nats.creds {}: {e}", creds.display()))?;
    }
    if let Some(tls) = &c.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = tls.client("nats")? {
            options = options.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
        }
    }
    let url = c.url.clone();
    if let Some(broker) = &broker {
        broker.disconnected();
    }
    options = options.event_callback(move |event| {
        match (&broker, &event) {
            (Some(broker), async_nats::Event::Connected) => broker.connected(),
            (Some(broker), async_nats::Event::Disconnected | async_nats::Event::Closed) => broker.disconnected(),
            _ => {}
        }
        let url = url.clone();
        async move { tracing::info!(%url, %event, "nats connection event") }
    });
    Ok(options.connect(c.url.as_str()).await.map_err(|e| format!("cannot connect to {}: {e}", c.url))?)
}

impl connector_core::SourceConfig for NatsConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(NatsSource::new(self.clone())?))
    }
}

impl Source for NatsSource {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        match &self.config.jetstream {
            Some(js) => format!("{} (JetStream stream {})", self.config.url, js.stream),
            None => format!("{} (core NATS, at most once)", self.config.url),
        }
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn BrokerLetters>> {
        Some(Arc::new(letters::SubjectLetters { config: self.config.clone() }))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(publish::SubjectPublisher::new(self.config.clone())))
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let client = connect(&self.config, Some(ctx.broker.clone())).await?;
            let dispatcher = match &self.config.dead_letter_subject {
                Some(subject) => {
                    let js = self.config.jetstream.is_some().then(|| jetstream::new(client.clone()));
                    ctx.dispatcher.with_dead_letters(Arc::new(NatsSink::new(client.clone(), js, subject.clone())))
                }
                None => ctx.dispatcher.clone(),
            };
            let mut stream = match &self.config.jetstream {
                Some(js) => Some((js.clone(), stream(&client, js).await?)),
                None => {
                    tracing::warn!(
                        "core NATS subscriptions are at-most-once: a message in flight when the hub stops is lost; use nats.jetstream for at-least-once"
                    );
                    None
                }
            };
            // One task per subscribed topic; it stops when its token is cancelled.
            let mut subscribed: Subscribed<String, CancellationToken> = Subscribed::default();
            loop {
                // JetStream keeps what is not pulled: a subject only paused
                // functions read is not pulled. Core NATS keeps nothing: its
                // subjects stay subscribed, their events held in the hub.
                let wanted = if stream.is_some() { ctx.wanted_unpaused() } else { ctx.wanted() };
                let changes = subscribed.update(&wanted);
                for (topic, token) in changes.removed {
                    tracing::info!(%topic, "unsubscribing: no function subscribes any more");
                    token.cancel();
                }
                // Read the stream's subjects again: they may have grown since the last change.
                if let Some((js, s)) = &mut stream
                    && !changes.added.is_empty()
                    && let Err(e) = s.info().await
                {
                    tracing::warn!(stream = %js.stream, error = %e, "cannot read the stream's subjects");
                }
                for topic in changes.added {
                    let token = ctx.shutdown.child_token();
                    let (d, c, t, stop) = (dispatcher.clone(), client.clone(), topic.clone(), token.clone());
                    match &stream {
                        // Functions may subscribe to topics of other sources.
                        Some((js, s)) if !s.cached_info().config.subjects.iter().any(|p| covers(p, &topic)) => {
                            tracing::debug!(%topic, stream = %js.stream, "not among the stream's subjects; not consumed");
                            continue;
                        }
                        Some((js, s)) => match consumer(s, js, &topic).await {
                            Ok(consumer) => {
                                tracing::info!(%topic, stream = %js.stream, "consuming from JetStream");
                                tokio::spawn(consume_jetstream(consumer, d, t, js.ack_wait, stop));
                            }
                            Err(e) => {
                                tracing::warn!(%topic, stream = %js.stream, error = %e, "cannot consume this topic from JetStream");
                                continue;
                            }
                        },
                        None => {
                            let sub = client.queue_subscribe(topic.clone(), self.config.queue_group.clone()).await?;
                            tracing::info!(%topic, queue_group = %self.config.queue_group, "subscribed");
                            tokio::spawn(consume_core(sub, d, c, t, stop));
                        }
                    }
                    subscribed.insert(topic, token);
                }
                tokio::select! {
                    changed = ctx.topics.changed() => if changed.is_err() { break },
                    () = ctx.shutdown.cancelled() => break,
                }
            }
            Ok(())
        })
    }
}

async fn stream(client: &async_nats::Client, c: &JetStreamConfig) -> Result<jetstream::stream::Stream, SourceError> {
    let js = jetstream::new(client.clone());
    if c.subjects.is_empty() {
        return Ok(js.get_stream(&c.stream).await.map_err(|e| {
            format!("JetStream stream {:?}: {e} (create it, or set nats.jetstream.subjects so the hub does)", c.stream)
        })?);
    }
    let config =
        jetstream::stream::Config { name: c.stream.clone(), subjects: c.subjects.clone(), ..Default::default() };
    Ok(js.get_or_create_stream(config).await.map_err(|e| format!("JetStream stream {:?}: {e}", c.stream))?)
}

/// Whether every subject that `filter` matches is one of `pattern`'s (NATS
/// wildcards: `*` one token, `>` the rest). JetStream refuses a consumer
/// whose filter reaches outside its stream's subjects.
fn covers(pattern: &str, filter: &str) -> bool {
    let mut tokens = filter.split('.');
    for p in pattern.split('.') {
        match (p, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(t)) if t != ">" => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

async fn consumer(
    stream: &jetstream::stream::Stream,
    c: &JetStreamConfig,
    topic: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, SourceError> {
    // Consumer names allow no `.`, `*`, `>` or spaces.
    let suffix: String =
        topic.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' { ch } else { '_' }).collect();
    let name = format!("{}-{suffix}", c.durable);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: topic.to_string(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: c.ack_wait,
        max_deliver: c.max_deliver,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(&name, config).await.map_err(|e| format!("JetStream consumer {name:?}: {e}"))?)
}

/// The event of a message; its id is the CloudEvent's or `Nats-Msg-Id`, else empty.
fn event_from(subject: &str, headers: Option<&async_nats::HeaderMap>, payload: bytes::Bytes) -> Event {
    let mut event = Event { topic: subject.to_string(), payload, ..Default::default() };
    event.headers.push(("X-Nats-Subject".into(), subject.to_string()));
    if let Some(h) = headers {
        let pairs: Vec<(String, String)> =
            h.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.as_str().to_string()))).collect();
        event.cloudevent = CloudEventAttrs::from_headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "content-type" | "ce-datacontenttype" => event.content_type = Some(v.clone()),
                "traceparent" | "tracestate" => event.headers.push((k.clone(), v.clone())),
                "nats-msg-id" => event.id = v.clone(),
                _ => {}
            }
            if !k.to_ascii_lowercase().starts_with("ce-") {
                event.headers.push((format!("X-Nats-{k}"), v));
            }
        }
    }
    if let Some(ce) = &event.cloudevent {
        event.id = ce.id.clone();
    }
    event
}

/// A core NATS message: nothing to settle (at most once); a reply subject
/// gets the function's answer.
struct CoreMessage {
    client: async_nats::Client,
    reply: Option<async_nats::Subject>,
}

impl Settle for CoreMessage {
    async fn reply(&self, response: &Response) {
        if let Some(subject) = &self.reply
            && let Err(e) = self.client.publish(subject.clone(), response.body.clone()).await
        {
            tracing::warn!(%subject, error = %e, "cannot publish the function's response to the reply subject");
        }
    }

    async fn settle(self, outcome: Outcome) {
        NoAck.settle(outcome).await;
    }
}

/// A JetStream message: acked once delivered, terminated once
/// dead-lettered, nakked with the retry's delay, and kept ours with
/// in-progress acks while a long invocation runs.
struct StreamMessage {
    msg: jetstream::Message,
    delivered: u32,
    ack_wait: Duration,
}

impl Settle for StreamMessage {
    fn deliveries(&self) -> u32 {
        self.delivered
    }

    fn redelivers_later(&self) -> bool {
        true
    }

    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.ack_wait / 2)
    }

    async fn keep_alive(&self) {
        let _ = self.msg.ack_with(AckKind::Progress).await;
    }

    async fn settle(self, outcome: Outcome) {
        let ack = match outcome {
            Outcome::Delivered => AckKind::Ack,
            Outcome::DeadLettered => AckKind::Term,
            Outcome::Redeliver { after, .. } => AckKind::Nak(Some(after)),
        };
        if let Err(e) = self.msg.ack_with(ack).await {
            tracing::warn!(error = %e, "cannot acknowledge a JetStream message; it will be redelivered");
        }
    }
}

async fn consume_core(
    mut sub: async_nats::Subscriber,
    d: Dispatcher,
    client: async_nats::Client,
    topic: String,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            () = stop.cancelled() => break,
        };
        let mut event = event_from(&msg.subject, msg.headers.as_ref(), msg.payload.clone());
        if event.id.is_empty() {
            (event.id, event.id_made_up) = (uuid::Uuid::new_v4().to_string(), true);
        }
        d.submit(event, CoreMessage { client: client.clone(), reply: msg.reply }).await;
    }
    let _ = sub.unsubscribe().await;
    tracing::debug!(%topic, "subscription ended");
}

/// How long one pull waits on the server for messages before the next.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

async fn consume_jetstream(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    d: Dispatcher,
    topic: String,
    ack_wait: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        // Pull only what the hub can take now: a message pulled ahead would
        // wait for a place unprotected, past the ack wait, and JetStream
        // would hand it out again while it waits.
        tokio::select! {
            () = d.ready() => {}
            () = stop.cancelled() => return,
        }
        let pull = consumer.batch().max_messages(d.room().max(1)).expires(PULL_EXPIRES).messages();
        let mut messages = match pull.await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%topic, error = %e, "cannot pull from JetStream; retrying");
                if !backoff.sleep(&stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                () = stop.cancelled() => return,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(%topic, error = %e, "JetStream pull failed; pulling again");
                    break;
                }
                None => break,
            };
            backoff.reset();
            let mut event = event_from(&msg.subject, msg.headers.as_ref(), msg.payload.clone());
            let mut delivered = 1;
            if let Ok(info) = msg.info() {
                delivered = info.delivered.clamp(1, i64::from(u32::MAX)) as u32;
                event.headers.push(("X-Nats-Stream".into(), info.stream.to_string()));
                event.headers.push(("X-Nats-Sequence".into(), info.stream_sequence.to_string()));
                event.headers.push(("X-Nats-Delivered".into(), info.delivered.to_string()));
                if event.id.is_empty() {
                    event.id = format!("{}-{}", info.stream, info.stream_sequence);
                }
            }
            if event.id.is_empty() {
                (event.id, event.id_made_up) = (uuid::Uuid::new_v4().to_string(), true);
            }
            d.submit(event, StreamMessage { msg, delivered, ack_wait }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn stream_subjects_cover_filters() {
        for (pattern, filter, expected) in [
            ("orders.created", "orders.created", true),
            ("orders.*", "orders.created", true),
            ("orders.*", "orders.*", true),
            ("orders.>", "orders.*", true),
            ("orders.>", "orders.eu.created", true),
            (">", "cron-function", true),
            ("orders.*", "orders.>", false),
            ("orders.*", "orders.eu.created", false),
            ("orders.created", "orders.*", false),
            ("orders.>", "orders", false),
            ("orders.created", "com.example.order.created", false),
            ("orders", "orders.created", false),
        ] {
            assert_eq!(covers(pattern, filter), expected, "{pattern} covers {filter}");
        }
    }
}
