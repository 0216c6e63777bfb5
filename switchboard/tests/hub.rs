//! The hub inside `switchboard up`: discovery, cron, CloudEvents, fan-out,
//! retries (Retry-After included), dead letters, limits and asynchronous
//! invocation, against the real binary.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One call of the record.sh fixture.
#[derive(Debug)]
pub struct Call {
    pub time: f64,
    pub topic: String,
    pub message_id: String,
    pub ce_type: String,
    pub connector: String,
    pub body: String,
}

pub fn calls(file: &Path) -> Vec<Call> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(7, '|').collect();
            (f.len() == 7).then(|| Call {
                time: f[0].parse().unwrap_or(0.0),
                topic: f[1].into(),
                message_id: f[2].into(),
                ce_type: f[3].into(),
                connector: f[5].into(),
                body: f[6].into(),
            })
        })
        .collect()
}

async fn wait_calls(file: &Path, n: usize) -> Vec<Call> {
    let ok = eventually(Duration::from_secs(20), || async { calls(file).len() >= n }).await;
    let got = calls(file);
    assert!(ok, "expected {n} calls in {}, got {}: {got:?}", file.display(), got.len());
    got
}

async fn ce(p: &Platform, ty: &str, id: &str, body: &str) -> Resp {
    call(
        "POST",
        &format!("{}/", p.ce_url),
        &[
            ("ce-id", id),
            ("ce-source", "/tests"),
            ("ce-type", ty),
            ("ce-specversion", "1.0"),
            ("content-type", "text/plain"),
        ],
        body.to_string(),
    )
    .await
}

async fn hub_ready(p: &Platform) {
    let ok =
        eventually(Duration::from_secs(15), || async { get(&format!("{}/readyz", p.hub_url)).await.status == 200 })
            .await;
    assert!(ok, "hub not ready:\n{}", p.proc.output());
}

#[tokio::test]
async fn cron_fires_six_field_schedules_in_their_time_zone() {
    let dir = tempdir();
    let mut stack = String::from("functions:\n");
    stack += &recorder_fn(
        "tick",
        dir.path(),
        "",
        "      topic: cron-function\n      schedule: \"CRON_TZ=Asia/Tokyo */1 * * * * *\"\n",
    );
    stack += &recorder_fn("broken", dir.path(), "", "      topic: cron-function\n      schedule: \"every tuesday\"\n");
    let file = dir.path().join("tick.log");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    let got = wait_calls(&file, 2).await;
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["function"], "tick.openfaas-fn");
    assert!(body["scheduled_time"].as_str().unwrap().ends_with("+09:00"), "{body}");
    assert!(body["fire_time"].is_string());
    assert_eq!(got[0].topic, "cron-function");
    assert_eq!(got[0].connector, "switchboard/cron");

    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(
        metrics.contains(r#"switchboard_cron_schedule_errors_total{function="broken.openfaas-fn"} 1"#),
        "{metrics}"
    );
    assert!(p.proc.output().contains("every tuesday"), "the bad expression is not logged");
}

