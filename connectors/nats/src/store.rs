//! NATS JetStream's key-value buckets as the store replicas share
//! ([`SharedStore`]): claims in `switchboard_claims_<ms>`, a bucket per
//! claim time whose entries expire after it (the bucket's `max_age`, since
//! per-key TTLs need NATS 2.11), values in `switchboard_state`.

use crate::NatsConfig;
use async_nats::jetstream::{self, kv};
use connector_core::SharedStore;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

const VALUES: &str = "switchboard_state";

pub struct KvStore {
    config: NatsConfig,
    /// Connected at first use, so a replica starts while NATS is away.
    context: OnceCell<jetstream::Context>,
    /// The claims buckets, by the time their entries live.
    claims: Mutex<HashMap<Duration, kv::Store>>,
    values: OnceCell<kv::Store>,
}

impl KvStore {
    /// The store on the servers at `config.url`, with its credentials and TLS.
    pub fn new(config: &NatsConfig) -> Result<Self, crate::ConfigError> {
        crate::check(config)?;
        let (context, claims, values) = Default::default();
        Ok(Self { config: config.clone(), context, claims, values })
    }

    async fn context(&self) -> Result<&jetstream::Context, String> {
        self.context
            .get_or_try_init(|| async {
                let client = crate::connect(&self.config, None).await.map_err(|e| e.to_string())?;
                Ok(jetstream::new(client))
            })
            .await
    }

    /// The bucket `name`, made or brought to `max_age`. Its stream is made
    /// here, as the key-value layer would make it: the client's own bucket
    /// calls first read the account's API level, which servers before 2.11
    /// answer in a shape it cannot read.
    async fn bucket(&self, name: &str, max_age: Duration) -> Result<kv::Store, String> {
        let context = self.context().await?;
        let stream = jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        let at = |e: &dyn std::fmt::Display| format!("bucket {name} on {}: {e}", self.config.url);
        context.create_or_update_stream(stream).await.map_err(|e| at(&e))?;
        context.get_key_value(name).await.map_err(|e| at(&e))
    }

    async fn claims(&self, ttl: Duration) -> Result<kv::Store, String> {
        let mut claims = self.claims.lock().await;
        if let Some(store) = claims.get(&ttl) {
            return Ok(store.clone());
        }
        let store = self.bucket(&format!("switchboard_claims_{}", ttl.as_millis()), ttl).await?;
        claims.insert(ttl, store.clone());
        Ok(store)
    }

    async fn values(&self) -> Result<&kv::Store, String> {
        self.values.get_or_try_init(|| self.bucket(VALUES, Duration::ZERO)).await
    }
}

impl SharedStore for KvStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let claims = self.claims(ttl).await?;
            match claims.create(key, connector_core::replica_name().into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(format!("claim {key} on {}: {e}", self.config.url)),
            }
        })
    }

    fn claimed<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let claims = self.claims(ttl).await?;
            let entry = claims.get(key).await.map_err(|e| format!("claim {key} on {}: {e}", self.config.url))?;
            Ok(entry.is_some())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let value =
                self.values().await?.get(key).await.map_err(|e| format!("{key} on {}: {e}", self.config.url))?;
            Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let values = self.values().await?;
            values
                .put(key, value.to_string().into())
                .await
                .map_err(|e| format!("{key} on {}: {e}", self.config.url))?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.config.url.clone()
    }
}
