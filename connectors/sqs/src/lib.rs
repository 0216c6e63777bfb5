//! The SQS source (aws-sdk-sqs).
//!
//! Each topic of the topic map names a queue (by name, or by URL); queues
//! that exist are long-polled by `sqs.pollers` receivers each, which wait
//! for room in the hub before they receive, so a slow function slows the
//! polling instead of leaving received messages to time out. A message is
//! deleted once delivered or dead-lettered (in batches), kept invisible
//! while its invocation runs, and made visible again after the retry's
//! delay when a retry is due: redelivery follows the hub's retry policy,
//! and `ApproximateReceiveCount` is the delivery count it reads.

mod config;
mod message;

pub use config::{ConfigError, SqsConfig, queue_name};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use connector_core::{
    Backoff, Batcher, BrokerState, Dispatcher, Outcome, Settle, Source, SourceConfig, SourceContext, SourceError,
    Subscribed,
};
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
        format!("{endpoint} ({region}, {} poller(s) per queue)", self.config.pollers)
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let c = self.config;
            let client = client(&c).await?;
            let deletes = deleter(client.clone());
            let mut running: Subscribed<String, CancellationToken> = Subscribed::default();
            // Queues looked up again while some wanted one does not exist.
            let mut recheck = tokio::time::interval(Duration::from_secs(10));
            loop {
                let wanted: BTreeSet<String> =
                    ctx.wanted().into_iter().filter(|t| c.queues.is_empty() || c.queues.contains(t)).collect();
                let changes = running.update(&wanted);
                for (queue, stop) in changes.removed {
                    tracing::info!(%queue, "queue dropped");
                    stop.cancel();
                }
                for topic in changes.added {
                    let Some(url) = queue_url(&client, &topic, &ctx.broker).await else { continue };
                    tracing::info!(%topic, %url, "consuming");
                    let stop = ctx.shutdown.child_token();
                    for _ in 0..c.pollers {
                        let poller = Poller {
                            client: client.clone(),
                            dispatcher: ctx.dispatcher.clone(),
                            deletes: deletes.clone(),
                            broker: ctx.broker.clone(),
                            topic: topic.clone(),
                            url: url.clone(),
                            config: c.clone(),
                        };
                        tokio::spawn(poller.run(stop.clone()));
                    }
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

/// One long-polling receiver of a queue.
struct Poller {
    client: Client,
    dispatcher: Dispatcher,
    deletes: Batcher<(String, String)>,
    broker: BrokerState,
    topic: String,
    url: String,
    config: SqsConfig,
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
            for m in messages {
                let Some(receipt) = m.receipt_handle().map(str::to_string) else { continue };
                let deliveries = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let handle = SqsMessage {
                    client: self.client.clone(),
                    deletes: self.deletes.clone(),
                    url: self.url.clone(),
                    receipt,
                    deliveries,
                    visibility: c.visibility_timeout,
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
    url: String,
    receipt: String,
    deliveries: u32,
    visibility: Duration,
}

impl SqsMessage {
    async fn set_visibility(&self, after: Duration) {
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
        true
    }

    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.visibility / 2)
    }

    async fn keep_alive(&self) {
        self.set_visibility(self.visibility).await;
    }

    async fn settle(self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered | Outcome::DeadLettered => {
                if !self.deletes.send((self.url, self.receipt)).await {
                    tracing::warn!("the deleter is gone; the message will be delivered again");
                }
            }
            Outcome::Redeliver { after, .. } => self.set_visibility(after).await,
        }
    }
}

/// Deletes settled messages, up to ten per `DeleteMessageBatch` per queue,
/// as many as settled while the previous batch was on its way. An entry
/// that fails is tried once more; one that fails again is delivered again
/// once its visibility timeout passes (at least once).
fn deleter(client: Client) -> Batcher<(String, String)> {
    Batcher::spawn(10, move |settled: Vec<(String, String)>| {
        let client = client.clone();
        async move {
            let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (url, receipt) in settled {
                by_queue.entry(url).or_default().push(receipt);
            }
            for (url, receipts) in by_queue {
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
                if !left.is_empty() {
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
