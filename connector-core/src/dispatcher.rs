//! Delivery of one event to every function subscribed to its topic:
//! admission, limits, invocation, retries, dead letters, keep-alive, and
//! settling its message by the outcome.

use crate::config::HubConfig;
use crate::deadletter::{DeadEvent, DeadLetter, DeadLetterSink};
use crate::event::{Event, Response};
use crate::gateway::{Gateway, Invocation};
use crate::metrics::Metrics;
use crate::order::{KeyOrder, Turn};
use crate::settle::{Outcome, Settle};
use crate::subscription::Subscription;
use crate::topics::TopicMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// The `topic` label of events no function subscribes to.
pub const UNROUTED: &str = "(unrouted)";

struct Shared {
    gateway: Gateway,
    map: watch::Receiver<Arc<TopicMap>>,
    metrics: Arc<Metrics>,
    pending: Arc<Semaphore>,
    max_pending: usize,
    order: KeyOrder,
    asynchronous: Option<String>,
    content_type: Option<String>,
    /// Each source's publisher, for replies (set once the sources are known).
    publishers: std::sync::OnceLock<crate::publish::Publishers>,
    dedup: crate::dedup::Dedup,
    shutdown: CancellationToken,
}

/// A source's handle on the hub. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    source: &'static str,
    connector: Arc<str>,
    sink: Arc<dyn DeadLetterSink>,
    /// Deliver events with the same key one after another.
    ordered: bool,
}

/// Admission of one event: a place among the events in flight and, with
/// ordered keys, its turn behind earlier events of the same key. Take tickets
/// in arrival order; the events then run concurrently.
pub struct Ticket {
    dispatcher: Dispatcher,
    _pending: OwnedSemaphorePermit,
    turn: Option<Turn>,
}

/// One subscriber's delivery.
enum Delivery {
    Delivered(Response),
    /// Delivered before, within the function's dedup window: not again.
    Duplicate,
    DeadLettered,
    /// Retries remain and the broker does them.
    Retry(Duration),
    /// Neither delivered nor dead-lettered.
    Failed(String),
}

/// What the broker does with a message the core gives back, from its
/// [`Settle`] handle.
#[derive(Clone, Copy)]
struct Redelivery {
    /// The broker's delivery count, this delivery included.
    deliveries: u32,
    /// It redelivers after a delay: retries are its, not the hub's.
    later: bool,
    /// It dead-letters by its own count: the hub never does.
    dead_letters: bool,
}

impl Redelivery {
    fn of(handle: &impl Settle) -> Self {
        let dead_letters = handle.broker_dead_letters();
        Self { deliveries: handle.deliveries().max(1), later: handle.redelivers_later() || dead_letters, dead_letters }
    }
}

/// How long the broker waits before redelivering an event that could be
/// neither delivered nor dead-lettered (the hub stopping, the dead-letter
/// sink down).
const REDELIVER_AFTER: Duration = Duration::from_secs(1);

impl Dispatcher {
    pub fn new(
        config: &HubConfig,
        gateway: Gateway,
        map: watch::Receiver<Arc<TopicMap>>,
        sink: Arc<dyn DeadLetterSink>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Shared {
            gateway,
            map,
            metrics,
            pending: Arc::new(Semaphore::new(config.max_pending.max(1))),
            max_pending: config.max_pending.max(1),
            order: KeyOrder::default(),
            asynchronous: config.async_invocation.then(|| config.callback_url.clone().unwrap_or_default()),
            content_type: config.content_type.clone(),
            publishers: std::sync::OnceLock::new(),
            dedup: crate::dedup::Dedup::new(config.dedup_shared.clone()),
            shutdown,
        };
        let ordered = config.ordered_keys;
        Self { shared: Arc::new(shared), source: "hub", connector: Arc::from("switchboard"), sink, ordered }
    }

    /// Where replies go: each source's publisher (the hub's sources, once known).
    pub fn set_publishers(&self, publishers: crate::publish::Publishers) {
        let _ = self.shared.publishers.set(publishers);
    }

    /// The same hub, labelled for one source (`X-Connector: switchboard/<source>`).
    pub fn for_source(&self, source: &'static str) -> Self {
        Self { source, connector: Arc::from(format!("switchboard/{source}")), ..self.clone() }
    }

