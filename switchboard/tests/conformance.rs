//! The settle contract, held to by every source against its real broker.
//!
//! Each scenario is written once, against [`Adapter`]: how to name a
//! topic, publish to it, and ask the broker whether anything is left
//! unsettled. Each source runs the scenarios its delivery guarantee
//! allows; the at-most-once ones (core NATS, Redis pub/sub) skip those
//! that need the broker to keep or redeliver a message, as listed with
//! each adapter below.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

/// One source and its broker, as the scenarios see them.
trait Adapter: Sized {
    /// The source's name, as `switchboard publish` takes it.
    const SOURCE: &'static str;
    /// Whether its messages have headers (Redis pub/sub's have none).
    const CARRIES_HEADERS: bool = true;
    /// The source's config section (YAML, top level).
    fn config(&self) -> String;
    /// A topic of its own for one scenario, ready to be published to.
    async fn topic(&self, label: &str) -> String;
    async fn publish(&self, topic: &str, body: &str);
    /// Whether the broker holds nothing unsettled for `topic` (every
    /// message read was acked); `None` where the broker cannot say.
    async fn settled(&self, topic: &str) -> Option<bool>;
    /// How long the broker waits for an ack before it hands a message to
    /// another consumer (the keep-alive scenario outlasts it).
    fn deadline(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// The dead letters, where this source writes them (the hub's file by default).
    async fn dead_letters(&self, p: &Platform) -> Vec<Value> {
        p.dead_letters()
    }
}

/// The platform with one source and `functions` (stack.yml entries).
async fn platform<A: Adapter>(a: &A, hub: &str, functions: &str) -> Platform {
    let dir = tempdir();
    start(a, dir, hub, functions).await
}

async fn start<A: Adapter>(a: &A, dir: tempfile::TempDir, hub: &str, functions: &str) -> Platform {
    let config = config_with(hub, &format!("cron:\n  enabled: false\n{}", a.config()));
    let stack = if functions.is_empty() { NO_STACK.to_string() } else { format!("functions:\n{functions}") };
    let p = Platform::start_in(dir, &config, &stack, &[]).await;
    let names: Vec<&str> = functions
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    p.wait_ready(&names).await;
    subscribed(&p).await;
    p
}

/// Waits until the hub has discovered the functions and the source has had
/// time to subscribe to their topics.
async fn subscribed(p: &Platform) {
    let ready =
        eventually(Duration::from_secs(20), || async { get(&format!("{}/readyz", p.hub_url)).await.status == 200 })
            .await;
    assert!(ready, "the hub never became ready:\n{}", p.proc.output());
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn settled_eventually<A: Adapter>(a: &A, topic: &str) -> bool {
    eventually(Duration::from_secs(15), || async { a.settled(topic).await.unwrap_or(true) }).await
}

/// Delivered → acked, once: the function is called once and the broker
/// holds nothing more, even after its ack deadline has passed.
async fn delivered_is_acked_once<A: Adapter>(a: A) {
    let topic = a.topic("delivered").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, "")).await;
    a.publish(&topic, "hello").await;
    let called = eventually(Duration::from_secs(15), || async { !calls_of(&record, "hello").is_empty() }).await;
    assert!(called, "not delivered:\n{}", p.proc.output());
    assert!(settled_eventually(&a, &topic).await, "delivered but not acked");
    tokio::time::sleep(a.deadline() + Duration::from_millis(500)).await;
    assert_eq!(calls_of(&record, "hello").len(), 1, "delivered more than once: {:?}", calls(&record));
    assert!(a.dead_letters(&p).await.is_empty(), "{:?}", a.dead_letters(&p).await);
}

