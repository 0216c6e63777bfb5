//! Cron across replicas: three `switchboard connect cron` beside one
//! gateway claim each slot in a store they share (NATS KV or Redis), so
//! every slot fires once, even when a replica is killed mid-run or dies
//! holding a claim; and the slots missed while every replica was down are
//! skipped or run once, as `cron.missed` says.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const EVERY_SECOND: &str = "* * * * * *";

/// The platform, without a cron of its own, running a function on a
/// schedule of every second that records each run as it arrives and then
/// takes 0.6 s over it.
async fn platform(function: &str) -> (Platform, PathBuf) {
    let dir = tempdir();
    let record = dir.path().join(format!("{function}.log"));
    let schedule = format!("      topic: cron-function\n      schedule: \"{EVERY_SECOND}\"\n");
    let stack = format!("functions:\n{}", recorder_fn(function, dir.path(), "      SLEEP: \"0.6\"\n", &schedule));
    let p = Platform::start_in(dir, &config("cron:\n  enabled: false\n"), &stack, &[]).await;
    p.wait_ready(&[function]).await;
    (p, record)
}

/// A `connect cron` replica beside `p`, its slots claimed in `store`.
fn replica(p: &Platform, name: &str, store: &str, extra: &str) -> (Proc, u16) {
    let port = free_port();
    let dir = p.dir.path();
    let file = format!("{name}.yml");
    let yaml = format!(
        "hub:\n  listen: 127.0.0.1:{port}\n  refresh_interval: 300ms\ncron:\n  coordination: {store}\n  lease: 2s\n{extra}"
    );
    std::fs::write(dir.join(&file), yaml).unwrap();
    let args = ["connect", "cron", "--gateway", &p.url, "--config", &file];
    (Proc::spawn(&args, dir, &[("basic_auth", "true"), ("secret_mount_path", &p.secrets())]), port)
}

fn replicas(p: &Platform, store: &str, extra: &str) -> Vec<(Proc, u16)> {
    (0..3).map(|i| replica(p, &format!("replica{i}"), store, extra)).collect()
}

/// Runs recorded, by slot (`scheduled_time`).
fn runs(record: &Path) -> BTreeMap<String, usize> {
    let mut slots = BTreeMap::new();
    for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
        let body = line.rsplit('|').next().unwrap_or_default();
        let tick: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        if let Some(slot) = tick["scheduled_time"].as_str() {
            *slots.entry(slot.to_string()).or_insert(0) += 1;
        }
    }
    slots
}

/// Seconds since the epoch of a slot's RFC 3339 time.
fn seconds(slot: &str) -> i64 {
    humantime::parse_rfc3339(&slot.replace("+00:00", "Z"))
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts every slot between the first and the last ran exactly once,
/// but for those within the `gaps` (`(after, before)`); prints what it saw.
fn once_each(runs: &BTreeMap<String, usize>, gaps: &[(i64, i64)]) {
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    println!("slots run: {}, run twice or more: {twice:?}", runs.len());
    assert!(twice.is_empty(), "slots fired more than once: {twice:?}");
    let fired: Vec<i64> = runs.keys().map(|s| seconds(s)).collect();
    let (first, last) = (fired[0], fired[fired.len() - 1]);
    let missing: Vec<i64> = (first..=last)
        .filter(|s| !fired.contains(s) && !gaps.iter().any(|(after, before)| s > after && s < before))
        .collect();
    println!("missed: {}", missing.len());
    assert!(missing.is_empty(), "slots never fired: {missing:?} of {fired:?}");
}

async fn fired(port: u16) -> f64 {
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await.text();
    metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_cron_slots_total") && l.contains("outcome=\"fired\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for_runs(record: &Path, count: usize, replicas: &[(Proc, u16)]) {
    let ran = eventually(Duration::from_secs(30), || async { runs(record).len() >= count }).await;
    let logs: Vec<String> = replicas.iter().map(|(r, _)| r.output()).collect();
    assert!(ran, "fewer than {count} slots ran: {:?}\nreplicas:\n{}", runs(record), logs.join("\n"));
}

/// Three replicas, one killed with SIGKILL a moment after it fired a slot,
/// while the function still runs it: every slot before and after fires once.
async fn each_slot_fires_once(store: &str) {
    let function = unique("tick");
    let (p, record) = platform(&function).await;
    let mut replicas = replicas(&p, store, "");
    wait_for_runs(&record, 3, &replicas).await;

    // The next replica to fire, killed mid-run.
    let before: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| fired(*port))).await;
    let mut holder = None;
    for _ in 0..100 {
        let now: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| fired(*port))).await;
        holder = (0..3).find(|i| now[*i] > before[*i]);
        if holder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holder = holder.expect("no replica fired a slot");
    tokio::time::sleep(Duration::from_millis(200)).await;
    replicas[holder].0.crash();
    let killed_at = runs(&record).len();
    wait_for_runs(&record, killed_at + 5, &replicas).await;
    let split: Vec<f64> = futures_util::future::join_all(replicas.iter().map(|(_, port)| fired(*port))).await;
    println!("slots fired by each replica (none answers for the killed one): {split:?}");
    for (replica, _) in &mut replicas {
        replica.stop();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    once_each(&runs(&record), &[]);
}

