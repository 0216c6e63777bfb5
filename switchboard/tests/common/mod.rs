//! Test harness: starts the real `switchboard` binary, speaks HTTP to it,
//! and stops every process it started, by pid (each in its own process
//! group, so watchdogs started by a platform are stopped with it).
#![allow(dead_code)]

pub mod podman;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A temporary folder under the target directory rather than /tmp: a
/// sandboxed function has a /tmp of its own, and the files a test hands a
/// function (records of its calls, say) must be where both can see them.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A stack of one HTTP-mode function `name` running the Python fixture `script`.
pub fn python_function(name: &str, script: &str) -> String {
    format!("functions:\n  {name}:\n    fprocess: python3 {}\n    environment:\n      mode: http\n", fixture(script))
}

/// A stack of one function `name` on `topic` that always fails (500) and is
/// tried once: its events go straight to the dead letters.
pub fn failing_function(name: &str, topic: &str) -> String {
    format!(
        "functions:\n  {name}:\n    fprocess: \"false\"\n    annotations:\n      topic: \"{topic}\"\n      com.openfaas.retry.attempts: \"1\"\n"
    )
}

/// A stack of `fixme` (tests/fixtures/switched.py): broken while `switch`
/// exists, tried once per event, subscribed to `topics`.
pub fn switched_fn(dir: &Path, topics: &str, extra: &str) -> String {
    format!(
        "functions:\n  fixme:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      SWITCH_FILE: {}\n      RECORD_FILE: {}\n{extra}    annotations:\n      topic: \"{topics}\"\n      com.openfaas.retry.attempts: \"1\"\n",
        fixture("switched.py"),
        dir.join("broken").display(),
        dir.join("calls.jsonl").display(),
    )
}

/// A stack of `big`, an HTTP function answering 65 MiB (over the 64 MiB the
/// platform reads) and recording each call in `record`; `extra` is YAML
/// under it (annotations).
pub fn too_large_answer(record: &Path, extra: &str) -> String {
    format!(
        "functions:\n  big:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      BIG_BYTES: \"{}\"\n      RECORD_FILE: {}\n{extra}",
        fixture("big.py"),
        65 * 1024 * 1024,
        record.display()
    )
}

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

