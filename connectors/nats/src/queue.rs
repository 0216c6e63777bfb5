//! The async queue on NATS JetStream (`queue.backend: jetstream`), so any
//! number of gateways publish and any number of workers consume.
//!
//! A call to `NAME.NS` is a message on `<subject>.NS.NAME` in one stream,
//! published with `Nats-Msg-Id` set to its call id (a publish retried after
//! a lost ack is stored once), and the gateway answers 202 only after
//! JetStream has acknowledged it. Each function has its own durable pull
//! consumer, `NAME_NS`, which the gateway makes before its first publish;
//! workers find consumers as they appear (JetStream's advisory, and a
//! listing every few seconds) and pull from each, so a function's backlog
//! never stands in front of another's. A worker holds at most its
//! `max_inflight` messages per function, kept alive with in-progress acks
//! until they are settled, and gives a free slot to the function with the
//! fewest calls running: a slow function cannot starve the others.
//!
//! A retry is a nak with the backoff delay (the attempt count is the
//! message's delivery count); a callback retry republishes the call with
//! its answer and a `Switchboard-Due` time, so the function does not run
//! again; a dead letter is published to the dead-letter stream before the
//! call is acked.

use crate::NatsConfig;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_queue::{Backlog, DeadLetter, Envelope, Lease, Queue, QueueError, Taken, now_ms};
use tokio::sync::{Notify, OnceCell};

/// The `queue.jetstream` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueStreamConfig {
    /// The stream of queued calls, made or brought to this config at start.
    pub stream: String,
    /// Calls to `NAME.NS` go to `<subject>.NS.NAME`.
    pub subject: String,
    /// `workqueue` removes a call once settled; `limits` keeps it until
    /// `max_age`/`max_bytes`/`max_messages` (to replay or audit);
    /// `interest` removes it once its function's consumer acked it.
    pub retention: stream::RetentionPolicy,
    pub storage: stream::StorageType,
    /// Copies on a JetStream cluster (3 on a three-server cluster).
    pub replicas: usize,
    /// 0: no limit. A full stream refuses new calls (the gateway answers
    /// 503) rather than dropping queued ones.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_messages: i64,
    /// How long a worker may hold a call without word before JetStream
    /// hands it to another; workers send in-progress acks well within it.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub ack_wait: Duration,
    /// The stream of dead letters, on `<dead_letter_subject>.NS.NAME`.
    pub dead_letter_stream: String,
    pub dead_letter_subject: String,
    /// 0: kept until removed.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub dead_letter_max_age: Duration,
}

impl Default for QueueStreamConfig {
    fn default() -> Self {
        Self {
            stream: "SWITCHBOARD_QUEUE".into(),
            subject: "switchboard.queue".into(),
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            ack_wait: Duration::from_secs(30),
            dead_letter_stream: "SWITCHBOARD_QUEUE_DEAD".into(),
            dead_letter_subject: "switchboard.queue-dead".into(),
            dead_letter_max_age: Duration::ZERO,
        }
    }
}

/// When a republished call is due (ms since the epoch): a callback retry's backoff.
const DUE: &str = "Switchboard-Due";
/// How long one pull waits on the server; also how soon a worker notices a
/// restarted server whose pull requests were lost.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often a worker lists the consumers, beside the advisory that tells it at once.
const DISCOVERY: Duration = Duration::from_secs(5);

/// A handle on the queue, shared by a gateway and the worker beside it.
#[derive(Clone)]
pub struct JetStreamQueue(Arc<Inner>);

struct Inner {
    nats: NatsConfig,
    config: QueueStreamConfig,
    /// Messages a worker holds per function: its `max_inflight`.
    hold: usize,
    /// Connected, with both streams made, at first use, so a gateway
    /// starts while NATS is away.
    context: OnceCell<jetstream::Context>,
    /// Functions whose consumer this process has made.
    consumers: tokio::sync::Mutex<HashSet<String>>,
    /// The worker side, started by the first take.
    pulled: OnceCell<Arc<Pulled>>,
}

