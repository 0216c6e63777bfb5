//! The async queue on NATS JetStream (`queue.backend: jetstream`): gateways
//! publish, any number of workers consume. Each test runs a nats-server of
//! its own (so it can be restarted on its store) and prints what was lost
//! and duplicated.

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// A nats-server with JetStream on a free port, keeping its store in `dir`.
fn nats_server(dir: &Path) -> (Broker, String) {
    let port = free_port();
    let store = dir.join("jetstream").display().to_string();
    let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &store];
    (Broker::start("nats-server", args.map(String::from).to_vec(), port), format!("nats://127.0.0.1:{port}"))
}

/// The `queue:` lines for the JetStream queue at `url` (then its `nats:` section).
fn jetstream(url: &str, consume: bool, max_inflight: usize) -> String {
    format!(
        "  backend: jetstream\n  consume: {consume}\n  max_inflight: {max_inflight}\n  jetstream:\n    ack_wait: 3s\n  retry:\n    attempts: 4\n    min_wait: 100ms\n    max_wait: 300ms\nnats:\n  url: {url}\n"
    )
}

/// A stack of record.sh functions `(name, seconds each call sleeps)`, recording to `dir`.
fn recorders(dir: &Path, functions: &[(&str, &str)]) -> String {
    let entries: String = functions
        .iter()
        .map(|(name, sleep)| recorder_fn(name, dir, &format!("      SLEEP: \"{sleep}\"\n"), "      x: y\n"))
        .collect();
    format!("functions:\n{entries}")
}

/// `switchboard queue-worker` on the platform's config, invoking through it.
async fn worker(p: &Platform) -> Proc {
    worker_at(p).await.0
}

/// [`worker`], and the address of its `/healthz` and `/metrics`.
async fn worker_at(p: &Platform) -> (Proc, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["queue-worker", "--config", "switchboard.yml", "--listen", &listen, "--gateway", &p.url];
    let proc = Proc::spawn(&args, p.dir.path(), &[("RUST_LOG", "info,switchboard_queue=debug")]);
    let up =
        eventually(Duration::from_secs(15), || async { get(&format!("http://{listen}/healthz")).await.status == 200 })
            .await;
    assert!(up, "queue-worker never became healthy:\n{}", proc.output());
    (proc, listen)
}

/// Queues `body` for `function` and returns its call id.
async fn enqueue(gateway: &str, function: &str, body: &str) -> String {
    let r = call("POST", &format!("{gateway}/async-function/{function}"), &[], body.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.header("x-call-id").expect("X-Call-Id")
}

/// Queues `n` calls to `function` with the bodies `PREFIX-0`, `PREFIX-1`, …, and returns the bodies.
async fn enqueue_numbered(gateway: &str, function: &str, prefix: &str, n: usize) -> Vec<String> {
    let bodies: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for body in &bodies {
        enqueue(gateway, function, body).await;
    }
    bodies
}

/// The bodies `function` recorded, one per call.
fn bodies(dir: &Path, function: &str) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join(format!("{function}.log"))).unwrap_or_default();
    log.lines().filter_map(|l| l.rsplit('|').next().map(String::from)).collect()
}

/// Of the `sent` bodies: how many `function` never ran, and how many extra times it ran some.
fn tally(dir: &Path, function: &str, sent: &[String]) -> (usize, usize) {
    let mut counts = BTreeMap::<String, usize>::new();
    for b in bodies(dir, function) {
        *counts.entry(b).or_default() += 1;
    }
    let lost = sent.iter().filter(|b| !counts.contains_key(*b)).count();
    let duplicates = counts.values().map(|n| n - 1).sum();
    (lost, duplicates)
}

/// Waits (up to `limit`) until every sent call has run, then prints and returns the tally.
async fn settled(dir: &Path, function: &str, sent: &[String], limit: Duration) -> (usize, usize) {
    eventually(limit, || async { tally(dir, function, sent).0 == 0 }).await;
    let (lost, duplicates) = tally(dir, function, sent);
    println!("{} calls: lost = {lost}, duplicates = {duplicates}", sent.len());
    (lost, duplicates)
}