/// A port nothing listens on, never handed out before in this test process:
/// binding port 0 can return a port just released, so two calls in a row
/// (a platform's gateway and CloudEvents ports) could name the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A running `switchboard` process; stopped (SIGTERM, then SIGKILL to its
/// whole process group) when dropped.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_program(BIN, args, dir, env)
    }

    /// Another program (a shell that sets limits, then execs the binary).
    pub fn spawn_program(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!(
            "switchboard-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            // The SQS source signs its requests; moto takes any keys, and
            // nothing here may wait for an instance's metadata service.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Nothing from the runner's own AWS set-up: tests name their region.
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start switchboard");
        Self { child: Some(child), log }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the process and everything it started, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.pid(), sig);
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let code = status.code();
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                self.child = None;
                return code;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, a bounded wait, then SIGKILL to the group.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `switchboard ARGS` in `dir` with `stdin`: exit code, stdout, stderr.
pub fn command(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("secret_mount_path")
        .env_remove("OPENFAAS_URL")
        .env_remove("SWITCHBOARD_HUB")
        .env_remove("SWITCHBOARD_CLOUDEVENTS")
        // Logins are saved here, never in the runner's own ~/.openfaas.
        .env("OPENFAAS_CONFIG", dir.join(".openfaas"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// A platform (`switchboard up`) in its own temporary directory.
pub struct Platform {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    /// The hub's /healthz, /readyz, /metrics.
    pub hub_url: String,
    /// The CloudEvents receiver.
    pub ce_url: String,
    pub dir: tempfile::TempDir,
    /// The `Authorization` value for `/system/*`: the credentials the
    /// platform generated at first start (or those the test gave it).
    pub auth: Option<String>,
}

pub const NO_STACK: &str = "functions: {}\n";

impl Platform {
    /// Starts `switchboard up` with `config` (YAML; the gateway port and the
    /// stack path are filled in) and `stack` (an OpenFaaS stack.yml).
    pub async fn start(config: &str, stack: &str) -> Self {
        let dir = tempdir();
        Self::start_in(dir, config, stack, &[]).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: &str, stack: &str, env: &[(&str, &str)]) -> Self {
        let (port, hub, ce) = (free_port(), free_port(), free_port());
        // A function may be told where the CloudEvents receiver is.
        std::fs::write(dir.path().join("stack.yml"), stack.replace("CE_PORT", &ce.to_string())).unwrap();
        let config = config
            .replace("STACK", &dir.path().join("stack.yml").display().to_string())
            .replace("HUB_PORT", &hub.to_string())
            .replace("CE_PORT", &ce.to_string());
        std::fs::write(dir.path().join("switchboard.yml"), config).unwrap();
        let proc = Proc::spawn(&["up", "--config", "switchboard.yml", "--port", &port.to_string()], dir.path(), env);
        let url = format!("http://127.0.0.1:{port}");
        let (hub_url, ce_url) = (format!("http://127.0.0.1:{hub}"), format!("http://127.0.0.1:{ce}"));
        let mut p = Self { proc, url, port, hub_url, ce_url, dir, auth: None };
        p.wait_healthy().await;
        let secrets = env.iter().find(|(k, _)| *k == "secret_mount_path").map(|(_, v)| PathBuf::from(v));
        p.auth = credentials(&secrets.unwrap_or_else(|| p.dir.path().join("data/secrets")));
        p
    }

    /// Waits until the CloudEvents receiver takes connections (it starts
    /// after the hub's first discovery).
    pub async fn receiving(&self) {
        let addr = self.ce_url.trim_start_matches("http://").to_string();
        let ok = eventually(Duration::from_secs(15), || async { tokio::net::TcpStream::connect(&addr).await.is_ok() });
        assert!(
            ok.await,
            "the CloudEvents receiver never listened:
{}",
            self.proc.output()
        );
    }

    /// Where the platform keeps its generated credentials, for a
    /// `switchboard connect` beside it (`secret_mount_path`).
    pub fn secrets(&self) -> String {
        self.dir.path().join("data/secrets").display().to_string()
    }

    /// A request to the gateway's API with its credentials; a body is sent as JSON.
    pub async fn api(&self, method: &str, path: &str, body: &str) -> Resp {
        let mut headers = vec![];
        if let Some(auth) = &self.auth {
            headers.push(("Authorization", auth.as_str()));
        }
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        try_call(method, &format!("{}{path}", self.url), &headers, body.to_string()).await.unwrap_or(Resp {
            status: 0,
            headers: Default::default(),
            body: Bytes::new(),
        })
    }

    async fn wait_healthy(&self) {
        let ok =
            eventually(Duration::from_secs(20), || async { get(&format!("{}/healthz", self.url)).await.status == 200 })
                .await;
        assert!(ok, "switchboard did not become healthy; output:\n{}", self.proc.output());
    }

    /// The hub's dead letters (`hub.dead_letter_file` as `config` sets it);
    /// a line being written is not one yet.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("data/dead-letters.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until every function is ready to serve.
    /// What `com.switchboard.crash-looping` says of `name` once it is
    /// reported (within 20 s).
    pub async fn crash_report(&self, name: &str) -> String {
        let path = format!("/system/function/{name}");
        let reported = eventually(Duration::from_secs(20), || async {
            self.api("GET", &path, "").await.json()["annotations"]["com.switchboard.crash-looping"].is_string()
        });
        assert!(reported.await, "{name} never reported crash-looping:\n{}", self.proc.output());
        let f = self.api("GET", &path, "").await.json();
        f["annotations"]["com.switchboard.crash-looping"].as_str().unwrap_or_default().to_string()
    }

    pub async fn wait_ready(&self, functions: &[&str]) {
        for f in functions {
            let (name, ns) = f.split_once('.').unwrap_or((f, "openfaas-fn"));
            let path = format!("/system/function/{name}?namespace={ns}");
            let ok = eventually(Duration::from_secs(20), || async {
                let r = self.api("GET", &path, "").await;
                r.status == 200
                    && r.json()["availableReplicas"].as_u64().unwrap_or(0)
                        >= r.json()["replicas"].as_u64().unwrap_or(1).max(1)
            })
            .await;
            assert!(ok, "function {f} never became ready; output:\n{}", self.proc.output());
        }
    }
}

/// The basic-auth header value for the secrets in `dir`, if there are any.
pub fn credentials(dir: &Path) -> Option<String> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().map(|s| s.trim().to_string());
    Some(basic_auth(&read("basic-auth-user")?, &read("basic-auth-password")?))
}

/// The `Authorization` value for basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A picture for the thumbnail pipeline: a gradient, so the encoder has
/// something to encode.
pub fn picture(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(vec![]);
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// The format and size of an encoded image.
pub fn measure(bytes: &[u8]) -> (image::ImageFormat, u32, u32) {
    let format = image::guess_format(bytes).unwrap_or_else(|e| panic!("not an image ({e}): {} bytes", bytes.len()));
    let img = image::load_from_memory_with_format(bytes, format).unwrap();
    (format, img.width(), img.height())
}

/// Platform config; `extra` is YAML appended to the `queue:` section (or
/// new top-level sections). Hub and CloudEvents ports are free ones.
pub fn config(extra: &str) -> String {
    config_with("", extra)
}

/// Platform config with `hub` YAML lines added under `hub:`.
pub fn config_with(hub: &str, extra: &str) -> String {
    format!(
        "provider:\n  kind: process\n  stack: STACK\n  stop_timeout: 3s\nhub:\n  listen: 127.0.0.1:HUB_PORT\n  refresh_interval: 200ms\n  dead_letter_file: data/dead-letters.jsonl\n{hub}cloudevents:\n  listen: 127.0.0.1:CE_PORT\nqueue:\n  path: data/queue.redb\n{extra}"
    )
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }
}

pub async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    try_call(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub async fn try_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Full::new(body.into())).unwrap()).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status: parts.status.as_u16(), headers: parts.headers, body })
}

