//! The gateway and the process provider, through the real binary.

mod common;
use common::*;
use std::time::Duration;

const STACK: &str = r#"
functions:
  env:
    fprocess: env
  echo:
    fprocess: cat
  sleepy:
    fprocess: sleep 5
"#;

/// The rules of faas-provider's Go types that a listing must meet for Go
/// clients: `createdAt` an RFC 3339 time (never ""), `labels` and
/// `annotations` present as maps (Go dereferences them), `invocationCount`
/// an integer.
fn assert_go_readable(f: &serde_json::Value) {
    let created = f["createdAt"].as_str().unwrap_or_default();
    assert!(humantime::parse_rfc3339_weak(created).is_ok(), "createdAt {created:?}: {f}");
    assert!(f["labels"].is_object() && f["annotations"].is_object(), "{f}");
    assert!(f["invocationCount"].is_u64(), "{f}");
}

async fn platform() -> Platform {
    let p = Platform::start(&config("gateway:\n  upstream_timeout: 1s\n  max_body_size: 1024\n"), STACK).await;
    p.wait_ready(&["env", "echo", "sleepy"]).await;
    p
}

#[tokio::test]
async fn invocation_passes_path_query_and_headers() {
    let p = platform().await;
    let r = call(
        "PUT",
        &format!("{}/function/env/some/path?a=1&b=two", p.url),
        &[("X-Custom", "yes"), ("Connection", "keep-alive, x-hop"), ("X-Hop", "dropped")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.text();
    for expected in [
        "Http_Method=PUT",
        "Http_Path=/some/path",
        "Http_Query=a=1&b=two",
        "Http_X_Custom=yes",
        "Http_X_Call_Id=",
        "Http_X_Start_Time=",
    ] {
        assert!(env.contains(expected), "missing {expected} in:\n{env}");
    }
    assert!(!env.contains("Http_X_Hop"), "hop-by-hop header leaked:\n{env}");
    // The gateway generated a call id, so it echoes it; the watchdog timed the call.
    assert!(r.header("x-call-id").is_some_and(|v| v.len() == 36));
    assert!(r.header("x-start-time").is_some_and(|v| v.parse::<u128>().is_ok()));
    assert!(r.header("x-duration-seconds").is_some_and(|v| v.parse::<f64>().is_ok()));

    // A call id supplied by the caller is forwarded, not echoed.
    let r = call("POST", &format!("{}/function/env", p.url), &[("X-Call-Id", "mine")], "").await;
    assert!(r.text().contains("Http_X_Call_Id=mine"));
    assert_eq!(r.header("x-call-id"), None);
}

#[tokio::test]
async fn errors_have_openfaas_status_codes() {
    let p = platform().await;
    let r = post(&format!("{}/function/missing", p.url), "").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("missing.openfaas-fn"), "{}", r.text());

    let r = post(&format!("{}/function/echo", p.url), &"x".repeat(2000)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max_body_size"));
    let r = post(&format!("{}/function/echo", p.url), &"x".repeat(1000)).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));

    let r = post(&format!("{}/function/sleepy", p.url), "").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("upstream_timeout"), "{}", r.text());
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let dead = free_port();
    let cfg = format!(
        "provider:\n  kind: static\n  functions:\n    gone:\n      upstream: http://127.0.0.1:{dead}\n      annotations:\n        topic: t\nqueue:\n  enabled: false\nhub:\n  listen: 127.0.0.1:HUB_PORT\ncloudevents:\n  listen: 127.0.0.1:CE_PORT\n"
    );
    let p = Platform::start(&cfg, NO_STACK).await;
    let r = post(&format!("{}/function/gone", p.url), "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("gone.openfaas-fn"));
    let listed = p.api("GET", "/system/functions", "").await.json();
    assert_eq!(listed[0]["annotations"]["topic"], "t");
    // What Go clients (faas-cli, connector-sdk) need to parse it.
    assert_go_readable(&listed[0]);
    assert_go_readable(&p.api("GET", "/system/function/gone", "").await.json());
    let r = post(&format!("{}/async-function/gone", p.url), "").await;
    assert_eq!(r.status, 404, "async is disabled: {}", r.text());
}

