use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `sqs:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqsConfig {
    pub enabled: bool,
    /// The AWS region; from the standard chain (`AWS_REGION`, the profile)
    /// when not set here.
    pub region: Option<String>,
    /// Another endpoint than AWS's (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// When not empty, only these queues (names or URLs) are consumed,
    /// whatever functions subscribe to.
    pub queues: Vec<String>,
    /// Long polling: how long a receive waits for messages (at most 20 s).
    #[serde(with = "openfaas::duration::serde_duration")]
    pub wait_time: Duration,
    /// Messages per receive (1 to 10).
    pub batch_size: i32,
    /// Concurrent receivers per queue.
    pub pollers: usize,
    /// How long a received message stays invisible to other consumers;
    /// extended by half of it at a time while its invocation runs.
    #[serde(with = "openfaas::duration::serde_duration")]
    pub visibility_timeout: Duration,
    /// Who dead-letters a message that cannot be delivered when its queue
    /// has a redrive policy of its own.
    pub redrive: Redrive,
}

/// `sqs.redrive`: who decides that a message is dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redrive {
    /// The hub's retry policy: after its attempts (or a status not worth
    /// retrying) the message goes to the hub's dead letters and is deleted.
    #[default]
    Hub,
    /// The queue's redrive policy (Lambda's way): every failure gives the
    /// message back with the retry's delay, and SQS moves it to the
    /// queue's dead-letter queue after `maxReceiveCount` receives. A queue
    /// without a redrive policy is consumed with the hub's.
    Queue,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            region: None,
            endpoint_url: None,
            queues: vec![],
            wait_time: Duration::from_secs(20),
            batch_size: 10,
            pollers: 1,
            visibility_timeout: Duration::from_secs(30),
            redrive: Redrive::Hub,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid sqs config: {0}")]
pub struct ConfigError(pub String);

/// SQS's own bounds (`ChangeMessageVisibility` takes up to 12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

impl SqsConfig {
    /// Checks what SQS would refuse at the first receive, naming the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !(1..=10).contains(&self.batch_size) {
            return err(format!("sqs.batch_size {}: expected 1 to 10", self.batch_size));
        }
        if self.wait_time > Duration::from_secs(20) {
            return err(format!("sqs.wait_time {:?}: expected at most 20s", self.wait_time));
        }
        if self.pollers == 0 {
            return err("sqs.pollers: expected at least 1".into());
        }
        if self.visibility_timeout < Duration::from_secs(2) || self.visibility_timeout > MAX_VISIBILITY {
            return err(format!(
                "sqs.visibility_timeout {:?}: expected 2s to 12h (it is kept alive every half of it)",
                self.visibility_timeout
            ));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err(format!("sqs.endpoint_url {url:?}: expected an http:// or https:// URL"));
        }
        for q in &self.queues {
            if q.contains("://") && queue_name(q).is_none() {
                return err(format!(
                    "sqs.queues {q:?}: expected a queue name or https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
                ));
            }
        }
        Ok(())
    }
}

/// The name of the queue a queue URL points to (its last path segment, after the account).
pub fn queue_name(url: &str) -> Option<&str> {
    let path = url.split_once("://")?.1.split_once('/')?.1;
    let (account, name) = path.trim_end_matches('/').split_once('/')?;
    (!account.is_empty() && !name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        let e = |c: SqsConfig| c.check().unwrap_err().to_string();
        assert!(e(SqsConfig { batch_size: 11, ..Default::default() }).contains("sqs.batch_size 11: expected 1 to 10"));
        assert!(e(SqsConfig { batch_size: 0, ..Default::default() }).contains("sqs.batch_size 0"));
        let wait = SqsConfig { wait_time: Duration::from_secs(30), ..Default::default() };
        assert!(e(wait).contains("sqs.wait_time"));
        let vis = SqsConfig { visibility_timeout: Duration::from_secs(1), ..Default::default() };
        assert!(e(vis).contains("sqs.visibility_timeout"));
        let url = SqsConfig { queues: vec!["https://sqs.us-east-1.amazonaws.com/orders".into()], ..Default::default() };
        assert!(e(url).contains("sqs.queues"));
        let endpoint = SqsConfig { endpoint_url: Some("localhost:4566".into()), ..Default::default() };
        assert!(e(endpoint).contains("sqs.endpoint_url"));
        SqsConfig::default().check().unwrap();
        let redrive: Result<SqsConfig, _> = serde_json::from_str(r#"{"redrive": "broker"}"#);
        let message = redrive.unwrap_err().to_string();
        assert!(message.contains("unknown variant `broker`, expected `hub` or `queue`"), "{message}");
    }

    #[test]
    fn queue_urls_name_their_queue() {
        assert_eq!(queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/orders"), Some("orders"));
        assert_eq!(queue_name("http://127.0.0.1:4566/000000000000/jobs.fifo/"), Some("jobs.fifo"));
        assert_eq!(queue_name("https://sqs.us-east-1.amazonaws.com/orders"), None);
    }
}
