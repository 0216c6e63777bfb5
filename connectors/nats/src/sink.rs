use connector_core::{DeadLetter, DeadLetterSink};
use futures_util::future::BoxFuture;

/// Dead letters as JSON on a NATS subject: published to JetStream (and
/// acknowledged by a stream that captures the subject) when JetStream is in
/// use, else published and flushed.
pub struct NatsSink {
    client: async_nats::Client,
    jetstream: Option<async_nats::jetstream::Context>,
    subject: String,
}

impl NatsSink {
    pub fn new(client: async_nats::Client, jetstream: Option<async_nats::jetstream::Context>, subject: String) -> Self {
        Self { client, jetstream, subject }
    }
}

impl DeadLetterSink for NatsSink {
    fn send(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&letter).map_err(|e| e.to_string())?;
            match &self.jetstream {
                Some(js) => {
                    let ack = js.publish(self.subject.clone(), body.into()).await.map_err(|e| e.to_string())?;
                    ack.await.map_err(|e| format!("{e} (does a stream capture {}?)", self.subject))?;
                }
                None => {
                    self.client.publish(self.subject.clone(), body.into()).await.map_err(|e| e.to_string())?;
                    self.client.flush().await.map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("nats subject {}", self.subject)
    }
}
