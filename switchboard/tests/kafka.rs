//! The Kafka source against a real Kafka-protocol broker (noida-db).

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn records_are_delivered_with_their_headers_and_cloudevents() {
    let topic = unique("sbtest.orders.");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let stack = envlog_stack("orders", &topic, &record, "", "");
    // One at a time: envlog.sh's records of concurrent calls would interleave.
    let cfg = config(&format!("{}  ordering: partition\n", kafka_section(&unique("g"))));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["orders"]).await;
    let producer = kafka_producer();
    kafka_send(&producer, &topic, Some("customer-7"), &[("color", "blue")], "plain").await;
    let ce = [("ce_specversion", "1.0"), ("ce_id", "ev-1"), ("ce_source", "/shop"), ("ce_type", "order.created")];
    kafka_send(&producer, &topic, Some("customer-8"), &ce, "binary").await;
    let structured = r#"{"specversion":"1.0","id":"ev-2","source":"/shop","type":"order.paid","datacontenttype":"application/json","data":{"total": 42}}"#;
    kafka_send(&producer, &topic, None, &[("content-type", "application/cloudevents+json")], structured).await;

    let all = eventually(Duration::from_secs(30), || async { envlog(&record).len() == 3 }).await;
    assert!(all, "not delivered: {:?}\n{}", envlog(&record), p.proc.output());
    let calls = envlog(&record);
    let find = |body: &str| calls.iter().find(|c| c.contains(&format!("body={body}"))).cloned().unwrap_or_default();
    let plain = find("plain");
    for expected in [
        format!("Http_X_Topic={topic}"),
        "Http_X_Kafka_Partition=0".into(),
        "Http_X_Kafka_Offset=0".into(),
        "Http_X_Kafka_Key=customer-7".into(),
        "Http_X_Kafka_Color=blue".into(),
        "Http_X_Connector=switchboard/kafka".into(),
    ] {
        assert!(plain.contains(&expected), "missing {expected} in\n{plain}");
    }
    assert!(plain.contains("Http_X_Kafka_Timestamp="), "{plain}");
    let binary = find("binary");
    for expected in ["Http_Ce_Id=ev-1", "Http_Ce_Type=order.created", "Http_Ce_Partitionkey=customer-8"] {
        assert!(binary.contains(expected), "missing {expected} in\n{binary}");
    }
    let structured = find(r#"{"total": 42}"#);
    for expected in ["Http_Ce_Id=ev-2", "Http_Ce_Type=order.paid", "Http_Content_Type=application/json"] {
        assert!(structured.contains(expected), "missing {expected} in\n{structured}");
    }
}

#[tokio::test]
async fn a_bad_property_fails_at_start_naming_it() {
    let cfg = config(&format!("{}    fetch.wait.max.mss: \"100\"\n", kafka_section("g")));
    let dir = tempdir();
    std::fs::write(dir.path().join("stack.yml"), NO_STACK).unwrap();
    let cfg = cfg.replace("STACK", "stack.yml").replace("HUB_PORT", &free_port().to_string());
    std::fs::write(dir.path().join("switchboard.yml"), cfg.replace("CE_PORT", &free_port().to_string())).unwrap();
    let mut proc = Proc::spawn(&["up", "--config", "switchboard.yml"], dir.path(), &[]);
    let code = proc.wait_exit(Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "started with a bad property: {}", proc.output());
    assert!(proc.output().contains("fetch.wait.max.mss"), "{}", proc.output());
}

/// The platform with the Kafka source (`kafka` YAML lines added to the
/// test section) and `functions`, ready and subscribed.
async fn platform(dir: tempfile::TempDir, group: &str, hub: &str, kafka: &str, functions: &str) -> Platform {
    let cfg = config_with(hub, &format!("cron:\n  enabled: false\n{}{kafka}", kafka_section(group)));
    let p = Platform::start_in(dir, &cfg, &format!("functions:\n{functions}"), &[]).await;
    let ready =
        eventually(Duration::from_secs(20), || async { get(&format!("{}/readyz", p.hub_url)).await.status == 200 })
            .await;
    assert!(ready, "the hub never became ready:\n{}", p.proc.output());
    p
}

async fn metrics(p: &Platform) -> String {
    get(&format!("{}/metrics", p.hub_url)).await.text()
}