#[tokio::test]
async fn cloudevents_binary_structured_batched_and_invalid() {
    let dir = tempdir();
    let stack = format!(
        "functions:\n{}  traced:\n    fprocess: {}\n    environment:\n      RECORD_FILE: {}/traced.log\n    annotations:\n      topic: order.traced\n",
        recorder_fn("orders", dir.path(), "", "      topic: order.created\n"),
        fixture("envlog.sh"),
        dir.path().display()
    );
    let file = dir.path().join("orders.log");
    let traced = dir.path().join("traced.log");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    hub_ready(&p).await;

    let r = ce(&p, "order.created", "b-1", "binary").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["delivered"], 1);

    // W3C trace context on the request reaches the function.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("ce-id", "t-1"),
        ("ce-source", "/tests"),
        ("ce-type", "order.traced"),
        ("ce-specversion", "1.0"),
        ("traceparent", traceparent),
        ("tracestate", "congo=t61rcWkgMzE"),
    ];
    let r = call("POST", &format!("{}/", p.ce_url), &headers, "traced").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = std::fs::read_to_string(&traced).unwrap_or_default();
    for expected in [format!("Http_Traceparent={traceparent}"), "Http_Tracestate=congo=t61rcWkgMzE".into()] {
        assert!(env.contains(&expected), "missing {expected} in:\n{env}");
    }

    let structured = r#"{"specversion":"1.0","id":"s-1","source":"/tests","type":"order.created","datacontenttype":"application/json","data":{"n":1}}"#;
    let r =
        call("POST", &format!("{}/", p.ce_url), &[("content-type", "application/cloudevents+json")], structured).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let batch = r#"[{"specversion":"1.0","id":"m-1","source":"/t","type":"order.created","data":"one"},
                    {"specversion":"1.0","id":"m-2","source":"/t","type":"order.created","data":"two"}]"#;
    let r =
        call("POST", &format!("{}/", p.ce_url), &[("content-type", "application/cloudevents-batch+json")], batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["delivered"], 2);

    let got = wait_calls(&file, 4).await;
    let mut ids: Vec<&str> = got.iter().map(|c| c.message_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["b-1", "m-1", "m-2", "s-1"]);
    assert!(got.iter().all(|c| c.ce_type == "order.created" && c.topic == "order.created"));
    assert!(got.iter().any(|c| c.body == r#"{"n":1}"#), "{got:?}");
    // Under `up` the hub calls the gateway in-process, through its router: the gateway counts every invocation.
    let metrics = get(&format!("{}/metrics", p.url)).await.text();
    assert!(
        metrics.contains(r#"gateway_function_invocation_total{code="200",function_name="orders.openfaas-fn"} 4"#),
        "{metrics}"
    );
    // The hub's own metrics, by source, topic and function.
    assert_eq!(get(&format!("{}/healthz", p.hub_url)).await.status, 200);
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    for expected in [
        r#"switchboard_events_received_total{source="cloudevents",topic="order.created"} 4"#,
        r#"switchboard_events_delivered_total{function="orders.openfaas-fn",source="cloudevents",topic="order.created"} 4"#,
        r#"switchboard_invocation_seconds_count{code="200",function="orders.openfaas-fn"} 4"#,
        r#"switchboard_invocations_in_flight{function="orders.openfaas-fn"} 0"#,
        "switchboard_topic_map_topics 2",
        "switchboard_topic_map_functions 2",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in:\n{metrics}");
    }

    let r =
        call("POST", &format!("{}/", p.ce_url), &[("ce-id", "x"), ("ce-type", "t"), ("ce-specversion", "1.0")], "x")
            .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("source"), "{}", r.text());
    let r =
        call("POST", &format!("{}/", p.ce_url), &[("content-type", "application/cloudevents-batch+json")], "[{").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("batch"), "{}", r.text());
    let r = call("POST", &format!("{}/", p.ce_url), &[("content-type", "text/plain")], "no event").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not a CloudEvent") && r.text().contains("ce-specversion"), "{}", r.text());
    assert_eq!(get(&format!("{}/", p.ce_url)).await.status, 405);
    // A body announced over the default cloudevents.max_body_size (4 MiB) is
    // refused before it is sent, as curl sends large bodies (Expect: 100-continue).
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\nce-id: big\r\nce-source: /t\r\nce-type: order.created\r\nce-specversion: 1.0\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        p.ce_url.trim_start_matches("http://"),
        4 * 1024 * 1024 + 1
    );
    let mut conn = tokio::net::TcpStream::connect(p.ce_url.trim_start_matches("http://")).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = conn.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_body_size"), "{answer}");
    assert_eq!(calls(&file).len(), 4, "a refused event was invoked");
}