pub async fn get(url: &str) -> Resp {
    try_call("GET", url, &[], Bytes::new()).await.unwrap_or(Resp {
        status: 0,
        headers: Default::default(),
        body: Bytes::new(),
    })
}

pub async fn post(url: &str, body: &str) -> Resp {
    call("POST", url, &[], body.to_string()).await
}

/// Callers that each POST to `url` once every `every` (back to back when a
/// call takes longer), until dropped: a steady load the test bounds.
pub struct Callers(Vec<tokio::task::JoinHandle<()>>);

impl Callers {
    pub fn start(url: &str, callers: usize, every: Duration) -> Self {
        let each = |_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let _ = try_call("POST", &url, &[], "load").await;
                }
            })
        };
        Self((0..callers).map(each).collect())
    }
}

impl Drop for Callers {
    fn drop(&mut self) {
        for caller in &self.0 {
            caller.abort();
        }
    }
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request a test server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// An HTTP server on 127.0.0.1 that records every request (callback targets).
pub async fn recorder() -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().to_string();
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                            .collect();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = tx.send(Received { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

/// A callback receiver that comes up late: it listens on `port` only now,
/// answers the first request (within 10 s) with 200 and returns its head,
/// lower-cased; `None` when none came.
pub async fn late_callback(port: u16) -> Option<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.ok()?.ok()?;
    let mut head = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut stream, &mut head).await.ok()?;
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.ok()?;
    Some(String::from_utf8_lossy(&head[..n]).to_ascii_lowercase())
}

/// Receives until `n` requests arrived or `limit` passed.
pub async fn receive(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    n: usize,
    limit: Duration,
) -> Vec<Received> {
    let mut out = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => out.push(r),
            _ => break,
        }
    }
    out
}

/// A client of the NATS server the tests need (scripts/services starts it).
pub async fn nats() -> async_nats::Client {
    match async_nats::connect("nats://127.0.0.1:4222").await {
        Ok(c) => c,
        Err(e) => {
            panic!("NATS is not reachable at 127.0.0.1:4222 ({e}); start it with scripts/services (nats-server -js)")
        }
    }
}

/// A name no other test run uses, for subjects and streams.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid_like())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{}", nanos, std::process::id())
}

/// Requests recorded by the envlog.sh fixture: one block of `Http_*=...`
/// lines and `body=...` per request.
pub fn envlog(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split("---\n")
        .filter(|b| !b.trim().is_empty())
        .map(String::from)
        .collect()
}

/// A stack.yml entry for the record.sh fixture, recording to `dir/NAME.log`.
pub fn recorder_fn(name: &str, dir: &Path, extra_env: &str, annotations: &str) -> String {
    format!(
        "  {name}:\n    fprocess: {}\n    environment:\n      RECORD_FILE: {}/{name}.log\n{extra_env}    annotations:\n{annotations}",
        fixture("record.sh"),
        dir.display()
    )
}

/// A stack with one envlog.sh function subscribed to `topic`.
pub fn envlog_stack(name: &str, topic: &str, record: &Path, extra_env: &str, annotations: &str) -> String {
    format!(
        "functions:\n  {name}:\n    fprocess: {}\n    environment:\n      RECORD_FILE: {}\n{extra_env}    annotations:\n      topic: \"{topic}\"\n{annotations}",
        fixture("envlog.sh"),
        record.display()
    )
}