    /// The same hub, ordering this source's events by key or not, whatever
    /// `hub.ordered_keys` says (a Kafka source orders per key by default).
    pub fn with_key_order(&self, ordered: bool) -> Self {
        Self { ordered, ..self.clone() }
    }

    /// The same hub with this source's own dead-letter sink (a NATS subject, a Redis stream…).
    pub fn with_dead_letters(&self, sink: Arc<dyn DeadLetterSink>) -> Self {
        Self { sink, ..self.clone() }
    }

    /// The source this handle is labelled for.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Waits while `max_pending` events are in flight: the backpressure that
    /// stops a source from reading faster than functions take events.
    async fn ticket(&self, event: &Event) -> Ticket {
        let pending = self.shared.pending.clone().acquire_owned().await.expect("semaphore is never closed");
        self.admit(pending, event)
    }

    /// A ticket if one is free now: for sources that answer "too busy"
    /// (HTTP 429) rather than wait.
    pub fn try_ticket(&self, event: &Event) -> Option<Ticket> {
        let pending = self.shared.pending.clone().try_acquire_owned().ok()?;
        Some(self.admit(pending, event))
    }

    fn admit(&self, pending: OwnedSemaphorePermit, event: &Event) -> Ticket {
        let turn = match &event.key {
            Some(key) if self.ordered => Some(self.shared.order.turn(&event.topic, key)),
            _ => None,
        };
        Ticket { dispatcher: self.clone(), _pending: pending, turn }
    }

    /// Waits until an event could be admitted: for a source that holds its
    /// messages and pauses its broker while the hub is full, then admits
    /// them with [`Dispatcher::try_ticket`] (Kafka).
    pub async fn ready(&self) {
        drop(self.shared.pending.acquire().await.expect("semaphore is never closed"));
    }

    /// The most events in flight at once (`hub.max_pending`).
    pub fn max_pending(&self) -> usize {
        self.shared.max_pending
    }

    /// The longest wait for one invocation (`hub.upstream_timeout`).
    pub fn upstream_timeout(&self) -> Duration {
        self.shared.gateway.timeout()
    }

    /// Whether invocations go through the gateway's async queue.
    pub fn asynchronous(&self) -> bool {
        self.shared.asynchronous.is_some()
    }

    /// Admits `event`, waiting while `hub.max_pending` events are in
    /// flight, then delivers it in a task of its own and settles its message
    /// through `handle`. What a source calls for each message it reads.
    /// A message waiting for its place is kept alive meanwhile, as it is
    /// while it is delivered.
    pub async fn submit(&self, event: Event, handle: impl Settle) {
        let ticket = kept_alive(&handle, self.ticket(&event)).await;
        ticket.spawn(event, handle);
    }

    /// Dead-letters `event` without invoking anything and settles its
    /// message: for a message the source cannot hand on as it is (over a
    /// size bound). `reason` names the bound. A letter that cannot be
    /// written leaves the message with its broker, as for any dead letter.
    pub async fn refuse(&self, event: Event, handle: impl Settle, reason: String) {
        let label = if self.routed(&event) { event.topic.as_str() } else { UNROUTED };
        self.shared.metrics.received.with_label_values(&[self.source, label]).inc();
        let outcome = match self.dead_letter(&event, label, None, None, 0, reason).await {
            Ok(()) => Outcome::DeadLettered,
            Err(reason) => Outcome::Redeliver { after: REDELIVER_AFTER, reason },
        };
        handle.settle(outcome).await;
    }

    /// Whether any function subscribes to `event`'s topic (or it names its function).
    fn routed(&self, event: &Event) -> bool {
        let map = self.shared.map.borrow();
        match &event.function {
            Some(f) => map.functions.contains_key(f),
            None => !map.subscribers(self.source, &event.topic).is_empty(),
        }
    }