#[tokio::test]
async fn deployed_functions_subscribe_live_and_fan_out() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let p = Platform::start_in(dir, &config(""), NO_STACK, &[]).await;
    hub_ready(&p).await;
    for name in ["first", "second"] {
        let body = serde_json::json!({
            "service": name, "image": "x", "envProcess": fixture("record.sh"),
            "envVars": {"RECORD_FILE": d.join(format!("{name}.log")).display().to_string()},
            "annotations": {"topic": "payments, audit"}
        });
        assert_eq!(p.api("POST", "/system/functions", &body.to_string()).await.status, 202);
    }
    p.wait_ready(&["first", "second"]).await;
    let delivered =
        eventually(Duration::from_secs(10), || async { ce(&p, "audit", "a-1", "fan").await.json()["delivered"] == 1 })
            .await;
    assert!(delivered, "the new topic never reached the hub");
    // One event, every subscriber.
    wait_calls(&d.join("first.log"), 1).await;
    wait_calls(&d.join("second.log"), 1).await;

    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"first"}"#).await.status, 202);
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"second"}"#).await.status, 202);
    assert_eq!(post(&format!("{}/refresh", p.hub_url), "").await.status, 202);
    // Until the hub has seen the deletions, an event still goes to the
    // functions, and the gateway's 404 dead-letters it; then it is refused.
    let mut n = 0;
    let refused = eventually(Duration::from_secs(10), || {
        n += 1;
        let p = &p;
        async move { ce(p, "payments", &format!("late-{n}"), "late").await.status == 404 }
    });
    assert!(refused.await, "events for a topic nobody subscribes to any more must be refused");
    let last = format!("late-{n}");
    let letters = p.dead_letters();
    assert!(letters.iter().all(|l| l["event"]["id"] != last.as_str()), "refused, not written: {letters:?}");
}

#[tokio::test]
async fn retries_then_success_and_dead_letters_after_the_last_attempt() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let flaky = |name: &str, fail: u32| {
        format!(
            "  {name}:\n    fprocess: {}\n    environment:\n      FAIL_TIMES: {fail}\n      COUNTER_FILE: {}/{name}.count\n    annotations:\n      topic: {name}\n      com.openfaas.retry.attempts: \"3\"\n      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 50ms\n",
            fixture("flaky.sh"),
            d.display()
        )
    };
    let stack = format!("functions:\n{}{}", flaky("recovers", 2), flaky("doomed", 100));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    // Three quick attempts must reach a running replica, not one still starting.
    p.wait_ready(&["recovers", "doomed"]).await;
    hub_ready(&p).await;

    let r = ce(&p, "recovers", "r-1", "eventually").await;
    assert_eq!((r.status, r.json()["delivered"].as_u64()), (200, Some(1)), "{}", r.text());
    assert_eq!(std::fs::read_to_string(d.join("recovers.count")).unwrap().trim(), "3");

    let r = ce(&p, "doomed", "d-1", "never").await;
    assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    let letters = p.dead_letters();
    let l = &letters[0];
    assert_eq!(l["function"], "doomed.openfaas-fn");
    assert_eq!(l["status"], 500);
    assert_eq!(l["attempts"], 3);
    assert_eq!(l["source"], "cloudevents");
    assert_eq!(l["event"]["payload"], "never");
    assert_eq!(l["event"]["cloudevent"]["id"], "d-1");
    assert!(l["error"].as_str().unwrap().contains("500"));

    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains(r#"switchboard_events_retried_total{function="recovers.openfaas-fn",source="cloudevents",topic="recovers"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"switchboard_events_dead_lettered_total{function="doomed.openfaas-fn",source="cloudevents",topic="doomed"} 1"#), "{metrics}");
}

#[tokio::test]
async fn the_rate_limit_holds_under_a_burst() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let annotations =
        "      topic: burst\n      com.switchboard.rate_limit: \"5\"\n      com.switchboard.burst: \"1\"\n";
    let stack = format!("functions:\n{}", recorder_fn("limited", &d, "", annotations));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    hub_ready(&p).await;
    let batch: Vec<serde_json::Value> = (0..6)
        .map(|i| serde_json::json!({"specversion":"1.0","id":format!("e{i}"),"source":"/t","type":"burst","data":i}))
        .collect();
    let r = call(
        "POST",
        &format!("{}/", p.ce_url),
        &[("content-type", "application/cloudevents-batch+json")],
        serde_json::to_string(&batch).unwrap(),
    )
    .await;
    assert_eq!(r.json()["delivered"], 6, "{}", r.text());
    let mut times: Vec<f64> = calls(&d.join("limited.log")).iter().map(|c| c.time).collect();
    times.sort_by(f64::total_cmp);
    // 6 events at 5/s with a bucket of 1 cannot all start within 1 s.
    let spread = times[5] - times[0];
    assert!(spread >= 0.95, "6 events started within {spread:.3}s despite a 5/s limit");
}

