//! Delivery no peer offers, per function by annotation: replies routed to
//! any broker (`com.switchboard.reply-to`) and the deduplication window
//! (`com.switchboard.dedup.window`).

mod common;

use common::*;
use std::time::Duration;

/// A three-step chain across two brokers: a CloudEvent → `first`, whose
/// answer is published to a NATS subject → `second`, whose answer is
/// published to a Kafka topic → `third`. Every event reaches the last
/// step once, as a CloudEvent that names its cause.
#[tokio::test]
async fn answers_chain_across_brokers_and_each_arrives_once() {
    let (start, two, three) = (unique("chain.start-"), unique("chain.two-"), unique("chain-three-"));
    kafka_topic(&three, 2).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let echo = |name: &str, topic: &str, reply: &str| {
        format!(
            "  {name}:\n    fprocess: cat\n    annotations:\n      topic: \"{topic}\"\n      com.switchboard.reply-to: \"{reply}\"\n"
        )
    };
    let stack = format!(
        "functions:\n{}{}{}",
        echo("first", &start, &format!("nats:{two}")),
        echo("second", &format!("nats:{two}"), &format!("kafka:{three}")),
        conform_fn("third", &format!("kafka:{three}"), &record, "")
    );
    let group = unique("chain");
    let sources = format!(
        "nats:\n  enabled: true\n  url: nats://127.0.0.1:4222\n  queue_group: {group}\n{}  client_id: {group}\n",
        kafka_section(&group)
    );
    let p = Platform::start_in(dir, &config(&sources), &stack, &[]).await;
    p.wait_ready(&["first", "second", "third"]).await;
    p.receiving().await;
    assert!(link_reported(&p, "kafka", true).await && link_reported(&p, "nats", true).await, "{}", p.proc.output());

    let n = 20;
    for i in 0..n {
        let id = format!("e-{i}");
        let headers = [("ce-id", id.as_str()), ("ce-source", "/test"), ("ce-type", &start), ("ce-specversion", "1.0")];
        let r = call("POST", &p.ce_url, &headers, format!("step-{i}")).await;
        assert_eq!((r.status, r.json()["delivered"].as_u64()), (200, Some(1)), "{}", r.text());
    }
    let all = eventually(Duration::from_secs(30), || async { calls(&record).len() >= n });
    assert!(all.await, "{} of {n} reached the last step:\n{}", calls(&record).len(), p.proc.output());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..n {
        let body = format!("step-{i}");
        let got = calls_of(&record, &body);
        assert_eq!(got.len(), 1, "{body} arrived {} times", got.len());
        let h = &got[0]["headers"];
        assert_eq!(h["ce-source"], "/switchboard/second.openfaas-fn", "{h}");
        assert_eq!(h["ce-type"], format!("{start}.reply.reply"), "{h}");
        assert!(
            h["ce-correlationid"].as_str().is_some_and(|c| c.len() == 36),
            "names the NATS message it answers: {h}"
        );
    }
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    for (f, to) in [("first", "nats"), ("second", "kafka")] {
        let line =
            format!(r#"switchboard_replies_total{{function="{f}.openfaas-fn",outcome="published",to="{to}"}} {n}"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(p.dead_letters().is_empty(), "{:?}", p.dead_letters());
}

/// A reply that cannot be published is a failed attempt: the event is
/// not settled as delivered. One whose broker is down is retried by the
/// function's policy, then dead-lettered with the reason; one that names a
/// source this hub does not run cannot come right, and is dead-lettered at
/// once.
#[tokio::test]
async fn a_reply_that_cannot_be_published_is_not_delivered() {
    let function = |name: &str, ty: &str, reply: &str| {
        format!(
            "  {name}:\n    fprocess: cat\n    annotations:\n      topic: {ty}\n      com.openfaas.retry.attempts: \"3\"\n      com.openfaas.retry.min_wait: 10ms\n      com.switchboard.reply-to: \"{reply}\"\n"
        )
    };
    let stack = format!(
        "functions:\n{}{}",
        function("unlucky", "order.created", "redis:replies"),
        function("lonely", "order.paid", "sqs:replies")
    );
    // Nothing listens on port 1: the Redis broker is down.
    let p = Platform::start(&config("redis:\n  enabled: true\n  url: redis://127.0.0.1:1\n"), &stack).await;
    p.wait_ready(&["unlucky", "lonely"]).await;
    p.receiving().await;
    for ty in ["order.created", "order.paid"] {
        let headers = [("ce-id", "1"), ("ce-source", "/t"), ("ce-type", ty), ("ce-specversion", "1.0")];
        let r = call("POST", &p.ce_url, &headers, "x").await;
        assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    }
    let letters = p.dead_letters();
    let letter = |f: &str| letters.iter().find(|l| l["function"] == f).unwrap_or_else(|| panic!("{letters:?}")).clone();
    let unlucky = letter("unlucky.openfaas-fn");
    assert!(unlucky["error"].as_str().unwrap().starts_with("reply to redis:replies not published: "), "{unlucky}");
    assert_eq!(unlucky["attempts"], 3, "retried: {unlucky}");
    let lonely = letter("lonely.openfaas-fn");
    let error = lonely["error"].as_str().unwrap();
    assert!(error.contains("com.switchboard.reply-to: no sqs source runs in this hub to publish to"), "{error}");
    assert_eq!(lonely["attempts"], 1, "not retried: {lonely}");
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(!metrics.contains("switchboard_events_delivered_total{"), "{metrics}");
    let failed = r#"switchboard_replies_total{function="unlucky.openfaas-fn",outcome="failed",to="redis"} 3"#;
    assert!(metrics.contains(failed), "{metrics}");
}

/// MQTT request/response without MQTT 5's response topic: a reply topic
/// with `+` takes the device from the event's topic, and the reply's
/// CloudEvent attributes are user properties, as CloudEvents' MQTT binding
/// has them.
#[tokio::test]
async fn an_mqtt_reply_goes_to_the_devices_own_topic() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let prefix = unique("devices-");
    let stack = format!(
        "functions:\n  thermostat:\n    fprocess: cat\n    annotations:\n      topic: \"mqtt:{prefix}/+/temp\"\n      com.switchboard.reply-to: \"mqtt:{prefix}/+/reply\"\n"
    );
    let mqtt = format!("mqtt:\n  enabled: true\n  client_id: {}\n  qos: 1\n", unique("hub"));
    let p = Platform::start(&config(&mqtt), &stack).await;
    p.wait_ready(&["thermostat"]).await;
    assert!(link_reported(&p, "mqtt", true).await, "{}", p.proc.output());

    let (client, mut events) = AsyncClient::new(MqttOptions::new(unique("device"), "127.0.0.1", 1883), 10);
    client.subscribe(format!("{prefix}/+/reply"), QoS::AtLeastOnce).await.unwrap();
    let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::Publish(m))) => {
                    let _ = tx.send(m);
                }
                Ok(_) => {}
                Err(e) => panic!("Mosquitto is not reachable at 127.0.0.1:1883 ({e}); start it with scripts/services"),
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.publish(format!("{prefix}/d7/temp"), QoS::AtLeastOnce, false, "21.5").await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(15), replies.recv()).await;
    let reply = reply.unwrap_or_else(|_| panic!("no reply:\n{}", p.proc.output())).unwrap();
    assert_eq!(String::from_utf8_lossy(&reply.topic), format!("{prefix}/d7/reply"));
    assert_eq!(&reply.payload[..], b"21.5");
    let props = reply.properties.unwrap().user_properties;
    let prop = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(prop("source"), Some("/switchboard/thermostat.openfaas-fn"), "{props:?}");
    assert_eq!(prop("specversion"), Some("1.0"), "{props:?}");
    assert!(prop("correlationid").is_some(), "{props:?}");
}