/// A failure is not acked: the message stays with the broker while its
/// retry waits, and is delivered again.
async fn a_failure_is_not_acked_and_comes_again<A: Adapter>(a: A) {
    let topic = a.topic("failure").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let retry = "      com.openfaas.retry.min_wait: 2s\n      com.openfaas.retry.max_wait: 2s\n";
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, retry)).await;
    a.publish(&topic, "fail:1").await;
    let failed = eventually(Duration::from_secs(15), || async { !calls_of(&record, "fail:1").is_empty() }).await;
    assert!(failed, "not delivered:\n{}", p.proc.output());
    assert_ne!(a.settled(&topic).await, Some(true), "acked after the function failed");
    let again = eventually(Duration::from_secs(15), || async { calls_of(&record, "fail:1").len() == 2 }).await;
    assert!(again, "not delivered again after a failure: {:?}\n{}", calls(&record), p.proc.output());
    assert_eq!(calls_of(&record, "fail:1")[1]["status"], 200);
    assert!(settled_eventually(&a, &topic).await, "delivered on the second try but not acked");
}

/// A message whose function went away while it waited is dead-lettered
/// with the reason, and acked (it is not lost, and not retried forever).
async fn no_subscriber_is_dead_lettered<A: Adapter>(a: A) {
    let topic = a.topic("orphan").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    // One event in flight at a time: the second waits, read but not dispatched.
    let p = start(&a, dir, "  max_pending: 1\n", &conform_fn("conform", &topic, &record, "")).await;
    a.publish(&topic, "sleep:3:first").await;
    let busy = eventually(Duration::from_secs(15), || async {
        get(&format!("{}/metrics", p.hub_url))
            .await
            .text()
            .contains("switchboard_invocations_in_flight{function=\"conform.openfaas-fn\"} 1")
    })
    .await;
    assert!(busy, "the first event never reached the function:\n{}", p.proc.output());
    a.publish(&topic, "orphan").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"conform"}"#).await.status, 202);
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    let lettered = eventually(Duration::from_secs(15), || async {
        a.dead_letters(&p).await.iter().any(|l| {
            l["event"]["payload"] == "orphan" && l["error"].as_str().unwrap_or("").contains("no function subscribes")
        })
    })
    .await;
    assert!(lettered, "not dead-lettered: {:?}\n{}", a.dead_letters(&p).await, p.proc.output());
    assert!(calls_of(&record, "orphan").is_empty());
    assert!(settled_eventually(&a, &topic).await, "dead-lettered but not acked");
}

/// A topic deployed while the hub runs is consumed; once its function is
/// removed, the source drops it: a later message is neither delivered nor
/// dead-lettered (the broker keeps it, or nobody wanted it).
async fn topics_follow_the_functions<A: Adapter>(a: A) {
    let topic = a.topic("live").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = platform(&a, "", "").await;
    let body = serde_json::json!({
        "service": "late", "image": "x", "envProcess": format!("python3 {}", fixture("conform.py")),
        "envVars": {"mode": "http", "RECORD_FILE": record.display().to_string()},
        "annotations": {"topic": topic}
    });
    assert_eq!(p.api("POST", "/system/functions", &body.to_string()).await.status, 202);
    p.wait_ready(&["late"]).await;
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    // Published until the source has subscribed; each is delivered once it has.
    let mut n = 0;
    let consumed = eventually(Duration::from_secs(15), || {
        n += 1;
        let (a, topic, record) = (&a, &topic, &record);
        async move {
            a.publish(topic, &format!("hello-{n}")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            !calls(record).is_empty()
        }
    })
    .await;
    assert!(consumed, "a topic deployed while running was never consumed:\n{}", p.proc.output());

    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"late"}"#).await.status, 202);
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    let dropped = eventually(Duration::from_secs(10), || async {
        get(&format!("{}/metrics", p.hub_url)).await.text().contains("switchboard_topic_map_functions 0")
    })
    .await;
    assert!(dropped, "the function never left the topic map");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = calls(&record).len();
    a.publish(&topic, "after").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(calls_of(&record, "after").is_empty(), "delivered after its function was removed");
    assert_eq!(calls(&record).len(), before);
    let unrouted = a.dead_letters(&p).await.into_iter().filter(|l| l["event"]["payload"] == "after").count();
    assert_eq!(unrouted, 0, "still subscribed: a message for the removed topic was read and dead-lettered");
}