#[tokio::test]
async fn cron_skips_ticks_while_the_previous_run_is_in_flight() {
    let dir = tempdir();
    let record = dir.path().join("slow.log");
    // A run takes 1.5 s and the schedule ticks every second.
    let stack =
        envlog_stack("slow", "cron-function", &record, "      SLEEP: \"1.5\"\n", "      schedule: \"* * * * * *\"\n");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    let ok = eventually(Duration::from_secs(20), || async { envlog(&record).len() >= 3 }).await;
    assert!(ok, "cron runs missing:\n{}", p.proc.output());
    let fired: Vec<f64> = envlog(&record)
        .iter()
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("body=")))
        .map(|body| {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let t = v["fire_time"].as_str().unwrap().to_string();
            humantime_secs(&t)
        })
        .collect();
    for pair in fired.windows(2) {
        // Runs never overlap: each fires after the previous one finished.
        assert!(pair[1] - pair[0] >= 1.5, "runs overlapped: fired at {fired:?}");
    }
    assert!(p.proc.output().contains("tick skipped"), "skipped ticks are not logged");
}

fn humantime_secs(rfc3339: &str) -> f64 {
    // 2026-11-22T23:08:27.850411+00:00 → seconds within the day, enough for differences.
    let time = rfc3339.split('T').nth(1).unwrap();
    let hms = &time[..time.find(['+', '-', 'Z']).unwrap_or(time.len())];
    let parts: Vec<f64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[tokio::test]
async fn cloudevents_answer_429_when_the_hub_is_full() {
    let dir = tempdir();
    let record = dir.path().join("busy.log");
    let stack = envlog_stack("busy", "busy", &record, "      SLEEP: \"2\"\n", "");
    let p = Platform::start_in(dir, &config_with("  max_pending: 1\n", ""), &stack, &[]).await;
    hub_ready(&p).await;
    let first = {
        let url = p.ce_url.clone();
        tokio::spawn(async move {
            call(
                "POST",
                &format!("{url}/"),
                &[("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "busy"), ("ce-specversion", "1.0")],
                "one",
            )
            .await
        })
    };
    // Let the first request take the only slot before probing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut refused = None;
    for i in 0..30 {
        let r = ce(&p, "busy", &format!("x{i}"), "two").await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("no 429 while the only slot was taken");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(first.await.unwrap().status, 200);
}

#[tokio::test]
async fn cloudevents_answer_503_when_an_event_is_neither_delivered_nor_dead_lettered() {
    // The dead-letter store refuses the letter: it would not fit.
    let cfg = config_with("  dead_letter_max_size: 10\n", "");
    let p = Platform::start(&cfg, &failing_function("broken", "order.failed")).await;
    hub_ready(&p).await;
    let r = ce(&p, "order.failed", "f-1", "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(r.text().contains("dead-letter sink"), "{}", r.text());
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains("switchboard_events_failed_total{function=\"broken.openfaas-fn\""), "{metrics}");
}

#[tokio::test]
async fn ordered_keys_run_in_order_per_key_and_in_parallel_across_keys() {
    let dir = tempdir();
    let file = dir.path().join("ordered.log");
    let stack = format!(
        "functions:\n{}",
        recorder_fn("ordered", dir.path(), "      SLEEP: \"1\"\n", "      topic: order.step\n")
    );
    let p = Platform::start_in(dir, &config_with("  ordered_keys: true\n", ""), &stack, &[]).await;
    hub_ready(&p).await;

    // Two keys, interleaved, in one batch: tickets are taken in this order.
    let event = |id: &str, key: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"order.step","partitionkey":"{key}","data":"{id}"}}"#
        )
    };
    let batch = format!(
        "[{}]",
        [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("a3", "a")].map(|(i, k)| event(i, k)).join(",")
    );
    let r =
        call("POST", &format!("{}/", p.ce_url), &[("content-type", "application/cloudevents-batch+json")], batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = calls(&file);
    assert_eq!(got.len(), 5, "{got:?}");
    let start = |id: &str| got.iter().find(|c| c.message_id == id).map(|c| c.time).expect(id);
    // Same key: each starts only after the previous one's 1 s invocation ended.
    for (earlier, later) in [("a1", "a2"), ("a2", "a3"), ("b1", "b2")] {
        assert!(start(later) - start(earlier) >= 0.9, "{later} did not wait for {earlier}: {got:?}");
    }
    // Different keys do not wait for each other.
    assert!(start("b1") < start("a2"), "key b waited for key a: {got:?}");
}

/// `hub.async_invocation`: events go through `/async-function`, the answer is
/// 202 once the gateway's queue has them, and the result reaches
/// `hub.callback_url`.
#[tokio::test]
async fn asynchronous_invocation_answers_202_and_calls_back() {
    let (cb, mut rx) = recorder().await;
    let hub = format!("  async_invocation: true\n  callback_url: {cb}/done\n");
    let stack = "functions:\n  env:\n    fprocess: env\n    annotations:\n      topic: async.orders\n";
    let p = Platform::start(&config_with(&hub, ""), stack).await;
    hub_ready(&p).await;

    let r = ce(&p, "async.orders", "a-1", "queued").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["delivered"], 1);
    let got = receive(&mut rx, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "no callback; output:\n{}", p.proc.output());
    let done = &got[0];
    assert_eq!(done.path, "/done");
    assert_eq!(done.headers["x-function-status"], "200");
    assert_eq!(done.headers["x-function-name"], "env.openfaas-fn");
    for expected in ["Http_X_Topic=async.orders", "Http_Ce_Id=a-1", "Http_X_Connector=switchboard/cloudevents"] {
        assert!(done.body.contains(expected), "missing {expected} in {}", done.body);
    }
}