/// The same CloudEvent (source and id) sent twice: a function with a
/// window is invoked once, one without it twice.
#[tokio::test]
async fn a_cloudevent_sent_twice_is_delivered_once_within_the_window() {
    let dir = tempdir();
    let (once, twice) = (dir.path().join("once.jsonl"), dir.path().join("twice.jsonl"));
    let window = "      com.switchboard.dedup.window: 1m\n";
    let stack = format!(
        "functions:\n{}{}",
        conform_fn("deduped", "order.created", &once, window),
        conform_fn("plain", "order.created", &twice, "")
    );
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["deduped", "plain"]).await;
    p.receiving().await;
    for id in ["a", "a", "b"] {
        let headers = [("ce-id", id), ("ce-source", "/shop"), ("ce-type", "order.created"), ("ce-specversion", "1.0")];
        let r = call("POST", &p.ce_url, &headers, format!("order {id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(calls(&once).len(), 2, "{:?}", calls(&once));
    assert_eq!(calls_of(&once, "order a").len(), 1);
    assert_eq!(calls(&twice).len(), 3, "{:?}", calls(&twice));
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains(r#"switchboard_dedup_hits_total{function="deduped.openfaas-fn"} 1"#), "{metrics}");
}

/// Kill -9 after the records were delivered and before their offsets were
/// committed: Kafka hands them out again. Without a window the function
/// sees each twice; with one kept in Redis (`hub.dedup_store: redis`),
/// which outlives the hub, none again.
#[tokio::test]
async fn after_a_kill_a_redelivery_within_the_window_is_not_delivered_again() {
    let topic = unique("dedup-");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let (once, twice) = (dir.path().join("once.jsonl"), dir.path().join("twice.jsonl"));
    let window = "      com.switchboard.dedup.window: 10m\n";
    let stack = format!(
        "functions:\n{}{}",
        conform_fn("deduped", &format!("kafka:{topic}"), &once, window),
        conform_fn("plain", &format!("kafka:{topic}"), &twice, "")
    );
    let group = unique("dedup");
    // Offsets are committed only every 60 s: none before the kill.
    let kafka = kafka_section(&group).replace("commit_interval: 200ms", "commit_interval: 60s");
    let config = config_with("  dedup_store: redis\n", &format!("{kafka}  client_id: {group}\n"));
    let p = Platform::start_in(dir, &config, &stack, &[]).await;
    p.wait_ready(&["deduped", "plain"]).await;
    assert!(link_reported(&p, "kafka", true).await, "{}", p.proc.output());
    let producer = kafka_producer();
    let n = 10;
    for i in 0..n {
        kafka_send(&producer, &topic, None, &[], &format!("record {i}")).await;
    }
    let delivered =
        eventually(Duration::from_secs(30), || async { calls(&once).len() >= n && calls(&twice).len() >= n });
    assert!(delivered.await, "{} and {} of {n}:\n{}", calls(&once).len(), calls(&twice).len(), p.proc.output());
    let Platform { mut proc, dir, .. } = p;
    proc.crash();

    let p = Platform::start_in(dir, &config, &stack, &[]).await;
    p.wait_ready(&["deduped", "plain"]).await;
    // The killed consumer's session (6 s) ends before its partition goes
    // to the new one; then every record comes again, to both functions.
    let hits = || async {
        let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
        let prefix = r#"switchboard_dedup_hits_total{function="deduped.openfaas-fn"} "#;
        metrics.lines().find_map(|l| l.strip_prefix(prefix)?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let again =
        eventually(Duration::from_secs(60), || async { hits().await >= n as f64 && calls(&twice).len() >= 2 * n });
    assert!(again.await, "Kafka did not hand the records out again ({}):\n{}", calls(&twice).len(), p.proc.output());
    assert_eq!(calls(&once).len(), n, "the window let a redelivery through: {:?}", calls(&once));
}

/// A function that serves 4 at once and answers 429 beyond: with
/// `com.switchboard.concurrency: adaptive` (ceiling 64) the cap settles
/// near 4, few calls are rejected, and every event is delivered once.
#[tokio::test]
async fn an_adaptive_cap_settles_near_what_the_function_takes() {
    let topic = unique("adaptive-");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let stack = format!(
        "functions:\n  limited:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      CAPACITY: \"4\"\n      RECORD_FILE: {}\n    annotations:\n      topic: \"kafka:{topic}\"\n      com.switchboard.concurrency: adaptive\n      com.switchboard.max_inflight: \"64\"\n      com.openfaas.retry.attempts: \"20\"\n      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 100ms\n",
        fixture("capacity.py"),
        record.display()
    );
    let group = unique("adaptive");
    let config = config(&format!("{}  client_id: {group}\n  ordering: none\n", kafka_section(&group)));
    let p = Platform::start_in(dir, &config, &stack, &[]).await;
    p.wait_ready(&["limited"]).await;
    let producer = kafka_producer();
    let n = 600;
    for i in 0..n {
        kafka_send(&producer, &topic, None, &[], &format!("e-{i}")).await;
    }
    let ok = |c: &serde_json::Value| c["status"] == 200;
    let all = eventually(Duration::from_secs(60), || async { calls(&record).iter().filter(|c| ok(c)).count() >= n });
    assert!(all.await, "{} of {n} delivered:\n{}", calls(&record).iter().filter(|c| ok(c)).count(), p.proc.output());
    let calls = calls(&record);
    let rejected = calls.iter().filter(|c| c["status"] == 429).count();
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    let cap: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"switchboard_concurrency_limit{function="limited.openfaas-fn"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cap in the metrics:\n{metrics}"));
    println!("cap {cap}, {rejected} of {} calls rejected", calls.len());
    assert!((2.0..=8.0).contains(&cap), "the cap is {cap}; the function takes 4");
    assert!(rejected * 10 < n, "{rejected} of {} calls were rejected", calls.len());
    for i in 0..n {
        let body = format!("e-{i}");
        assert_eq!(calls.iter().filter(|c| ok(c) && c["body"] == body.as_str()).count(), 1, "{body}");
    }
    assert!(p.dead_letters().is_empty());
}
