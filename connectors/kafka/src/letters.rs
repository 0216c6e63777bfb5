//! A dead-letter topic read back for a replay (`"from": "kafka:TOPIC"`):
//! each record is the original one with `switchboard.*` headers saying what
//! failed ([`crate::sink`]), turned back into the letter it was. Kafka
//! removes no single record, so the group `GROUP.dead-letters` commits past
//! the records once the hub has stored them: each is taken once.

use crate::config::{KafkaConfig, Tombstones};
use connector_core::deadletter::DeadEvent;
use connector_core::{BrokerBatch, BrokerLetters, DeadLetter};
use futures_util::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

pub struct TopicLetters {
    pub config: KafkaConfig,
}

/// The longest wait for the cluster's answers and for records to arrive.
const PATIENCE: Duration = Duration::from_secs(10);

impl BrokerLetters for TopicLetters {
    fn read(&self, topic: &str, max: usize) -> BoxFuture<'_, Result<BrokerBatch, String>> {
        let (config, topic) = (self.config.clone(), topic.to_string());
        Box::pin(async move {
            let (consumer, letters, next) =
                tokio::task::spawn_blocking(move || read(&config, &topic, max)).await.map_err(|e| e.to_string())??;
            let remove = Box::pin(async move {
                if next.count() == 0 {
                    return Ok(());
                }
                tokio::task::spawn_blocking(move || consumer.commit(&next, CommitMode::Sync))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot commit the dead-letter group's offsets: {e}"))
            });
            Ok(BrokerBatch { letters, remove })
        })
    }
}

/// Reads from the group's committed offsets up to the end of each partition
/// as it was when asked (or `max` records); the consumer, the letters, and
/// the offsets to commit once they are stored.
fn read(
    config: &KafkaConfig,
    topic: &str,
    max: usize,
) -> Result<(BaseConsumer, Vec<DeadLetter>, TopicPartitionList), String> {
    let consumer: BaseConsumer =
        config.letters_config().map_err(|e| e.to_string())?.create().map_err(|e| e.to_string())?;
    let metadata = consumer.fetch_metadata(Some(topic), PATIENCE).map_err(|e| format!("topic {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err(format!("no topic {topic} in the cluster"));
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(topic, *p, Offset::Stored).map_err(|e| e.to_string())?;
    }
    let committed = consumer.committed_offsets(assignment.clone(), PATIENCE).map_err(|e| e.to_string())?;
    // The partitions with records past the group's offset: up to where each ends now.
    let mut ends = std::collections::BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, PATIENCE).map_err(|e| e.to_string())?;
        let from = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        if from < high {
            ends.insert(p, high);
        }
    }
    let (mut letters, mut next) = (vec![], TopicPartitionList::new());
    if ends.is_empty() {
        return Ok((consumer, letters, next));
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PATIENCE;
    while letters.len() < max && !ends.is_empty() && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = message.map_err(|e| format!("reading {topic}: {e}"))?;
        next.add_partition_offset(topic, m.partition(), Offset::Offset(m.offset() + 1)).map_err(|e| e.to_string())?;
        if ends.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&m.partition());
        }
        // A tombstone is a letter too: its event had no value.
        match crate::record::event(&m, Tombstones::Deliver).and_then(letter_of) {
            Some(letter) => letters.push(letter),
            None => tracing::warn!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                "not a dead letter (no switchboard.* headers); skipped"
            ),
        }
    }
    Ok((consumer, letters, next))
}

/// The letter a dead-letter record holds: the failure from its
/// `switchboard.*` headers, the event from the rest, with the original
/// topic, partition and offset.
fn letter_of(mut e: connector_core::Event) -> Option<DeadLetter> {
    let take = |e: &mut connector_core::Event, name: &str| {
        let at = e.headers.iter().position(|(k, _)| k.eq_ignore_ascii_case(&format!("X-Kafka-switchboard.{name}")))?;
        Some(e.headers.remove(at).1)
    };
    let topic = take(&mut e, "topic")?;
    let error = take(&mut e, "error").unwrap_or_default();
    let function = take(&mut e, "function");
    let status = take(&mut e, "status").and_then(|s| s.parse().ok());
    let attempts = take(&mut e, "attempts").and_then(|a| a.parse().ok()).unwrap_or(0);
    let time = take(&mut e, "time").unwrap_or_default();
    let (partition, offset) = (take(&mut e, "partition"), take(&mut e, "offset"));
    for (name, value) in [("X-Kafka-Partition", partition), ("X-Kafka-Offset", offset)] {
        e.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        e.headers.extend(value.map(|v| (name.to_string(), v)));
    }
    e.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("X-Kafka-Timestamp"));
    Some(DeadLetter {
        time,
        source: "kafka".into(),
        topic,
        function,
        status,
        attempts,
        error,
        event: DeadEvent::of(&e),
    })
}