/// A function's `Retry-After` sets the wait before the next attempt, within
/// the retry window, rather than the policy's own backoff (10 ms here).
#[tokio::test]
async fn retry_after_from_the_function_sets_the_wait() {
    let dir = tempdir();
    let record = dir.path().join("busy.log");
    let stack = format!(
        "functions:\n  busy:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: {}\n    annotations:\n      topic: busy\n      com.openfaas.retry.min_wait: 10ms\n      com.openfaas.retry.max_wait: 5s\n",
        fixture("busy.py"),
        record.display()
    );
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["busy"]).await;
    hub_ready(&p).await;

    let r = ce(&p, "busy", "r-1", "x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["delivered"], 1);
    let times: Vec<f64> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| l.parse().unwrap()).collect::<Vec<_>>();
    assert_eq!(times.len(), 2, "{times:?}");
    assert!(times[1] - times[0] >= 0.9, "retried {:.3} s after Retry-After: 1", times[1] - times[0]);
}

/// `cloudevents.topic_attribute` names an extension whose value is the topic.
#[tokio::test]
async fn cloudevents_topic_from_a_configured_extension() {
    let dir = tempdir();
    let stack = format!("functions:\n{}", recorder_fn("eu", dir.path(), "", "      topic: orders.eu\n"));
    let file = dir.path().join("eu.log");
    let cfg = config("").replace("CE_PORT\n", "CE_PORT\n  topic_attribute: route\n");
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    hub_ready(&p).await;

    let event = |id: &'static str, route: Option<&'static str>| {
        let mut headers =
            vec![("ce-id", id), ("ce-source", "/t"), ("ce-type", "order.created"), ("ce-specversion", "1.0")];
        headers.extend(route.map(|r| ("ce-route", r)));
        let url = format!("{}/", p.ce_url);
        async move { call("POST", &url, &headers, id).await }
    };
    let r = event("routed", Some("orders.eu")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["delivered"], 1);
    let got = wait_calls(&file, 1).await;
    assert_eq!((got[0].topic.as_str(), got[0].ce_type.as_str()), ("orders.eu", "order.created"));

    let r = event("unrouted", None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("\"route\"") && r.text().contains("cloudevents.topic_attribute"), "{}", r.text());
}

