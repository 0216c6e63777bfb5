//! `switchboard watchdog`, started directly with of-watchdog environment variables.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

struct Watchdog {
    proc: Proc,
    url: String,
    tmp: tempfile::TempDir,
}

async fn watchdog(env: &[(&str, &str)]) -> Watchdog {
    let tmp = tempdir();
    let port = free_port().to_string();
    let tmpdir = tmp.path().display().to_string();
    let mut all = vec![
        ("port", port.as_str()),
        ("bind_address", "127.0.0.1"),
        ("TMPDIR", tmpdir.as_str()),
        ("healthcheck_interval", "0s"),
    ];
    all.extend_from_slice(env);
    let proc = Proc::spawn(&["watchdog"], tmp.path(), &all);
    let url = format!("http://127.0.0.1:{port}");
    let up =
        eventually(Duration::from_secs(15), || async { get(&format!("{url}/_/health")).await.status == 200 }).await;
    assert!(up, "watchdog did not start:\n{}", proc.output());
    Watchdog { proc, url, tmp }
}

#[tokio::test]
async fn serializing_mode_reports_exit_status_and_timeouts() {
    let w = watchdog(&[("fprocess", "sh -c cat"), ("mode", "serializing"), ("content_type", "text/plain")]).await;
    let r = post(&w.url, "round trip").await;
    assert_eq!((r.status, r.text().as_str()), (200, "round trip"));
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    assert!(r.header("x-duration-seconds").is_some());

    let w = watchdog(&[("fprocess", "ls /definitely-not-here"), ("mode", "serializing")]).await;
    let r = post(&w.url, "").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("exit status") && r.text().contains("definitely-not-here"), "{}", r.text());

    let w = watchdog(&[("fprocess", "sleep 10"), ("mode", "serializing"), ("exec_timeout", "300ms")]).await;
    let r = post(&w.url, "").await;
    assert_eq!(r.status, 504);
    assert!(r.text().contains("exec_timeout"), "{}", r.text());
    assert_eq!(r.header("x-openfaas-internal").as_deref(), Some("of-watchdog"));
}

#[tokio::test]
async fn streaming_mode_streams_large_bodies() {
    let w = watchdog(&[("fprocess", "cat")]).await;
    let big = "0123456789".repeat(100_000);
    let r = post(&w.url, &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
}

#[tokio::test]
async fn max_inflight_answers_429() {
    let w = watchdog(&[("fprocess", "sleep 1"), ("mode", "serializing"), ("max_inflight", "1")]).await;
    let url = w.url.clone();
    let first = tokio::spawn(async move { post(&url, "").await.status });
    let busy =
        eventually(Duration::from_secs(5), || async { get(&format!("{}/_/ready", w.url)).await.status == 429 }).await;
    assert!(busy, "/_/ready never reported 429 while a request was in flight");
    let r = post(&w.url, "").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "Concurrent request limit exceeded. Max concurrent requests: 1\n");
    assert_eq!(r.header("x-openfaas-internal").as_deref(), Some("faas-middleware"));
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(get(&format!("{}/_/ready", w.url)).await.status, 200);
}

#[tokio::test]
async fn health_lock_file_and_graceful_drain() {
    let mut w = watchdog(&[
        ("fprocess", &fixture("slow.sh")),
        ("mode", "serializing"),
        ("SLEEP", "1"),
        ("healthcheck_interval", "200ms"),
    ])
    .await;
    assert_eq!(call("POST", &format!("{}/_/health", w.url), &[], "").await.status, 405);
    let lock = w.tmp.path().join(".lock");
    assert!(lock.exists(), "lock file not written");

    let url = w.url.clone();
    let inflight = tokio::spawn(async move { post(&url, "finish me").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.proc.signal(Signal::SIGTERM);
    let r = inflight.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "finish me"), "in-flight request was not drained");
    assert_eq!(w.proc.wait_exit(Duration::from_secs(10)), Some(0), "{}", w.proc.output());
    assert!(!lock.exists(), "lock file not removed on SIGTERM");
}