/// `kill -9` of the hub mid-stream: what it had not settled comes back
/// after a restart, and nothing is lost.
async fn nothing_is_lost_when_the_hub_is_killed<A: Adapter>(a: A) {
    let topic = a.topic("killed").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    // Retries patient enough for the function's replica to start again:
    // the restarted hub reads the backlog before the replica is ready, and
    // the gateway answers 503 until it is.
    let annotations = "      com.switchboard.max_inflight: \"1\"\n      com.openfaas.retry.min_wait: 1s\n      com.openfaas.retry.max_wait: 3s\n      com.openfaas.retry.attempts: \"8\"\n";
    let functions = conform_fn("conform", &topic, &record, annotations);
    let p = start(&a, dir, "", &functions).await;
    let bodies: Vec<String> = (0..10).map(|i| format!("sleep:0.3:k{i}")).collect();
    for b in &bodies {
        a.publish(&topic, b).await;
    }
    let started = eventually(Duration::from_secs(15), || async { calls(&record).len() >= 2 }).await;
    assert!(started, "nothing delivered:\n{}", p.proc.output());
    let Platform { mut proc, dir, .. } = p;
    proc.crash();
    assert!(calls(&record).len() < 10, "all delivered before the kill; the test proves nothing");

    let p = start(&a, dir, "", &functions).await;
    let all = eventually(Duration::from_secs(30), || async {
        bodies.iter().all(|b| calls_of(&record, b).iter().any(|c| c["status"] == 200))
    })
    .await;
    assert!(all, "lost after kill -9: {:?}\n{}", calls(&record), p.proc.output());
    assert!(settled_eventually(&a, &topic).await, "left unsettled after the restart");
}

/// A function's `Retry-After` sets when it is called again.
async fn retry_after_is_honoured<A: Adapter>(a: A) {
    let topic = a.topic("busy").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let retry = "      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 5s\n";
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, retry)).await;
    a.publish(&topic, "busy:1").await;
    let twice = eventually(Duration::from_secs(15), || async { calls_of(&record, "busy:1").len() == 2 }).await;
    assert!(twice, "not called again: {:?}\n{}", calls(&record), p.proc.output());
    let c = calls_of(&record, "busy:1");
    let gap = c[1]["t"].as_f64().unwrap() - c[0]["t"].as_f64().unwrap();
    assert!(gap >= 1.8, "called again {gap:.3} s after Retry-After: 2");
    assert!(settled_eventually(&a, &topic).await);
}

/// An invocation that outlasts the broker's ack deadline is kept alive:
/// the message is not handed out again meanwhile.
async fn a_long_invocation_is_kept_alive<A: Adapter>(a: A) {
    let topic = a.topic("long").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, "")).await;
    let secs = (a.deadline() * 3).as_secs_f64();
    let body = format!("sleep:{secs}:long");
    a.publish(&topic, &body).await;
    let done = eventually(Duration::from_secs(30), || async { !calls_of(&record, &body).is_empty() }).await;
    assert!(done, "not delivered:\n{}", p.proc.output());
    assert!(settled_eventually(&a, &topic).await);
    tokio::time::sleep(a.deadline() + Duration::from_millis(500)).await;
    assert_eq!(calls_of(&record, &body).len(), 1, "handed out again while it ran: {:?}", calls(&record));
}

