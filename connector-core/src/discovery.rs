//! Builds the topic map from any OpenFaaS-compatible gateway:
//! `GET /system/namespaces`, then `GET /system/functions?namespace=`. A failed
//! refresh keeps the last map, backs off and tries again: never exits.

use crate::backoff::Backoff;
use crate::config::HubConfig;
use crate::gateway::{Gateway, GatewayError};
use crate::metrics::Metrics;
use crate::subscription::{LimitSettings, Limits, PAUSED, Subscription};
use crate::topics::TopicMap;
use openfaas::RetryPolicy;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub struct Discovery {
    gateway: Gateway,
    delimiter: String,
    namespaces: Vec<String>,
    interval: Duration,
    retry: RetryPolicy,
    limits: LimitSettings,
    map: watch::Sender<Arc<TopicMap>>,
    refresh: Notify,
    ready: AtomicBool,
    first: Notify,
    metrics: Arc<Metrics>,
    /// Functions paused through the hub's API (the annotation pauses too).
    paused: std::sync::RwLock<BTreeSet<String>>,
}

impl Discovery {
    pub fn new(config: &HubConfig, gateway: Gateway, metrics: Arc<Metrics>) -> Self {
        Self {
            gateway,
            delimiter: config.topic_delimiter.clone(),
            namespaces: config.namespaces.clone(),
            interval: config.refresh_interval,
            retry: config.retry.clone(),
            limits: config.limits,
            map: watch::channel(Arc::new(TopicMap::default())).0,
            refresh: Notify::new(),
            ready: AtomicBool::new(false),
            first: Notify::new(),
            metrics,
            paused: Default::default(),
        }
    }

    /// Pauses or resumes `function` (`name.namespace`) and waits until the
    /// topic map says so, within `hub.refresh_interval` and a few seconds.
    /// False when no discovery has shown it yet (it may not exist).
    pub async fn set_paused(&self, function: &str, paused: bool) -> bool {
        {
            let mut set = self.paused.write().expect("paused lock");
            if paused {
                set.insert(function.to_string())
            } else {
                set.remove(function)
            };
        }
        self.refresh_now();
        let mut map = self.subscribe();
        let shown = map.wait_for(|m| m.functions.get(function).is_some_and(|s| s.paused == paused));
        matches!(tokio::time::timeout(self.interval + Duration::from_secs(5), shown).await, Ok(Ok(_)))
    }

    /// The functions paused through the API, as they were when the hub stopped.
    pub fn restore_paused(&self, functions: BTreeSet<String>) {
        *self.paused.write().expect("paused lock") = functions;
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<TopicMap>> {
        self.map.subscribe()
    }

    /// Whether a discovery has succeeded yet.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits for the first successful discovery: until then an event could
    /// not be routed, and would be dead-lettered for want of a subscriber.
    pub async fn wait_ready(&self) {
        let first = self.first.notified();
        tokio::pin!(first);
        first.as_mut().enable();
        if !self.ready() {
            first.await;
        }
    }

    /// Asks for a refresh now rather than at the next interval.
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.interval.max(Duration::from_secs(1)));
        loop {
            let wait = match self.fetch().await {
                Ok(subs) => {
                    let map = TopicMap::new(subs);
                    self.metrics.topics.set(map.topics().len() as f64);
                    self.metrics.functions.set(map.functions.len() as f64);
                    for (function, s) in &map.functions {
                        self.metrics.paused.with_label_values(&[function]).set(f64::from(u8::from(s.paused)));
                    }
                    let first = !self.ready.load(Ordering::Acquire);
                    if first {
                        tracing::info!(gateway = %self.gateway.url(), functions = map.functions.len(), "discovered functions");
                    }
                    self.map.send_if_modified(|current| {
                        let changed = !current.same_subscriptions(&map);
                        if changed {
                            *current = Arc::new(map);
                        }
                        changed
                    });
                    if first {
                        self.ready.store(true, Ordering::Release);
                        self.first.notify_waiters();
                    }
                    backoff.reset();
                    self.interval
                }
                Err(e) => {
                    self.metrics.discovery_errors.inc();
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "discovery failed; keeping the last topic map");
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.refresh.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Subscription>, GatewayError> {
        let mut namespaces = self.gateway.namespaces().await?;
        if namespaces.is_empty() {
            namespaces.push(String::new());
        }
        if !self.namespaces.is_empty() {
            namespaces.retain(|ns| self.namespaces.contains(ns));
        }
        // Limiters survive a refresh when their settings do not change.
        let previous: HashMap<String, Arc<Limits>> =
            self.map.borrow().functions.iter().map(|(f, s)| (f.clone(), s.limits.clone())).collect();
        let mut subs = vec![];
        for ns in namespaces {
            for f in self.gateway.functions(&ns).await? {
                let Some(topic) = f.annotations.get("topic") else {
                    continue;
                };
                let topics: Vec<String> = topic
                    .split(self.delimiter.as_str())
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect();
                let ns = f.namespace.clone().filter(|n| !n.is_empty()).unwrap_or(ns.clone());
                let function = if ns.is_empty() { f.name.clone() } else { format!("{}.{ns}", f.name) };
                let retry = self.retry.with_annotations(&f.annotations).unwrap_or_else(|e| {
                    tracing::warn!(%function, error = %e, "ignoring invalid retry annotation");
                    self.retry.clone()
                });
                let settings = self.limits.with_annotations(&f.annotations).unwrap_or_else(|e| {
                    tracing::warn!(%function, error = %e, "ignoring invalid limit annotation");
                    self.limits
                });
                let limits = match previous.get(&function) {
                    Some(l) if l.settings == settings => l.clone(),
                    _ => Arc::new(Limits::new(settings)),
                };
                let paused = f.annotations.get(PAUSED).is_some_and(|v| v.trim() == "true")
                    || self.paused.read().expect("paused lock").contains(&function);
                let reply_to = f.annotations.get(crate::reply::REPLY_TO).map(|v| crate::reply::ReplyTo::parse(v));
                let dedup = f.annotations.get(crate::dedup::DEDUP_WINDOW).and_then(|v| {
                    let window = openfaas::parse_duration(crate::dedup::DEDUP_WINDOW, v);
                    window
                        .inspect_err(|e| tracing::warn!(%function, error = %e, "ignoring invalid dedup annotation"))
                        .ok()
                });
                let annotations = f.annotations;
                subs.push(Subscription { function, topics, annotations, retry, limits, paused, reply_to, dedup });
            }
        }
        Ok(subs)
    }
}