/// Whether the hub comes to report `source` connected to its broker
/// (`/readyz` 200, `switchboard_source_connected` 1) or not (503 naming it, 0).
pub async fn link_reported(p: &Platform, source: &str, connected: bool) -> bool {
    eventually(Duration::from_secs(15), || async {
        let ready = get(&format!("{}/readyz", p.hub_url)).await;
        let metrics = get(&format!("{}/metrics", p.hub_url)).await.text();
        let gauge = format!("switchboard_source_connected{{source=\"{source}\"}} {}", u8::from(connected));
        metrics.contains(&gauge)
            && if connected { ready.status == 200 } else { ready.status == 503 && ready.text().contains(source) }
    })
    .await
}

/// A broker process of the test's own on a free port, stopped by pid.
pub struct Broker {
    pub proc: Option<std::process::Child>,
    pub port: u16,
    args: Vec<String>,
    program: String,
}

impl Broker {
    pub fn start(program: &str, args: Vec<String>, port: u16) -> Self {
        let mut b = Broker { proc: None, port, args, program: program.to_string() };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); scripts/services installs it", self.program));
        self.proc = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on {}", self.program, self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.proc.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `tls:` block (CA, client certificate and key made by [`certificates`]
/// in `dir`) of a section of the config, indented to sit inside it.
pub fn tls_section(dir: &Path) -> String {
    let d = dir.display();
    format!("  tls:\n    ca: {d}/ca.pem\n    cert: {d}/client.pem\n    key: {d}/client-key.pem\n")
}

/// A CA, and server and client certificates it signed, as PEM files in `dir`:
/// `ca.pem`, `server.pem` (for 127.0.0.1 and localhost), `client.pem` and
/// their `-key.pem` files.
pub fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    // The test binary links rustls with two crypto providers, as the hub does,
    // so it must pick one before the first TLS connection.
    connector_core::install_crypto_provider();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "switchboard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [("server", vec!["127.0.0.1".to_string(), "localhost".into()]), ("client", vec!["hub".into()])]
    {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        // Distinct from the CA's name: OpenSSL takes a certificate named like its issuer for self-signed.
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// A POST with `Expect: 100-continue`, sent the way Go's transport and curl
/// send it: the head, then the body only once the server answers `100
/// Continue`. Returns whether it did, and the final response (status line,
/// headers and body) as text.
pub fn post_expecting_continue(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (bool, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut seen = vec![];
    let mut chunk = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    let continued = seen.starts_with(b"HTTP/1.1 100");
    if continued {
        stream.write_all(body.as_bytes()).unwrap();
        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        seen.drain(..end);
    }
    let _ = stream.read_to_end(&mut seen);
    (continued, String::from_utf8_lossy(&seen).into_owned())
}

/// The Kafka broker the tests need (scripts/services starts noida-db on 9092).
pub const KAFKA: &str = "127.0.0.1:9092";

/// Creates `topic` with `partitions` on the test broker.
pub async fn kafka_topic(topic: &str, partitions: i32) {
    kafka_topic_at(KAFKA, topic, partitions).await
}

/// Creates `topic` with `partitions` on the broker at `servers`.
pub async fn kafka_topic_at(servers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics([&new], &options).await {
        Ok(results) => {
            for r in results {
                if let Err((t, e)) = r {
                    panic!("cannot create Kafka topic {t}: {e}");
                }
            }
        }
        Err(e) => panic!("Kafka is not reachable at {servers} ({e}); start it with scripts/services (noida-db)"),
    }
}

/// A producer on the test broker.
pub fn kafka_producer() -> rdkafka::producer::FutureProducer {
    kafka_producer_at(KAFKA)
}

pub fn kafka_producer_at(servers: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new().set("bootstrap.servers", servers).set("message.timeout.ms", "10000").create().unwrap()
}

/// Sends one record and waits for the broker's ack.
pub async fn kafka_send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut h = rdkafka::message::OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(rdkafka::message::Header { key: k, value: Some(*v) });
    }
    let mut record = rdkafka::producer::FutureRecord::to(topic).payload(body).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Err((e, _)) = producer.send(record, Duration::from_secs(10)).await {
        panic!("cannot produce to {topic} ({e}); start Kafka with scripts/services (noida-db)");
    }
}

/// The Kafka-protocol broker's binary that scripts/services installs
/// (noida-db), for tests that run and restart a broker of their own.
pub fn noida() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.services/noida/noida_db/noida-db");
    assert!(path.exists(), "{} is missing; scripts/services installs it (noida-db from PyPI)", path.display());
    path.display().to_string()
}