/// One test per scenario a source runs.
/// Paused: events published meanwhile reach the function neither then nor
/// the dead letters; resumed, each is delivered once and settled.
async fn a_paused_function_gets_its_events_once_resumed<A: Adapter>(a: A) {
    let topic = a.topic("paused").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, "")).await;
    let pause = |action: &'static str| {
        let auth = p.auth.clone().unwrap();
        let url = format!("{}/functions/conform/{action}", p.hub_url);
        async move { call("POST", &url, &[("Authorization", &auth)], "").await }
    };
    let r = pause("pause").await;
    assert_eq!((r.status, r.json()["paused"].as_bool()), (200, Some(true)), "{}", r.text());
    let bodies: Vec<String> = (0..5).map(|i| format!("held-{i}")).collect();
    for b in &bodies {
        a.publish(&topic, b).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(calls(&record).is_empty(), "delivered while paused: {:?}", calls(&record));
    assert!(a.dead_letters(&p).await.is_empty(), "dead-lettered while paused");

    let r = pause("resume").await;
    assert_eq!((r.status, r.json()["paused"].as_bool()), (200, Some(false)), "{}", r.text());
    let all = eventually(Duration::from_secs(30), || async { bodies.iter().all(|b| !calls_of(&record, b).is_empty()) });
    assert!(all.await, "not all delivered after the resume: {:?}\n{}", calls(&record), p.proc.output());
    assert!(settled_eventually(&a, &topic).await, "delivered but not settled");
    for b in &bodies {
        assert_eq!(calls_of(&record, b).len(), 1, "{b} delivered more than once");
    }
}

/// `switchboard publish SOURCE TOPIC` sends a test event through the
/// broker with the hub's own connection: the function gets it once, with
/// the header given where the broker carries headers (not Redis pub/sub).
async fn a_test_event_published_through_the_hub_is_delivered<A: Adapter>(a: A) {
    let topic = a.topic("published").await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = start(&a, dir, "", &conform_fn("conform", &topic, &record, "")).await;
    let args = ["publish", A::SOURCE, &topic, "-H", "x-published-by=conformance", "--key", "k-1", "--hub", &p.hub_url];
    let (code, out, err) = command(p.dir.path(), &args, "published");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("published to {}:{topic} (", A::SOURCE)), "{out}");
    let called = eventually(Duration::from_secs(15), || async { !calls_of(&record, "published").is_empty() }).await;
    assert!(called, "not delivered:\n{}", p.proc.output());
    let headers = &calls_of(&record, "published")[0]["headers"];
    let carried = headers.as_object().unwrap().values().any(|v| v == "conformance");
    assert_eq!(carried, A::CARRIES_HEADERS, "{headers}");
    assert!(settled_eventually(&a, &topic).await, "delivered but not settled");
    assert_eq!(calls_of(&record, "published").len(), 1);
}

macro_rules! conformance {
    ($source:ident: $adapter:expr => $($scenario:ident),+ $(,)?) => {
        mod $source {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($adapter).await;
                }
            )+
        }
    };
}

mod adapters {
    use super::*;
    use async_nats::jetstream;
    use redis::AsyncCommands;

    /// JetStream: a stream of the test's own, acks with a 1 s ack wait.
    pub struct JetStream {
        js: jetstream::Context,
        stream: String,
        prefix: String,
    }