impl JetStreamQueue {
    /// The queue on the servers at `nats.url`, with its credentials and TLS.
    pub fn new(nats: &NatsConfig, config: &QueueStreamConfig, max_inflight: usize) -> Result<Self, crate::ConfigError> {
        crate::check(nats)?;
        let token = |key: &str, v: &str| {
            if v.is_empty() || v.contains([' ', '*', '>']) || v.starts_with('.') || v.ends_with('.') {
                return Err(crate::ConfigError(format!(
                    "queue.jetstream.{key} {v:?}: expected a NATS subject without wildcards"
                )));
            }
            Ok(())
        };
        token("subject", &config.subject)?;
        token("dead_letter_subject", &config.dead_letter_subject)?;
        if config.subject == config.dead_letter_subject {
            return Err(crate::ConfigError("queue.jetstream.subject and dead_letter_subject must differ".into()));
        }
        if config.ack_wait < Duration::from_secs(1) {
            return Err(crate::ConfigError(format!(
                "queue.jetstream.ack_wait {:?}: expected at least 1s",
                config.ack_wait
            )));
        }
        Ok(Self(Arc::new(Inner {
            nats: nats.clone(),
            config: config.clone(),
            hold: max_inflight.max(1),
            context: OnceCell::new(),
            consumers: Default::default(),
            pulled: OnceCell::new(),
        })))
    }
}

impl Inner {
    async fn context(&self) -> Result<&jetstream::Context, QueueError> {
        self.context
            .get_or_try_init(|| async {
                let client = crate::connect(&self.nats, None).await.map_err(|e| self.error(e))?;
                let context = jetstream::new(client);
                let c = &self.config;
                let limits = stream::Config {
                    storage: c.storage,
                    num_replicas: c.replicas,
                    discard: stream::DiscardPolicy::New,
                    ..Default::default()
                };
                let queue = stream::Config {
                    name: c.stream.clone(),
                    subjects: vec![format!("{}.>", c.subject)],
                    retention: c.retention,
                    max_age: c.max_age,
                    max_bytes: c.max_bytes,
                    max_messages: c.max_messages,
                    // Publishes carry the call id: one retried within this window is stored once.
                    duplicate_window: Duration::from_secs(120),
                    ..limits.clone()
                };
                let dead = stream::Config {
                    name: c.dead_letter_stream.clone(),
                    subjects: vec![format!("{}.>", c.dead_letter_subject)],
                    max_age: c.dead_letter_max_age,
                    ..limits
                };
                for config in [queue, dead] {
                    let name = config.name.clone();
                    context
                        .create_or_update_stream(config)
                        .await
                        .map_err(|e| self.error(format!("stream {name}: {e}")))?;
                }
                Ok(context)
            })
            .await
    }

    fn error(&self, reason: impl std::fmt::Display) -> QueueError {
        QueueError::Remote { url: self.nats.url.clone(), reason: format!("JetStream: {reason}") }
    }

    /// Makes `function`'s consumer unless this process already has.
    async fn consumer(&self, function: &Function) -> Result<(), QueueError> {
        let mut made = self.consumers.lock().await;
        if made.contains(&function.consumer) {
            return Ok(());
        }
        let stream = self.context().await?.get_stream(&self.config.stream).await.map_err(|e| self.error(e))?;
        let config = pull::Config {
            durable_name: Some(function.consumer.clone()),
            filter_subject: function.subject(&self.config.subject),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // Retries and dead letters are the worker's: JetStream never gives up.
            max_deliver: -1,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        stream
            .get_or_create_consumer::<pull::Config>(&function.consumer, config)
            .await
            .map_err(|e| self.error(format!("consumer {}: {e}", function.consumer)))?;
        made.insert(function.consumer.clone());
        Ok(())
    }

    async fn publish(&self, subject: String, headers: HeaderMap, body: Vec<u8>) -> Result<(), QueueError> {
        let context = self.context().await?;
        let ack = context
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .map_err(|e| self.error(format!("publish to {subject}: {e}")))?;
        ack.await.map_err(|e| self.error(format!("publish to {subject} not acknowledged: {e}")))?;
        Ok(())
    }

    async fn pulled(self: &Arc<Self>) -> Result<Arc<Pulled>, QueueError> {
        self.pulled
            .get_or_try_init(|| async {
                let context = self.context().await?;
                let pulled = Arc::new(Pulled::default());
                tokio::spawn(discover(self.clone(), context.clone(), pulled.clone()));
                Ok(pulled)
            })
            .await
            .cloned()
    }
}

/// A function's name in the queue: its consumer `NAME_NS` and subject tokens.
struct Function {
    name: String,
    namespace: String,
    consumer: String,
}

impl Function {
    /// `label` is `NAME.NS`, as the gateway names the function of a call.
    fn of(label: &str) -> Self {
        let (name, namespace) = label.split_once('.').unwrap_or((label, "openfaas-fn"));
        Self { name: name.into(), namespace: namespace.into(), consumer: format!("{name}_{namespace}") }
    }

    fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.namespace, self.name)
    }
}

impl Queue for JetStreamQueue {
    fn enqueue(&self, request: openfaas::QueueRequest) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let q = &self.0;
            let function = Function::of(&request.function);
            q.consumer(&function).await?;
            let mut headers = HeaderMap::new();
            if let Some(id) = request.call_id() {
                headers.insert("Nats-Msg-Id", id);
            }
            let envelope = Envelope { request, attempts: 0, enqueued_at_ms: now_ms(), answer: None, callbacks: 0 };
            q.publish(function.subject(&q.config.subject), headers, serde_json::to_vec(&envelope)?).await
        })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        Box::pin(async move {
            let q = &self.0;
            let context = q.context().await?;
            let mut stream = context.get_stream(&q.config.dead_letter_stream).await.map_err(|e| q.error(e))?;
            let state = stream.info().await.map_err(|e| q.error(e))?.state.clone();
            let mut letters = Vec::with_capacity(state.messages as usize);
            if state.messages == 0 {
                return Ok(letters);
            }
            for seq in state.first_sequence..=state.last_sequence {
                match stream.get_raw_message(seq).await {
                    Ok(m) => letters.push(serde_json::from_slice(&m.payload)?),
                    // Removed since (max_age, a purge): a gap in the sequence.
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(q.error(format!("dead letter {seq}: {e}"))),
                }
            }
            Ok(letters)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let q = &self.0;
            let context = q.context().await.map_err(|e| e.to_string())?;
            match context.client().connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(format!("the queue's NATS connection to {} is {state:?}", q.nats.url)),
            }
        })
    }
}

/// What a worker has pulled and not yet started, per function consumer.
struct Pulled<T = Held> {
    functions: Mutex<HashMap<String, Pulling<T>>>,
    /// A message was held: a take may find one.
    held: Notify,
    /// The worker stopped taking: what is pulled from now on goes back.
    stopped: std::sync::atomic::AtomicBool,
}

impl<T> Default for Pulled<T> {
    fn default() -> Self {
        Self { functions: Mutex::default(), held: Notify::new(), stopped: Default::default() }
    }
}

struct Pulling<T> {
    waiting: VecDeque<T>,
    running: usize,
    last_taken: Option<Instant>,
    /// A message was taken: its puller may pull again.
    room: Arc<Notify>,
}

impl<T> Default for Pulling<T> {
    fn default() -> Self {
        Self { waiting: VecDeque::new(), running: 0, last_taken: None, room: Arc::default() }
    }
}

struct Held {
    message: Arc<jetstream::Message>,
    envelope: Envelope,
    alive: KeepAlive,
}

/// Sends in-progress acks for a message until dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl KeepAlive {
    fn start(message: Arc<jetstream::Message>, ack_wait: Duration) -> Self {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ack_wait / 3).await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "cannot keep a queued call ours; JetStream may hand it to another worker");
                }
            }
        }))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Pulled<T> {
    /// The waiting message of the function with the fewest calls running
    /// (the longest unserved among equals).
    fn pick(&self) -> Option<(String, T)> {
        let mut functions = self.functions.lock().expect("pulled lock");
        let (consumer, pulling) = functions
            .iter_mut()
            .filter(|(_, p)| !p.waiting.is_empty())
            .min_by_key(|(_, p)| (p.running, p.last_taken))?;
        let held = pulling.waiting.pop_front()?;
        pulling.running += 1;
        pulling.last_taken = Some(Instant::now());
        pulling.room.notify_one();
        Some((consumer.clone(), held))
    }

    fn finished(&self, consumer: &str) {
        if let Some(p) = self.functions.lock().expect("pulled lock").get_mut(consumer) {
            p.running = p.running.saturating_sub(1);
        }
    }
}

