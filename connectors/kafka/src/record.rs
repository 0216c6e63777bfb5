//! A Kafka record as the function sees it: OpenFaaS's Kafka connector's
//! headers, the record's own headers, and the CloudEvents Kafka binding.

use crate::config::Tombstones;
use base64::Engine;
use bytes::Bytes;
use connector_core::{CloudEventAttrs, Event};
use rdkafka::Message;
use rdkafka::message::Headers;

/// The event of a record; `None` for a tombstone that is skipped.
pub fn event(m: &impl Message, tombstones: Tombstones) -> Option<Event> {
    let tombstone = m.payload().is_none();
    if tombstone && tombstones == Tombstones::Skip {
        return None;
    }
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    let mut e = Event {
        id: format!("{topic}-{partition}-{offset}"),
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        ..Default::default()
    };
    e.headers.push(("X-Kafka-Partition".into(), partition.to_string()));
    e.headers.push(("X-Kafka-Offset".into(), offset.to_string()));
    if let Some(ms) = m.timestamp().to_millis() {
        e.headers.push(("X-Kafka-Timestamp".into(), ms.to_string()));
    }
    if tombstone {
        e.headers.push(("X-Kafka-Tombstone".into(), "true".into()));
    }
    let key = m.key().map(|k| match std::str::from_utf8(k) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(k), true),
    });
    if let Some((k, encoded)) = &key {
        e.headers.push(("X-Kafka-Key".into(), k.clone()));
        if *encoded {
            e.headers.push(("X-Kafka-Key-Enc".into(), "b64".into()));
        }
        e.key = Some(k.clone());
    }
    let mut pairs: Vec<(String, String)> = vec![];
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            pairs.push((h.key.to_string(), value));
        }
    }
    // Binary mode: `ce_*` headers.
    e.cloudevent = CloudEventAttrs::from_headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in pairs {
        let lower = k.to_ascii_lowercase();
        match lower.as_str() {
            "content-type" | "ce_datacontenttype" => e.content_type = Some(v.clone()),
            "traceparent" | "tracestate" => e.headers.push((lower.clone(), v.clone())),
            _ => {}
        }
        if !lower.starts_with("ce_") {
            e.headers.push((format!("X-Kafka-{k}"), v));
        }
    }
    e.unwrap_structured_cloudevent();
    if let Some(ce) = &mut e.cloudevent {
        e.id = ce.id.clone();
        // The binding: the record's key is the partitionkey extension.
        if let Some((k, _)) = key {
            ce.extensions.entry("partitionkey".into()).or_insert(k);
        }
    }
    Some(e)
}