    impl JetStream {
        pub async fn new() -> Self {
            let js = jetstream::new(nats().await);
            let stream = unique("CONFORM");
            let prefix = unique("conform.");
            let config = jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![format!("{prefix}.>")],
                ..Default::default()
            };
            js.create_stream(config).await.unwrap();
            Self { js, stream, prefix }
        }
    }

    impl Adapter for JetStream {
        const SOURCE: &'static str = "nats";
        fn config(&self) -> String {
            format!(
                "nats:\n  enabled: true\n  jetstream:\n    stream: {}\n    durable: conform\n    ack_wait: 1s\n",
                self.stream
            )
        }
        async fn topic(&self, label: &str) -> String {
            format!("{}.{label}", self.prefix)
        }
        async fn publish(&self, topic: &str, body: &str) {
            self.js.publish(topic.to_string(), body.to_string().into()).await.unwrap().await.unwrap();
        }
        async fn settled(&self, topic: &str) -> Option<bool> {
            let stream = self.js.get_stream(&self.stream).await.unwrap();
            let name = format!("conform-{}", topic.replace('.', "_"));
            let Ok(mut consumer) = stream.get_consumer::<jetstream::consumer::pull::Config>(&name).await else {
                return Some(false);
            };
            let info = consumer.info().await.unwrap();
            Some(info.num_pending == 0 && info.num_ack_pending == 0)
        }
    }

    impl Drop for JetStream {
        fn drop(&mut self) {
            let (js, stream) = (self.js.clone(), self.stream.clone());
            tokio::spawn(async move { js.delete_stream(stream).await });
        }
    }

    /// Core NATS: at most once. Skips a_failure_is_not_acked_and_comes_again
    /// (a retry is in-process; a message is neither kept nor redelivered by
    /// the server), nothing_is_lost_when_the_hub_is_killed (what is in
    /// flight is lost, by design) and a_long_invocation_is_kept_alive (no
    /// ack deadline).
    pub struct CoreNats {
        nats: async_nats::Client,
        prefix: String,
    }

    impl CoreNats {
        pub async fn new() -> Self {
            Self { nats: nats().await, prefix: unique("conform.core.") }
        }
    }

    impl Adapter for CoreNats {
        const SOURCE: &'static str = "nats";
        fn config(&self) -> String {
            "nats:\n  enabled: true\n".into()
        }
        async fn topic(&self, label: &str) -> String {
            format!("{}.{label}", self.prefix)
        }
        async fn publish(&self, topic: &str, body: &str) {
            self.nats.publish(topic.to_string(), body.to_string().into()).await.unwrap();
            self.nats.flush().await.unwrap();
        }
        async fn settled(&self, _: &str) -> Option<bool> {
            None
        }
    }

    async fn redis() -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        match client.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => panic!("Redis is not reachable at 127.0.0.1:6379 ({e}); start it with scripts/services"),
        }
    }

    /// Redis streams: plain topics, so each stream appears when first
    /// published to and the source finds it; `claim_idle` 1 s is the deadline.
    pub struct RedisStreams {
        con: redis::aio::MultiplexedConnection,
        prefix: String,
        consumer: String,
    }

    impl RedisStreams {
        pub async fn new() -> Self {
            Self { con: redis().await, prefix: unique("conform:"), consumer: unique("c") }
        }
    }

    impl Adapter for RedisStreams {
        const SOURCE: &'static str = "redis";
        fn config(&self) -> String {
            format!(
                "redis:\n  enabled: true\n  group: conform\n  consumer: {}\n  claim_idle: 1s\n  block: 200ms\n  dead_letter_stream: {}:dead\n",
                self.consumer, self.prefix
            )
        }
        async fn topic(&self, label: &str) -> String {
            format!("{}:{label}", self.prefix)
        }
        async fn publish(&self, topic: &str, body: &str) {
            let _: String = self.con.clone().xadd(topic, "*", &[("payload", body)]).await.unwrap();
        }
        /// Nothing pending in the group, and every entry read.
        async fn settled(&self, topic: &str) -> Option<bool> {
            let groups: redis::RedisResult<Vec<std::collections::HashMap<String, redis::Value>>> =
                redis::cmd("XINFO").arg("GROUPS").arg(topic).query_async(&mut self.con.clone()).await;
            let group = groups.ok()?.into_iter().find(|g| {
                g.get("name").and_then(|n| redis::from_redis_value::<String>(n).ok()).as_deref() == Some("conform")
            });
            let Some(group) = group else { return Some(false) };
            let number = |k: &str| group.get(k).and_then(|v| redis::from_redis_value::<i64>(v).ok());
            Some(number("pending") == Some(0) && number("lag") == Some(0))
        }
        /// The `letter` fields of `redis.dead_letter_stream`.
        async fn dead_letters(&self, _: &Platform) -> Vec<Value> {
            let letters: redis::streams::StreamRangeReply =
                self.con.clone().xrange_all(format!("{}:dead", self.prefix)).await.unwrap();
            let letter = |e: &redis::streams::StreamId| -> Option<Value> {
                let text: String = redis::from_redis_value(e.map.get("letter")?).ok()?;
                serde_json::from_str(&text).ok()
            };
            letters.ids.iter().filter_map(letter).collect()
        }
    }

    /// Redis pub/sub: at most once; skips what core NATS skips, for the same reasons.
    pub struct RedisPubsub {
        con: redis::aio::MultiplexedConnection,
        prefix: String,
    }

    impl RedisPubsub {
        pub async fn new() -> Self {
            Self { con: redis().await, prefix: unique("conform.pubsub.") }
        }
    }

    impl Adapter for RedisPubsub {
        const SOURCE: &'static str = "redis";
        const CARRIES_HEADERS: bool = false;
        fn config(&self) -> String {
            "redis:\n  enabled: true\n  mode: pubsub\n".into()
        }
        async fn topic(&self, label: &str) -> String {
            format!("{}.{label}", self.prefix)
        }
        async fn publish(&self, topic: &str, body: &str) {
            let _: i64 = self.con.clone().publish(topic, body).await.unwrap();
        }
        async fn settled(&self, _: &str) -> Option<bool> {
            None
        }
    }

    /// Kafka: a group of the test's own; a topic is settled when the
    /// group's committed offset has reached the end of every partition.
    /// Skips a_long_invocation_is_kept_alive: Kafka has no deadline per
    /// record (librdkafka's own thread keeps the group membership while an
    /// invocation runs); and no_subscriber_is_dead_lettered: a record read
    /// ahead whose topic loses its last function stays in the log for the
    /// group's next subscriber (tests/kafka.rs), as Kafka users expect of a
    /// redeploy, rather than being dead-lettered.
    pub struct Kafka {
        group: String,
        producer: rdkafka::producer::FutureProducer,
    }

    impl Kafka {
        pub fn new() -> Self {
            Self { group: unique("conform"), producer: kafka_producer() }
        }
    }

    impl Adapter for Kafka {
        const SOURCE: &'static str = "kafka";
        /// Each test's group has replicas of its own name (static membership).
        fn config(&self) -> String {
            format!("{}  client_id: {}\n", kafka_section(&self.group), self.group)
        }
        async fn topic(&self, label: &str) -> String {
            let topic = unique(&format!("conform.{label}."));
            kafka_topic(&topic, 2).await;
            topic
        }
        async fn publish(&self, topic: &str, body: &str) {
            kafka_send(&self.producer, topic, None, &[], body).await;
        }
        async fn settled(&self, topic: &str) -> Option<bool> {
            kafka_settled(&self.group, topic, 2).await
        }
    }

    /// SQS on moto: a queue of the test's own; settled when it holds no
    /// message, visible or in flight. Skips no_subscriber_is_dead_lettered:
    /// the source receives only when the hub has room, so the scenario's
    /// second message is never received while the first runs, and stays in
    /// the queue once its function is gone.
    pub struct Sqs;

    impl Adapter for Sqs {
        const SOURCE: &'static str = "sqs";
        fn config(&self) -> String {
            sqs_section()
        }
        fn deadline(&self) -> Duration {
            Duration::from_secs(2)
        }
        async fn topic(&self, label: &str) -> String {
            let name = unique(&format!("conform-{label}-"));
            sqs_queue(&name).await;
            name
        }
        async fn publish(&self, topic: &str, body: &str) {
            let client = sqs_client();
            let url = client.get_queue_url().queue_name(topic).send().await.unwrap().queue_url.unwrap();
            client.send_message().queue_url(url).message_body(body).send().await.unwrap();
        }
        async fn settled(&self, topic: &str) -> Option<bool> {
            let url = sqs_client().get_queue_url().queue_name(topic).send().await.ok()?.queue_url?;
            sqs_settled(&url).await
        }
    }

    /// MQTT 5, QoS 1, a persistent session. The broker cannot be asked
    /// what is unacked, so settling shows in redeliveries; skips
    /// a_long_invocation_is_kept_alive: an MQTT broker waits for an ack
    /// as long as the connection lives.
    pub struct Mqtt {
        client: rumqttc::v5::AsyncClient,
        prefix: String,
        client_id: String,
    }

    impl Mqtt {
        pub async fn new() -> Self {
            let mut options = rumqttc::v5::MqttOptions::new(unique("pub"), "127.0.0.1", 1883);
            options.set_keep_alive(Duration::from_secs(5));
            let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 100);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                loop {
                    match events.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Err(e.to_string()));
                            }
                            return;
                        }
                    }
                }
            });
            if let Err(e) = rx.await.unwrap() {
                panic!("Mosquitto is not reachable at 127.0.0.1:1883 ({e}); start it with scripts/services");
            }
            Self { client, prefix: unique("conform/"), client_id: unique("conform") }
        }
    }

    impl Adapter for Mqtt {
        const SOURCE: &'static str = "mqtt";
        fn config(&self) -> String {
            format!("mqtt:\n  enabled: true\n  client_id: {}\n  clean_session: false\n  qos: 1\n", self.client_id)
        }
        async fn topic(&self, label: &str) -> String {
            format!("{}/{label}", self.prefix)
        }
        async fn publish(&self, topic: &str, body: &str) {
            let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
            self.client.publish(topic, qos, false, body.to_string()).await.unwrap();
        }
        async fn settled(&self, _: &str) -> Option<bool> {
            None
        }
    }
}