/// The call ids a worker's log says it invoked.
fn invoked(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.contains("invoking"))
        .filter_map(|l| l.split("call_id=").nth(1)?.split_whitespace().next().map(String::from))
        .collect()
}

#[tokio::test]
async fn two_workers_share_one_queue_and_run_each_call_once() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "0.2")]);
    let p = Platform::start(&config(&jetstream(&url, false, 2)), &stack).await;
    p.wait_ready(&["r"]).await;
    let workers = [worker_at(&p).await, worker_at(&p).await];

    let sent = enqueue_numbered(&p.url, "r", "job", 40).await;
    let (lost, duplicates) = settled(records.path(), "r", &sent, Duration::from_secs(60)).await;
    assert_eq!(lost, 0, "{}\n{}", workers[0].0.output(), workers[1].0.output());
    assert_eq!(duplicates, 0, "no worker failed, yet a call ran twice");
    let shares = workers.each_ref().map(|(w, _)| invoked(&w.output()).len());
    println!("each worker's share: {shares:?}");
    assert!(shares.iter().all(|n| *n >= 5), "one worker did (nearly) all the work: {shares:?}");
    // Each worker counts what it ran on its /metrics (a call is recorded as
    // it starts, and counted once it is settled).
    for ((_, listen), share) in workers.iter().zip(shares) {
        let url = format!("http://{listen}/metrics");
        let line =
            format!(r#"switchboard_queue_calls_total{{function_name="r.openfaas-fn",outcome="answered"}} {share}"#);
        let counted =
            eventually(Duration::from_secs(10), || async { get(&url).await.text().lines().any(|l| l == line) }).await;
        assert!(counted, "no {line} in\n{}", get(&url).await.text());
    }
    assert!(p.proc.output().contains("JetStream stream SWITCHBOARD_QUEUE"), "{}", p.proc.output());
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_a_call_loses_nothing() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "1")]);
    let p = Platform::start(&config(&jetstream(&url, false, 1)), &stack).await;
    p.wait_ready(&["r"]).await;
    let (mut a, b) = (worker(&p).await, worker(&p).await);

    let sent: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    let mut ids = HashMap::new();
    for body in &sent {
        ids.insert(enqueue(&p.url, "r", body).await, body.clone());
    }
    let started = eventually(Duration::from_secs(15), || async { !invoked(&a.output()).is_empty() }).await;
    assert!(started, "worker a never took a call:\n{}", a.output());
    let interrupted = invoked(&a.output()).remove(0);
    // Killed once the function has started a's call, which takes a second.
    let body = &ids[&interrupted];
    let running = eventually(Duration::from_secs(15), || async { bodies(records.path(), "r").contains(body) }).await;
    assert!(running, "a's call never reached the function:\n{}", a.output());
    a.crash();

    let (lost, duplicates) = settled(records.path(), "r", &sent, Duration::from_secs(60)).await;
    assert_eq!(lost, 0, "{}", b.output());
    let again = invoked(&b.output()).contains(&interrupted);
    assert!(again, "the call a was running ({interrupted}) did not run again on b:\n{}", b.output());
    assert!(duplicates >= 1, "the interrupted call had started, so it ran twice");
}

/// A worker stopped gracefully finishes its running calls and hands back
/// the ones it held, which another worker runs at once rather than after
/// the ack wait (a minute here).
#[tokio::test]
async fn a_stopped_worker_hands_back_the_calls_it_held() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "1")]);
    let cfg = config(&jetstream(&url, false, 1).replace("ack_wait: 3s", "ack_wait: 60s"));
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["r"]).await;
    let mut a = worker(&p).await;
    let sent = enqueue_numbered(&p.url, "r", "job", 4).await;
    let started = eventually(Duration::from_secs(15), || async { !invoked(&a.output()).is_empty() }).await;
    assert!(started, "worker a never took a call:\n{}", a.output());
    let b = worker(&p).await;
    a.stop();
    let (lost, duplicates) = settled(records.path(), "r", &sent, Duration::from_secs(20)).await;
    assert_eq!(lost, 0, "a held call waited for the ack wait:\n{}\n{}", a.output(), b.output());
    assert_eq!(duplicates, 0, "a stopped worker's running call ran again");
}

