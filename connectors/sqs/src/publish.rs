//! `switchboard publish sqs QUEUE` and replies routed to SQS: a message sent to the queue (named, or
//! its URL) as any producer would send it: the body as text, each header a
//! string message attribute, and on a FIFO queue the key as its message
//! group.

use crate::config::SqsConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;

pub struct QueuePublisher {
    config: SqsConfig,
    /// Made at the first publish.
    client: tokio::sync::OnceCell<aws_sdk_sqs::Client>,
    /// Queue URLs by name, as `GetQueueUrl` answered.
    urls: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl QueuePublisher {
    pub fn new(config: SqsConfig) -> Self {
        Self { config, client: tokio::sync::OnceCell::new(), urls: Default::default() }
    }
}

impl Publisher for QueuePublisher {
    fn publish(&self, queue: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let queue = queue.to_string();
        Box::pin(async move {
            let show = |e: &dyn std::error::Error| format!("{queue}: {}", DisplayErrorContext(e));
            let body = String::from_utf8(message.body.to_vec())
                .map_err(|_| "an SQS message body is text: this body is not UTF-8".to_string())?;
            let client =
                self.client.get_or_try_init(|| crate::client(&self.config)).await.map_err(|e| e.to_string())?;
            let known = self.urls.lock().expect("urls lock").get(&queue).cloned();
            let url = match (queue.contains("://"), known) {
                (true, _) => queue.clone(),
                (false, Some(url)) => url,
                (false, None) => {
                    let found = client.get_queue_url().queue_name(&queue).send().await.map_err(|e| show(&e))?;
                    let url = found.queue_url.unwrap_or_default();
                    self.urls.lock().expect("urls lock").insert(queue.clone(), url.clone());
                    url
                }
            };
            let mut send = client.send_message().queue_url(&url).message_body(body);
            for (name, value) in message.headers {
                let value = MessageAttributeValue::builder().data_type("String").string_value(value).build();
                send = send.message_attributes(name, value.map_err(|e| e.to_string())?);
            }
            if url.trim_end_matches('/').ends_with(".fifo") {
                // Without content-based deduplication a FIFO queue needs an
                // id; each publish is a new message.
                let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                send = send
                    .message_group_id(message.key.as_deref().unwrap_or("switchboard-publish"))
                    .message_deduplication_id(nanos.as_nanos().to_string());
            }
            let sent = send.send().await.map_err(|e| show(&e))?;
            Ok(format!("message {}", sent.message_id().unwrap_or("?")))
        })
    }
}
