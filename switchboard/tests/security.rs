//! Safe by default: `switchboard up` as the README starts it lets no one
//! run code, read its settings or hold its connections.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const DEPLOY: &str = r#"{"service":"p","image":"x","envProcess":"id"}"#;

/// Sends raw bytes on a new connection and reads until the server closes it
/// or `limit` passes; returns what was read.
fn raw(port: u16, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = vec![];
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_api_needs_the_credentials_generated_at_first_start() {
    let dir = tempdir();
    let d = dir.path().to_path_buf();
    let p = Platform::start_in(dir, &config(""), NO_STACK, &[]).await;
    let fns = format!("{}/system/functions", p.url);

    // What the issue found: an open API that runs any command.
    let r = call("POST", &fns, &[("Content-Type", "application/json")], DEPLOY).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(get(&fns).await.status, 401);

    let secrets = d.join("data/secrets");
    let mode = |f: &str| std::fs::metadata(secrets.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("basic-auth-user"), mode("basic-auth-password")), (0o600, 0o600));
    let password = std::fs::read_to_string(secrets.join("basic-auth-password")).unwrap();
    let out = p.proc.output();
    assert!(out.contains(&password) && out.contains("cat data/secrets/basic-auth-password"), "{out}");
    assert!(out.contains("faas-cli login"), "{out}");

    assert_eq!(p.api("POST", "/system/functions", DEPLOY).await.status, 202);
    assert_eq!(p.api("GET", "/system/functions", "").await.json()[0]["name"], "p");

    // The same credentials after a restart, and the password not printed again.
    let mut p = p;
    p.proc.stop();
    let again = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &p.port.to_string()], p.dir.path(), &[]);
    let up = eventually(Duration::from_secs(20), || async { get(&format!("{}/healthz", p.url)).await.status == 200 });
    assert!(up.await, "{}", again.output());
    assert_eq!(p.api("GET", "/system/namespaces", "").await.status, 200, "{}", again.output());
    assert!(!again.output().contains(&password), "{}", again.output());
}

#[tokio::test]
async fn browsers_cannot_reach_the_api_from_another_site() {
    let p = Platform::start(&config(""), NO_STACK).await;
    let auth = p.auth.clone().unwrap();
    let fns = format!("{}/system/functions", p.url);
    let host = format!("127.0.0.1:{}", p.port);
    let json = ("Content-Type", "application/json");

    // A cross-site form post ("simple" request): refused even with credentials.
    let form = [("Authorization", auth.as_str()), ("Content-Type", "text/plain")];
    let r = call("POST", &fns, &form, DEPLOY).await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.text().contains("application/json"), "{}", r.text());
    let r = call("POST", &fns, &[("Authorization", auth.as_str())], DEPLOY).await;
    assert_eq!(r.status, 415, "no Content-Type at all: {}", r.text());

    let evil = [("Authorization", auth.as_str()), json, ("Origin", "http://evil.example")];
    let r = call("POST", &fns, &evil, DEPLOY).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let cross = [("Authorization", auth.as_str()), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(call("GET", &fns, &cross, "").await.status, 403);
    let same = format!("http://{host}");
    let own = [("Authorization", auth.as_str()), ("Origin", same.as_str()), ("Host", host.as_str())];
    assert_eq!(call("GET", &fns, &own, "").await.status, 200);

    // DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    for path in ["/system/functions", "/function/nope", "/healthz"] {
        let r = call("GET", &format!("{}{path}", p.url), &[("Host", "evil.example:8080")], "").await;
        assert_eq!(r.status, 421, "{path}: {}", r.text());
        assert!(r.text().contains("allowed_hosts"), "{}", r.text());
    }
    assert_eq!(call("GET", &format!("{}/healthz", p.url), &[("Host", "localhost")], "").await.status, 200);
    p.receiving().await;
    let hub = call("GET", &format!("{}/metrics", p.hub_url), &[("Host", "evil.example")], "").await;
    assert_eq!(hub.status, 421, "the hub's port too");
    let ce = call("POST", &p.ce_url, &[("Host", "evil.example")], "{}").await;
    assert_eq!(ce.status, 421, "the CloudEvents receiver too");
}