#[tokio::test]
async fn a_gateway_killed_right_after_its_202s_loses_nothing() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "0.05")]);
    // The front gateway only publishes; the back one runs the worker.
    let mut front = Platform::start(&config(&jetstream(&url, false, 4)), &stack).await;
    let back = Platform::start(&config(&jetstream(&url, true, 4)), &stack).await;
    back.wait_ready(&["r"]).await;

    let sent = enqueue_numbered(&front.url, "r", "job", 50).await;
    front.proc.crash();
    let (lost, duplicates) = settled(records.path(), "r", &sent, Duration::from_secs(60)).await;
    assert_eq!(lost, 0, "an accepted call never ran:\n{}", back.proc.output());
    assert_eq!(duplicates, 0);
}

#[tokio::test]
async fn calls_queued_across_a_nats_restart_all_run() {
    let records = tempdir();
    let (mut nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "0.3")]);
    let p = Platform::start(&config(&jetstream(&url, true, 1)), &stack).await;
    p.wait_ready(&["r"]).await;

    let mut sent = enqueue_numbered(&p.url, "r", "before", 10).await;
    let running = eventually(Duration::from_secs(15), || async { !bodies(records.path(), "r").is_empty() }).await;
    assert!(running, "no call ran:\n{}", p.proc.output());
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart();
    // The gateway takes calls again once it has reconnected.
    for i in 0..3 {
        let body = format!("after-{i}");
        let url = format!("{}/async-function/r", p.url);
        let accepted =
            eventually(Duration::from_secs(20), || async { call("POST", &url, &[], body.clone()).await.status == 202 })
                .await;
        assert!(accepted, "the gateway never took calls again:\n{}", p.proc.output());
        sent.push(body);
    }
    let (lost, _) = settled(records.path(), "r", &sent, Duration::from_secs(90)).await;
    assert_eq!(lost, 0, "{}", p.proc.output());
}

/// A slow function's backlog, queued first, does not hold up another
/// function: a free slot goes to the function with fewer calls running.
#[tokio::test]
async fn a_slow_function_does_not_starve_the_others() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("slow", "1"), ("fast", "0")]);
    let p = Platform::start(&config(&jetstream(&url, true, 2)), &stack).await;
    p.wait_ready(&["slow", "fast"]).await;

    let slow = enqueue_numbered(&p.url, "slow", "slow", 8).await;
    let fast = enqueue_numbered(&p.url, "fast", "fast", 4).await;
    let (lost, _) = settled(records.path(), "fast", &fast, Duration::from_secs(30)).await;
    assert_eq!(lost, 0, "{}", p.proc.output());
    // First come, first served would run all eight slow calls (4 s on two slots) first.
    let slow_done = bodies(records.path(), "slow").len();
    println!("slow calls run when the fast ones were done: {slow_done} of {}", slow.len());
    // Shared fairly, about half the slots went to each: three or four slow calls.
    assert!(slow_done <= 5, "the fast function waited for the slow backlog: {slow_done} slow calls ran first");
    let (lost, _) = settled(records.path(), "slow", &slow, Duration::from_secs(30)).await;
    assert_eq!(lost, 0);
}

