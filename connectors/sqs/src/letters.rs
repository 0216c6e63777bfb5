//! A queue's dead-letter queue read back for a replay (`"from":
//! "sqs:DLQ"`), as Lambda redrives one: the messages a redrive policy
//! moved there, each a letter for the queue that moved it (found with
//! `ListDeadLetterSourceQueues`), to go to that queue's subscribers.
//! Messages stay hidden while they are read and are deleted once the hub
//! has stored them.

use crate::config::{SqsConfig, queue_name};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use connector_core::deadletter::DeadEvent;
use connector_core::{BrokerBatch, BrokerLetters, DeadLetter};
use futures_util::future::BoxFuture;

pub struct QueueLetters {
    pub config: SqsConfig,
}

/// How long the messages read stay hidden: time enough to store them.
const HIDDEN_SECONDS: i32 = 300;

impl BrokerLetters for QueueLetters {
    fn read(&self, dlq: &str, max: usize) -> BoxFuture<'_, Result<BrokerBatch, String>> {
        let dlq = dlq.to_string();
        Box::pin(async move {
            let show = |e: &dyn std::error::Error| format!("{dlq}: {}", DisplayErrorContext(e));
            let client = crate::client(&self.config).await.map_err(|e| e.to_string())?;
            let url = match dlq.contains("://") {
                true => dlq.clone(),
                false => client
                    .get_queue_url()
                    .queue_name(&dlq)
                    .send()
                    .await
                    .map_err(|e| show(&e))?
                    .queue_url
                    .unwrap_or_default(),
            };
            let sources = client.list_dead_letter_source_queues().queue_url(&url).send().await.map_err(|e| show(&e))?;
            let source = match sources.queue_urls() {
                [one] => one.clone(),
                [] => return Err(format!("{dlq}: no queue names it as its dead-letter queue")),
                many => {
                    return Err(format!(
                        "{dlq}: the dead-letter queue of {} queues; which one a message left is not recorded",
                        many.len()
                    ));
                }
            };
            let topic = queue_name(&source).unwrap_or(&source).to_string();
            let (mut letters, mut handles) = (vec![], vec![]);
            while letters.len() < max {
                let received = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages((max - letters.len()).min(10) as i32)
                    .visibility_timeout(HIDDEN_SECONDS)
                    .wait_time_seconds(1)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .message_attribute_names("All")
                    .send()
                    .await
                    .map_err(|e| show(&e))?;
                let messages = received.messages.unwrap_or_default();
                if messages.is_empty() {
                    break;
                }
                for m in messages {
                    handles.push(m.receipt_handle().unwrap_or_default().to_string());
                    // S3's test event was for nobody: deleted with the rest.
                    let Some(event) = crate::message::event(&topic, &source, &m) else { continue };
                    let received =
                        m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount));
                    letters.push(DeadLetter {
                        time: DeadLetter::now(),
                        source: "sqs".into(),
                        topic: topic.clone(),
                        function: None,
                        status: None,
                        attempts: received.and_then(|n| n.parse().ok()).unwrap_or(0),
                        error: format!("moved to the dead-letter queue {dlq} by {topic}'s redrive policy"),
                        event: DeadEvent::of(&event),
                    });
                }
            }
            let remove = Box::pin(async move {
                for chunk in handles.chunks(10) {
                    let entries = chunk.iter().enumerate().map(|(i, handle)| {
                        DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()
                    });
                    let entries: Result<Vec<_>, _> = entries.collect();
                    let deleted = client
                        .delete_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries.map_err(|e| e.to_string())?));
                    let out = deleted.send().await.map_err(|e| format!("{url}: {}", DisplayErrorContext(&e)))?;
                    if let Some(failed) = out.failed.first() {
                        return Err(format!("{url}: cannot delete a message moved into the store: {failed:?}"));
                    }
                }
                Ok(())
            });
            Ok(BrokerBatch { letters, remove })
        })
    }
}
