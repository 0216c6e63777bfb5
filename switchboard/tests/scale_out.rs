//! Every at-least-once source scales out: three `switchboard connect`
//! replicas share one bounded stream of numbered messages, the busiest is
//! killed with SIGKILL in the middle, and every message is still delivered
//! (in order per key, where the source promises it). Each test prints the
//! duplicates it saw and each replica's share.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const N: usize = 300;

/// The platform running one function on `topic` that records each message
/// it gets and takes a little time over it, so the work is still under
/// way when a replica is killed.
async fn platform(topic: &str) -> (Platform, PathBuf) {
    let dir = tempdir();
    let record = dir.path().join("work.log");
    let annotations = format!("      topic: \"{topic}\"\n      com.switchboard.max_inflight: \"4\"\n");
    let stack = format!("functions:\n{}", recorder_fn("work", dir.path(), "      SLEEP: \"0.02\"\n", &annotations));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["work"]).await;
    (p, record)
}

/// Bodies delivered, with how many times each was.
fn delivered(record: &Path) -> BTreeMap<String, usize> {
    let mut got = BTreeMap::new();
    for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
        *got.entry(line.rsplit('|').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    got
}

/// Three `connect SOURCE` replicas beside `p`, replica `i` configured by
/// `yaml(i)` (the `hub:` section is added).
fn replicas(p: &Platform, source: &str, yaml: impl Fn(usize) -> String) -> Vec<(Proc, u16)> {
    (0..3)
        .map(|i| {
            let port = free_port();
            let hub = format!("hub:\n  listen: 127.0.0.1:{port}\n  refresh_interval: 300ms\n");
            std::fs::write(p.dir.path().join(format!("{source}-{i}.yml")), hub + &yaml(i)).unwrap();
            (replica(p, source, i), port)
        })
        .collect()
}

/// Replica `i` of `source`, started again on its config as written.
fn replica(p: &Platform, source: &str, i: usize) -> Proc {
    let file = format!("{source}-{i}.yml");
    let args = ["connect", source, "--gateway", &p.url, "--config", &file];
    Proc::spawn(&args, p.dir.path(), &[("basic_auth", "true"), ("secret_mount_path", &p.secrets())])
}

async fn delivered_by(port: u16) -> f64 {
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await.text();
    metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_events_delivered_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until every replica says it is ready (connected, and for Kafka
/// holding partitions).
async fn ready(replicas: &[(Proc, u16)]) {
    for (replica, port) in replicas {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let ok = eventually(Duration::from_secs(30), || async { get(&url).await.status == 200 }).await;
        assert!(ok, "a replica never became ready:\n{}", replica.output());
    }
}

/// Waits for a part of the messages, kills the busiest replica with
/// SIGKILL, waits for the rest, and checks every one arrived; prints the
/// duplicates and the replicas' shares.
async fn kill_one_and_count(record: &Path, replicas: &mut [(Proc, u16)], bodies: &[String]) {
    kill_one_then(record, replicas, bodies, |_| None).await;
}

/// [`kill_one_and_count`], with what `then` starts in the killed
/// replica's place (a replica of the same name, for Kafka).
async fn kill_one_then(
    record: &Path,
    replicas: &mut [(Proc, u16)],
    bodies: &[String],
    then: impl Fn(usize) -> Option<Proc>,
) {
    let part = eventually(Duration::from_secs(30), || async { delivered(record).len() >= N / 5 }).await;
    let logs = |replicas: &[(Proc, u16)]| replicas.iter().map(|(r, _)| r.output()).collect::<Vec<_>>().join("\n");
    assert!(part, "fewer than {} delivered:\n{}", N / 5, logs(replicas));
    let shares: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| delivered_by(*port))).await;
    let busiest = (0..replicas.len()).max_by(|a, b| shares[*a].total_cmp(&shares[*b])).unwrap_or(0);
    replicas[busiest].0.crash();
    let at_kill = delivered(record).len();
    if let Some(again) = then(busiest) {
        replicas[busiest].0 = again;
    }
    assert!(at_kill < N, "everything was delivered before the kill; the test proves nothing");
    let all =
        eventually(Duration::from_secs(90), || async { bodies.iter().all(|b| delivered(record).contains_key(b)) })
            .await;
    let got = delivered(record);
    let lost: Vec<&String> = bodies.iter().filter(|b| !got.contains_key(*b)).collect();
    assert!(all, "lost {} of {N} after a kill -9: {lost:?}\n{}", lost.len(), logs(replicas));
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let after: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| delivered_by(*port))).await;
    println!("delivered {N} of {N}, lost 0, duplicates {duplicates}; {at_kill} delivered at the kill");
    println!(
        "shares at the kill: {shares:?}; at the end (replica {busiest} killed; one started again counts from its start): {after:?}"
    );
    let working = shares.iter().zip(&after).filter(|(before, after)| before.max(**after) > 0.0).count();
    assert!(working >= 2, "the work was not spread: {shares:?} {after:?}");
}

fn numbered() -> Vec<String> {
    (0..N).map(|i| format!("m{i:04}")).collect()
}