/// A batch larger than the hub ever admits at once is refused for what it
/// is (413), not answered 429 forever; events without an id are refused.
#[tokio::test]
async fn oversized_batches_and_empty_ids_are_refused() {
    let p = Platform::start(&config_with("  max_pending: 2\n", ""), NO_STACK).await;
    hub_ready(&p).await;
    p.receiving().await;
    let event = |id: &str| serde_json::json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t", "data": 1});
    let batch = serde_json::json!([event("1"), event("2"), event("3")]).to_string();
    let r = call("POST", &p.ce_url, &[("content-type", "application/cloudevents-batch+json")], batch).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("hub.max_pending (2)"), "{}", r.text());
    let r = ce(&p, "t", "", "no id").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("id attribute is empty"), "{}", r.text());
}

/// Events nobody subscribes to are refused with 404 (the sender has the
/// answer) and never written: with `hub.auth: off` anyone on the machine
/// could otherwise fill the disk with dead letters. They share one metric
/// series, however many types a sender makes up.
#[tokio::test]
async fn unrouted_events_are_refused_and_share_one_series() {
    let dir = tempdir();
    let stack = format!("functions:\n{}", recorder_fn("known", dir.path(), "", "      topic: known\n"));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    hub_ready(&p).await;
    p.receiving().await;
    for i in 0..3 {
        let r = ce(&p, &format!("made.up.{i}"), &format!("id-{i}"), "x").await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(
            r.text().contains(&format!("made.up.{i}")) && r.text().contains("nothing was delivered"),
            "{}",
            r.text()
        );
    }
    // A batch with one unrouted event is refused whole, naming it.
    let event = |id: &str, ty: &str| serde_json::json!({"specversion": "1.0", "id": id, "source": "/t", "type": ty});
    let batch = serde_json::json!([event("b1", "known"), event("b2", "nobody")]).to_string();
    let r = call("POST", &p.ce_url, &[("content-type", "application/cloudevents-batch+json")], batch).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("\"nobody\"") && !r.text().contains("\"known\""), "{}", r.text());
    assert!(p.dead_letters().is_empty(), "{:?}", p.dead_letters());
    assert!(p.dir.path().join("known.log").metadata().map_or(true, |m| m.len() == 0), "nothing of the batch delivered");
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(
        metrics.contains(r#"switchboard_events_received_total{source="cloudevents",topic="(unrouted)"} 4"#),
        "{metrics}"
    );
    assert!(!metrics.contains("made.up"), "{metrics}");
}

/// With no source enabled, `up` runs the gateway until told to stop; it
/// used to exit 0 right after its banner.
#[tokio::test]
async fn up_without_sources_keeps_running() {
    let p = Platform::start(
        &config("cron:\n  enabled: false\ncloudevents:\n  enabled: false\n")
            .replace("cloudevents:\n  listen: 127.0.0.1:CE_PORT\n", ""),
        NO_STACK,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&format!("{}/healthz", p.url)).await.status, 200, "{}", p.proc.output());
    assert_eq!(get(&format!("{}/healthz", p.hub_url)).await.status, 200);
}

