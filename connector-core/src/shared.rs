//! A store replicas share to agree on who does what, kept in a broker the
//! deployment already runs (NATS JetStream's key-value buckets, Redis):
//! cron's slots are claimed in it, so each fires once across replicas.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

pub trait SharedStore: Send + Sync + 'static {
    /// Takes `key` for `ttl`, unless it is taken: whether this call took it.
    /// Claims live apart from the values of [`SharedStore::put`].
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, String>>;

    /// Whether `key` is taken (by a claim made with the same `ttl`).
    fn claimed<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, String>>;

    /// The value kept at `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;

    /// Keeps `value` at `key`, without expiry.
    fn put<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// Where it is, for logs: `nats://…` or `redis://…` without credentials.
    fn describe(&self) -> String;
}

/// A shared store as a config carries it once resolved: cloned with the
/// config, and shown in its debug output by where it is.
#[derive(Clone)]
pub struct Shared(pub Arc<dyn SharedStore>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({})", self.0.describe())
    }
}
