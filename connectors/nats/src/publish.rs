//! `switchboard publish nats SUBJECT` and replies routed to NATS: a message published as any client
//! would publish it; to JetStream, and acknowledged by the stream that
//! captures the subject, when the source consumes from JetStream.

use crate::config::NatsConfig;
use async_nats::jetstream;
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

pub struct SubjectPublisher {
    config: NatsConfig,
    /// Connected at the first publish.
    client: OnceCell<async_nats::Client>,
}

impl SubjectPublisher {
    pub fn new(config: NatsConfig) -> Self {
        Self { config, client: OnceCell::new() }
    }
}

impl Publisher for SubjectPublisher {
    fn publish(&self, subject: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let subject = subject.to_string();
        Box::pin(async move {
            let client = self
                .client
                .get_or_try_init(|| crate::connect(&self.config, None))
                .await
                .map_err(|e| e.to_string())?
                .clone();
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in &message.headers {
                headers.insert(k.as_str(), v.as_str());
            }
            if self.config.jetstream.is_none() {
                client.publish_with_headers(subject, headers, message.body).await.map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())?;
                return Ok("published on core NATS (only subscribers get it)".into());
            }
            let ack = jetstream::new(client)
                .publish_with_headers(subject.clone(), headers, message.body)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("{e} (does a stream capture {subject}?)"))?;
            Ok(format!("stream {} sequence {}", ack.stream, ack.sequence))
        })
    }
}