/// A function slower than `max.poll.interval.ms` while the hub is full: the
/// source pauses its partitions and goes on polling, so the group keeps the
/// replica, and no record is delivered twice.
#[tokio::test]
async fn a_full_hub_pauses_its_partitions_and_keeps_its_place_in_the_group() {
    let topic = unique("sbtest.slow.");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let group = unique("g");
    let kafka = "  read_ahead: 2\n";
    let p = platform(dir, &group, "  max_pending: 1\n", kafka, &conform_fn("slow", &topic, &record, "")).await;
    let producer = kafka_producer();
    // The first takes longer than the section's max.poll.interval.ms (10 s).
    let bodies = ["sleep:12:first", "second", "third", "fourth"];
    for b in bodies {
        kafka_send(&producer, &topic, None, &[], b).await;
    }
    let paused = eventually(Duration::from_secs(15), || async {
        metrics(&p).await.contains("switchboard_kafka_paused_partitions 1")
    })
    .await;
    assert!(paused, "not paused while the hub was full:\n{}", metrics(&p).await);
    let all =
        eventually(Duration::from_secs(40), || async { bodies.iter().all(|b| !calls_of(&record, b).is_empty()) }).await;
    assert!(all, "not delivered: {:?}\n{}", calls(&record), p.proc.output());
    assert!(
        eventually(Duration::from_secs(10), || async { kafka_settled(&group, &topic, 1).await == Some(true) }).await
    );
    for b in bodies {
        assert_eq!(calls_of(&record, b).len(), 1, "{b} delivered again: {:?}", calls(&record));
    }
    assert!(!p.proc.output().contains("maximum poll interval"), "left the group:\n{}", p.proc.output());
    assert!(metrics(&p).await.contains("switchboard_kafka_paused_partitions 0"));
}

/// A record its function always fails goes to `kafka.dead_letter_topic`
/// as it was read (key, value, headers) with the failure in `switchboard.*`
/// headers, and the records behind it, same key included, go on.
#[tokio::test]
async fn a_poison_record_is_dead_lettered_to_a_topic_and_its_partition_moves_on() {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let topic = unique("sbtest.poison.");
    let dead = unique("sbtest.dead.");
    kafka_topic(&topic, 1).await;
    kafka_topic(&dead, 1).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let group = unique("g");
    let retry = "      com.openfaas.retry.attempts: \"2\"\n      com.openfaas.retry.min_wait: 10ms\n";
    let kafka = format!("  dead_letter_topic: {dead}\n");
    let p = platform(dir, &group, "", &kafka, &conform_fn("picky", &topic, &record, retry)).await;
    let producer = kafka_producer();
    kafka_send(&producer, &topic, Some("k"), &[("trace", "abc")], "poison:1").await;
    kafka_send(&producer, &topic, Some("k"), &[], "after").await;
    let after = eventually(Duration::from_secs(20), || async { !calls_of(&record, "after").is_empty() }).await;
    assert!(after, "the partition stalled behind a poison record: {:?}\n{}", calls(&record), p.proc.output());
    assert_eq!(calls_of(&record, "poison:1").len(), 2, "not tried twice: {:?}", calls(&record));
    let committed =
        eventually(Duration::from_secs(10), || async { kafka_settled(&group, &topic, 1).await == Some(true) }).await;
    assert!(committed, "the dead-lettered record was not committed");

    let reader: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&dead]).unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(20), reader.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing in {dead}:\n{}", p.proc.output()))
        .unwrap();
    assert_eq!(letter.key(), Some(&b"k"[..]));
    assert_eq!(letter.payload(), Some(&b"poison:1"[..]));
    let headers: Vec<(String, String)> = letter
        .headers()
        .map(|h| {
            h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into())).collect()
        })
        .unwrap_or_default();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(header("trace"), "abc", "{headers:?}");
    assert_eq!(header("switchboard.topic"), topic);
    assert_eq!(header("switchboard.offset"), "0");
    assert_eq!(header("switchboard.attempts"), "2");
    assert_eq!(header("switchboard.status"), "500");
    assert!(header("switchboard.function").starts_with("picky"), "{headers:?}");
    assert!(!header("switchboard.error").is_empty(), "{headers:?}");
    assert!(headers.iter().all(|(k, _)| !k.starts_with("X-Kafka-")), "the hub's own headers leaked: {headers:?}");
    assert!(!p.dir.path().join("data/dead-letters.jsonl").exists(), "also written to the file");
}