#[tokio::test]
async fn deploy_update_delete_lifecycle() {
    let p = platform().await;

    // faas-cli deploys with PUT and falls back to POST on 404.
    let deploy = r#"{"service":"shout","image":"local/shout","envProcess":"tr a-z A-Z","annotations":{"topic":"a,b"},"labels":{"team":"x"}}"#;
    assert_eq!(p.api("PUT", "/system/functions", deploy).await.status, 404);
    assert_eq!(p.api("POST", "/system/functions", deploy).await.status, 202);
    assert_eq!(p.api("POST", "/system/functions", deploy).await.status, 409);
    p.wait_ready(&["shout"]).await;
    assert_eq!(post(&format!("{}/function/shout", p.url), "hi").await.text(), "HI");

    let f = p.api("GET", "/system/function/shout", "").await.json();
    assert_go_readable(&f);
    assert_eq!(f["annotations"]["topic"], "a,b");
    assert_eq!(f["labels"]["team"], "x");
    assert_eq!(f["invocationCount"], 1, "an integer, as Go clients read it");

    let update = r#"{"service":"shout","image":"local/shout","envProcess":"rev"}"#;
    assert_eq!(p.api("PUT", "/system/functions", update).await.status, 202);
    assert!(
        eventually(Duration::from_secs(10), || async {
            post(&format!("{}/function/shout", p.url), "abc").await.text() == "cba"
        })
        .await
    );

    let r = p.api("POST", "/system/functions", r#"{"image":"x"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("service"), "{}", r.text());
    let r = p.api("POST", "/system/functions", r#"{"service":"noproc","image":"x"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("envProcess"), "{}", r.text());

    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"shout"}"#).await.status, 202);
    assert_eq!(post(&format!("{}/function/shout", p.url), "").await.status, 404);
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"shout"}"#).await.status, 404);
    assert_eq!(p.api("GET", "/system/function/shout", "").await.status, 404);
}

