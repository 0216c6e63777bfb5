//! Redis as the store replicas share ([`SharedStore`]): a claim is
//! `SET key NX PX ttl`, a value a plain key, both under `switchboard:`.

use crate::RedisConfig;
use connector_core::SharedStore;
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

pub struct RedisStore {
    client: redis::Client,
    url: String,
    /// One connection, made at first use and again after an error.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisStore {
    /// The store at `config.url`, with its credentials and TLS; it connects
    /// at first use, so a replica starts while Redis is away.
    pub fn new(config: &RedisConfig) -> Result<Self, crate::ConfigError> {
        let client = config.validate()?;
        Ok(Self { client, url: config.redacted_url(), conn: Default::default() })
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, String> {
        // The connection multiplexes: held only to be cloned, so calls do
        // not wait for each other.
        let mut conn = {
            let mut held = self.conn.lock().await;
            match held.as_ref() {
                Some(conn) => conn.clone(),
                None => held
                    .insert(
                        self.client
                            .get_multiplexed_async_connection()
                            .await
                            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?,
                    )
                    .clone(),
            }
        };
        let result = command.query_async(&mut conn).await;
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result.map_err(|e| format!("{}: {e}", self.url))
    }
}

impl SharedStore for RedisStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let mut set = redis::cmd("SET");
            set.arg(format!("switchboard:claim:{key}")).arg(connector_core::replica_name()).arg("NX");
            set.arg("PX").arg(ttl.as_millis().max(1) as u64);
            let taken: Option<String> = self.run(set).await?;
            Ok(taken.is_some())
        })
    }

    fn claimed<'a>(&'a self, key: &'a str, _ttl: Duration) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move { self.run(redis::cmd("EXISTS").arg(format!("switchboard:claim:{key}")).clone()).await })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move { self.run(redis::cmd("GET").arg(format!("switchboard:{key}")).clone()).await })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.run(redis::cmd("SET").arg(format!("switchboard:{key}")).arg(value).clone()).await })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
