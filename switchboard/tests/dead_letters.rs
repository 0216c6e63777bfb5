//! The on-call day: a function broken for a while, its events in the dead
//! letters; browse them, fix the function, replay them; a replay killed
//! midway. Against `switchboard up` with real sources: CloudEvents, NATS
//! JetStream, and each broker that keeps letters of its own.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// A request to the hub's dead-letter API, with the platform's credentials.
async fn letters(p: &Platform, method: &str, path: &str, body: Value) -> Resp {
    let auth = p.auth.clone().expect("credentials");
    let mut headers = vec![("Authorization", auth.as_str())];
    let body = if body.is_null() { String::new() } else { body.to_string() };
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    call(method, &format!("{}{path}", p.hub_url), &headers, body).await
}

/// The letters a list shows (one page of up to 1000).
async fn listed(p: &Platform, query: &str) -> Vec<Value> {
    let r = letters(p, "GET", &format!("/dead-letters?limit=1000&{query}"), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["letters"].as_array().cloned().unwrap_or_default()
}

fn recorded(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn send_events(p: &Platform, ty: &str, n: usize) {
    let sends = (0..n).map(|i| {
        let id = format!("{ty}-{i}");
        async move {
            let headers = [("ce-id", id.as_str()), ("ce-source", "/shop"), ("ce-type", ty), ("ce-specversion", "1.0")];
            let r = call("POST", &p.ce_url, &headers, format!("ce-{i}")).await;
            assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
        }
    });
    futures_util::stream::iter(sends).buffer_unordered(16).collect::<Vec<()>>().await;
}

use futures_util::StreamExt;

#[tokio::test]
async fn letters_of_two_sources_are_browsed_and_replayed_once_the_function_is_fixed() {
    let (ty, subject) = (unique("order.created."), unique("sbtest.letters."));
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let stream = unique("SBTEST_LETTERS_");
    let cfg = config(&format!(
        "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  jetstream:\n    stream: {stream}\n    subjects: [\"{subject}\"]\n    durable: sbtest\n"
    ));
    let p = Platform::start_in(dir, &cfg, &switched_fn(&work, &format!("{ty},nats:{subject}"), ""), &[]).await;
    p.wait_ready(&["fixme"]).await;
    p.receiving().await;
    assert!(link_reported(&p, "nats", true).await, "NATS never connected:\n{}", p.proc.output());

    // 250 events each way, every one dead-lettered at its first failure.
    send_events(&p, &ty, 250).await;
    let js = async_nats::jetstream::new(nats().await);
    for i in 0..250 {
        js.publish(subject.clone(), format!("nats-{i}").into()).await.unwrap().await.unwrap();
    }
    let all = eventually(Duration::from_secs(30), || async { listed(&p, "function=fixme").await.len() == 500 });
    assert!(all.await, "not 500 letters: {}\n{}", listed(&p, "").await.len(), p.proc.output());

    // Browse: by source, by status, a page at a time, one in full.
    assert_eq!(listed(&p, "source=nats").await.len(), 250);
    assert_eq!(listed(&p, &format!("source=cloudevents&topic={ty}")).await.len(), 250);
    assert_eq!(listed(&p, "status=500").await.len(), 500);
    assert_eq!(listed(&p, "status=404").await.len(), 0);
    assert_eq!(listed(&p, "since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z").await.len(), 0);
    let page = letters(&p, "GET", "/dead-letters?limit=100", Value::Null).await.json();
    assert_eq!(page["letters"].as_array().unwrap().len(), 100);
    let next = page["next"].as_u64().expect("a next page");
    let page2 = letters(&p, "GET", &format!("/dead-letters?limit=100&after={next}"), Value::Null).await.json();
    assert!(page2["letters"][0]["id"].as_u64().unwrap() > next);
    let first = listed(&p, "source=nats").await[0].clone();
    let full = letters(&p, "GET", &format!("/dead-letters/{}", first["id"]), Value::Null).await.json();
    assert_eq!((full["function"].as_str(), full["status"].as_u64()), (Some("fixme.openfaas-fn"), Some(500)));
    assert!(full["event"]["payload"].as_str().unwrap().starts_with("nats-"), "{full}");
    assert_eq!(full["state"], "stored");
    let bad = letters(&p, "GET", "/dead-letters?since=yesterday", Value::Null).await;
    assert!(bad.status == 400 && bad.text().contains("RFC 3339"), "{}", bad.text());
    assert_eq!(get(&format!("{}/metrics", p.hub_url)).await.status, 200, "hub.auth (off) guards the rest");
    let unauthorized = call("GET", &format!("{}/dead-letters", p.hub_url), &[], "").await;
    assert_eq!(unauthorized.status, 401, "letters hold payloads: the gateway's credentials guard them");

    // Replayed while still broken: it fails again and stays, saying so.
    let r = letters(&p, "POST", "/dead-letters/replay", json!({"ids": [first["id"]], "wait": true})).await;
    assert_eq!((r.status, r.json()["failed"].as_u64()), (200, Some(1)), "{}", r.text());
    let again = letters(&p, "GET", &format!("/dead-letters/{}", first["id"]), Value::Null).await.json();
    assert_eq!((again["replays"].as_u64(), again["attempts"].as_u64()), (Some(1), Some(2)), "{again}");
    let r = letters(&p, "POST", "/dead-letters/replay", json!({})).await;
    assert_eq!(r.status, 400, "an empty selection is not everything: {}", r.text());

    // Fixed: replay by filter delivers each once, and the store empties.
    std::fs::remove_file(work.join("broken")).unwrap();
    let r = letters(&p, "POST", "/dead-letters/replay", json!({"function": "fixme", "wait": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["letters"].as_u64(), r.json()["delivered"].as_u64()), (Some(500), Some(500)), "{}", r.text());
    let calls = recorded(&work);
    let mut bodies: Vec<&str> = calls.iter().map(|c| c["body"].as_str().unwrap()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!((calls.len(), bodies.len()), (500, 500), "each event delivered once");
    assert!(calls.iter().all(|c| c["replay"].is_string()), "every call says it is a replay");
    assert!(listed(&p, "").await.is_empty());
    let metrics = letters(&p, "GET", "/metrics", Value::Null).await.text();
    assert!(metrics.contains("switchboard_dead_letters_stored 0"), "{metrics}");
    assert!(
        metrics.contains(r#"switchboard_dead_letters_replayed_total{function="fixme.openfaas-fn"} 500"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchboard_dead_letter_replay_failures_total{function="fixme.openfaas-fn"} 1"#),
        "{metrics}"
    );

    // Nothing left to replay: a second replay takes nothing.
    let r = letters(&p, "POST", "/dead-letters/replay", json!({"all": true, "wait": true})).await;
    assert_eq!(r.json()["letters"].as_u64(), Some(0), "{}", r.text());
    let _ = js.delete_stream(&stream).await;
}

/// Two operators replaying the same letters at once deliver each once; a
/// purge takes what no replay holds.
#[tokio::test]
async fn concurrent_replays_deliver_once_and_purge_removes() {
    let ty = unique("order.paid.");
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let p = Platform::start_in(dir, &config(""), &switched_fn(&work, &ty, "      DELAY: \"0.02\"\n"), &[]).await;
    p.wait_ready(&["fixme"]).await;
    p.receiving().await;
    send_events(&p, &ty, 60).await;
    std::fs::remove_file(work.join("broken")).unwrap();

    let replay = || letters(&p, "POST", "/dead-letters/replay", json!({"topic": ty, "wait": true}));
    let (a, b) = tokio::join!(replay(), replay());
    let taken = a.json()["letters"].as_u64().unwrap() + b.json()["letters"].as_u64().unwrap();
    assert_eq!(taken, 60, "{} {}", a.text(), b.text());
    assert_eq!(recorded(&work).len(), 60, "each letter delivered once");

    std::fs::write(work.join("broken"), "").unwrap();
    send_events(&p, &ty, 3).await;
    let ids: Vec<u64> = listed(&p, "").await.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(letters(&p, "DELETE", &format!("/dead-letters/{}", ids[0]), Value::Null).await.status, 204);
    assert_eq!(letters(&p, "DELETE", &format!("/dead-letters/{}", ids[0]), Value::Null).await.status, 404);
    let r = letters(&p, "POST", "/dead-letters/replay", json!({"from": "kafka:switchboard.dead-letters"})).await;
    assert!(r.status == 400 && r.text().contains("no source here"), "no Kafka source runs here: {}", r.text());
    let r = letters(&p, "POST", "/dead-letters/purge", json!({"topic": ty})).await;
    assert_eq!(r.json()["purged"].as_u64(), Some(2), "{}", r.text());
    assert!(listed(&p, "").await.is_empty());
}

/// kill -9 in the middle of a replay: after the restart the letters not
/// yet answered are in the store again and a second replay delivers them;
/// nothing is lost, and a letter answered before the kill is delivered
/// again only if the kill fell between its answer and its removal (at most
/// the calls in flight then).
#[tokio::test]
async fn a_replay_killed_midway_loses_nothing() {
    let ty = unique("order.shipped.");
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let inflight = 4;
    let stack = switched_fn(&work, &ty, "      DELAY: \"0.05\"\n")
        + &format!("      com.switchboard.max_inflight: \"{inflight}\"\n");
    let mut p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["fixme"]).await;
    p.receiving().await;
    send_events(&p, &ty, 200).await;
    std::fs::remove_file(work.join("broken")).unwrap();

    let r = letters(&p, "POST", "/dead-letters/replay", json!({"all": true})).await;
    assert_eq!((r.status, r.json()["letters"].as_u64()), (202, Some(200)), "{}", r.text());
    let started = eventually(Duration::from_secs(30), || async { recorded(&work).len() >= 40 });
    assert!(started.await, "the replay never got going:\n{}", p.proc.output());
    p.proc.crash();
    let before = recorded(&work).len();
    assert!(before < 200, "the replay finished before the kill; the test proves nothing");

    p.proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    p.wait_ready(&["fixme"]).await;
    let left = listed(&p, "").await;
    assert!(left.iter().all(|l| l["state"] == "stored"), "claims of the killed replay are given back");
    assert!(left.len() <= 200 - before + inflight, "{} left after {before} answered", left.len());
    let r = letters(&p, "POST", "/dead-letters/replay", json!({"all": true, "wait": true})).await;
    assert_eq!(r.json()["failed"].as_u64(), Some(0), "{}", r.text());
    assert!(listed(&p, "").await.is_empty());

    let calls = recorded(&work);
    let mut bodies: Vec<&str> = calls.iter().map(|c| c["body"].as_str().unwrap()).collect();
    bodies.sort();
    bodies.dedup();
    let duplicates = calls.len() - bodies.len();
    println!("kill -9 mid-replay: {before} answered before the kill, lost 0, delivered twice {duplicates}");
    assert_eq!(bodies.len(), 200, "every letter delivered");
    assert!(duplicates <= inflight, "{duplicates} delivered twice: more than were in flight");
}

/// Fixes the function, replays what the broker keeps at `from`, and checks
/// that the `n` events were each delivered once, that nothing is left in
/// the hub's store, and that a second replay from the broker finds none.
async fn replayed_from_the_broker(p: &Platform, work: &Path, from: &str, n: usize) {
    std::fs::remove_file(work.join("broken")).unwrap();
    let r = letters(p, "POST", "/dead-letters/replay", json!({"from": from, "wait": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["letters"].as_u64(), r.json()["delivered"].as_u64()),
        (Some(n as u64), Some(n as u64)),
        "{}",
        r.text()
    );
    let calls = recorded(work);
    let mut bodies: Vec<&str> = calls.iter().map(|c| c["body"].as_str().unwrap()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!((calls.len(), bodies.len()), (n, n), "each delivered once: {calls:?}");
    assert!(listed(p, "").await.is_empty(), "replayed letters leave the store");
    let again = letters(p, "POST", "/dead-letters/replay", json!({"from": from, "wait": true})).await;
    assert_eq!(again.json()["letters"].as_u64(), Some(0), "taken from the broker once: {}", again.text());
}

/// The letters a broker keeps (`kafka.dead_letter_topic`,
/// `redis.dead_letter_stream`, a stream capturing `nats.dead_letter_subject`,
/// an SQS redrive policy's queue) are replayed from there.
#[tokio::test]
async fn letters_kept_by_redis_are_replayed_from_its_stream() {
    let (stream, dead) = (unique("sbtest:orders:"), unique("sbtest:dead:"));
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let cfg = config(&format!(
        "redis:\n  enabled: true\n  group: {stream}\n  start: \"0\"\n  dead_letter_stream: \"{dead}\"\n"
    ));
    let p = Platform::start_in(dir, &cfg, &switched_fn(&work, &format!("redis:{stream}"), ""), &[]).await;
    p.wait_ready(&["fixme"]).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con =
        client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379: scripts/services starts it");
    for i in 0..20 {
        let _: String =
            redis::AsyncCommands::xadd(&mut con, &stream, "*", &[("payload", format!("r-{i}"))]).await.unwrap();
    }
    let moved = eventually(Duration::from_secs(20), || {
        let mut con = con.clone();
        let dead = dead.clone();
        async move { redis::AsyncCommands::xlen::<_, usize>(&mut con, &dead).await.unwrap_or(0) == 20 }
    });
    assert!(moved.await, "not 20 letters in {dead}:\n{}", p.proc.output());
    replayed_from_the_broker(&p, &work, &format!("redis:{dead}"), 20).await;
    let left: usize = redis::AsyncCommands::xlen(&mut con, &dead).await.unwrap();
    assert_eq!(left, 0, "taken from the stream");
}

#[tokio::test]
async fn letters_kept_by_kafka_are_replayed_from_its_topic() {
    let (topic, dead) = (unique("sbtest.orders."), unique("sbtest.dead."));
    kafka_topic(&topic, 2).await;
    kafka_topic(&dead, 2).await;
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let cfg = config(&format!("{}  dead_letter_topic: {dead}\n", kafka_section(&unique("sbtest-group-"))));
    let p = Platform::start_in(dir, &cfg, &switched_fn(&work, &format!("kafka:{topic}"), ""), &[]).await;
    p.wait_ready(&["fixme"]).await;
    let producer = kafka_producer();
    for i in 0..20 {
        kafka_send(&producer, &topic, Some(&format!("k{}", i % 3)), &[("trace", "abc")], &format!("k-{i}")).await;
    }
    let dead_lettered = eventually(Duration::from_secs(60), || async {
        get(&format!("{}/metrics", p.hub_url)).await.text().lines().any(|l| {
            l.starts_with("switchboard_events_dead_lettered_total{") && l.contains(&topic) && l.ends_with(" 20")
        })
    });
    assert!(dead_lettered.await, "not 20 records dead-lettered:\n{}", p.proc.output());
    replayed_from_the_broker(&p, &work, &format!("kafka:{dead}"), 20).await;
    // Within a replay, a key's letters are delivered in their order.
    let order: Vec<u32> =
        recorded(&work).iter().filter_map(|c| c["body"].as_str()?.strip_prefix("k-")?.parse().ok()).collect();
    for key in 0..3 {
        let of_key: Vec<u32> = order.iter().copied().filter(|i| i % 3 == key).collect();
        assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key k{key} out of order: {of_key:?}");
    }
}

#[tokio::test]
async fn letters_kept_by_jetstream_are_replayed_from_its_stream() {
    let (subject, dead) = (unique("sbtest.orders."), unique("sbtest.dead."));
    let js = async_nats::jetstream::new(nats().await);
    let letters_stream = unique("SBTEST_DEAD_");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: letters_stream.clone(),
        subjects: vec![dead.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let stream = unique("SBTEST_ORDERS_");
    let cfg = config(&format!(
        "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  dead_letter_subject: {dead}\n  jetstream:\n    stream: {stream}\n    subjects: [\"{subject}\"]\n    durable: sbtest\n"
    ));
    let p = Platform::start_in(dir, &cfg, &switched_fn(&work, &format!("nats:{subject}"), ""), &[]).await;
    p.wait_ready(&["fixme"]).await;
    assert!(link_reported(&p, "nats", true).await, "{}", p.proc.output());
    for i in 0..20 {
        js.publish(subject.clone(), format!("n-{i}").into()).await.unwrap().await.unwrap();
    }
    let moved = eventually(Duration::from_secs(20), || async {
        js.get_stream(&letters_stream).await.unwrap().info().await.unwrap().state.messages == 20
    });
    assert!(moved.await, "not 20 letters in {letters_stream}:\n{}", p.proc.output());
    replayed_from_the_broker(&p, &work, &format!("nats:{dead}"), 20).await;
    let left = js.get_stream(&letters_stream).await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(left, 0, "taken from the stream");
    let _ = js.delete_stream(&letters_stream).await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn letters_an_sqs_redrive_policy_moved_are_replayed_from_its_queue() {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let queue = unique("sbtest-orders-");
    let dlq_name = format!("{queue}-dlq");
    let dlq = sqs_queue(&dlq_name).await;
    let url = sqs_queue_with_dlq(&queue, &dlq, 1).await;
    let dir = tempdir();
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("broken"), "").unwrap();
    let cfg = config(&format!("{}  redrive: queue\n", sqs_section()));
    let p = Platform::start_in(dir, &cfg, &switched_fn(&work, &format!("sqs:{queue}"), ""), &[]).await;
    p.wait_ready(&["fixme"]).await;
    for i in 0..10 {
        sqs_client().send_message().queue_url(&url).message_body(format!("s-{i}")).send().await.unwrap();
    }
    let moved = eventually(Duration::from_secs(60), || async {
        let attrs = sqs_client()
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(A::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        attrs.attributes.unwrap_or_default().get(&A::ApproximateNumberOfMessages).map(String::as_str) == Some("10")
    });
    assert!(moved.await, "not 10 messages in {dlq_name}:\n{}", p.proc.output());
    replayed_from_the_broker(&p, &work, &format!("sqs:{dlq_name}"), 10).await;
    assert_eq!(sqs_settled(&dlq).await, Some(true), "taken from the dead-letter queue");
}
