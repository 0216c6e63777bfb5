//! Every at-least-once source scales out: three `switchboard connect`
//! replicas share one bounded stream of numbered messages, one is killed
//! with SIGKILL in the middle, and every message is still delivered. Each
//! test prints the duplicates it saw and each replica's share.

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
    let record = dir.path().join("got.log");
    let stack = format!(
        "functions:\n  work:\n    fprocess: {}\n    environment:\n      RECORD_FILE: {}\n      SLEEP: \"0.02\"\n    annotations:\n      topic: \"{topic}\"\n      com.switchboard.max_inflight: \"4\"\n",
        fixture("record.sh"),
        record.display()
    );
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
            let file = format!("{source}-{i}.yml");
            let hub = format!("hub:\n  listen: 127.0.0.1:{port}\n  refresh_interval: 300ms\n");
            std::fs::write(p.dir.path().join(&file), hub + &yaml(i)).unwrap();
            let args = ["connect", source, "--gateway", &p.url, "--config", &file];
            let auth = [("basic_auth", "true"), ("secret_mount_path", &p.secrets())];
            (Proc::spawn(&args, p.dir.path(), &auth), port)
        })
        .collect()
}

async fn delivered_by(port: u16) -> f64 {
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await.text();
    metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_events_delivered_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits for a part of the messages, kills replica 0 with SIGKILL, waits
/// for the rest, and checks every one arrived; prints the duplicates and
/// the shares of the replicas left (replica 0's died with it).
async fn kill_one_and_count(record: &Path, replicas: &mut [(Proc, u16)], bodies: &[String]) {
    let part = eventually(Duration::from_secs(30), || async { delivered(record).len() >= N / 5 }).await;
    let logs = |replicas: &[(Proc, u16)]| replicas.iter().map(|(r, _)| r.output()).collect::<Vec<_>>().join("\n");
    assert!(part, "fewer than {} delivered:\n{}", N / 5, logs(replicas));
    let shares: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| delivered_by(*port))).await;
    replicas[0].0.crash();
    let at_kill = delivered(record).len();
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
    println!("shares at the kill: {shares:?}; at the end (replica 0 killed): {after:?}");
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
    let bodies = numbered();
    for body in &bodies {
        let _: String = con.xadd(&stream, "*", &[("payload", body.as_str())]).await.unwrap();
    }
    kill_one_and_count(&record, &mut replicas, &bodies).await;
    let _: () = con.del(&stream).await.unwrap();
}
