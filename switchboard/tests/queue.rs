//! `/async-function`, the durable queue and the worker.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::Duration;

fn stack(extra: &str) -> String {
    format!(
        r#"
functions:
  env:
    fprocess: env
{extra}"#
    )
}

fn flaky(fail_times: u32, attempts: u32, dir: &std::path::Path) -> String {
    format!(
        r#"  flaky:
    fprocess: {}
    environment:
      FAIL_TIMES: {fail_times}
      COUNTER_FILE: {}/counter
    annotations:
      com.openfaas.retry.attempts: "{attempts}"
      com.openfaas.retry.codes: "500,503"
      com.openfaas.retry.min_wait: 10ms
      com.openfaas.retry.max_wait: 50ms
"#,
        fixture("flaky.sh"),
        dir.display()
    )
}

#[tokio::test]
async fn async_invocation_posts_the_result_to_the_callback() {
    let p = Platform::start(&config(""), &stack("")).await;
    p.wait_ready(&["env"]).await;
    let (cb, mut rx) = recorder().await;
    let r = call(
        "PUT",
        &format!("{}/async-function/env/sub/path?q=1", p.url),
        &[("X-Callback-Url", &format!("{cb}/done")), ("X-Custom", "kept")],
        "payload",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let call_id = r.header("x-call-id").expect("X-Call-Id on 202");

    let got = receive(&mut rx, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "no callback; output:\n{}", p.proc.output());
    let cb = &got[0];
    assert_eq!(cb.path, "/done");
    assert_eq!(cb.headers["x-function-status"], "200");
    assert_eq!(cb.headers["x-function-name"], "env.openfaas-fn");
    assert_eq!(cb.headers["x-call-id"], call_id);
    assert!(cb.headers["x-duration-seconds"].parse::<f64>().is_ok());
    for expected in [
        "Http_Method=PUT",
        "Http_Path=/sub/path",
        "Http_Query=q=1",
        "Http_X_Custom=kept",
        &format!("Http_X_Call_Id={call_id}"),
    ] {
        assert!(cb.body.contains(expected), "missing {expected} in {}", cb.body);
    }

    let bad = call("POST", &format!("{}/async-function/env", p.url), &[("X-Callback-Url", "not a url")], "").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("X-Callback-Url"));
    assert_eq!(post(&format!("{}/async-function/nope", p.url), "").await.status, 404);
}

#[tokio::test]
async fn retries_until_success() {
    let dir = tempdir();
    let stack = stack(&flaky(2, 5, dir.path()));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["flaky"]).await;
    let (cb, mut rx) = recorder().await;
    let r =
        call("POST", &format!("{}/async-function/flaky", p.url), &[("X-Callback-Url", &cb)], "third time lucky").await;
    assert_eq!(r.status, 202);
    let got = receive(&mut rx, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "no callback; output:\n{}", p.proc.output());
    assert_eq!(got[0].headers["x-function-status"], "200");
    assert_eq!(got[0].headers["x-retry"], "2");
    assert_eq!(got[0].headers["x-retry-max"], "4");
    assert_eq!(got[0].body, "third time lucky");
    let dead = p.api("GET", "/system/async/dead-letters", "").await.json();
    assert_eq!(dead, serde_json::json!([]));
    // The worker's own counts, among the gateway's metrics (the call is
    // counted once settled, just after its callback).
    let url = format!("{}/metrics", p.url);
    for line in [
        r#"switchboard_queue_calls_total{function_name="flaky.openfaas-fn",outcome="retried"} 2"#,
        r#"switchboard_queue_calls_total{function_name="flaky.openfaas-fn",outcome="answered"} 1"#,
        "switchboard_queue_in_flight 0",
    ] {
        let counted =
            eventually(Duration::from_secs(5), || async { get(&url).await.text().lines().any(|l| l == line) }).await;
        assert!(counted, "no {line} in\n{}", get(&url).await.text());
    }
}

#[tokio::test]
async fn exhausted_retries_are_dead_lettered() {
    let dir = tempdir();
    let stack = stack(&flaky(100, 3, dir.path()));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["flaky"]).await;
    let (cb, mut rx) = recorder().await;
    let r = call("POST", &format!("{}/async-function/flaky", p.url), &[("X-Callback-Url", &cb)], "doomed").await;
    let call_id = r.header("x-call-id").unwrap();
    let got = receive(&mut rx, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "no callback; output:\n{}", p.proc.output());
    assert_eq!(got[0].headers["x-function-status"], "500");

    // The callback goes out before the dead letter is recorded.
    let url = "/system/async/dead-letters";
    assert!(eventually(Duration::from_secs(5), || async { p.api("GET", url, "").await.json()[0].is_object() }).await);
    let dead = p.api("GET", url, "").await.json();
    let letter = &dead[0];
    assert_eq!(letter["call_id"], call_id.as_str());
    assert_eq!(letter["function"], "flaky.openfaas-fn");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_status"], 500);
    assert_eq!(letter["request"]["Method"], "POST");
    let counter = std::fs::read_to_string(p.dir.path().join("counter")).unwrap();
    assert_eq!(counter.trim(), "3", "the function ran a different number of times");
}