    /// The topics of `events` that no function subscribes to, each event
    /// counted as received under the one unrouted series: for a source
    /// that answers its sender (HTTP), which then refuses them rather than
    /// dead-lettering what nobody asked for.
    pub fn unrouted<'a>(&self, events: &'a [Event]) -> Vec<&'a str> {
        let unrouted: Vec<&str> = events.iter().filter(|e| !self.routed(e)).map(|e| e.topic.as_str()).collect();
        if !unrouted.is_empty() {
            self.shared.metrics.received.with_label_values(&[self.source, UNROUTED]).inc_by(unrouted.len() as f64);
        }
        unrouted
    }

    /// How many more events could be admitted now: a source that pulls in
    /// batches asks for no more than this, so nothing it pulls waits
    /// unprotected for a place (JetStream).
    pub fn room(&self) -> usize {
        self.shared.pending.available_permits()
    }
}

impl Ticket {
    /// Delivers `event` in a task of its own and settles through `handle`;
    /// the ticket is held until the message is settled.
    pub fn spawn(self, event: Event, handle: impl Settle) {
        tokio::spawn(self.deliver(event, handle));
    }

    /// Delivers `event` and settles through `handle`, in the caller's task,
    /// and returns the outcome: for a source that answers a request once
    /// its events have settled (HTTP), where a task of their own would only
    /// add a hand-over.
    pub async fn deliver<S: Settle>(mut self, event: Event, handle: S) -> Outcome {
        let d = self.dispatcher.clone();
        let work = async {
            if let Some(turn) = &mut self.turn {
                turn.wait().await;
            }
            d.deliver_all(&event, Redelivery::of(&handle)).await
        };
        let (outcome, reply) = kept_alive(&handle, work).await;
        // The reply rule: the first subscriber's answer is the reply.
        if let Some(response) = &reply {
            handle.reply(response).await;
        }
        handle.settle(outcome.clone()).await;
        outcome
    }
}

/// Runs `work`, keeping the handle's message alive every
/// [`Settle::keep_alive_every`] until it is done; ticks skip rather than burst.
async fn kept_alive<T>(handle: &impl Settle, work: impl Future<Output = T>) -> T {
    let Some(every) = handle.keep_alive_every() else { return work.await };
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => handle.keep_alive().await,
        }
    }
}

impl Dispatcher {
    /// Delivers to every subscriber; the outcome, and the first answer.
    async fn deliver_all(&self, event: &Event, broker: Redelivery) -> (Outcome, Option<Response>) {
        let m = &self.shared.metrics;
        let map = self.shared.map.borrow().clone();
        let subscribers: Vec<Arc<Subscription>> = match &event.function {
            Some(f) => map.functions.get(f).cloned().into_iter().collect(),
            None => map.subscribers(self.source, &event.topic),
        };
        // A topic nobody subscribes to comes from outside (any CloudEvents
        // type, any MQTT topic): one metric series each would grow without
        // bound, so they share one.
        let label = if subscribers.is_empty() { UNROUTED } else { event.topic.as_str() };
        m.received.with_label_values(&[self.source, label]).inc();
        if subscribers.is_empty() {
            let reason = format!("no function subscribes to topic {:?}", event.topic);
            if broker.dead_letters {
                // Back to the broker, which keeps it for a later subscriber
                // or moves it to its own dead letters.
                return (Outcome::Redeliver { after: REDELIVER_AFTER, reason }, None);
            }
            let outcome = match self.dead_letter(event, UNROUTED, None, None, 0, reason).await {
                Ok(()) => Outcome::DeadLettered,
                Err(reason) => Outcome::Redeliver { after: REDELIVER_AFTER, reason },
            };
            return (outcome, None);
        }
        let results = futures_util::future::join_all(subscribers.iter().map(|s| self.deliver(s, event, broker))).await;
        let mut first = None;
        let (mut dead, mut retry, mut failed) = (false, None::<Duration>, None::<String>);
        for r in results {
            match r {
                Delivery::Delivered(res) => first = first.or(Some(res)),
                Delivery::Duplicate => {}
                Delivery::DeadLettered => dead = true,
                Delivery::Retry(after) => retry = Some(retry.map_or(after, |r| r.max(after))),
                Delivery::Failed(e) => failed = Some(e),
            }
        }
        let outcome = match (failed, retry, dead) {
            (Some(reason), _, _) => Outcome::Redeliver { after: REDELIVER_AFTER, reason },
            (None, Some(after), _) => Outcome::Redeliver { after, reason: "a retry is due".into() },
            (None, None, true) => Outcome::DeadLettered,
            (None, None, false) => Outcome::Delivered,
        };
        (outcome, first)
    }

