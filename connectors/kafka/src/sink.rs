//! Dead letters as records of a Kafka topic (`kafka.dead_letter_topic`):
//! the original key, value and headers, so the topic can be replayed as
//! it is, with what went wrong in `switchboard.*` headers (as Kafka
//! Connect's `__connect.errors.*`).

use base64::Engine;
use connector_core::{DeadLetter, DeadLetterSink};
use futures_util::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

pub struct TopicSink {
    pub producer: FutureProducer,
    pub topic: String,
}

/// The event headers the source adds itself; every other `X-Kafka-<name>`
/// header is the record's own header `<name>`.
const OWN_HEADERS: [&str; 6] = ["partition", "offset", "timestamp", "key", "key-enc", "tombstone"];

impl DeadLetterSink for TopicSink {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (key, value, headers) = record_of(&letter);
            let mut record = FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(value) = &value {
                record = record.payload(value);
            }
            // Acknowledged by the topic's in-sync replicas (librdkafka's
            // acks=all default) or an error: then the record is not settled.
            self.producer.send(record, Duration::ZERO).await.map_err(|(e, _)| e.to_string())?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

type Record = (Option<Vec<u8>>, Option<Vec<u8>>, OwnedHeaders);

/// The record that was read, rebuilt from the letter's event.
fn record_of(letter: &DeadLetter) -> Record {
    let e = &letter.event;
    let header = |name: &str| e.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let key = header("X-Kafka-Key").and_then(|k| match header("X-Kafka-Key-Enc") {
        Some("b64") => b64(k),
        _ => Some(k.as_bytes().to_vec()),
    });
    let value = match header("X-Kafka-Tombstone") {
        Some("true") => None,
        _ if e.payload_base64 => b64(&e.payload),
        _ => Some(e.payload.as_bytes().to_vec()),
    };
    let mut pairs: Vec<(String, String)> = vec![];
    for (k, v) in &e.headers {
        let Some(name) = k.get(..8).filter(|p| p.eq_ignore_ascii_case("X-Kafka-")).map(|_| &k[8..]) else {
            continue;
        };
        // A CloudEvent's content type is its data's, set below.
        let replaced = e.cloudevent.is_some() && name.eq_ignore_ascii_case("content-type");
        if !replaced && !OWN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            pairs.push((name.to_string(), v.clone()));
        }
    }
    // A CloudEvent goes back in binary mode (the Kafka protocol binding).
    if let Some(ce) = &e.cloudevent {
        pairs.extend(ce.headers().map(|(name, value)| (name.as_str().replacen("ce-", "ce_", 1), value.to_string())));
        pairs.extend(e.content_type.iter().map(|ct| ("content-type".to_string(), ct.clone())));
    }
    let context = [
        ("switchboard.error", Some(letter.error.clone())),
        ("switchboard.function", letter.function.clone()),
        ("switchboard.status", letter.status.map(|s| s.to_string())),
        ("switchboard.attempts", Some(letter.attempts.to_string())),
        ("switchboard.topic", Some(letter.topic.clone())),
        ("switchboard.partition", header("X-Kafka-Partition").map(str::to_string)),
        ("switchboard.offset", header("X-Kafka-Offset").map(str::to_string)),
        ("switchboard.time", Some(letter.time.clone())),
    ];
    pairs.extend(context.into_iter().filter_map(|(name, value)| Some((name.to_string(), value?))));
    let headers = pairs
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_bytes()) }));
    (key, value, headers)
}