#[tokio::test]
async fn jetstream_replicas_share_a_stream_and_lose_nothing_when_one_is_killed() {
    let js = async_nats::jetstream::new(nats().await);
    let id = unique("");
    let (stream, subject) = (format!("SBTEST_{id}"), format!("sbtest.out.{id}"));
    let config = async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    };
    js.create_stream(config).await.expect("create stream");
    let (p, record) = platform(&subject).await;
    let yaml = |_| {
        format!(
            "nats:\n  url: nats://127.0.0.1:4222\n  jetstream:\n    stream: {stream}\n    durable: sbtest\n    ack_wait: 5s\n"
        )
    };
    let mut replicas = replicas(&p, "nats", yaml);
    ready(&replicas).await;
    let bodies = numbered();
    for body in &bodies {
        js.publish(subject.clone(), body.clone().into()).await.unwrap().await.unwrap();
    }
    kill_one_and_count(&record, &mut replicas, &bodies).await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn redis_stream_replicas_share_a_group_and_lose_nothing_when_one_is_killed() {
    use redis::AsyncCommands;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at 127.0.0.1:6379 ({e}); start it with scripts/services"));
    let stream = unique("sbtest-out-");
    let (p, record) = platform(&stream).await;
    let group = unique("g");
    let yaml = |i| {
        format!(
            "redis:\n  url: redis://127.0.0.1:6379\n  group: {group}\n  consumer: replica{i}\n  start: \"0\"\n  claim_idle: 2s\n  block: 200ms\n"
        )
    };
    let mut replicas = replicas(&p, "redis", yaml);
    ready(&replicas).await;
    let bodies = numbered();
    for body in &bodies {
        let _: String = con.xadd(&stream, "*", &[("payload", body.as_str())]).await.unwrap();
    }
    kill_one_and_count(&record, &mut replicas, &bodies).await;
    let _: () = con.del(&stream).await.unwrap();
}

/// Bodies `m0000`… on keys `k0`…`k6`: the first delivery of each body
/// comes after the first deliveries of its key's earlier bodies.
fn in_order_per_key(record: &Path) {
    let mut first: Vec<usize> = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
        let body = line.rsplit('|').next().unwrap_or_default();
        if let Some(i) = body.strip_prefix('m').and_then(|n| n.parse::<usize>().ok())
            && seen.insert(i)
        {
            first.push(i);
        }
    }
    for key in 0..7 {
        let of_key: Vec<usize> = first.iter().copied().filter(|i| i % 7 == key).collect();
        assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key k{key} out of order: {of_key:?}");
    }
}

#[tokio::test]
async fn kafka_replicas_share_the_partitions_keep_each_keys_order_and_lose_nothing_when_one_is_killed() {
    let topic = unique("sbtest.out.");
    kafka_topic(&topic, 6).await;
    let (p, record) = platform(&topic).await;
    let group = unique("g");
    let yaml = |i| format!("{}  client_id: replica{i}\n", kafka_section(&group));
    let mut replicas = replicas(&p, "kafka", yaml);
    ready(&replicas).await;
    let producer = kafka_producer();
    let bodies = numbered();
    for (i, body) in bodies.iter().enumerate() {
        kafka_send(&producer, &topic, Some(&format!("k{}", i % 7)), &[], body).await;
    }
    // noida-db, the broker here, never expires a member killed with -9 (no
    // rebalance follows its session timeout; one that leaves is handled):
    // the killed replica comes back under its name, as a restarted pod
    // does, and takes its partitions back from their last commit.
    kill_one_then(&record, &mut replicas, &bodies, |i| Some(replica(&p, "kafka", i))).await;
    in_order_per_key(&record);
}

#[tokio::test]
async fn sqs_replicas_share_a_queue_and_lose_nothing_when_one_is_killed() {
    let queue = unique("sbtest-out-");
    let url = sqs_queue(&queue).await;
    let (p, record) = platform(&format!("sqs:{queue}")).await;
    let mut replicas = replicas(&p, "sqs", |_| sqs_section());
    ready(&replicas).await;
    let client = sqs_client();
    let bodies = numbered();
    for batch in bodies.chunks(10) {
        let entries = batch.iter().enumerate().map(|(i, body)| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .unwrap()
        });
        client.send_message_batch().queue_url(&url).set_entries(Some(entries.collect())).send().await.unwrap();
    }
    kill_one_and_count(&record, &mut replicas, &bodies).await;
}

#[tokio::test]
async fn mqtt_replicas_share_a_subscription_and_lose_nothing_when_one_is_killed() {
    use rumqttc::v5::{AsyncClient, MqttOptions, mqttbytes::QoS};
    if std::net::TcpStream::connect("127.0.0.1:1883").is_err() {
        panic!("MQTT broker not reachable at 127.0.0.1:1883; start it with scripts/services (mosquitto)");
    }
    let topic = unique("sbtest/out/");
    let (p, record) = platform(&topic).await;
    let group = unique("g");
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("sbtest-replica{i}-"))).collect();
    let yaml = |i: usize| {
        format!(
            "mqtt:\n  url: mqtt://127.0.0.1:1883\n  version: 5\n  qos: 1\n  client_id: {}\n  clean_session: false\n  share_group: {group}\n",
            ids[i]
        )
    };
    let mut replicas = replicas(&p, "mqtt", yaml);
    ready(&replicas).await;
    let filter = format!("$share/{group}/{topic}");
    for (replica, _) in &replicas {
        let subscribed = eventually(Duration::from_secs(15), || async { replica.output().contains(&filter) }).await;
        assert!(subscribed, "a replica never subscribed to {filter}:\n{}", replica.output());
    }
    let (publisher, mut events) = AsyncClient::new(MqttOptions::new(unique("sbtest-pub-"), "127.0.0.1", 1883), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let bodies = numbered();
    for body in &bodies {
        publisher.publish(topic.clone(), QoS::AtLeastOnce, false, body.clone()).await.unwrap();
    }
    // Mosquitto keeps what it had sent the killed replica's session for
    // that session: the replica comes back under its client id, as a
    // restarted pod does, and gets it.
    kill_one_then(&record, &mut replicas, &bodies, |i| Some(replica(&p, "mqtt", i))).await;
}
