//! `switchboard publish redis TOPIC`: an entry added to the stream
//! (`XADD`: the body in `redis.payload_field`, each header a field of its
//! own, the key in `redis.key_field`), or a message published on the
//! channel in pub/sub mode (`PUBLISH`: the body alone).

use crate::config::{Mode, RedisConfig};
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;
use redis::AsyncCommands;

pub struct RedisPublisher {
    pub config: RedisConfig,
    pub client: redis::Client,
}

impl Publisher for RedisPublisher {
    fn publish(&self, topic: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let topic = topic.to_string();
        Box::pin(async move {
            let mut con = self.client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
            if self.config.mode == Mode::Pubsub {
                let receivers: i64 = con.publish(&topic, &message.body[..]).await.map_err(|e| e.to_string())?;
                return Ok(format!("published to {receivers} subscriber(s)"));
            }
            let mut fields: Vec<(String, Vec<u8>)> = vec![(self.config.payload_field.clone(), message.body.to_vec())];
            fields.extend(message.headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
            if let (Some(field), Some(key)) = (&self.config.key_field, message.key) {
                fields.push((field.clone(), key.into_bytes()));
            }
            let id: String = con.xadd(&topic, "*", &fields).await.map_err(|e| e.to_string())?;
            Ok(format!("entry {id}"))
        })
    }
}