impl Backlog for JetStreamQueue {
    fn take(&self) -> BoxFuture<'_, Result<Taken, QueueError>> {
        Box::pin(async move {
            let pulled = self.0.pulled().await?;
            loop {
                let held = pulled.held.notified();
                if let Some((consumer, Held { message, envelope, alive })) = pulled.pick() {
                    let lease =
                        StreamLease { queue: self.0.clone(), pulled: pulled.clone(), consumer, message, _alive: alive };
                    return Ok(Taken { envelope, lease: Box::new(lease) });
                }
                held.await;
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(pulled) = self.0.pulled.get() else { return };
            pulled.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            let held: Vec<Held> = {
                let mut functions = pulled.functions.lock().expect("pulled lock");
                functions.values_mut().flat_map(|p| p.waiting.drain(..)).collect()
            };
            for Held { message, .. } in held {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        })
    }
}

/// Finds the functions' consumers and starts a puller for each.
async fn discover(queue: Arc<Inner>, context: jetstream::Context, pulled: Arc<Pulled>) {
    let c = &queue.config;
    let advisory = format!("$JS.EVENT.ADVISORY.CONSUMER.CREATED.{}.*", c.stream);
    let mut created = match context.client().subscribe(advisory).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot hear of new queue consumers at once; listing them every {DISCOVERY:?}");
            None
        }
    };
    let prefix = format!("{}.", c.subject);
    let mut known = HashSet::new();
    loop {
        match context.get_stream(&c.stream).await {
            Ok(stream) => {
                let mut names = stream.consumer_names();
                while let Some(name) = names.next().await {
                    let name = match name {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(stream = %c.stream, error = %e, "cannot list the queue's consumers");
                            break;
                        }
                    };
                    if known.contains(&name) {
                        continue;
                    }
                    match stream.get_consumer::<pull::Config>(&name).await {
                        // Only the functions' consumers: others may read the stream too.
                        Ok(consumer) if consumer.cached_info().config.filter_subject.starts_with(&prefix) => {
                            tracing::info!(consumer = %name, stream = %c.stream, "pulling queued calls");
                            known.insert(name.clone());
                            let room = Arc::new(Notify::new());
                            let pulling = Pulling { room: room.clone(), ..Default::default() };
                            pulled.functions.lock().expect("pulled lock").insert(name.clone(), pulling);
                            tokio::spawn(pull(queue.clone(), consumer, pulled.clone(), name, room));
                        }
                        Ok(_) => {
                            known.insert(name);
                        }
                        Err(e) => tracing::warn!(consumer = %name, error = %e, "cannot read a queue consumer"),
                    }
                }
            }
            Err(e) => tracing::warn!(stream = %c.stream, error = %e, "cannot read the queue stream; trying again"),
        }
        let next = async {
            match &mut created {
                Some(s) => {
                    if s.next().await.is_none() {
                        // Closed: the listing alone finds new consumers from now on.
                        created = None;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = next => {}
            () = tokio::time::sleep(DISCOVERY) => {}
        }
    }
}

/// Pulls one function's calls while fewer than `hold` wait to be taken.
async fn pull(
    queue: Arc<Inner>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    pulled: Arc<Pulled>,
    name: String,
    room: Arc<Notify>,
) {
    let waiting = || pulled.functions.lock().expect("pulled lock").get(&name).map_or(0, |p| p.waiting.len());
    // The consumer's own: the gateway that made it may have been configured otherwise.
    let ack_wait = consumer.cached_info().config.ack_wait;
    while !pulled.stopped.load(std::sync::atomic::Ordering::Relaxed) {
        let free = queue.hold.saturating_sub(waiting());
        if free == 0 {
            room.notified().await;
            continue;
        }
        let mut messages = match consumer.batch().max_messages(free).expires(PULL_EXPIRES).messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "cannot pull queued calls; trying again in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "pulling queued calls failed; pulling again");
                    break;
                }
            };
            if pulled.stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            let Some(envelope) = receive(&message).await else { continue };
            let alive = KeepAlive::start(message.clone(), ack_wait);
            if let Some(p) = pulled.functions.lock().expect("pulled lock").get_mut(&name) {
                p.waiting.push_back(Held { message, envelope, alive });
            }
            pulled.held.notify_one();
        }
    }
}

/// The call a message carries, with its attempts so far, once it is due;
/// a message not yet due goes back with the wait left, and one that is not
/// a call is terminated.
async fn receive(message: &jetstream::Message) -> Option<Envelope> {
    let mut envelope: Envelope = match serde_json::from_slice(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(subject = %message.subject, error = %e, "not a queued call; terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        }
    };
    let due = message.headers.as_ref().and_then(|h| h.get(DUE)).and_then(|v| v.as_str().parse::<u64>().ok());
    if let Some(due) = due.filter(|due| *due > now_ms()) {
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_millis(due - now_ms())))).await;
        return None;
    }
    // Until the function has answered, every delivery but the first was an
    // attempt: a nak for a retry, or a worker that died running it.
    if envelope.answer.is_none() {
        let delivered = message.info().map_or(1, |i| i.delivered.max(1));
        envelope.attempts += u32::try_from(delivered - 1).unwrap_or(u32::MAX);
    }
    Some(envelope)
}