/// Whether `group` has committed every record of `topic`'s `partitions`;
/// `None` when the broker cannot be asked.
pub async fn kafka_settled(group: &str, topic: &str, partitions: i32) -> Option<bool> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (group, topic) = (group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", KAFKA).set("group.id", &group).create().ok()?;
        let timeout = Duration::from_secs(5);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, timeout).ok()?;
        let all = (0..partitions).all(|p| {
            let end = consumer.fetch_watermarks(&topic, p, timeout).map(|(_, high)| high).unwrap_or(-1);
            match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o == end,
                _ => end == 0,
            }
        });
        Some(all)
    })
    .await
    .ok()
    .flatten()
}

/// The `kafka:` section for a test: its own group, and quick rebalances
/// (a rebalance waits for members up to their `max.poll.interval.ms`, and
/// a killed one is noticed after `session_timeout`).
pub fn kafka_section(group: &str) -> String {
    format!(
        "kafka:\n  enabled: true\n  bootstrap_servers: {KAFKA}\n  group: {group}\n  offset_reset: earliest\n  session_timeout: 6s\n  commit_interval: 200ms\n  properties:\n    max.poll.interval.ms: \"10000\"\n"
    )
}

/// A conform.py function (tests/fixtures/conform.py) subscribed to `topic`,
/// recording its calls to `record`.
pub fn conform_fn(name: &str, topic: &str, record: &Path, annotations: &str) -> String {
    format!(
        "  {name}:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: {}\n    annotations:\n      topic: \"{topic}\"\n{annotations}",
        fixture("conform.py"),
        record.display()
    )
}

/// The calls a conform.py function recorded: `{t, body, status, headers}`.
pub fn calls(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

pub fn calls_of(record: &Path, body: &str) -> Vec<serde_json::Value> {
    calls(record).into_iter().filter(|c| c["body"] == body).collect()
}

/// moto's server, as scripts/services starts it.
pub const SQS: &str = "http://127.0.0.1:4566";

/// An AWS client for moto (SQS, SNS, S3 all answer on the one port).
macro_rules! moto_client {
    ($sdk:ident) => {{
        let config = $sdk::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new("us-east-1"))
            .endpoint_url(SQS)
            .credentials_provider($sdk::config::Credentials::new("test", "test", None, None, "test"))
            .build();
        $sdk::Client::from_conf(config)
    }};
}

pub fn sqs_client() -> aws_sdk_sqs::Client {
    moto_client!(aws_sdk_sqs)
}

pub fn sns_client() -> aws_sdk_sns::Client {
    moto_client!(aws_sdk_sns)
}

/// An S3 client for moto, with path-style addressing (no bucket DNS names here).
pub fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(SQS)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The ARN of the queue at `url`.
pub async fn sqs_arn(url: &str) -> String {
    let attrs = sqs_client()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    attrs.attributes.unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone()
}

/// Creates a queue (FIFO when its name ends in `.fifo`) and returns its URL.
pub async fn sqs_queue(name: &str) -> String {
    let mut create = sqs_client().create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    match create.send().await {
        Ok(q) => q.queue_url.expect("a queue URL"),
        Err(e) => panic!(
            "SQS (moto) is not reachable at {SQS} ({}); start it with scripts/services",
            aws_sdk_sqs::error::DisplayErrorContext(&e)
        ),
    }
}

/// Whether the queue at `url` holds no message, visible or in flight;
/// `None` when moto cannot be asked.
pub async fn sqs_settled(url: &str) -> Option<bool> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = sqs_client()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .ok()?
        .attributes?;
    let count = |a: A| attrs.get(&a).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    Some(count(A::ApproximateNumberOfMessages) + count(A::ApproximateNumberOfMessagesNotVisible) == 0)
}

/// The `sqs:` section for a test: moto, short polls and a short visibility timeout.
/// A queue `name` whose redrive policy moves a message to `dlq` after
/// `max_receives` receives; its URL.
pub async fn sqs_queue_with_dlq(name: &str, dlq: &str, max_receives: u32) -> String {
    let policy =
        serde_json::json!({"deadLetterTargetArn": sqs_arn(dlq).await, "maxReceiveCount": max_receives.to_string()});
    let create = sqs_client()
        .create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, policy.to_string());
    create.send().await.unwrap().queue_url.unwrap()
}

pub fn sqs_section() -> String {
    format!(
        "sqs:\n  enabled: true\n  region: us-east-1\n  endpoint_url: {SQS}\n  wait_time: 1s\n  visibility_timeout: 2s\n"
    )
}
