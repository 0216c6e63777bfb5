//! The SQS source (aws-sdk-sqs).
//!
//! Each topic of the topic map names a queue (by name, or by URL); queues
//! that exist are long-polled by `sqs.pollers` receivers each, which wait
//! for room in the hub before they receive, so a slow function slows the
//! polling instead of leaving received messages to time out. A message is
//! deleted once delivered or dead-lettered (in batches), kept invisible
//! while its invocation runs, and made visible again after the retry's
//! delay when a retry is due: redelivery follows the hub's retry policy,
//! and `ApproximateReceiveCount` is the delivery count it reads. With
//! `sqs.redrive: queue` a queue's own redrive policy dead-letters instead.
//! FIFO messages keep their group's order, retried in place.

mod config;
mod letters;
mod message;
mod metrics;
mod publish;

pub use config::{ConfigError, Redrive, SqsConfig, queue_name};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use connector_core::{
    Backoff, Batcher, BrokerLetters, BrokerState, Dispatcher, Outcome, Publisher, Settle, Source, SourceConfig,
    SourceContext, SourceError, Subscribed,
};
use futures_util::future::BoxFuture;
use metrics::SqsMetrics;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often a consumed queue's backlog is read (`GetQueueAttributes`).
const BACKLOG_EVERY: Duration = Duration::from_secs(10);

pub struct SqsSource {
    config: SqsConfig,
}

impl SourceConfig for SqsConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        self.check()?;
        Ok(Box::new(SqsSource { config: self.clone() }))
    }
}

impl Source for SqsSource {
    fn name(&self) -> &'static str {
        "sqs"
    }

    fn describe(&self) -> String {
        let endpoint = self.config.endpoint_url.as_deref().unwrap_or("AWS");
        let region = self.config.region.as_deref().unwrap_or("region from the environment");
        let redrive = match self.config.redrive {
            Redrive::Hub => "the hub dead-letters",
            Redrive::Queue => "queues' redrive policies dead-letter",
        };
        format!("{endpoint} ({region}, {} poller(s) per queue, {redrive})", self.config.pollers)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn BrokerLetters>> {
        Some(Arc::new(letters::QueueLetters { config: self.config.clone() }))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(publish::QueuePublisher::new(self.config.clone())))
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let c = self.config;
            let client = client(&c).await?;
            let metrics = Arc::new(SqsMetrics::new(&ctx.registry)?);
            let deletes = deleter(client.clone(), metrics.clone());
            // Only FIFO messages have a key (their group): its messages in order.
            let dispatcher = ctx.dispatcher.with_key_order(true);
            let mut running: Subscribed<String, CancellationToken> = Subscribed::default();
            // Queues looked up again while some wanted one does not exist.
            let mut recheck = tokio::time::interval(Duration::from_secs(10));
            loop {
                let wanted: BTreeSet<String> =
                    ctx.wanted_unpaused().into_iter().filter(|t| c.queues.is_empty() || c.queues.contains(t)).collect();
                let changes = running.update(&wanted);
                for (queue, stop) in changes.removed {
                    tracing::info!(%queue, "queue dropped");
                    stop.cancel();
                }
                for topic in changes.added {
                    let Some(url) = queue_url(&client, &topic, &ctx.broker).await else { continue };
                    let queue: Arc<str> = Arc::from(queue_name(&url).unwrap_or(&topic));
                    let broker_dead_letters = c.redrive == Redrive::Queue && has_redrive_policy(&client, &url).await;
                    tracing::info!(%topic, %url, broker_dead_letters, "consuming");
                    let stop = ctx.shutdown.child_token();
                    for _ in 0..c.pollers {
                        let poller = Poller {
                            client: client.clone(),
                            dispatcher: dispatcher.clone(),
                            deletes: deletes.clone(),
                            broker: ctx.broker.clone(),
                            metrics: metrics.clone(),
                            topic: topic.clone(),
                            queue: queue.clone(),
                            url: url.clone(),
                            config: c.clone(),
                            broker_dead_letters,
                        };
                        tokio::spawn(poller.run(stop.clone()));
                    }
                    tokio::spawn(backlog(client.clone(), metrics.clone(), url, queue, stop.clone()));
                    running.insert(topic, stop);
                }
                tokio::select! {
                    changed = ctx.topics.changed() => if changed.is_err() { break },
                    _ = recheck.tick() => {}
                    () = ctx.shutdown.cancelled() => break,
                }
            }
            Ok(())
        })
    }
}