struct StreamLease {
    queue: Arc<Inner>,
    pulled: Arc<Pulled>,
    consumer: String,
    message: Arc<jetstream::Message>,
    _alive: KeepAlive,
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.pulled.finished(&self.consumer);
    }
}

impl StreamLease {
    /// Acked and confirmed by the server: a lost ack would run the call again.
    async fn ack(&self) -> Result<(), QueueError> {
        self.message.double_ack().await.map_err(|e| self.queue.error(format!("ack: {e}")))
    }
}

impl Lease for StreamLease {
    fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        Box::pin(async move { self.ack().await })
    }

    fn retry(self: Box<Self>, envelope: Envelope, wait: Duration) -> BoxFuture<'static, Result<(), QueueError>> {
        Box::pin(async move {
            if envelope.answer.is_none() {
                // The delivery count keeps the attempts.
                return self
                    .message
                    .ack_with(AckKind::Nak(Some(wait)))
                    .await
                    .map_err(|e| self.queue.error(format!("nak: {e}")));
            }
            // The answer must outlive this message: the call goes again with it.
            let mut headers = HeaderMap::new();
            headers.insert(DUE, (now_ms() + wait.as_millis() as u64).to_string().as_str());
            let id = envelope.request.call_id().unwrap_or_default();
            headers.insert("Nats-Msg-Id", format!("{id}.callback.{}", envelope.callbacks).as_str());
            self.queue.publish(self.message.subject.to_string(), headers, serde_json::to_vec(&envelope)?).await?;
            self.ack().await
        })
    }

    fn dead_letter(self: Box<Self>, letter: DeadLetter) -> BoxFuture<'static, Result<(), QueueError>> {
        Box::pin(async move {
            let function = Function::of(&letter.function);
            let subject = function.subject(&self.queue.config.dead_letter_subject);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", letter.call_id.as_str());
            self.queue.publish(subject, headers, serde_json::to_vec(&letter)?).await?;
            self.ack().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_has_its_own_subject_and_consumer() {
        let f = Function::of("thumbnail.openfaas-fn");
        assert_eq!(f.subject("switchboard.queue"), "switchboard.queue.openfaas-fn.thumbnail");
        assert_eq!(f.consumer, "thumbnail_openfaas-fn");
    }

    #[test]
    fn bad_subjects_are_refused_naming_them() {
        let nats = NatsConfig::default();
        for (subject, key) in [("a.*", "subject"), ("", "subject"), ("q.", "subject")] {
            let config = QueueStreamConfig { subject: subject.into(), ..Default::default() };
            let err = JetStreamQueue::new(&nats, &config, 8).err().expect("refused").to_string();
            assert!(err.contains(&format!("queue.jetstream.{key}")) && err.contains("wildcards"), "{err}");
        }
        let config = QueueStreamConfig { dead_letter_subject: "switchboard.queue".into(), ..Default::default() };
        assert!(JetStreamQueue::new(&nats, &config, 8).is_err());
    }

    #[test]
    fn a_free_slot_goes_to_the_function_with_the_fewest_calls_running() {
        let pulled = Pulled::<u32>::default();
        let wait = |name: &str, items: &[u32]| {
            let mut functions = pulled.functions.lock().unwrap();
            functions.entry(name.into()).or_default().waiting.extend(items);
        };
        // A slow function's backlog arrived first and took three slots.
        wait("slow", &[1, 2, 3, 4, 5]);
        let taken: Vec<_> = (0..3).map(|_| pulled.pick().unwrap()).collect();
        assert!(taken.iter().all(|(f, _)| f == "slow"), "{taken:?}");
        // A fast function's calls go first while it runs fewer.
        wait("fast", &[10, 11]);
        assert_eq!(pulled.pick(), Some(("fast".into(), 10)));
        assert_eq!(pulled.pick(), Some(("fast".into(), 11)));
        assert_eq!(pulled.pick(), Some(("slow".into(), 4)), "nothing else waits");
        // Three slow calls end: the slow function runs fewer again.
        (0..3).for_each(|_| pulled.finished("slow"));
        wait("fast", &[12]);
        assert_eq!(pulled.pick(), Some(("slow".into(), 5)), "slow runs 1, fast 2");
        assert_eq!(pulled.pick(), Some(("fast".into(), 12)));
        assert_eq!(pulled.pick(), None);
    }
}