/// Retries, callbacks and dead letters behave as on the embedded queue: a
/// retry is a nak with the backoff (the attempt count survives it), a
/// callback is retried without running the function again, and calls whose
/// retries ran out are listed by the same route.
#[tokio::test]
async fn retries_callbacks_and_dead_letters_work_as_on_the_embedded_queue() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let flaky = |name: &str, fail: u32, attempts: u32| {
        format!(
            "  {name}:\n    fprocess: {}\n    environment:\n      FAIL_TIMES: {fail}\n      COUNTER_FILE: {}/{name}.count\n    annotations:\n      com.openfaas.retry.attempts: \"{attempts}\"\n      com.openfaas.retry.codes: \"500\"\n      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 50ms\n",
            fixture("flaky.sh"),
            records.path().display()
        )
    };
    let stack =
        format!("{}{}{}", recorders(records.path(), &[("r", "0")]), flaky("lucky", 2, 5), flaky("doomed", 100, 3));
    let p = Platform::start(&config(&jetstream(&url, true, 4)), &stack).await;
    p.wait_ready(&["r", "lucky", "doomed"]).await;
    let (cb, mut rx) = recorder().await;

    let r = call("POST", &format!("{}/async-function/lucky", p.url), &[("X-Callback-Url", &cb)], "third time").await;
    assert_eq!(r.status, 202);
    let got = receive(&mut rx, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "no callback:\n{}", p.proc.output());
    assert_eq!(got[0].headers["x-function-status"], "200");
    assert_eq!(got[0].headers["x-retry"], "2", "the attempts counted through JetStream's redeliveries");
    assert_eq!(got[0].headers["x-retry-max"], "4");
    assert_eq!(got[0].body, "third time");

    let doomed = enqueue(&p.url, "doomed", "never").await;
    let dead = eventually(Duration::from_secs(20), || async {
        p.api("GET", "/system/async/dead-letters", "").await.json()[0]["call_id"] == doomed.as_str()
    })
    .await;
    assert!(dead, "no dead letter:\n{}", p.proc.output());
    let letter = &p.api("GET", "/system/async/dead-letters", "").await.json()[0];
    assert_eq!(letter["function"], "doomed.openfaas-fn");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_status"], 500);
    let count = std::fs::read_to_string(records.path().join("doomed.count")).unwrap();
    assert_eq!(count.trim(), "3", "the function ran a different number of times");

    // A callback receiver that comes up late: the answer waits in the
    // stream, and the function does not run again.
    let late = free_port();
    let late_url = format!("http://127.0.0.1:{late}/done");
    let r = call("POST", &format!("{}/async-function/r", p.url), &[("X-Callback-Url", &late_url)], "once").await;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let head =
        late_callback(late).await.unwrap_or_else(|| panic!("the callback was not retried:\n{}", p.proc.output()));
    assert!(head.contains("x-function-status: 200"), "{head}");
    assert_eq!(bodies(records.path(), "r"), ["once"], "the function ran once");
    let ids: HashSet<String> = p
        .api("GET", "/system/async/dead-letters", "")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["call_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, HashSet::from([doomed]), "only the doomed call is dead");
}

/// A full stream refuses a new call with 503 and keeps the ones it holds,
/// rather than dropping the oldest queued calls to make room.
#[tokio::test]
async fn a_full_stream_refuses_new_calls_and_keeps_the_queued_ones() {
    let records = tempdir();
    let (_nats, url) = nats_server(records.path());
    let stack = recorders(records.path(), &[("r", "0")]);
    let queue = jetstream(&url, false, 2).replace("ack_wait: 3s", "ack_wait: 3s\n    max_messages: 2");
    let p = Platform::start(&config(&queue), &stack).await;
    p.wait_ready(&["r"]).await;
    let sent = enqueue_numbered(&p.url, "r", "job", 2).await;
    let refused = call("POST", &format!("{}/async-function/r", p.url), &[], "one too many").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after").as_deref(), Some("5"));
    assert!(refused.text().contains("cannot queue"), "{}", refused.text());
    let _worker = worker(&p).await;
    let (lost, duplicates) = settled(records.path(), "r", &sent, Duration::from_secs(30)).await;
    assert_eq!((lost, duplicates), (0, 0), "the queued calls were dropped for the refused one");
    assert!(!bodies(records.path(), "r").contains(&"one too many".to_string()));
}