/// The SQS client: credentials from the standard AWS chain, the region
/// from `sqs.region` or that chain.
async fn client(c: &SqsConfig) -> Result<Client, ConfigError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &c.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &c.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let aws = loader.load().await;
    if aws.region().is_none() {
        return Err(ConfigError("sqs.region: no region; set it here or in AWS_REGION".into()));
    }
    Ok(Client::new(&aws))
}

/// A topic's queue URL: the topic itself when it is one, else `GetQueueUrl`.
/// `None` (quietly) for a queue that does not exist: most plain topics are
/// other sources' subjects.
async fn queue_url(client: &Client, topic: &str, broker: &BrokerState) -> Option<String> {
    if topic.contains("://") {
        return queue_name(topic).map(|_| topic.to_string());
    }
    match client.get_queue_url().queue_name(topic).send().await {
        Ok(found) => {
            broker.connected();
            found.queue_url
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
            broker.connected();
            tracing::debug!(%topic, "no such queue");
            None
        }
        Err(e) => {
            broker.disconnected();
            tracing::warn!(%topic, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot look up the queue");
            None
        }
    }
}

/// Whether the queue has a redrive policy (`sqs.redrive: queue` lets it
/// decide); a queue without one is consumed with the hub's, and says so.
async fn has_redrive_policy(client: &Client, url: &str) -> bool {
    let attrs = client.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::RedrivePolicy).send();
    match attrs.await {
        Ok(out) if out.attributes().is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)) => true,
        Ok(_) => {
            tracing::warn!(queue = %url, "sqs.redrive is queue, but the queue has no redrive policy: the hub dead-letters its messages");
            false
        }
        Err(e) => {
            tracing::warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot read the queue's redrive policy: the hub dead-letters its messages");
            false
        }
    }
}

/// Reads a queue's message counts into `switchboard_sqs_messages` until
/// the queue is dropped, then removes its series.
async fn backlog(client: Client, metrics: Arc<SqsMetrics>, url: String, queue: Arc<str>, stop: CancellationToken) {
    use QueueAttributeName as A;
    let states = [
        (A::ApproximateNumberOfMessages, "visible"),
        (A::ApproximateNumberOfMessagesNotVisible, "in_flight"),
        (A::ApproximateNumberOfMessagesDelayed, "delayed"),
    ];
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => break,
        }
        let ask =
            states.iter().fold(client.get_queue_attributes().queue_url(&url), |r, (a, _)| r.attribute_names(a.clone()));
        let Ok(Some(attrs)) = ask.send().await.map(|out| out.attributes) else { continue };
        for (attr, state) in &states {
            if let Some(n) = attrs.get(attr).and_then(|n| n.parse().ok()) {
                metrics.messages.with_label_values(&[&*queue, state]).set(n);
            }
        }
    }
    for (_, state) in &states {
        let _ = metrics.messages.remove_label_values(&[&*queue, state]);
    }
}

/// One long-polling receiver of a queue.
struct Poller {
    client: Client,
    dispatcher: Dispatcher,
    deletes: Batcher<(String, String)>,
    broker: BrokerState,
    metrics: Arc<SqsMetrics>,
    /// The topic it was asked for (a name or a URL), and the queue's name.
    topic: String,
    queue: Arc<str>,
    url: String,
    config: SqsConfig,
    broker_dead_letters: bool,
}

