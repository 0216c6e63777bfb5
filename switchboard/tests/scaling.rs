//! OpenFaaS's scaling behaviours: scale from zero on the first call (sync,
//! queued or from an event), idle functions scaled to zero, and replicas
//! that follow the load (calls a second, calls in flight, CPU).

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

async fn available(p: &Platform, name: &str) -> u64 {
    p.api("GET", &format!("/system/function/{name}"), "").await.json()["availableReplicas"].as_u64().unwrap_or(99)
}

/// The gateway's metrics lines that begin with `name`.
async fn metric(p: &Platform, name: &str) -> Vec<String> {
    let text = get(&format!("{}/metrics", p.url)).await.text();
    text.lines().filter(|l| l.starts_with(name)).map(str::to_string).collect()
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
}

#[tokio::test]
async fn a_steady_load_scales_a_function_to_its_maximum_and_back() {
    let dir = tempdir();
    let file = dir.path().join("starts.log");
    let stack = counted("steady", &file, "      com.openfaas.scale.max: \"2\"\n");
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["steady"]).await;
    let url = format!("{}/function/steady", p.url);

    // 2.5 calls a second is under the 5 a replica carries: nothing changes.
    let light = Callers::start(&url, 1, Duration::from_millis(400));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(replicas(&p, "steady").await, 1, "scaled at half the target:\n{}", p.proc.output());

    // 5 a second from two callers (CE's alert threshold): a second replica.
    let more = Callers::start(&url, 1, Duration::from_millis(400));
    let up = eventually(Duration::from_secs(60), || async { available(&p, "steady").await == 2 }).await;
    assert!(up, "never scaled up:\n{}", p.proc.output());
    let load = metric(&p, "switchboard_function_load{function_name=\"steady.openfaas-fn\",scaling_type=\"rps\"}").await;
    let rps: f64 = load.first().and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0);
    assert!(rps > 4.0, "{load:?}");

    // The load stops: back to the minimum after the cool-down.
    drop((light, more));
    let down = eventually(Duration::from_secs(60), || async { replicas(&p, "steady").await == 1 }).await;
    assert!(down, "never scaled down:\n{}", p.proc.output());
    assert_eq!(get(&url).await.status, 200);

    // Each decision is logged once, with its reason, and counted.
    let out = p.proc.output();
    let decisions: Vec<&str> = out.lines().filter(|l| l.contains("autoscaled")).collect();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    assert!(decisions[0].contains("from=1 to=2") && decisions[0].contains("rps load"), "{decisions:#?}");
    assert!(decisions[1].contains("from=2 to=1"), "{decisions:#?}");
    let counted = metric(&p, "switchboard_autoscaler_decisions_total").await;
    for direction in ["up", "down"] {
        let line = format!(
            "switchboard_autoscaler_decisions_total{{direction=\"{direction}\",function_name=\"steady.openfaas-fn\"}} 1"
        );
        assert!(counted.contains(&line), "{counted:?}");
    }
    let target = metric(&p, "gateway_service_target_load").await;
    assert_eq!(target, ["gateway_service_target_load{function_name=\"steady.openfaas-fn\",scaling_type=\"rps\"} 5"]);
    assert_eq!(starts(&file), 2, "one replica started for the load");
}

#[tokio::test]
async fn calls_in_flight_scale_a_slow_function() {
    let labels = "      com.openfaas.scale.type: capacity\n      com.openfaas.scale.target: \"2\"\n      \
                  com.openfaas.scale.target-proportion: \"1.0\"\n      com.openfaas.scale.max: \"3\"\n      \
                  com.openfaas.scale.factor: \"100\"\n      com.openfaas.scale.down.window: 2s\n";
    let stack = format!(
        "functions:\n  slow:\n    fprocess: sh {}\n    environment:\n      SLEEP: \"1\"\n    labels:\n{labels}",
        fixture("slow.sh")
    );
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["slow"]).await;
    // Six calls of a second each in flight, two a replica: three replicas.
    up_and_back(&p, "slow", 6, 3).await;
    assert!(p.proc.output().contains("capacity load"), "{}", p.proc.output());
}

