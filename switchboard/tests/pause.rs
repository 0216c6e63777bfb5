//! Pausing a function's events: CloudEvents are refused with 503 while it
//! is paused, cron ticks are missed, the pause outlives a restart, and the
//! annotation pauses too. (Each broker source holds its events for a
//! paused function in tests/conformance.rs.)

mod common;

use common::*;
use std::time::Duration;

async fn admin(p: &Platform, method: &str, path: &str) -> Resp {
    let auth = p.auth.clone().expect("credentials");
    call(method, &format!("{}{path}", p.hub_url), &[("Authorization", &auth)], "").await
}

async fn ce(p: &Platform, ty: &str, id: &str) -> Resp {
    let headers = [("ce-id", id), ("ce-source", "/shop"), ("ce-type", ty), ("ce-specversion", "1.0")];
    call("POST", &p.ce_url, &headers, id.to_string()).await
}

#[tokio::test]
async fn a_paused_function_refuses_cloudevents_and_stays_paused_across_a_restart() {
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let stack = format!("functions:\n{}", conform_fn("orders", "order.created", &record, ""));
    let mut p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["orders"]).await;
    p.receiving().await;

    assert_eq!(call("POST", &format!("{}/functions/orders/pause", p.hub_url), &[], "").await.status, 401);
    assert_eq!(admin(&p, "POST", "/functions/nobody/pause").await.status, 404);
    let r = admin(&p, "POST", "/functions/orders/pause").await;
    assert_eq!((r.status, r.json()["function"].as_str()), (200, Some("orders.openfaas-fn")), "{}", r.text());
    let r = ce(&p, "order.created", "while-paused").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(r.text().contains("paused"), "{}", r.text());
    assert!(calls(&record).is_empty() && p.dead_letters().is_empty());
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains(r#"switchboard_function_paused{function="orders.openfaas-fn"} 1"#), "{metrics}");

    // A restart keeps the pause.
    p.proc.stop();
    p.proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    p.wait_ready(&["orders"]).await;
    p.receiving().await;
    let listed = eventually(Duration::from_secs(10), || async {
        admin(&p, "GET", "/topics").await.json()["topics"][0]["functions"][0]["paused"] == true
    });
    assert!(listed.await, "{}", admin(&p, "GET", "/topics").await.text());
    assert_eq!(ce(&p, "order.created", "after-restart").await.status, 503);

    // Resumed: the sender's next try is delivered.
    assert_eq!(admin(&p, "POST", "/functions/orders.openfaas-fn/resume").await.status, 200);
    let r = ce(&p, "order.created", "while-paused").await;
    assert_eq!((r.status, r.json()["delivered"].as_u64()), (200, Some(1)), "{}", r.text());
    assert_eq!(calls_of(&record, "while-paused").len(), 1);
}

#[tokio::test]
async fn the_paused_annotation_pauses_and_only_its_removal_resumes() {
    let dir = tempdir();
    let record = dir.path().join("calls.jsonl");
    let annotation = "      com.switchboard.paused: \"true\"\n";
    let stack = format!("functions:\n{}", conform_fn("orders", "order.created", &record, annotation));
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["orders"]).await;
    p.receiving().await;
    assert_eq!(ce(&p, "order.created", "a").await.status, 503);
    let r = admin(&p, "POST", "/functions/orders/resume").await;
    assert!(r.status == 409 && r.text().contains("com.switchboard.paused"), "{}", r.text());
}

#[tokio::test]
async fn cron_ticks_of_a_paused_function_are_missed() {
    let dir = tempdir();
    let stack = format!(
        "functions:\n{}",
        recorder_fn("tick", dir.path(), "", "      topic: cron-function\n      schedule: \"* * * * * *\"\n")
    );
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["tick"]).await;
    let ticks = || std::fs::read_to_string(p.dir.path().join("tick.log")).unwrap_or_default().lines().count();
    let ticking = eventually(Duration::from_secs(10), || async { ticks() >= 1 });
    assert!(ticking.await, "never ticked:\n{}", p.proc.output());
    assert_eq!(admin(&p, "POST", "/functions/tick/pause").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await; // a run in flight at the pause ends
    let before = ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ticks(), before, "ticked while paused");
    let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
    assert!(metrics.contains(r#"outcome="paused""#), "{metrics}");
    assert_eq!(admin(&p, "POST", "/functions/tick/resume").await.status, 200);
    let again = eventually(Duration::from_secs(10), || async { ticks() > before });
    assert!(again.await, "never ticked again:\n{}", p.proc.output());
}

/// With `cron.missed: run_once`, the latest slot missed while the function
/// was paused runs once at the resume, before the next slot.
#[tokio::test]
async fn with_run_once_the_latest_slot_missed_while_paused_runs_at_the_resume() {
    let dir = tempdir();
    let stack = format!(
        "functions:\n{}",
        recorder_fn("tick", dir.path(), "", "      topic: cron-function\n      schedule: \"*/4 * * * * *\"\n")
    );
    let cfg = config(
        "cron:\n  coordination: redis\n  missed: run_once\n  lease: 2s\nredis:\n  url: redis://127.0.0.1:6379\n",
    );
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["tick"]).await;
    // The slots run, by their scheduled time (the tick's JSON body).
    let slots = || -> Vec<std::time::SystemTime> {
        let log = std::fs::read_to_string(p.dir.path().join("tick.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.rsplit('|').next())
            .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
            .filter_map(|tick| humantime::parse_rfc3339(&tick["scheduled_time"].as_str()?.replace("+00:00", "Z")).ok())
            .collect()
    };
    let ticking = eventually(Duration::from_secs(10), || async { !slots().is_empty() });
    assert!(ticking.await, "never ticked:\n{}", p.proc.output());
    assert_eq!(admin(&p, "POST", "/functions/tick/pause").await.status, 200);
    let paused_at = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // at least one slot passes
    let before = slots().len();
    assert_eq!(admin(&p, "POST", "/functions/tick/resume").await.status, 200);
    let resumed_at = std::time::SystemTime::now();
    let caught_up = eventually(Duration::from_secs(3), || async { slots().len() > before });
    assert!(caught_up.await, "the missed slot never ran:\n{}", p.proc.output());
    let missed = slots()[before];
    assert!(missed > paused_at && missed < resumed_at, "not a slot missed while paused: {missed:?}");
    assert_eq!(slots().iter().filter(|s| **s == missed).count(), 1, "run once");
}