/// Per-key order: records of one key one after another, other keys of the
/// same partition meanwhile.
#[tokio::test]
async fn records_of_one_key_run_in_order_and_other_keys_alongside() {
    let topic = unique("sbtest.keys.");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let p = platform(dir, &unique("g"), "", "", &conform_fn("keys", &topic, &record, "")).await;
    let producer = kafka_producer();
    for i in 1..=3 {
        for key in ["a", "b"] {
            kafka_send(&producer, &topic, Some(key), &[], &format!("sleep:0.5:{key}{i}")).await;
        }
    }
    let all = eventually(Duration::from_secs(20), || async { calls(&record).len() == 6 }).await;
    assert!(all, "not delivered: {:?}\n{}", calls(&record), p.proc.output());
    let arrived = |body: &str| calls_of(&record, &format!("sleep:0.5:{body}"))[0]["t"].as_f64().unwrap();
    for key in ["a", "b"] {
        for i in 1..3 {
            let (this, next) = (arrived(&format!("{key}{i}")), arrived(&format!("{key}{}", i + 1)));
            assert!(next >= this + 0.45, "{key}{} started {:.3} s after {key}{i}, before it ended", i + 1, next - this);
        }
    }
    let (a1, b1) = (arrived("a1"), arrived("b1"));
    assert!((b1 - a1).abs() < 0.45, "b1 waited for a1 ({:.3} s apart): keys did not run alongside", b1 - a1);
}