#[tokio::test]
async fn namespaces_scaling_info_logs_and_metrics() {
    let p = platform().await;
    let d = r#"{"service":"echo","image":"x","namespace":"team-a","envProcess":"cat"}"#;
    // As in OpenFaaS, only a namespace made for functions takes them.
    let r = p.api("POST", "/system/functions", d).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("namespace \"team-a\" does not exist"), "{}", r.text());
    let unlabelled = p.api("POST", "/system/namespace/", r#"{"name":"team-a"}"#).await;
    assert_eq!(unlabelled.status, 400, "{}", unlabelled.text());
    assert!(unlabelled.text().contains("openfaas"), "{}", unlabelled.text());
    let ns = r#"{"name":"team-a","labels":{"openfaas":"1"},"annotations":{"owner":"a"}}"#;
    assert_eq!(p.api("POST", "/system/namespace/", ns).await.status, 202);
    assert_eq!(p.api("POST", "/system/namespace/", ns).await.status, 409);
    assert_eq!(p.api("GET", "/system/namespace/team-a", "").await.json()["annotations"]["owner"], "a");
    assert_eq!(p.api("GET", "/system/namespace/nope", "").await.status, 404);
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);
    p.wait_ready(&["echo.team-a"]).await;
    assert_eq!(post(&format!("{}/function/echo.team-a", p.url), "ns").await.text(), "ns");
    let ns = p.api("GET", "/system/namespaces", "").await.json();
    assert_eq!(ns, serde_json::json!(["openfaas-fn", "team-a"]));
    assert_eq!(p.api("GET", "/system/functions?namespace=team-a", "").await.json().as_array().unwrap().len(), 1);
    let r = p.api("DELETE", "/system/namespace/team-a", "").await;
    assert_eq!(r.status, 409, "a namespace with functions: {}", r.text());
    let updated = r#"{"labels":{"openfaas":"1"},"annotations":{"owner":"b"}}"#;
    assert_eq!(p.api("PUT", "/system/namespace/team-a", updated).await.status, 202);
    assert_eq!(p.api("GET", "/system/namespace/team-a", "").await.json()["annotations"]["owner"], "b");
    let gone = r#"{"functionName":"echo","namespace":"team-a"}"#;
    assert_eq!(p.api("DELETE", "/system/functions", gone).await.status, 202);
    assert_eq!(p.api("DELETE", "/system/namespace/team-a", "").await.status, 202);
    assert_eq!(p.api("GET", "/system/namespaces", "").await.json(), serde_json::json!(["openfaas-fn"]));
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 400);
    let d = r#"{"service":"echo","image":"x","namespace":"team-a","envProcess":"cat"}"#;
    let ns = r#"{"name":"team-a","labels":{"openfaas":"1"}}"#;
    assert_eq!(p.api("POST", "/system/namespace/", ns).await.status, 202);
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);

    let r = p.api("POST", "/system/scale-function/echo", r#"{"serviceName":"echo","replicas":3}"#).await;
    assert_eq!(r.status, 202);
    p.wait_ready(&["echo"]).await;
    let f = p.api("GET", "/system/function/echo", "").await.json();
    assert_eq!((f["replicas"].as_u64(), f["availableReplicas"].as_u64()), (Some(3), Some(3)));
    for _ in 0..6 {
        assert_eq!(post(&format!("{}/function/echo", p.url), "rr").await.status, 200);
    }
    assert_eq!(p.api("POST", "/system/scale-function/nope", r#"{"replicas":1}"#).await.status, 404);

    let info = p.api("GET", "/system/info", "").await.json();
    assert_eq!(info["provider"]["orchestration"], "process");
    assert!(info["version"]["release"].is_string());

    assert_eq!(get(&format!("{}/healthz", p.url)).await.status, 200);
    let metrics = get(&format!("{}/metrics", p.url)).await.text();
    assert!(
        metrics.contains(r#"gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"} 6"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"gateway_service_count{function_name="echo.openfaas-fn"} 3"#), "{metrics}");
    assert!(metrics.contains("gateway_functions_seconds_bucket"));
    assert!(metrics.contains(r#"gateway_function_invocation_started{function_name="echo.team-a"} 1"#));

    let logs = p.api("GET", "/system/logs?name=echo&tail=2", "").await;
    assert_eq!(logs.header("content-type").as_deref(), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = logs.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", logs.text());
    assert!(lines.iter().all(|l| l["name"] == "echo" && l["namespace"] == "openfaas-fn" && l["timestamp"].is_string()));
    assert_eq!(p.api("GET", "/system/logs", "").await.status, 422);
    assert_eq!(p.api("GET", "/system/logs?name=echo&tail=x", "").await.status, 422);
}

#[tokio::test]
async fn crashed_replicas_are_restarted() {
    let stack = python_function("crashy", "crashy.py");
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["crashy"]).await;
    let url = format!("{}/function/crashy", p.url);
    let first = get(&url).await.text();
    assert!(first.starts_with("pid "), "{first}");
    let _ = try_call("GET", &format!("{url}/crash"), &[], "").await;
    let restarted = eventually(Duration::from_secs(20), || async {
        let r = get(&url).await;
        r.status == 200 && r.text() != first
    })
    .await;
    assert!(restarted, "replica was not restarted; output:\n{}", p.proc.output());
    let logs = p.api("GET", "/system/logs?name=crashy", "").await.text();
    assert!(logs.contains("replica exited"), "{logs}");
}

/// A function writing a 2 MB line without a newline costs the log store
/// 16 KiB, not 2 MB.
#[tokio::test]
async fn log_lines_are_bounded() {
    let dir = tempdir();
    let script = dir.path().join("bigline.sh");
    std::fs::write(&script, "#!/bin/sh\nhead -c 2000000 /dev/zero | tr '\\0' a >&2\necho >&2\ncat\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stack =
        format!("functions:\n  big:\n    fprocess: {}\n    environment:\n      mode: streaming\n", script.display());
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["big"]).await;
    assert_eq!(post(&format!("{}/function/big", p.url), "ok").await.text(), "ok");
    let logged = eventually(Duration::from_secs(10), || async {
        p.api("GET", "/system/logs?name=big", "").await.text().contains("aaaa")
    })
    .await;
    assert!(logged, "{}", p.api("GET", "/system/logs?name=big", "").await.text());
    let logs = p.api("GET", "/system/logs?name=big", "").await.text();
    let longest = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().len())
        .max();
    assert_eq!(longest, Some(16 * 1024));
}

/// `Expect: 100-continue` through the gateway to a streaming and a
/// serializing function, and into the CloudEvents receiver: the body
/// arrives at every hop.
#[tokio::test]
async fn expect_100_continue_through_every_hop() {
    let stack = "functions:\n  streamed:\n    fprocess: cat\n    environment:\n      mode: streaming\n  serialized:\n    fprocess: cat\n  sink:\n    fprocess: cat\n    annotations:\n      topic: uploads\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["streamed", "serialized", "sink"]).await;
    for function in ["streamed", "serialized"] {
        let (continued, answer) = post_expecting_continue(p.port, &format!("/function/{function}"), &[], "uploaded");
        assert!(continued, "{function}: no 100 Continue: {answer}");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\r\nuploaded"), "{function}: {answer}");
    }
    p.receiving().await;
    let ce_port = p.ce_url.rsplit(':').next().unwrap().parse().unwrap();
    let ce = [("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "uploads"), ("ce-specversion", "1.0")];
    let (continued, answer) = post_expecting_continue(ce_port, "/", &ce, "event body");
    assert!(continued, "CloudEvents receiver: {answer}");
    assert!(answer.contains(r#""delivered":1"#), "{answer}");
}

/// A function deployed without labels or annotations is listed with empty
/// maps, which a Go client can read.
#[tokio::test]
async fn bare_functions_list_with_empty_maps() {
    let p = platform().await;
    for f in p.api("GET", "/system/functions", "").await.json().as_array().unwrap() {
        assert_go_readable(f);
    }
}

/// A stack written for of-watchdog names its command in the environment.
#[tokio::test]
async fn fprocess_in_the_environment_is_the_command() {
    let stack =
        "functions:\n  upper:\n    image: ghcr.io/example/upper:latest\n    environment:\n      fprocess: tr a-z A-Z\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["upper"]).await;
    assert_eq!(post(&format!("{}/function/upper", p.url), "abc").await.text(), "ABC");
    let d = r#"{"service":"rev","image":"x","envVars":{"fprocess":"rev"}}"#;
    assert_eq!(p.api("POST", "/system/functions", d).await.status, 202);
    p.wait_ready(&["rev"]).await;
    assert_eq!(post(&format!("{}/function/rev", p.url), "abc").await.text(), "cba");
}

/// `/system/secrets` as faas-cli uses it: secrets created, listed without
/// their values, read by a function that names them (at
/// `$secret_mount_path/NAME`), updated under it, kept while used.
#[tokio::test]
async fn secrets_are_mounted_and_never_listed() {
    let dir = tempdir();
    let script = dir.path().join("read-secret.sh");
    std::fs::write(&script, "#!/bin/sh\nname=$(cat)\ncat \"$secret_mount_path/$name\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = Platform::start_in(dir, &config(""), NO_STACK, &[]).await;
    let create = r#"{"name":"api-key","value":"k-1"}"#;
    assert_eq!(p.api("POST", "/system/secrets", create).await.status, 202);
    assert_eq!(p.api("POST", "/system/secrets", create).await.status, 409);
    // faas-cli sends binary values base64-encoded as rawValue.
    assert_eq!(p.api("POST", "/system/secrets", r#"{"name":"raw","rawValue":"AAEC"}"#).await.status, 202);
    let listed = p.api("GET", "/system/secrets", "").await;
    assert_eq!(
        listed.json(),
        serde_json::json!([{"name": "api-key", "namespace": "openfaas-fn"}, {"name": "raw", "namespace": "openfaas-fn"}])
    );
    assert!(!listed.text().contains("k-1"));
    let stored = p.dir.path().join("data/function-secrets/openfaas-fn/api-key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&stored).unwrap().permissions()) & 0o777,
        0o600
    );

    let missing = serde_json::json!({"service": "reader", "image": "x", "envProcess": script.display().to_string(), "secrets": ["nope"]});
    let r = p.api("POST", "/system/functions", &missing.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("secret \"nope\" not found"), "{}", r.text());
    let d = serde_json::json!({"service": "reader", "image": "x", "envProcess": script.display().to_string(), "secrets": ["api-key", "raw"]});
    assert_eq!(p.api("POST", "/system/functions", &d.to_string()).await.status, 202);
    p.wait_ready(&["reader"]).await;
    let read = |name: &'static str| {
        let url = format!("{}/function/reader", p.url);
        async move { post(&url, name).await.body }
    };
    assert_eq!(read("api-key").await, "k-1");
    assert_eq!(&read("raw").await[..], [0u8, 1, 2]);

    assert_eq!(p.api("PUT", "/system/secrets", r#"{"name":"api-key","value":"k-2"}"#).await.status, 202);
    assert_eq!(read("api-key").await, "k-2", "an update reaches the running function");
    assert_eq!(p.api("PUT", "/system/secrets", r#"{"name":"other","value":"x"}"#).await.status, 404);
    let r = p.api("DELETE", "/system/secrets", r#"{"name":"api-key"}"#).await;
    assert_eq!(r.status, 409, "a secret in use stays: {}", r.text());
    assert_eq!(p.api("DELETE", "/system/functions", r#"{"functionName":"reader"}"#).await.status, 202);
    assert_eq!(p.api("DELETE", "/system/secrets", r#"{"name":"api-key"}"#).await.status, 202);
    assert_eq!(p.api("DELETE", "/system/secrets", r#"{"name":"api-key"}"#).await.status, 404);
    assert_eq!(p.api("GET", "/system/secrets", "").await.json().as_array().unwrap().len(), 1);
}

/// OpenFaaS's queue-worker reports asynchronous invocations to
/// `/system/async-report`; they count in the gateway's metrics.
#[tokio::test]
async fn async_reports_count_in_the_metrics() {
    let p = platform().await;
    let report = r#"{"name":"echo","statusCode":500,"timeTaken":0.25}"#;
    assert_eq!(post(&format!("{}/system/async-report", p.url), report).await.status, 401, "behind auth");
    assert_eq!(p.api("POST", "/system/async-report", report).await.status, 202);
    let metrics = get(&format!("{}/metrics", p.url)).await.text();
    assert!(
        metrics.contains(r#"gateway_function_invocation_total{code="500",function_name="echo.openfaas-fn"} 1"#),
        "{metrics}"
    );
}

/// Behind OpenFaaS's own gateway (`gateway.role: provider`), `/system/info`
/// has faas-provider's flat shape, which that gateway reads; faas-cli
/// showed an empty provider name with the nested one.
#[tokio::test]
async fn system_info_as_a_provider() {
    let p = Platform::start(&config("gateway:\n  role: provider\n"), NO_STACK).await;
    let info = p.api("GET", "/system/info", "").await.json();
    assert_eq!(
        (info["provider"].as_str(), info["orchestration"].as_str()),
        (Some("switchboard-process"), Some("process"))
    );
    assert!(info["version"]["release"].is_string(), "{info}");
}

/// A replica that takes 2 s to start (its watchdog starts late): an
/// invocation waits for it, as OpenFaaS holds requests while a function
/// scales up, instead of a 503 that costs an event source an attempt.
/// Past `gateway.replica_wait` the answer is 503 as before.
#[tokio::test]
async fn an_invocation_waits_for_a_starting_replica() {
    use std::os::unix::fs::PermissionsExt;
    for (wait, expected) in [("20s", 200), ("300ms", 503)] {
        let dir = tempdir();
        let slow = dir.path().join("slow-watchdog.sh");
        let small = env!("CARGO_BIN_EXE_switchboard-watchdog");
        std::fs::write(&slow, format!("#!/bin/sh\nsleep 2\nexec {small}\n")).unwrap();
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = config(&format!("gateway:\n  replica_wait: {wait}\n"))
            .replace("  stop_timeout: 3s\n", &format!("  stop_timeout: 3s\n  watchdog: {}\n", slow.display()));
        let p = Platform::start_in(dir, &cfg, "functions:\n  echo:\n    fprocess: cat\n", &[]).await;
        let r = call("POST", &format!("{}/function/echo", p.url), &[], "hi").await;
        assert_eq!(r.status, expected, "replica_wait {wait}: {}\n{}", r.text(), p.proc.output());
        if expected == 200 {
            assert_eq!(r.text(), "hi");
        } else {
            assert_eq!(r.header("X-OpenFaaS-Internal").as_deref(), Some("proxy"));
        }
    }
}

/// Every function is labelled `faas_function: NAME`, as faas-netes and
/// faasd label theirs, and keeps the label through a redeploy without it.
#[tokio::test]
async fn every_function_carries_its_faas_function_label() {
    let p = Platform::start(&config(""), "functions:\n  echo:\n    fprocess: cat\n").await;
    p.wait_ready(&["echo"]).await;
    let d = r#"{"service":"echo","image":"x","envProcess":"cat","labels":{"team":"a"}}"#;
    assert_eq!(p.api("PUT", "/system/functions", d).await.status, 202);
    let f = p.api("GET", "/system/function/echo", "").await.json();
    assert_eq!((f["labels"]["faas_function"].as_str(), f["labels"]["team"].as_str()), (Some("echo"), Some("a")));
    let all = p.api("GET", "/system/functions", "").await.json();
    assert_eq!(all[0]["labels"]["faas_function"], "echo");
}

/// A function's redirect reaches the caller as it was sent: the gateway
/// does not follow it.
#[tokio::test]
async fn a_redirect_reaches_the_caller_unfollowed() {
    let stack = python_function("mover", "crashy.py");
    let p = Platform::start(&config(""), &stack).await;
    p.wait_ready(&["mover"]).await;
    let r = get(&format!("{}/function/mover/redirect", p.url)).await;
    assert_eq!((r.status, r.header("location").as_deref()), (302, Some("http://example.invalid/next")));
}

/// A function whose replica exits again and again as it starts (a missing
/// module) is listed as crash-looping, with the last lines it wrote, and
/// says so a few times rather than every few seconds for ever.
#[tokio::test]
async fn a_crash_looping_function_says_why_without_flooding_the_log() {
    let stack = python_function("broken", "broken.py");
    let p = Platform::start(&config(""), &stack).await;
    let report = p.crash_report("broken").await;
    assert!(report.contains("No module named"), "{report}");
    let f = p.api("GET", "/system/function/broken", "").await.json();
    assert_eq!(f["availableReplicas"], 0);
    // About 8 exits in the next 8 s (backoff 0.1 s doubling to 10 s): the
    // first 3 logged, the rest held back for a minute.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let warned = p.proc.output().matches("replica exited; restarting").count();
    let logs = p.api("GET", "/system/logs?name=broken", "").await.text();
    let noted = logs.matches("replica exited").count();
    assert_eq!((warned, noted), (3, 3), "{logs}");
}
