//! Benchmark building blocks: a closed-loop HTTP load generator with an HDR
//! latency histogram, and process helpers that start and stop what a suite
//! measures. Every process is stopped by pid when its guard drops.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    /// Latency at quantile `q`, in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `connections` keep-alive HTTP/1.1 connections, each sending `method url`
/// with `body` back to back for `duration`. Responses must be 2xx.
pub async fn load(
    url: &str,
    method: &str,
    body: &'static [u8],
    connections: usize,
    duration: Duration,
) -> Result<Report> {
    load_with(url, method, &[], body, connections, duration).await
}

/// When a load run stops: after a time, or after a number of requests
/// (for instruction counts, which are per request).
#[derive(Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    Requests(u64),
}

impl From<Duration> for Until {
    fn from(d: Duration) -> Self {
        Until::Elapsed(d)
    }
}

/// [`load`] with extra request headers.
pub async fn load_with(
    url: &str,
    method: &str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    connections: usize,
    until: impl Into<Until>,
) -> Result<Report> {
    let uri: http::Uri = url.parse().context("benchmark URL")?;
    let authority = uri.authority().context("URL without host")?.to_string();
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or("/".into());
    let method: http::Method = method.parse()?;
    let until = until.into();
    let started = Instant::now();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = vec![];
    for _ in 0..connections {
        let (authority, path, method, sent) = (authority.clone(), path.clone(), method.clone(), sent.clone());
        let more = move || match until {
            Until::Elapsed(d) => started.elapsed() < d,
            Until::Requests(n) => sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n,
        };
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            while more() {
                let mut req =
                    http::Request::builder().method(method.clone()).uri(&path).header(http::header::HOST, &authority);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.body(Full::new(Bytes::from_static(body)))?;
                let t = Instant::now();
                let res = sender.send_request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                hist.record(t.elapsed().as_micros().max(1) as u64).ok();
                if status.is_success() { ok += 1 } else { errors += 1 }
            }
            anyhow::Ok((ok, errors, hist))
        }));
    }
    let mut report = Report {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for t in tasks {
        let (ok, errors, hist) = t.await??;
        report.requests += ok;
        report.errors += errors;
        report.latency.add(hist)?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Proc(Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn start(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Self(child))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on, never handed out before in this run: binding
/// port 0 can return a port just released, so two calls in a row could
/// name the same one.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if GIVEN.lock().expect("port set lock").insert(port) {
            return Ok(port);
        }
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_ok(url: &str) -> Result<()> {
    for _ in 0..300 {
        if let Ok(r) = load(url, "GET", b"", 1, Duration::from_millis(1)).await
            && r.requests > 0
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer 2xx within 15s")
}

/// One markdown row: name, req/s, p50, p99, errors and the ratio to a baseline.
pub fn row(name: &str, r: &Report, baseline: Option<f64>) -> String {
    let ratio = baseline.map_or("1.00".into(), |b| format!("{:.2}", r.rps() / b));
    format!("| {name} | {:.0} | {:.3} | {:.3} | {} | {ratio} |", r.rps(), r.ms(0.5), r.ms(0.99), r.errors)
}

pub const TABLE_HEAD: &str = "| path | req/s | p50 ms | p99 ms | non-2xx | vs (a) |\n|---|---:|---:|---:|---:|---:|";

/// The chain every hub benchmark invokes: plain upstream behind a watchdog
/// (http mode) behind a gateway whose static function `fn` has these
/// `annotations` (`topic` among them).
pub struct Chain {
    /// Stopped on drop.
    pub procs: Vec<Proc>,
    pub gateway: String,
    pub watchdog: String,
}

/// Benchmarks measure the event path on loopback; the API's credentials
/// would only add set-up for the sidecars' discovery, so they are off.
/// (`switchboard up` configs here say `basic_auth: false` in their own
/// `gateway:` section.)
pub const OPEN_API: &str = "gateway:\n  basic_auth: false\n";

/// The `gateway.yml`-style `provider:` section naming `fn` at `watchdog`.
pub fn static_function(watchdog: &str, annotations: &[(&str, String)]) -> String {
    let annotations: String = annotations.iter().map(|(k, v)| format!("        {k}: \"{v}\"\n")).collect();
    format!(
        "provider:\n  kind: static\n  functions:\n    fn:\n      upstream: {watchdog}\n      annotations:\n{annotations}"
    )
}

/// A watchdog in http mode starting `upstream` as its function, as the
/// process provider runs one; its URL.
pub fn http_watchdog(switchboard: &str, upstream: &str) -> Result<(Proc, String)> {
    let (up, wd) = (free_port()?, free_port()?);
    let watchdog = Proc::start(
        switchboard,
        &["watchdog"],
        &[
            ("fprocess", upstream),
            ("mode", "http"),
            ("upstream_url", &format!("http://127.0.0.1:{up}")),
            ("PORT", &up.to_string()),
            ("port", &wd.to_string()),
            ("bind_address", "127.0.0.1"),
            ("suppress_lock", "true"),
            ("healthcheck_interval", "0s"),
        ],
    )?;
    Ok((watchdog, format!("http://127.0.0.1:{wd}")))
}

pub async fn function_chain(
    switchboard: &str,
    upstream: &str,
    dir: &std::path::Path,
    annotations: &[(&str, String)],
) -> Result<Chain> {
    let gw = free_port()?;
    let (watchdog, watchdog_url) = http_watchdog(switchboard, upstream)?;
    let cfg = dir.join("gateway.yml");
    std::fs::write(
        &cfg,
        format!("{OPEN_API}{}queue:\n  enabled: false\n", static_function(&watchdog_url, annotations)),
    )?;
    let gateway =
        Proc::start(switchboard, &["gateway", "--config", &cfg.display().to_string(), "--port", &gw.to_string()], &[])?;
    let url = format!("http://127.0.0.1:{gw}");
    wait_ok(&format!("{url}/function/fn")).await?;
    Ok(Chain { procs: vec![watchdog, gateway], gateway: url, watchdog: watchdog_url })
}

/// CPU time (user + system) used so far by these processes, from /proc.
/// Per event, it shows what a path costs the machine. Steal time on a shared
/// VM inflates it too (docs/benchmarks.md), so compare figures within a run.
pub fn cpu_time(pids: &[u32]) -> Duration {
    static TICKS_PER_SECOND: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
            .unwrap_or(100)
    });
    let ticks = |stat: &str| -> u64 {
        // Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    };
    let total: u64 =
        pids.iter().map(|pid| ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())).sum();
    Duration::from_micros(total * 1_000_000 / ticks_per_second)
}

/// The pid of the running process named `name` (e.g. `nats-server`), if any.
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        (std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim() == name).then_some(pid)
    })
}

/// One request on a connection of its own: the status and the body.
pub async fn request(method: &str, url: &str, body: &'static [u8]) -> Result<(u16, Bytes)> {
    let uri: http::Uri = url.parse().context("URL")?;
    let authority = uri.authority().context("URL without host")?.to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or("/".into());
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body)))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    Ok((status, res.into_body().collect().await?.to_bytes()))
}

/// Reads a counter's value from Prometheus text (0 when absent).
pub async fn metric(url: &str, prefix: &str) -> f64 {
    let base = url.split('/').take(3).collect::<Vec<_>>().join("/");
    let Ok((_, body)) = request("GET", &format!("{base}/metrics"), b"").await else { return 0.0 };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The binaries every suite measures.
#[derive(clap::Args)]
pub struct Binaries {
    /// The switchboard binary to measure.
    #[arg(long, default_value = "target/release/switchboard")]
    pub switchboard: String,
    /// The plain upstream binary.
    #[arg(long, default_value = "target/release/upstream")]
    pub upstream: String,
    /// The TCP relay binary (the cost of an extra hop).
    #[arg(long, default_value = "target/release/relay")]
    pub relay: String,
}