/// Calls `name` from `callers` back to back until it has `max` replicas
/// ready, then stops, and waits for it to be back to one.
async fn up_and_back(p: &Platform, name: &str, callers: usize, max: u64) {
    let load = Callers::start(&format!("{}/function/{name}", p.url), callers, Duration::from_millis(10));
    let up = eventually(Duration::from_secs(60), || async { available(p, name).await == max }).await;
    assert!(up, "never scaled to {max}:\n{}", p.proc.output());
    drop(load);
    let down = eventually(Duration::from_secs(60), || async { replicas(p, name).await == 1 }).await;
    assert!(down, "never scaled down:\n{}", p.proc.output());
}

#[tokio::test]
async fn cpu_use_scales_a_busy_function() {
    let dir = tempdir();
    // Each call spins a shell for a while: its CPU, not its calls, is the load.
    let burn = dir.path().join("burn.sh");
    std::fs::write(&burn, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo burnt\n").unwrap();
    let labels = "      com.openfaas.scale.type: cpu\n      com.openfaas.scale.target: \"100\"\n      \
                  com.openfaas.scale.target-proportion: \"1.0\"\n      com.openfaas.scale.max: \"2\"\n      \
                  com.openfaas.scale.down.window: 2s\n";
    let stack = format!("functions:\n  burner:\n    fprocess: sh {}\n    labels:\n{labels}", burn.display());
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["burner"]).await;
    assert_eq!(post(&format!("{}/function/burner", p.url), "").await.text(), "burnt\n");
    up_and_back(&p, "burner", 2, 2).await;
    assert!(p.proc.output().contains("cpu load"), "{}", p.proc.output());
}

/// A call that runs longer than the idle time keeps its function up; the
/// idle time counts from its end.
#[tokio::test]
async fn a_call_in_flight_keeps_an_idle_function_up() {
    let labels = "      com.openfaas.scale.zero: \"true\"\n      com.openfaas.scale.zero-duration: 1s\n";
    let stack = format!(
        "functions:\n  long:\n    fprocess: sh {}\n    environment:\n      SLEEP: \"3\"\n    labels:\n{labels}",
        fixture("slow.sh")
    );
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["long"]).await;
    let url = format!("{}/function/long", p.url);
    let call = tokio::spawn(async move { post(&url, "still here").await });
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(replicas(&p, "long").await, 1, "scaled to zero with a call in flight:\n{}", p.proc.output());
    }
    assert_eq!(call.await.unwrap().text(), "still here");
    let idle = eventually(Duration::from_secs(10), || async { replicas(&p, "long").await == 0 }).await;
    assert!(idle, "never scaled to zero after the call:\n{}", p.proc.output());
}

#[tokio::test]
async fn bad_scaling_labels_are_refused_naming_them() {
    let p = Platform::start(&config(""), NO_STACK).await;
    for (label, value) in [
        ("com.openfaas.scale.zero", "yes"),
        ("com.openfaas.scale.zero-duration", "soon"),
        ("com.openfaas.scale.type", "memory"),
        ("com.openfaas.scale.target", "lots"),
        ("com.openfaas.scale.target-proportion", "0"),
        ("com.openfaas.scale.factor", "120"),
        ("com.openfaas.scale.down.window", "1h"),
    ] {
        // On a function that scales to zero, so its zero-duration is read.
        let mut labels = serde_json::json!({"com.openfaas.scale.zero": "true"});
        labels[label] = value.into();
        let d = serde_json::json!({"service": "bad", "image": "x", "envProcess": "cat", "labels": labels});
        let r = p.api("POST", "/system/functions", &d.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(label) && r.text().contains(value), "{}", r.text());
    }
}