#[tokio::test]
async fn http_mode_proxies_and_exits_when_upstream_dies() {
    let upstream = free_port().to_string();
    let fprocess = format!("python3 {}", fixture("crashy.py"));
    let upstream_url = format!("http://127.0.0.1:{upstream}");
    let mut w =
        watchdog(&[("fprocess", &fprocess), ("mode", "http"), ("upstream_url", &upstream_url), ("PORT", &upstream)])
            .await;
    let r = get(&format!("{}/anything", w.url)).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("pid "), "{}", r.text());
    assert!(r.header("x-duration-seconds").is_some());

    let _ = try_call("GET", &format!("{}/crash", w.url), &[], "").await;
    let code = w.proc.wait_exit(Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "watchdog should exit non-zero, got {code:?}");
    assert!(w.proc.output().contains("upstream process"), "{}", w.proc.output());
}

#[tokio::test]
async fn bad_environment_is_named() {
    let tmp = tempdir();
    for (env, key) in [
        (vec![("mode", "http"), ("fprocess", "x")], "upstream_url"),
        (vec![("fprocess", "cat"), ("mode", "turbo")], "mode"),
        (vec![("fprocess", "cat"), ("exec_timeout", "forever")], "exec_timeout"),
    ] {
        let mut p = Proc::spawn(&["watchdog"], tmp.path(), &env);
        assert_ne!(p.wait_exit(Duration::from_secs(10)), Some(0));
        assert!(p.output().contains(key), "{key}: {}", p.output());
    }
}

/// A serializing function that writes without end is killed at
/// `max_response_size` and the caller told why; the watchdog stays small.
#[tokio::test]
async fn serializing_output_is_bounded() {
    let w = watchdog(&[("fprocess", "yes"), ("mode", "serializing"), ("max_response_size", "1048576")]).await;
    let r = post(&w.url, "").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("max_response_size (1048576 bytes)") && r.text().contains("killed"), "{}", r.text());
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", w.proc.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok()))
        .unwrap();
    assert!(rss_kb < 64 * 1024, "the watchdog holds {rss_kb} kB");
    // Within the bound the output arrives whole.
    let w = watchdog(&[("fprocess", "head -c 1000"), ("mode", "serializing"), ("max_response_size", "1000")]).await;
    let r = post(&w.url, &"x".repeat(5000)).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));
    let w = watchdog(&[("fprocess", "cat"), ("mode", "serializing"), ("max_request_size", "10")]).await;
    assert_eq!(post(&w.url, "more than ten bytes").await.status, 413);
}

/// A client that waits for `100 Continue` before sending its body (Go's
/// transport, curl with a large upload) gets it in every mode, and the
/// function receives the body: the streaming mode used to answer 200 at
/// once, so the body was never sent.
#[tokio::test]
async fn expect_100_continue_delivers_the_body() {
    for mode in ["streaming", "serializing"] {
        let w = watchdog(&[("fprocess", "cat"), ("mode", mode)]).await;
        let port = w.url.rsplit(':').next().unwrap().parse().unwrap();
        let (continued, answer) = post_expecting_continue(port, "/", &[], "the body");
        assert!(continued, "{mode}: no 100 Continue: {answer}");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\r\nthe body"), "{mode}: {answer}");
    }
}

/// The lines OpenFaaS's watchdogs write, which their users grep for, are
/// in ours: the start lines, and each forked request.
#[tokio::test]
async fn it_logs_the_lines_openfaas_users_look_for() {
    let w = watchdog(&[("fprocess", "cat"), ("mode", "serializing"), ("suppress_lock", "false")]).await;
    assert_eq!(post(&format!("{}/any?x=1", w.url), "hello").await.text(), "hello");
    let port = w.url.rsplit(':').next().unwrap();
    let wanted = [
        "Watchdog mode: serializing\tfprocess: \"cat\"".to_string(),
        "Timeouts: read: 30s write: 30s hard: 30s health: 0s".into(),
        format!("Listening on port: {port}"),
        "Writing lock-file to: ".into(),
        "Forking fprocess.".into(),
        "POST /any?x=1 - 200 - ContentLength: 5B (".into(),
    ];
    let logged = eventually(Duration::from_secs(5), || async { wanted.iter().all(|l| w.proc.output().contains(l)) });
    assert!(logged.await, "{}", w.proc.output());

    let upstream = free_port().to_string();
    let (fprocess, url) = (format!("python3 {}", fixture("crashy.py")), format!("http://127.0.0.1:{upstream}"));
    let w = watchdog(&[("fprocess", &fprocess), ("mode", "http"), ("upstream_url", &url), ("PORT", &upstream)]).await;
    let forking = format!("Forking: python3, arguments: [\"{}\"]", fixture("crashy.py"));
    assert!(w.proc.output().contains(&forking), "{}", w.proc.output());
}
