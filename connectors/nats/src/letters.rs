//! Dead letters on a subject read back for a replay (`"from":
//! "nats:SUBJECT"`): the JSON letters [`crate::sink::NatsSink`] publishes,
//! from the JetStream stream that captures the subject (core NATS keeps
//! nothing to read back). Each message is deleted from the stream once the
//! hub has stored its letter.

use crate::config::NatsConfig;
use async_nats::jetstream::{self, consumer::pull};
use connector_core::{BrokerBatch, BrokerLetters, DeadLetter};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::time::Duration;

pub struct SubjectLetters {
    pub config: NatsConfig,
}

impl BrokerLetters for SubjectLetters {
    fn read(&self, subject: &str, max: usize) -> BoxFuture<'_, Result<BrokerBatch, String>> {
        let subject = subject.to_string();
        Box::pin(async move {
            let client = crate::connect(&self.config, None).await.map_err(|e| e.to_string())?;
            let js = jetstream::new(client);
            let name = js.stream_by_subject(&subject).await.map_err(|e| {
                format!("no JetStream stream captures {subject} ({e}); dead letters on core NATS cannot be read back")
            })?;
            let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
            // An ephemeral consumer of this subject's messages, gone when idle.
            let consumer = stream
                .create_consumer(pull::Config {
                    filter_subject: subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let waiting = stream.info().await.map_err(|e| e.to_string())?.state.messages as usize;
            let (mut letters, mut sequences) = (vec![], vec![]);
            if waiting == 0 {
                return Ok(BrokerBatch { letters, remove: Box::pin(async { Ok(()) }) });
            }
            let mut batch = consumer
                .batch()
                .max_messages(max.min(waiting))
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| e.to_string())?;
                let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
                match serde_json::from_slice::<DeadLetter>(&message.payload) {
                    Ok(letter) => {
                        letters.push(letter);
                        sequences.push(sequence);
                    }
                    Err(e) => tracing::warn!(subject, sequence, error = %e, "not a dead letter; left in the stream"),
                }
            }
            let remove = Box::pin(async move {
                for sequence in sequences {
                    stream.delete_message(sequence).await.map_err(|e| format!("{name}: {e}"))?;
                }
                Ok(())
            });
            Ok(BrokerBatch { letters, remove })
        })
    }
}