conformance!(kafka: adapters::Kafka::new() =>
    delivered_is_acked_once, a_failure_is_not_acked_and_comes_again,
    topics_follow_the_functions, nothing_is_lost_when_the_hub_is_killed, retry_after_is_honoured,
    a_paused_function_gets_its_events_once_resumed, a_test_event_published_through_the_hub_is_delivered);
conformance!(sqs: adapters::Sqs =>
    delivered_is_acked_once, a_failure_is_not_acked_and_comes_again,
    topics_follow_the_functions, nothing_is_lost_when_the_hub_is_killed, retry_after_is_honoured,
    a_long_invocation_is_kept_alive, a_paused_function_gets_its_events_once_resumed,
    a_test_event_published_through_the_hub_is_delivered);
// JetStream, like SQS, pulls only what the hub has room for: the orphan
// scenario's second message is never pulled while the first runs, and it
// stays in the stream once its function is gone.
conformance!(jetstream: adapters::JetStream::new().await =>
    delivered_is_acked_once, a_failure_is_not_acked_and_comes_again,
    topics_follow_the_functions, nothing_is_lost_when_the_hub_is_killed, retry_after_is_honoured,
    a_long_invocation_is_kept_alive, a_paused_function_gets_its_events_once_resumed,
    a_test_event_published_through_the_hub_is_delivered);