#[tokio::test]
async fn queued_requests_survive_a_crash() {
    let stack =
        format!("functions:\n  slow:\n    fprocess: {}\n    environment:\n      SLEEP: 0.5\n", fixture("slow.sh"));
    let cfg = config("  max_inflight: 1\n");
    let p = Platform::start(&cfg, &stack).await;
    p.wait_ready(&["slow"]).await;
    let (cb, mut rx) = recorder().await;
    let mut ids = HashSet::new();
    for i in 0..4 {
        let r = call("POST", &format!("{}/async-function/slow", p.url), &[("X-Callback-Url", &cb)], format!("job {i}"))
            .await;
        assert_eq!(r.status, 202);
        ids.insert(r.header("x-call-id").unwrap());
    }
    // Everything queued is on disk: kill -9 the platform and its watchdogs.
    let Platform { mut proc, dir, .. } = p;
    proc.crash();
    let before: Vec<_> = receive(&mut rx, 4, Duration::from_millis(10)).await;
    assert!(before.len() < 4, "all jobs finished before the crash; the test proves nothing");

    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    let mut seen: HashSet<String> = before.iter().map(|r| r.headers["x-call-id"].clone()).collect();
    for r in receive(&mut rx, 4, Duration::from_secs(30)).await {
        assert_eq!(r.headers["x-function-status"], "200");
        seen.insert(r.headers["x-call-id"].clone());
        if seen.len() == 4 {
            break;
        }
    }
    let ok = seen.len() == 4;
    assert!(ok, "lost jobs: {:?}\n{}", ids.difference(&seen).collect::<Vec<_>>(), p.proc.output());
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn a_separate_queue_worker_takes_the_gateways_requests() {
    let worker_port = free_port();
    let cfg = config(&format!("  url: http://127.0.0.1:{worker_port}\n"));
    let p = Platform::start(&cfg, &stack("")).await;
    p.wait_ready(&["env"]).await;

    let dir = tempdir();
    let listen = format!("127.0.0.1:{worker_port}");
    let _worker = Proc::spawn(&["queue-worker", "--listen", &listen, "--gateway", &p.url], dir.path(), &[]);
    let up =
        eventually(Duration::from_secs(10), || async { get(&format!("http://{listen}/healthz")).await.status == 200 })
            .await;
    assert!(up, "queue-worker did not start");

    let (cb, mut rx) = recorder().await;
    let r = call("POST", &format!("{}/async-function/env", p.url), &[("X-Callback-Url", &cb)], "via worker").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let got = receive(&mut rx, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "no callback");
    assert_eq!(got[0].headers["x-function-status"], "200");
    assert!(dir.path().join("data/queue.redb").exists(), "the worker owns the store");
    assert_eq!(p.api("GET", "/system/async/dead-letters", "").await.json(), serde_json::json!([]));
}

/// Issue 22: an answer over the 64 MiB the queue keeps was retried, so the
/// function ran (and repeated its side effects) ten times. It can never
/// succeed: it is dead-lettered at once, and the callback says why.
#[tokio::test]
async fn an_answer_too_large_to_keep_is_dead_lettered_without_a_retry() {
    let dir = tempdir();
    let record = dir.path().join("big.log");
    let stack = too_large_answer(&record, "");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["big"]).await;
    let (cb, mut rx) = recorder().await;
    let r = call("POST", &format!("{}/async-function/big", p.url), &[("X-Callback-Url", &cb)], "go").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let got = receive(&mut rx, 1, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 1, "no callback:\n{}", p.proc.output());
    assert_eq!(got[0].headers["x-function-status"], "502");
    assert!(
        got[0].body.contains("answer over 67108864 bytes") && got[0].body.contains("without a retry"),
        "{}",
        got[0].body
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = std::fs::read_to_string(&record).unwrap_or_default().lines().count();
    assert_eq!(calls, 1, "the function ran again");
    let letters = p.api("GET", "/system/async/dead-letters", "").await.json();
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert!(letters[0]["last_error"].as_str().unwrap_or_default().contains("67108864"), "{letters}");
}
