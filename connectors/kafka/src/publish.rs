//! `switchboard publish kafka TOPIC` and replies routed to Kafka: a record
//! produced as any producer would produce it, with the key and headers
//! given.

use crate::config::KafkaConfig;
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Mutex;
use std::time::Duration;

pub struct TopicPublisher {
    config: KafkaConfig,
    /// Made at the first publish: a hub nobody publishes through holds no
    /// producer connection.
    producer: Mutex<Option<FutureProducer>>,
}

impl TopicPublisher {
    pub fn new(config: KafkaConfig) -> Self {
        Self { config, producer: Mutex::new(None) }
    }

    fn producer(&self) -> Result<FutureProducer, String> {
        let mut made = self.producer.lock().expect("producer lock");
        if let Some(p) = made.as_ref() {
            return Ok(p.clone());
        }
        let producer: FutureProducer =
            self.config.publisher_config().map_err(|e| e.to_string())?.create().map_err(|e| e.to_string())?;
        *made = Some(producer.clone());
        Ok(producer)
    }
}

impl Publisher for TopicPublisher {
    fn publish(&self, topic: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let topic = topic.to_string();
        Box::pin(async move {
            let producer = self.producer()?;
            // A CloudEvent's `ce-*` attributes are `ce_*` headers in Kafka's binding.
            let names: Vec<String> = message.headers.iter().map(|(k, _)| kafka_name(k)).collect();
            let headers = names.iter().zip(&message.headers).fold(OwnedHeaders::new(), |h, (key, (_, value))| {
                h.insert(Header { key, value: Some(value.as_bytes()) })
            });
            let mut record = FutureRecord::to(&topic).payload(&message.body[..]).headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_bytes());
            }
            let delivery = producer.send(record, Duration::ZERO).await.map_err(|(e, _)| e.to_string())?;
            Ok(format!("partition {} offset {}", delivery.partition, delivery.offset))
        })
    }
}

fn kafka_name(header: &str) -> String {
    match header.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("ce-") => format!("ce_{}", &header[3..]),
        _ => header.to_string(),
    }
}