    /// One subscriber: attempts count on from the broker's deliveries, so
    /// the retry policy bounds them across redeliveries and restarts.
    async fn deliver(&self, sub: &Subscription, event: &Event, broker: Redelivery) -> Delivery {
        let m = &self.shared.metrics;
        let labels = [self.source, event.topic.as_str(), sub.function.as_str()];
        let dedup = sub.dedup.and_then(|w| Some((crate::dedup::identity(self.source, event)?, w)));
        if let Some((id, window)) = &dedup
            && self.shared.dedup.seen(&sub.function, id, *window).await
        {
            m.dedup_hits.with_label_values(&[&sub.function]).inc();
            return Delivery::Duplicate;
        }
        let mut attempt = broker.deliveries;
        if attempt > sub.retry.attempts && !broker.dead_letters {
            // Handed out more often than the policy allows attempts, without
            // ever settling: a message that stops the hub each time it runs.
            let reason = format!(
                "delivered {attempt} times without settling; the retry policy allows {} attempts",
                sub.retry.attempts
            );
            return match self.dead_letter(event, &event.topic, Some(&sub.function), None, attempt - 1, reason).await {
                Ok(()) => Delivery::DeadLettered,
                Err(e) => Delivery::Failed(e),
            };
        }
        loop {
            if !self.resumed(&sub.function).await {
                return self.failed(&labels, "shutting down".into());
            }
            let permit = tokio::select! {
                p = sub.limits.acquire() => p,
                () = self.shared.shutdown.cancelled() => return self.failed(&labels, "shutting down".into()),
            };
            let inflight = m.in_flight.with_label_values(&[&sub.function]);
            inflight.inc();
            let invocation = Invocation {
                function: &sub.function,
                event,
                connector: &self.connector,
                asynchronous: self.shared.asynchronous.as_deref(),
                content_type: self.shared.content_type.as_deref(),
            };
            let mut a = self.shared.gateway.invoke(&invocation).await;
            inflight.dec();
            if let Some(cap) = permit.done(a.status, a.elapsed) {
                m.concurrency_limit.with_label_values(&[&sub.function]).set(cap as f64);
            }
            let code = a.status.and_then(|s| http::StatusCode::from_u16(s).ok());
            let code = code.as_ref().map_or("error", http::StatusCode::as_str);
            m.invocation_seconds.with_label_values(&[&sub.function, code]).observe(a.elapsed.as_secs_f64());
            if a.ok() {
                let answer = Response {
                    function: sub.function.clone(),
                    status: a.status.unwrap_or(200),
                    headers: std::mem::take(&mut a.headers),
                    body: std::mem::take(&mut a.body),
                };
                // Settled only once its reply is out: one that cannot be
                // published is a failed attempt, retried as any other.
                match self.reply(sub, event, &answer).await {
                    Ok(()) => {
                        m.delivered.with_label_values(&labels).inc();
                        if let Some((id, window)) = &dedup {
                            self.shared.dedup.remember(&sub.function, id, *window).await;
                        }
                        return Delivery::Delivered(answer);
                    }
                    Err((e, retryable)) => (a.status, a.error, a.retry_after, a.last) = (None, e, None, !retryable),
                }
            }
            // Like Knative: a status that is not worth retrying is final, and
            // the event goes to the dead letters rather than being acked as done.
            let retryable = !a.last && a.status.is_none_or(|s| sub.retry.is_retryable(s));
            if broker.dead_letters || (retryable && sub.retry.has_attempts_after(attempt)) {
                m.retried.with_label_values(&labels).inc();
                let wait = sub.retry.backoff(attempt, a.retry_after);
                tracing::debug!(function = %sub.function, attempt, error = %a.error, ?wait, "retrying");
                if broker.later {
                    return Delivery::Retry(wait);
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.shared.shutdown.cancelled() => return self.failed(&labels, "shutting down".into()),
                }
                attempt += 1;
                continue;
            }
            return match self.dead_letter(event, &event.topic, Some(&sub.function), a.status, attempt, a.error).await {
                Ok(()) => Delivery::DeadLettered,
                Err(e) => Delivery::Failed(e),
            };
        }
    }