#[tokio::test]
async fn secret_looking_environment_values_are_masked_in_listings() {
    let p = Platform::start(&config(""), NO_STACK).await;
    let deploy = serde_json::json!({
        "service": "env", "image": "x", "envProcess": "cat",
        "envVars": {"DB_PASSWORD": "hunter2", "API_KEY": "k-123", "MODE": "fast",
                    "DATABASE_URL": "postgres://app:pg-pw@db:5432/app", "MYSQL_PWD": "my-pw",
                    "SMTP_PASS": "smtp-pw", "PASSPHRASE": "phrase-pw", "api-key": "k-456"}
    });
    assert_eq!(p.api("POST", "/system/functions", &deploy.to_string()).await.status, 202);
    let listed = p.api("GET", "/system/functions", "").await;
    for value in ["hunter2", "k-123", "pg-pw", "my-pw", "smtp-pw", "phrase-pw", "k-456"] {
        assert!(!listed.text().contains(value), "{value} shown: {}", listed.text());
    }
    let env = &listed.json()[0]["envVars"];
    assert_eq!((env["MODE"].as_str(), env["DB_PASSWORD"].as_str()), (Some("fast"), Some("********")));
    assert_eq!(env["DATABASE_URL"], "postgres://app:********@db:5432/app", "the URL stays readable");
    let one = p.api("GET", "/system/function/env", "").await.text();
    assert!(!one.contains("hunter2"), "{one}");
}

#[tokio::test]
async fn turning_auth_off_is_explicit_and_loud() {
    let dir = tempdir();
    std::fs::write(dir.path().join("switchboard.yml"), "queue:\n  enabled: false\nprovider:\n  kind: process\n")
        .unwrap();
    let port = free_port();
    let proc = Proc::spawn(
        &["gateway", "--config", "switchboard.yml", "--port", &port.to_string(), "--no-auth"],
        dir.path(),
        &[],
    );
    let url = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(20), || async { get(&format!("{url}/healthz")).await.status == 200 });
    assert!(up.await, "{}", proc.output());
    let r = call("GET", &format!("{url}/system/functions"), &[], "").await;
    assert_eq!(r.status, 200);
    let out = proc.output();
    assert!(out.contains("basic auth is OFF") && out.contains("auth: OFF"), "{out}");
    assert!(!dir.path().join("data/secrets").exists(), "no credentials are made when auth is off");
}

#[tokio::test]
async fn empty_or_half_credentials_stop_the_start() {
    for (user, password, named) in [("admin", "", "basic-auth-password"), ("", "pw", "basic-auth-user")] {
        let dir = tempdir();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("basic-auth-user"), user).unwrap();
        std::fs::write(secrets.join("basic-auth-password"), password).unwrap();
        std::fs::write(dir.path().join("g.yml"), "queue:\n  enabled: false\nprovider:\n  kind: process\n").unwrap();
        let mut proc = Proc::spawn(
            &["gateway", "--config", "g.yml", "--port", &free_port().to_string()],
            dir.path(),
            &[("secret_mount_path", &secrets.display().to_string())],
        );
        assert_ne!(proc.wait_exit(Duration::from_secs(10)), Some(0));
        let out = proc.output();
        assert!(out.contains(named) && out.contains("empty"), "{out}");
    }
    // Only one of the two files in the generated directory: never overwritten.
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("data/secrets")).unwrap();
    std::fs::write(dir.path().join("data/secrets/basic-auth-user"), "me").unwrap();
    std::fs::write(dir.path().join("g.yml"), "queue:\n  enabled: false\nprovider:\n  kind: process\n").unwrap();
    let mut proc = Proc::spawn(&["gateway", "--config", "g.yml", "--port", &free_port().to_string()], dir.path(), &[]);
    assert_ne!(proc.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(proc.output().contains("basic-auth-password"), "{}", proc.output());
}