#[tokio::test]
async fn each_slot_fires_once_across_replicas_through_nats() {
    each_slot_fires_once("nats").await;
}

#[tokio::test]
async fn each_slot_fires_once_across_replicas_through_redis() {
    each_slot_fires_once("redis").await;
}

/// FNV-1a, as the cron source names a schedule in its keys.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A replica that claimed a slot and died before firing it is stood in
/// for: once its claim lapses, another replica fires the slot, late.
#[tokio::test]
async fn a_slot_claimed_by_a_replica_that_died_is_fired_after_the_lease() {
    let function = unique("tick");
    let (p, record) = platform(&function).await;
    let replicas = replicas(&p, "redis", "");
    wait_for_runs(&record, 2, &replicas).await;

    // A claim on a slot a few seconds ahead, as a dead replica leaves it.
    // It lapses a lease (2 s) after the slot, as one taken at the slot would.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let slot = now.as_secs() + 3;
    let lapses = (slot * 1000 + 2000) as u128 - now.as_millis();
    let key = format!("switchboard:claim:cron.{function}.openfaas-fn.{:016x}.{slot}", fnv1a(EVERY_SECOND));
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn =
        client.get_multiplexed_async_connection().await.expect("Redis on 127.0.0.1:6379 (scripts/services start)");
    let taken: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg("dead-replica")
        .arg("NX")
        .arg("PX")
        .arg(lapses as u64)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(taken.is_some());

    let late = eventually(Duration::from_secs(20), || async {
        replicas.iter().any(|(r, _)| r.output().contains("did not fire it within cron.lease"))
    })
    .await;
    let logs: Vec<String> = replicas.iter().map(|(r, _)| r.output()).collect();
    assert!(late, "the slot was not taken over:\n{}", logs.join("\n"));
    wait_for_runs(&record, runs(&record).len() + 2, &replicas).await;
    drop(replicas);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = runs(&record);
    assert_eq!(runs.iter().filter(|(s, _)| seconds(s) == slot as i64).map(|(_, n)| *n).sum::<usize>(), 1, "{runs:?}");
    once_each(&runs, &[]);
}

/// Every replica down for a few slots, then up again: `missed` says what
/// becomes of the slots no replica was there for. The runs, the last slot
/// before the replicas went down, and what the second replicas logged.
async fn missed_slots(store: &str, policy: &str) -> (BTreeMap<String, usize>, i64, String) {
    let function = unique("tick");
    let (p, record) = platform(&function).await;
    let extra = format!("  missed: {policy}\n");
    let mut first = replicas(&p, store, &extra);
    wait_for_runs(&record, 3, &first).await;
    for (replica, _) in &mut first {
        replica.stop();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down = seconds(runs(&record).keys().last().unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut again = replicas(&p, store, &extra);
    wait_for_runs(&record, runs(&record).len() + 3, &again).await;
    for (replica, _) in &mut again {
        replica.stop();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs: String = again.iter().map(|(r, _)| r.output()).collect();
    (runs(&record), down, logs)
}

/// The slots run after `down`, in order.
fn after(runs: &BTreeMap<String, usize>, down: i64) -> Vec<i64> {
    runs.keys().map(|s| seconds(s)).filter(|s| *s > down).collect()
}

#[tokio::test]
async fn slots_missed_while_every_replica_was_down_are_skipped() {
    let (runs, down, logs) = missed_slots("redis", "skip").await;
    let back = after(&runs, down)[0];
    println!("down after {down}, back at {back}");
    assert!(back - down > 4, "slots ran while every replica was down: {runs:?}");
    assert!(logs.contains("skipped (cron.missed: skip)"), "{logs}");
    once_each(&runs, &[(down, back)]);
}

#[tokio::test]
async fn the_latest_slot_missed_while_every_replica_was_down_runs_once() {
    let (runs, down, logs) = missed_slots("nats", "run_once").await;
    // The missed slot run at the restart, then a gap up to the slots the
    // replicas were back for.
    let (caught_up, back) = (after(&runs, down)[0], after(&runs, down)[1]);
    println!("down after {down}, the missed slot {caught_up} run, back at {back}");
    assert!(caught_up - down > 1 && back - caught_up > 1, "{runs:?}");
    assert_eq!(logs.matches("the latest runs once").count(), 1, "{logs}");
    once_each(&runs, &[(down, caught_up), (caught_up, back)]);
}