    /// Publishes `answer` where `sub` sends its replies, if anywhere; why
    /// not otherwise, and whether trying again could help (a broker that
    /// is down could come back; a misconfigured reply cannot).
    async fn reply(&self, sub: &Subscription, event: &Event, answer: &Response) -> Result<(), (String, bool)> {
        let Some(to) = &sub.reply_to else { return Ok(()) };
        let to = to.as_ref().map_err(|e| (e.clone(), false))?;
        if self.shared.asynchronous.is_some() {
            let why = "needs synchronous invocation: with hub.async_invocation the answer goes to the callback";
            return Err((format!("{} {why}", crate::reply::REPLY_TO), false));
        }
        let publisher = self.shared.publishers.get().and_then(|p| p.get(to.source).cloned().flatten());
        let Some(publisher) = publisher else {
            let why = format!("{}: no {} source runs in this hub to publish to", crate::reply::REPLY_TO, to.source);
            return Err((why, false));
        };
        let topic = to.topic_for(&event.topic).map_err(|e| (e, false))?;
        let result = publisher.publish(&topic, crate::reply::message(event, answer)).await;
        let outcome = if result.is_ok() { "published" } else { "failed" };
        self.shared.metrics.replies.with_label_values(&[&sub.function, to.source, outcome]).inc();
        result.map(|_| ()).map_err(|e| (format!("reply to {}:{topic} not published: {e}", to.source), true))
    }

    /// Waits while `function` is paused, holding its event unsettled (kept
    /// alive meanwhile); false when the hub stops first.
    async fn resumed(&self, function: &str) -> bool {
        if !self.is_paused(function) {
            return true;
        }
        let held = self.shared.metrics.held.with_label_values(&[function]);
        held.inc();
        let resumed = self.wait_resumed(function).await;
        held.dec();
        resumed
    }

    /// Whether `function` is paused now.
    pub fn is_paused(&self, function: &str) -> bool {
        self.shared.map.borrow().paused(function)
    }

    /// Returns once `function` is not paused: true, or false when the hub
    /// stops first.
    pub async fn wait_resumed(&self, function: &str) -> bool {
        let mut map = self.shared.map.clone();
        tokio::select! {
            r = map.wait_for(|m| !m.paused(function)) => r.is_ok(),
            () = self.shared.shutdown.cancelled() => false,
        }
    }

    /// The topics of `events` some paused function subscribes to: for a
    /// source that answers its sender (HTTP), which then asks it to send
    /// them again later rather than hold them.
    pub fn paused<'a>(&self, events: &'a [Event]) -> Vec<&'a str> {
        let map = self.shared.map.borrow();
        let paused = |e: &Event| match &e.function {
            Some(f) => map.paused(f),
            None => map.subscribers(self.source, &e.topic).iter().any(|s| s.paused),
        };
        events.iter().filter(|e| paused(e)).map(|e| e.topic.as_str()).collect()
    }

    fn failed(&self, labels: &[&str; 3], error: String) -> Delivery {
        self.shared.metrics.failed.with_label_values(labels).inc();
        Delivery::Failed(error)
    }

    async fn dead_letter(
        &self,
        event: &Event,
        topic_label: &str,
        function: Option<&str>,
        status: Option<u16>,
        attempts: u32,
        error: String,
    ) -> Result<(), String> {
        let letter = DeadLetter {
            time: DeadLetter::now(),
            source: self.source.to_string(),
            topic: event.topic.clone(),
            function: function.map(String::from),
            status,
            attempts,
            error: error.clone(),
            event: DeadEvent::of(event),
        };
        let labels = [self.source, topic_label, function.unwrap_or("")];
        match self.sink.send(letter).await {
            Ok(()) => {
                tracing::warn!(source = self.source, topic = %event.topic, function = ?function, attempts, %error, "dead-lettered");
                self.shared.metrics.dead_lettered.with_label_values(&labels).inc();
                Ok(())
            }
            Err(e) => {
                tracing::error!(sink = %self.sink.describe(), error = %e, "cannot dead-letter; the event will be redelivered");
                self.shared.metrics.failed.with_label_values(&labels).inc();
                Err(format!("dead-letter sink: {e}"))
            }
        }
    }
}