conformance!(redis_streams: adapters::RedisStreams::new().await =>
    delivered_is_acked_once, a_failure_is_not_acked_and_comes_again, no_subscriber_is_dead_lettered,
    topics_follow_the_functions, nothing_is_lost_when_the_hub_is_killed, retry_after_is_honoured,
    a_long_invocation_is_kept_alive, a_paused_function_gets_its_events_once_resumed,
    a_test_event_published_through_the_hub_is_delivered);
conformance!(mqtt: adapters::Mqtt::new().await =>
    delivered_is_acked_once, a_failure_is_not_acked_and_comes_again, no_subscriber_is_dead_lettered,
    topics_follow_the_functions, nothing_is_lost_when_the_hub_is_killed, retry_after_is_honoured,
    a_paused_function_gets_its_events_once_resumed, a_test_event_published_through_the_hub_is_delivered);
conformance!(core_nats: adapters::CoreNats::new().await =>
    delivered_is_acked_once, no_subscriber_is_dead_lettered, topics_follow_the_functions, retry_after_is_honoured,
    a_paused_function_gets_its_events_once_resumed, a_test_event_published_through_the_hub_is_delivered);
conformance!(redis_pubsub: adapters::RedisPubsub::new().await =>
    delivered_is_acked_once, no_subscriber_is_dead_lettered, topics_follow_the_functions, retry_after_is_honoured,
    a_paused_function_gets_its_events_once_resumed, a_test_event_published_through_the_hub_is_delivered);
