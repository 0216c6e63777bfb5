//! `switchboard publish redis TOPIC` and replies routed to Redis: an entry added to the stream
//! (`XADD`: the body in `redis.payload_field`, each header a field of its
//! own, the key in `redis.key_field`), or a message published on the
//! channel in pub/sub mode (`PUBLISH`: the body alone).

use crate::config::{Mode, RedisConfig};
use connector_core::{Published, Publisher};
use futures_util::future::BoxFuture;
use redis::AsyncCommands;

pub struct RedisPublisher {
    config: RedisConfig,
    client: redis::Client,
    /// Connected at the first publish (a multiplexed connection reconnects by itself).
    connection: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
}

impl RedisPublisher {
    pub fn new(config: RedisConfig, client: redis::Client) -> Self {
        Self { config, client, connection: tokio::sync::OnceCell::new() }
    }
}

impl Publisher for RedisPublisher {
    fn publish(&self, topic: &str, message: Published) -> BoxFuture<'_, Result<String, String>> {
        let topic = topic.to_string();
        Box::pin(async move {
            let connect = || self.client.get_multiplexed_async_connection();
            let mut con = self.connection.get_or_try_init(connect).await.map_err(|e| e.to_string())?.clone();
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