/// Structured and batched events reach the function with their data bytes
/// as sent (key order and spacing kept, so a signature over them holds), and
/// a `traceparent` extension becomes the W3C header the function's tracing
/// reads.
#[tokio::test]
async fn cloudevents_data_is_passed_through_unchanged() {
    let dir = tempdir();
    let record = dir.path().join("env.log");
    let p = Platform::start_in(dir, &config(""), &envlog_stack("exact", "exact", &record, "", ""), &[]).await;
    hub_ready(&p).await;
    p.receiving().await;
    let data = r#"{"z": 1,  "a": [2, 3], "m": {"y": true, "b": null}}"#;
    let structured = format!(
        r#"{{"specversion":"1.0","id":"s-1","source":"/t","type":"exact","datacontenttype":"application/json","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":{data}}}"#
    );
    let r = call("POST", &p.ce_url, &[("content-type", "application/cloudevents+json")], structured).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let batch = format!(r#"[{{"specversion":"1.0","id":"b-1","source":"/t","type":"exact","data":{data}}}]"#);
    let r = call("POST", &p.ce_url, &[("content-type", "application/cloudevents-batch+json")], batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = eventually(Duration::from_secs(10), || async { envlog(&record).len() >= 2 }).await;
    assert!(calls, "{}", p.proc.output());
    let calls = envlog(&record);
    for call in &calls {
        assert!(call.contains(&format!("body={data}")), "data changed on the way:\n{call}");
    }
    assert!(
        calls[0].contains("Http_Traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "{}",
        calls[0]
    );
}

/// `cron.body: empty` sends what OpenFaaS's cron-connector sends: nothing.
#[tokio::test]
async fn cron_can_send_cron_connectors_empty_body() {
    let dir = tempdir();
    let log = dir.path().join("tick.log");
    let stack = format!(
        "functions:\n{}",
        recorder_fn("tick", dir.path(), "", "      topic: cron-function\n      schedule: \"* * * * * *\"\n")
    );
    let p = Platform::start_in(dir, &config("cron:\n  body: empty\n"), &stack, &[]).await;
    let calls = wait_calls(&log, 1).await;
    assert_eq!(calls[0].body, "", "{:?}\n{}", calls[0], p.proc.output());
}

/// An answer over the most the hub reads (64 MiB) would be the same at
/// every attempt: the event is dead-lettered at once, and the function,
/// which may have side effects, runs once.
#[tokio::test]
async fn an_answer_too_large_to_read_is_dead_lettered_at_once() {
    let dir = tempdir();
    let record = dir.path().join("big.log");
    let stack = too_large_answer(&record, "    annotations:\n      topic: big\n");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["big"]).await;
    hub_ready(&p).await;
    p.receiving().await;
    let r = ce(&p, "big", "b-1", "go").await;
    assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    let letters = p.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["attempts"], 1, "{letters:?}");
    assert!(letters[0]["error"].as_str().unwrap().contains("over 67108864 bytes"), "{letters:?}");
    let calls = std::fs::read_to_string(&record).unwrap_or_default().lines().count();
    assert_eq!(calls, 1, "the function ran again");
}

/// The dead-letter store has a size bound: past it, letters are refused
/// and their events left with their sender (503 here, redelivery for a
/// broker), the hub is unready and says why, and a metric shows it; a
/// purge ends it.
#[tokio::test]
async fn a_full_dead_letter_store_refuses_letters_and_says_so() {
    let stack = failing_function("broken", "fail");
    let p = Platform::start(&config_with("  dead_letter_max_size: 2000\n", ""), &stack).await;
    p.wait_ready(&["broken"]).await;
    hub_ready(&p).await;
    p.receiving().await;
    let payload = "p".repeat(300);
    for id in ["d-1", "d-2"] {
        let r = ce(&p, "fail", id, &payload).await;
        assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    }
    let r = ce(&p, "fail", "d-3", &payload).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("is full") && r.text().contains("hub.dead_letter_max_size (2000 bytes)"), "{}", r.text());
    assert_eq!(p.dead_letters().len(), 2);
    let ready = get(&format!("{}/readyz", p.hub_url)).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("dead letters refused"), "{}", ready.text());
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains("switchboard_dead_letters_refused 1"), "{metrics}");

    // The operator purges the letters: the hub takes letters again.
    let auth = p.auth.clone().unwrap();
    let purge = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let r = call("POST", &format!("{}/dead-letters/purge", p.hub_url), &purge, r#"{"all":true}"#).await;
    assert_eq!(r.json()["purged"].as_u64(), Some(2), "{}", r.text());
    hub_ready(&p).await;
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains("switchboard_dead_letters_refused 0"), "{metrics}");
    let r = ce(&p, "fail", "d-3", &payload).await;
    assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
}