impl Poller {
    async fn run(self, stop: CancellationToken) {
        let c = &self.config;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            // Receive only what the hub can take now: received messages
            // waiting for room would only age towards their visibility timeout.
            tokio::select! {
                () = self.dispatcher.ready() => {}
                () = stop.cancelled() => return,
            }
            let receive = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(c.batch_size)
                .wait_time_seconds(c.wait_time.as_secs() as i32)
                .visibility_timeout(c.visibility_timeout.as_secs() as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send();
            let received = tokio::select! {
                r = receive => r,
                () = stop.cancelled() => return,
            };
            let messages = match received {
                Ok(r) => {
                    self.broker.connected();
                    backoff.reset();
                    r.messages.unwrap_or_default()
                }
                Err(e) => {
                    self.broker.disconnected();
                    let wait = backoff.next_wait();
                    tracing::warn!(queue = %self.topic, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), ?wait, "cannot receive");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            self.metrics.received.with_label_values(&[&self.queue]).inc_by(messages.len() as u64);
            for m in messages {
                let Some(receipt) = m.receipt_handle().map(str::to_string) else { continue };
                let system = |a: MessageSystemAttributeName| m.attributes().and_then(|attrs| attrs.get(&a));
                let deliveries = system(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                if let Some(sent) =
                    system(MessageSystemAttributeName::SentTimestamp).and_then(|t| t.parse::<u64>().ok())
                {
                    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    let waited = now.saturating_sub(Duration::from_millis(sent));
                    self.metrics.age.with_label_values(&[&self.queue]).observe(waited.as_secs_f64());
                }
                // A FIFO message is retried in place, holding its group's
                // turn: given back, the group's later messages (already
                // received) would overtake it.
                let fifo = system(MessageSystemAttributeName::MessageGroupId).is_some();
                let handle = SqsMessage {
                    client: self.client.clone(),
                    deletes: self.deletes.clone(),
                    metrics: self.metrics.clone(),
                    queue: self.queue.clone(),
                    url: self.url.clone(),
                    receipt,
                    deliveries,
                    visibility: c.visibility_timeout,
                    broker_dead_letters: self.broker_dead_letters,
                    fifo,
                };
                match message::event(&self.topic, &self.url, &m) {
                    Some(event) => self.dispatcher.submit(event, handle).await,
                    None => handle.settle(Outcome::Delivered).await,
                }
            }
        }
    }
}

/// A received message: deleted once settled, kept invisible while its
/// invocation runs, made visible again after a retry's delay.
struct SqsMessage {
    client: Client,
    deletes: Batcher<(String, String)>,
    metrics: Arc<SqsMetrics>,
    queue: Arc<str>,
    url: String,
    receipt: String,
    deliveries: u32,
    visibility: Duration,
    broker_dead_letters: bool,
    fifo: bool,
}

impl SqsMessage {
    /// `reason` labels the metric: keep_alive or retry.
    async fn set_visibility(&self, after: Duration, reason: &str) {
        // Whole seconds, rounded up: a retry is never due sooner than asked.
        let seconds = after.as_secs_f64().ceil().min(12.0 * 3600.0) as i32;
        let changed = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
        let result = if changed.is_ok() { "ok" } else { "error" };
        self.metrics.visibility_changes.with_label_values(&[&self.queue, reason, result]).inc();
        if let Err(e) = changed {
            tracing::warn!(queue = %self.url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot change a message's visibility");
        }
    }
}

impl Settle for SqsMessage {
    fn deliveries(&self) -> u32 {
        self.deliveries
    }

    fn redelivers_later(&self) -> bool {
        !self.fifo
    }

    fn broker_dead_letters(&self) -> bool {
        self.broker_dead_letters
    }

    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.visibility / 2)
    }

    async fn keep_alive(&self) {
        self.set_visibility(self.visibility, "keep_alive").await;
    }

    async fn settle(self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered | Outcome::DeadLettered => {
                if !self.deletes.send((self.url, self.receipt)).await {
                    tracing::warn!("the deleter is gone; the message will be delivered again");
                }
            }
            Outcome::Redeliver { after, .. } => self.set_visibility(after, "retry").await,
        }
    }
}

/// Deletes settled messages, up to ten per `DeleteMessageBatch` per queue,
/// as many as settled while the previous batch was on its way. An entry
/// that fails is tried once more; one that fails again is delivered again
/// once its visibility timeout passes (at least once).
fn deleter(client: Client, metrics: Arc<SqsMetrics>) -> Batcher<(String, String)> {
    Batcher::spawn(10, move |settled: Vec<(String, String)>| {
        let (client, metrics) = (client.clone(), metrics.clone());
        async move {
            let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (url, receipt) in settled {
                by_queue.entry(url).or_default().push(receipt);
            }
            for (url, receipts) in by_queue {
                let queue = queue_name(&url).unwrap_or(&url);
                let count = receipts.len();
                let mut left = receipts;
                for attempt in 0..2 {
                    left = delete_batch(&client, &url, left).await;
                    if left.is_empty() {
                        break;
                    }
                    if attempt == 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                metrics.deleted.with_label_values(&[queue]).inc_by((count - left.len()) as u64);
                if !left.is_empty() {
                    metrics.delete_failures.with_label_values(&[queue]).inc_by(left.len() as u64);
                    tracing::warn!(queue = %url, count = left.len(), "cannot delete settled messages; they will be delivered again");
                }
            }
        }
    })
}

/// One `DeleteMessageBatch`; returns the receipts that were not deleted.
async fn delete_batch(client: &Client, url: &str, receipts: Vec<String>) -> Vec<String> {
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
        .iter()
        .enumerate()
        .filter_map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build().ok())
        .collect();
    match client.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
        Ok(out) => out
            .failed
            .iter()
            .filter_map(|f| {
                tracing::debug!(queue = %url, code = %f.code, message = ?f.message, "delete failed");
                receipts.get(f.id.parse::<usize>().ok()?).cloned()
            })
            .collect(),
        Err(e) => {
            tracing::warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot delete messages");
            receipts
        }
    }
}