#[tokio::test]
async fn the_hubs_ports_take_a_token() {
    let dir = tempdir();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let hub = format!("  auth: token\n  token_file: {}/token\n", dir.path().display());
    let p = Platform::start_in(dir, &config_with(&hub, ""), NO_STACK, &[]).await;
    p.receiving().await;
    assert_eq!(get(&format!("{}/healthz", p.hub_url)).await.status, 200, "probes stay open");
    let metrics = format!("{}/metrics", p.hub_url);
    let r = get(&metrics).await;
    assert_eq!((r.status, r.header("www-authenticate").as_deref()), (401, Some("Bearer realm=\"switchboard\"")));
    assert_eq!(call("GET", &metrics, &[("Authorization", "Bearer t0ken")], "").await.status, 200);
    assert_eq!(call("GET", &metrics, &[("Authorization", "Bearer other")], "").await.status, 401);
    assert_eq!(call("POST", &format!("{}/refresh", p.hub_url), &[], "").await.status, 401);
    let ce = [("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "t"), ("ce-specversion", "1.0")];
    assert_eq!(call("POST", &p.ce_url, &ce, "x").await.status, 401);
    let with = [ce[0], ce[1], ce[2], ce[3], ("Authorization", "bearer t0ken")];
    let r = call("POST", &p.ce_url, &with, "x").await;
    assert_eq!(r.status, 404, "admitted, and refused for want of a subscriber: {}", r.text());
}

#[tokio::test]
async fn slow_senders_and_header_bombs_are_cut_off() {
    let p = Platform::start(&config("gateway:\n  read_timeout: 1s\n"), NO_STACK).await;
    // A body promised and never sent: the connection ends within the
    // limit, not minutes later.
    let began = Instant::now();
    let head = format!(
        "POST /system/functions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"ser",
        p.auth.clone().unwrap()
    );
    let answer = raw(p.port, head.as_bytes(), Duration::from_secs(15));
    assert!(began.elapsed() < Duration::from_secs(10), "held for {:?}", began.elapsed());
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    // A request head that never ends.
    let began = Instant::now();
    raw(p.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", Duration::from_secs(15));
    assert!(began.elapsed() < Duration::from_secs(10), "held for {:?}", began.elapsed());

    let bomb = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let answer = raw(p.port, bomb.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", answer.lines().next().unwrap_or_default());
}

#[tokio::test]
async fn an_answer_before_the_body_says_connection_close() {
    let p = Platform::start(&config(""), NO_STACK).await;
    // 404 for an unknown function, given before the 1 MB body is read.
    let head = format!("POST /function/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", 1024 * 1024);
    let answer = raw(p.port, head.as_bytes(), Duration::from_secs(10)).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // A request with no body keeps its connection open.
    let empty = "POST /function/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
    let answer = raw(p.port, empty.as_bytes(), Duration::from_secs(2)).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 404") && !answer.contains("connection: close"), "{answer}");
}

/// What an attacker's probe found: `?namespace=../secrets` listed the
/// gateway's credential files, and a DELETE with a climbing namespace
/// removed any file the gateway could write. Every route that takes a name
/// or a namespace refuses them with the same 400, before touching the disk.
#[tokio::test]
async fn no_route_takes_a_path_for_a_name_or_namespace() {
    let p = Platform::start(&config(""), NO_STACK).await;
    let credentials = p.dir.path().join("data/secrets/basic-auth-password");
    assert!(credentials.is_file());
    let refused = |what: String, r: Resp| {
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.text().contains("DNS label"), "{what}: {}", r.text());
    };
    // As a query value or JSON string: decoded, so `%2F` is a slash here.
    for bad in ["..", "../secrets", "/etc", "a/b", "../../../victim", "a\0b", ".", "UPPER"] {
        let q = bad.replace('/', "%2F").replace('\0', "%00");
        for path in [
            format!("/system/secrets?namespace={q}"),
            format!("/system/functions?namespace={q}"),
            format!("/system/function/x?namespace={q}"),
            format!("/system/logs?name=x&namespace={q}"),
            format!("/system/logs?name={q}"),
        ] {
            refused(path.clone(), p.api("GET", &path, "").await);
        }
        let scale = serde_json::json!({"serviceName": "x", "replicas": 1, "namespace": bad}).to_string();
        refused(format!("scale {bad:?}"), p.api("POST", "/system/scale-function/x", &scale).await);
        let secret = serde_json::json!({"name": "basic-auth-password", "value": "v", "namespace": bad}).to_string();
        for method in ["POST", "PUT", "DELETE"] {
            refused(format!("{method} secret {bad:?}"), p.api(method, "/system/secrets", &secret).await);
        }
        let gone = serde_json::json!({"functionName": bad}).to_string();
        refused(format!("delete {bad:?}"), p.api("DELETE", "/system/functions", &gone).await);
        let gone = serde_json::json!({"functionName": "x", "namespace": bad}).to_string();
        refused(format!("delete in {bad:?}"), p.api("DELETE", "/system/functions", &gone).await);
        for method in ["POST", "PUT"] {
            let d = serde_json::json!({"service": "x", "envProcess": "cat", "namespace": bad}).to_string();
            refused(format!("{method} deploy in {bad:?}"), p.api(method, "/system/functions", &d).await);
            let d = serde_json::json!({"service": bad, "envProcess": "cat"}).to_string();
            refused(format!("{method} deploy {bad:?}"), p.api(method, "/system/functions", &d).await);
        }
        let ns = serde_json::json!({"name": bad, "labels": {"openfaas": "1"}}).to_string();
        refused(format!("namespace {bad:?}"), p.api("POST", "/system/namespace/", &ns).await);
    }
    // As a path segment, encoded: `..%2F..%2Fetc` is one segment, decoded by the router.
    for seg in ["..%2F..%2Fetc", "%2e%2e", "a%00b", "%2Fetc"] {
        for (method, path, body) in [
            ("GET", format!("/system/function/{seg}"), ""),
            ("GET", format!("/system/namespace/{seg}"), ""),
            ("DELETE", format!("/system/namespace/{seg}"), ""),
            ("PUT", format!("/system/namespace/{seg}"), r#"{"name":"x","labels":{"openfaas":"1"}}"#),
            ("POST", format!("/system/scale-function/{seg}"), r#"{"serviceName":"x","replicas":1}"#),
        ] {
            refused(format!("{method} {path}"), p.api(method, &path, body).await);
        }
    }
    assert!(credentials.is_file(), "the gateway's credentials are still there");
    assert_eq!(p.api("GET", "/system/secrets", "").await.text(), "[]", "and were never listed as secrets");
}

/// Every file the platform writes is readable by its owner only: the queue
/// (request bodies and headers) and the dead letters (payloads) were 0644.
#[tokio::test]
async fn the_queue_and_the_dead_letters_are_private_files() {
    let p = Platform::start(&config(""), &failing_function("failing", "t")).await;
    p.wait_ready(&["failing"]).await;
    p.receiving().await;
    let ce = [("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "t"), ("ce-specversion", "1.0")];
    let r = call("POST", &p.ce_url, &ce, "x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.dead_letters().len(), 1);
    let mode = |f: &str| std::fs::metadata(p.dir.path().join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("data/queue.redb"), 0o600);
    assert_eq!(mode("data/dead-letters.redb"), 0o600);
    assert_eq!(mode("data/dead-letters.jsonl"), 0o600);
    assert_eq!(mode("data"), 0o700);
}

/// The processes whose environment carries `marker`, with the ports they
/// were given (`port` for a watchdog, `PORT` for an HTTP function).
fn marked_processes(marker: &str) -> Vec<(u32, Vec<u16>)> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<String> = env.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if vars.iter().any(|v| v == marker) {
            let ports = vars
                .iter()
                .filter_map(|v| v.strip_prefix("port=").or_else(|| v.strip_prefix("PORT=")))
                .filter_map(|p| p.parse().ok())
                .collect();
            found.push((pid, ports));
        }
    }
    found
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// Issue 22: after SIGTERM, HTTP-mode functions were sometimes left
/// running under pid 1 with their ports held, respawned during shutdown.
/// Twenty stop/start cycles leave no process and no port behind: every
/// other cycle SIGTERM reaches `up` alone, the others every process at
/// once, as `systemctl stop` does to a service's control group (and Ctrl-C
/// to a terminal's process group).
#[tokio::test]
async fn a_stopped_platform_leaves_no_function_running() {
    let marker = format!("SB_STOP_MARKER={}", unique("m"));
    let (key, value) = marker.split_once('=').unwrap();
    let stack = format!(
        "functions:\n  web:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: /dev/null\n      {key}: {value}\n  forked:\n    fprocess: cat\n    environment:\n      {key}: {value}\n  slow:\n    fprocess: sleep 1\n    environment:\n      {key}: {value}\n",
        fixture("conform.py")
    );
    let dir = tempdir();
    let cfg = config("");
    let mut p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    for cycle in 0..20 {
        p.wait_ready(&["web", "forked", "slow"]).await;
        assert_eq!(post(&format!("{}/function/web", p.url), "hi").await.status, 200);
        assert_eq!(post(&format!("{}/function/forked", p.url), "hi").await.status, 200);
        let running = marked_processes(&marker);
        assert!(running.len() >= 3, "cycle {cycle}: expected two watchdogs and a function: {running:?}");
        let ports: Vec<u16> = running.iter().flat_map(|(_, ports)| ports.clone()).collect();
        let pid = p.proc.pid().as_raw();
        // A call in flight holds the gateway's drain open: replicas that
        // exit meanwhile were restarted, and the restarts outlived `up`.
        let slow_url = format!("{}/function/slow", p.url);
        let slow = tokio::spawn(async move { post(&slow_url, "").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.proc.signal(nix::sys::signal::Signal::SIGTERM);
        if cycle % 2 == 1 {
            for (pid, _) in &running {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        let stopped = eventually(Duration::from_secs(30), || async { exited(pid) }).await;
        assert!(stopped, "cycle {cycle}: up did not exit after SIGTERM:\n{}", p.proc.output());
        // Drained, not cut: even with every process signalled (a sandbox's
        // bwrap would die of its SIGTERM and take the call with it).
        assert_eq!(slow.await.unwrap().status, 200, "cycle {cycle}: the call in flight was cut:\n{}", p.proc.output());
        let out = p.proc.output();
        let stopping = &out[out.rfind("stopping").unwrap_or(0)..];
        assert!(!stopping.contains("restarting"), "cycle {cycle}: restarted while stopping:\n{stopping}");
        let left = marked_processes(&marker);
        assert!(left.is_empty(), "cycle {cycle}: left running after up exited: {left:?}\n{}", p.proc.output());
        for port in ports {
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "cycle {cycle}: port {port} held");
        }
        assert_eq!(p.proc.wait_exit(Duration::from_secs(5)), Some(0), "{}", p.proc.output());
        let Platform { dir, .. } = p;
        p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    }
}

/// The status line of a raw request (sent with `Connection: close`).
fn status_of(port: u16, request: &str) -> String {
    raw(port, request.as_bytes(), Duration::from_secs(10)).lines().next().unwrap_or_default().to_string()
}

/// A request for `path` with `fields` header fields in all, closing.
fn with_fields(path: &str, fields: usize) -> String {
    let extra: String = (3..fields).map(|i| format!("X-H-{i}: v\r\n")).collect();
    format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 2\r\n{extra}\r\nhi")
}

/// The head limits are what docs/security.md says, exactly: a 64 KiB head
/// passes and one byte more is a 431 (the old limit was really ~112 KiB,
/// depending on how the reads fell), and the field count is a setting that
/// reaches the function's watchdog too.
#[tokio::test]
async fn the_head_limits_are_exact_and_configurable() {
    let p = Platform::start(&config(""), NO_STACK).await;
    let padded = |total: usize| {
        let head = |pad: &str| {
            format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: {pad}\r\n\r\n")
        };
        head(&"a".repeat(total - head("").len()))
    };
    assert!(status_of(p.port, &padded(64 * 1024)).starts_with("HTTP/1.1 200"), "a head of exactly 64 KiB");
    assert!(status_of(p.port, &padded(64 * 1024 + 1)).starts_with("HTTP/1.1 431"), "one byte more");
    assert!(status_of(p.port, &padded(100 * 1024)).starts_with("HTTP/1.1 431"), "100 KiB");
    let health = |n| with_fields("/healthz", n).replace("POST", "GET");
    let s = status_of(p.port, &health(100));
    assert!(s.starts_with("HTTP/1.1 200"), "100 fields: {s}");
    assert!(status_of(p.port, &health(101)).starts_with("HTTP/1.1 431"), "101 fields");

    let stack = "functions:\n  env:\n    fprocess: env\n";
    let p = Platform::start(&config("gateway:\n  max_headers: 150\n"), stack).await;
    p.wait_ready(&["env"]).await;
    let answer = raw(p.port, with_fields("/function/env", 150).as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", answer.lines().next().unwrap_or_default());
    assert!(answer.contains("X_H_149=v"), "the function saw every field:\n{answer}");
    assert!(status_of(p.port, &with_fields("/function/env", 151)).starts_with("HTTP/1.1 431"));
}

/// An event whose broker headers are more than a server takes is dead-
/// lettered with a reason that names the limit, not a bare `HTTP 431`.
#[tokio::test]
async fn an_event_with_too_many_headers_is_dead_lettered_naming_the_limit() {
    let stack = "functions:\n  env:\n    fprocess: env\n    annotations:\n      topic: wide\n";
    let p = Platform::start(&config(""), stack).await;
    p.wait_ready(&["env"]).await;
    p.receiving().await;
    let mut event = serde_json::json!({"specversion": "1.0", "id": "w-1", "source": "/t", "type": "wide", "data": 1});
    for i in 0..120 {
        event[format!("ext{i}")] = serde_json::json!("v");
    }
    let r = call("POST", &p.ce_url, &[("content-type", "application/cloudevents+json")], event.to_string()).await;
    assert_eq!((r.status, r.json()["dead_lettered"].as_u64()), (200, Some(1)), "{}", r.text());
    let letters = p.dead_letters();
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.starts_with("HTTP 431") && error.contains("gateway.max_headers, 100 by default"), "{error}");
}

/// What an attacker's probe found: 1,030 connections dripping request
/// bodies into `/async-function` kept `/healthz` failing for as long as
/// they dripped. One address now holds at most
/// `gateway.max_connections_per_client` places, and a body has
/// `read_timeout` in all to arrive, however it is dripped: health and
/// function calls from elsewhere keep answering, and every drip is cut.
#[tokio::test]
async fn a_drip_of_slow_bodies_leaves_the_gateway_answering() {
    let stack = "functions:\n  echo:\n    fprocess: cat\n";
    let p = Platform::start(&config("gateway:\n  read_timeout: 3s\n"), stack).await;
    p.wait_ready(&["echo"]).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], p.port));
    let drips: Vec<_> = (0..1030)
        .map(|_| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // From another loopback address: the attacker is not the prober.
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(stream) = socket.connect(target).await else { return true };
                let (mut read, mut write) = stream.into_split();
                let head = "POST /async-function/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n";
                let _ = write.write_all(head.as_bytes()).await;
                let mut drip = tokio::time::interval(Duration::from_millis(500));
                let mut buf = [0u8; 512];
                let until = tokio::time::Instant::now() + Duration::from_secs(12);
                // Drips for 12 s at most; true when the server ended it first.
                loop {
                    tokio::select! {
                        _ = drip.tick() => { let _ = write.write_all(b"x").await; }
                        n = read.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { return true },
                        () = tokio::time::sleep_until(until) => return false,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        let health = tokio::time::timeout(Duration::from_secs(5), get(&format!("{}/healthz", p.url))).await;
        assert_eq!(health.expect("/healthz answered during the drip").status, 200);
        let call = tokio::time::timeout(Duration::from_secs(5), post(&format!("{}/function/echo", p.url), "hi")).await;
        assert_eq!(call.expect("a function call answered during the drip").text(), "hi");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut cut = 0;
    for d in drips {
        cut += usize::from(d.await.unwrap());
    }
    assert_eq!(cut, 1030, "drips the server did not end within 12 s: {}", 1030 - cut);
}