/// Two replicas in one group split the partitions; one joining and one
/// leaving mid-stream loses nothing: every record is delivered at least once.
#[tokio::test]
async fn two_replicas_share_the_partitions_and_a_rebalance_loses_nothing() {
    let topic = unique("sbtest.group.");
    kafka_topic(&topic, 4).await;
    let group = unique("g");
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (record_a, record_b) = (dir_a.path().join("calls.jsonl"), dir_b.path().join("calls.jsonl"));
    let a = platform(dir_a, &group, "", "  client_id: a\n", &conform_fn("f", &topic, &record_a, "")).await;
    let producer = kafka_producer();
    let total = 120;
    let send = |from: usize, to: usize| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            for i in from..to {
                kafka_send(&producer, &topic, Some(&format!("k{}", i % 7)), &[], &format!("r{i}")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    send(0, 40).await;
    let sending = tokio::spawn(send(40, total));
    let b = platform(dir_b, &group, "", "  client_id: b\n", &conform_fn("f", &topic, &record_b, "")).await;
    let shared = eventually(Duration::from_secs(30), || async {
        let held = |text: String| text.lines().any(|l| l.starts_with("switchboard_kafka_assigned_partitions 2"));
        held(metrics(&a).await) && held(metrics(&b).await)
    })
    .await;
    assert!(shared, "the partitions were not split:\n{}\n{}", metrics(&a).await, b.proc.output());
    sending.await.unwrap();
    // A leaves: B takes its partitions and what A had not committed.
    let Platform { proc: mut proc_a, .. } = a;
    proc_a.stop();
    let delivered = || {
        let mut bodies: std::collections::BTreeSet<String> = Default::default();
        for c in calls(&record_a).into_iter().chain(calls(&record_b)) {
            bodies.insert(c["body"].as_str().unwrap_or_default().to_string());
        }
        bodies
    };
    let all =
        eventually(Duration::from_secs(40), || async { (0..total).all(|i| delivered().contains(&format!("r{i}"))) })
            .await;
    let missing: Vec<usize> = (0..total).filter(|i| !delivered().contains(&format!("r{i}"))).collect();
    assert!(all, "lost in the rebalance: {missing:?}\n{}", b.proc.output());
    assert!(!calls(&record_b).is_empty() && !calls(&record_a).is_empty(), "one replica did all the work");
    assert!(
        eventually(Duration::from_secs(20), || async { kafka_settled(&group, &topic, 4).await == Some(true) }).await
    );
}

/// The broker goes away: `/readyz` says so; it comes back on its data: the
/// hub reconnects, is ready again and consumes what is sent then.
#[tokio::test]
async fn the_hub_is_unready_while_the_broker_is_down_and_consumes_again_after() {
    let data = tempdir();
    let port = free_port();
    let args = ["start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port", &port.to_string(), "--data-dir"];
    let mut args: Vec<String> = args.map(String::from).to_vec();
    args.push(data.path().display().to_string());
    let mut broker = Broker::start(&noida(), args, port);
    let servers = format!("127.0.0.1:{port}");
    let topic = unique("sbtest.restart.");
    kafka_topic_at(&servers, &topic, 1).await;
    let producer = kafka_producer_at(&servers);
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let kafka = format!("  bootstrap_servers: {servers}\n");
    let section = kafka_section(&unique("g")).replace(&format!("  bootstrap_servers: {KAFKA}\n"), &kafka);
    let cfg = config(&format!("cron:\n  enabled: false\n{section}"));
    let stack = format!("functions:\n{}", conform_fn("f", &topic, &record, ""));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["f"]).await;
    let readyz = || async { get(&format!("{}/readyz", p.hub_url)).await.status };
    assert!(eventually(Duration::from_secs(20), || async { readyz().await == 200 }).await, "{}", p.proc.output());
    kafka_send(&producer, &topic, None, &[], "before").await;
    assert!(eventually(Duration::from_secs(20), || async { !calls_of(&record, "before").is_empty() }).await);

    broker.kill();
    let unready = eventually(Duration::from_secs(20), || async { readyz().await == 503 }).await;
    assert!(unready, "still ready with the broker down:\n{}", p.proc.output());
    broker.restart();
    let ready = eventually(Duration::from_secs(30), || async { readyz().await == 200 }).await;
    assert!(ready, "not ready after the broker came back:\n{}", p.proc.output());
    kafka_send(&producer, &topic, None, &[], "after").await;
    let after = eventually(Duration::from_secs(30), || async { !calls_of(&record, "after").is_empty() }).await;
    assert!(after, "not consumed after the restart: {:?}\n{}", calls(&record), p.proc.output());
}

/// A function subscribed to a pattern (`kafka:^…`) gets the records of
/// every topic it matches, each with its own topic in `X-Topic`.
#[tokio::test]
async fn a_pattern_subscribes_to_every_matching_topic() {
    let prefix = unique("sbtest.regex");
    let (eu, uk, us) = (format!("{prefix}.eu"), format!("{prefix}.uk"), format!("{prefix}.us"));
    for t in [&eu, &uk, &us] {
        kafka_topic(t, 1).await;
    }
    let dir = tempdir();
    let record = dir.path().join("r.log");
    let pattern = format!("kafka:^{}\\\\.(eu|uk)$", prefix.replace('.', "\\\\."));
    let stack = envlog_stack("regional", &pattern, &record, "", "");
    // One at a time: envlog.sh's records of concurrent calls would interleave.
    let p = platform(dir, &unique("g"), "  max_pending: 1\n", "", stack.trim_start_matches("functions:\n")).await;
    let producer = kafka_producer();
    for t in [&eu, &uk, &us] {
        kafka_send(&producer, t, None, &[], &format!("to {t}")).await;
    }
    let both = eventually(Duration::from_secs(30), || async { envlog(&record).len() >= 2 }).await;
    assert!(both, "not delivered: {:?}\n{}", envlog(&record), p.proc.output());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = envlog(&record);
    assert_eq!(calls.len(), 2, "{calls:?}");
    for t in [&eu, &uk] {
        assert!(calls.iter().any(|c| c.contains(&format!("Http_X_Topic={t}")) && c.contains(&format!("body=to {t}"))));
    }
}

/// A record read ahead while its topic's only function is removed is
/// neither delivered nor dead-lettered: it stays in the log, uncommitted,
/// and the next function subscribed to the topic gets it.
#[tokio::test]
async fn a_record_read_ahead_stays_in_the_log_when_its_function_goes_away() {
    let topic = unique("sbtest.redeploy.");
    kafka_topic(&topic, 1).await;
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let group = unique("g");
    // One event in flight at a time: the second waits, read but not dispatched.
    let p = platform(dir, &group, "  max_pending: 1\n", "", &conform_fn("old", &topic, &record, "")).await;
    let producer = kafka_producer();
    kafka_send(&producer, &topic, None, &[], "sleep:3:first").await;
    let busy = eventually(Duration::from_secs(15), || async {
        metrics(&p).await.contains("switchboard_invocations_in_flight{function=\"old.openfaas-fn\"} 1")
    })
    .await;
    assert!(busy, "the first record never reached the function:\n{}", p.proc.output());
    kafka_send(&producer, &topic, None, &[], "waiting").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"old"}"#).await.status, 202);
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    let released = eventually(Duration::from_secs(20), || async {
        metrics(&p).await.contains("switchboard_kafka_assigned_partitions 0")
    })
    .await;
    assert!(released, "the topic was not dropped:\n{}", p.proc.output());
    assert!(calls_of(&record, "waiting").is_empty());
    assert_eq!(kafka_settled(&group, &topic, 1).await, Some(false), "committed past a record never delivered");

    let body = serde_json::json!({
        "service": "new", "image": "x", "envProcess": format!("python3 {}", fixture("conform.py")),
        "envVars": {"mode": "http", "RECORD_FILE": record.display().to_string()},
        "annotations": {"topic": topic}
    });
    assert_eq!(p.api("POST", "/system/functions", &body.to_string()).await.status, 202);
    p.wait_ready(&["new"]).await;
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    let delivered = eventually(Duration::from_secs(20), || async { !calls_of(&record, "waiting").is_empty() }).await;
    assert!(delivered, "the record waiting was lost: {:?}\n{}", calls(&record), p.proc.output());
    assert!(!p.dir.path().join("data/dead-letters.jsonl").exists(), "dead-lettered");
    assert!(
        eventually(Duration::from_secs(10), || async { kafka_settled(&group, &topic, 1).await == Some(true) }).await
    );
}
