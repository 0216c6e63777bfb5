//! OpenFaaS's scaling behaviours: scale from zero on the first call (sync,
//! queued or from an event), and idle functions scaled to zero.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// An HTTP-mode function that notes each start of its process in `starts`.
fn counted(name: &str, starts: &Path, labels: &str) -> String {
    format!(
        "functions:\n  {name}:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      STARTS_FILE: {}\n    annotations:\n      topic: wake\n    labels:\n{labels}",
        fixture("crashy.py"),
        starts.display()
    )
}

fn starts(file: &Path) -> usize {
    std::fs::read_to_string(file).unwrap_or_default().lines().count()
}

async fn replicas(p: &Platform, name: &str) -> u64 {
    p.api("GET", &format!("/system/function/{name}"), "").await.json()["replicas"].as_u64().unwrap_or(99)
}

async fn scale_to_zero(p: &Platform, name: &str) {
    let r = p.api("POST", &format!("/system/scale-function/{name}"), r#"{"replicas":0}"#).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(replicas(p, name).await, 0);
}

#[tokio::test]
async fn a_function_at_zero_starts_on_its_first_call() {
    let dir = tempdir();
    let file = dir.path().join("starts.log");
    let stack = counted("lazy", &file, "      com.openfaas.scale.min: \"0\"\n");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    assert_eq!(replicas(&p, "lazy").await, 0, "scale.min 0 deploys none");

    // Twenty calls at once against zero: all answered, one cold start.
    let url = format!("{}/function/lazy", p.url);
    let calls = (0..20).map(|_| get(&url));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|r| r.status == 200), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(starts(&file), 1, "one cold start for twenty calls");
    assert!(p.proc.output().contains("scaled from zero"), "{}", p.proc.output());

    // A queued call, after a scale to zero through the API.
    scale_to_zero(&p, "lazy").await;
    let (cb, mut rx) = recorder().await;
    let r = call("POST", &format!("{}/async-function/lazy", p.url), &[("X-Callback-Url", &cb)], "later").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let got = receive(&mut rx, 1, Duration::from_secs(30)).await;
    assert_eq!(got.first().map(|g| g.headers["x-function-status"].as_str()), Some("200"), "{got:?}");
    assert_eq!(starts(&file), 2);

    // An event from the hub.
    scale_to_zero(&p, "lazy").await;
    p.receiving().await;
    let headers = [("ce-id", "w-1"), ("ce-source", "/t"), ("ce-type", "wake"), ("ce-specversion", "1.0")];
    let r = call("POST", &p.ce_url, &headers, "event").await;
    assert_eq!((r.status, r.json()["delivered"].as_u64()), (200, Some(1)), "{}", r.text());
    assert_eq!(starts(&file), 3);
}

#[tokio::test]
async fn an_idle_function_scales_to_zero_and_back() {
    let dir = tempdir();
    let file = dir.path().join("starts.log");
    let labels = "      com.openfaas.scale.zero: \"true\"\n      com.openfaas.scale.zero-duration: 2s\n";
    let p = Platform::start_in(dir, &config(""), &counted("idler", &file, labels), &[]).await;
    p.wait_ready(&["idler"]).await;
    let url = format!("{}/function/idler", p.url);
    // Calls keep it up.
    for _ in 0..6 {
        assert_eq!(get(&url).await.status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!((replicas(&p, "idler").await, starts(&file)), (1, 1), "scaled down while in use");
    let idle = eventually(Duration::from_secs(10), || async { replicas(&p, "idler").await == 0 }).await;
    assert!(idle, "never scaled to zero:\n{}", p.proc.output());
    assert!(p.proc.output().contains("scaled to zero: idle"), "{}", p.proc.output());
    assert_eq!(get(&url).await.status, 200, "answered from zero");
    assert_eq!((replicas(&p, "idler").await, starts(&file)), (1, 2));

    for (label, value) in [("com.openfaas.scale.zero", "yes"), ("com.openfaas.scale.zero-duration", "soon")] {
        let mut labels = serde_json::json!({"com.openfaas.scale.zero": "true"});
        labels[label] = value.into();
        let d = serde_json::json!({"service": "bad", "image": "x", "envProcess": "cat", "labels": labels});
        let r = p.api("POST", "/system/functions", &d.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(label), "{}", r.text());
    }
}
