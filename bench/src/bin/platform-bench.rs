//! The platform benchmark, all paths in one run on this machine:
//!  (a) load generator → plain upstream
//!  (b) → watchdog (http mode) → upstream
//!  (c) → gateway → watchdog (http mode) → upstream
//!  (d) → watchdog (serializing mode) forking `cat`, one connection
//!  (e)–(h) → gateway → a process-provider replica (http mode to the
//!      upstream; fork `cat`), unisolated and in its sandbox (bubblewrap)
//! then the cold start of those replicas: from a call to a function scaled
//! to zero to its answer.
//! Run with `bench/run platform` (builds in release mode first).

use bench::{Proc, free_port, load, request, row, wait_ok};
use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Seconds per path.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let d = Duration::from_secs(a.duration);
    let (up, wd, wd_cat, gw) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let (up_s, wd_s, cat_s, gw_s) = (up.to_string(), wd.to_string(), wd_cat.to_string(), gw.to_string());
    let upstream_url = format!("http://127.0.0.1:{up}");

    // The watchdog starts the upstream itself, as it does for a function.
    let _watchdog = Proc::start(
        &a.bin.switchboard,
        &["watchdog"],
        &[
            ("fprocess", &a.bin.upstream),
            ("mode", "http"),
            ("upstream_url", &upstream_url),
            ("PORT", &up_s),
            ("port", &wd_s),
            ("bind_address", "127.0.0.1"),
            ("suppress_lock", "true"),
            ("healthcheck_interval", "0s"),
        ],
    )?;
    let _cat = Proc::start(
        &a.bin.switchboard,
        &["watchdog"],
        &[
            ("fprocess", "cat"),
            ("mode", "serializing"),
            ("port", &cat_s),
            ("bind_address", "127.0.0.1"),
            ("suppress_lock", "true"),
            ("healthcheck_interval", "0s"),
        ],
    )?;
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{gw}"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("gateway.yml");
    std::fs::write(
        &config,
        format!(
            "{}provider:\n  kind: static\n  functions:\n    fn:\n      upstream: http://127.0.0.1:{wd}\nqueue:\n  enabled: false\n",
            bench::OPEN_API
        ),
    )?;
    let _gateway =
        Proc::start(&a.bin.switchboard, &["gateway", "--config", &config.display().to_string(), "--port", &gw_s], &[])?;
    // The same functions as replicas of the process provider, unisolated and sandboxed.
    let stack = dir.join("stack.yml");
    std::fs::write(
        &stack,
        format!(
            "functions:\n  http:\n    fprocess: {}\n    environment:\n      mode: http\n  cat:\n    fprocess: cat\n",
            a.bin.upstream
        ),
    )?;
    let mut replicas = vec![];
    for isolation in ["none", "sandbox"] {
        let port = free_port()?;
        let config = dir.join(format!("{isolation}.yml"));
        std::fs::write(
            &config,
            format!(
                "{}provider:\n  kind: process\n  stack: {}\n  isolation: {isolation}\n  state: null\n  secrets: {}/secrets-{isolation}\nqueue:\n  enabled: false\n",
                bench::OPEN_API,
                stack.display(),
                dir.display()
            ),
        )?;
        let args =
            ["gateway", "--config", &config.display().to_string(), "--port", &port.to_string()].map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        replicas.push((Proc::start(&a.bin.switchboard, &args, &[])?, port));
    }
    let (none, sandbox) = (replicas[0].1, replicas[1].1);

    let paths = [
        ("(a) upstream direct", upstream_url.clone(), a.connections),
        ("(b) watchdog http → upstream", format!("http://127.0.0.1:{wd}/"), a.connections),
        ("(c) gateway → watchdog http → upstream", format!("http://127.0.0.1:{gw}/function/fn"), a.connections),
        ("(d) watchdog serializing, fork `cat`", format!("http://127.0.0.1:{wd_cat}/"), 1),
        ("(e) gateway → replica http, unisolated", format!("http://127.0.0.1:{none}/function/http"), a.connections),
        ("(f) gateway → replica http, sandboxed", format!("http://127.0.0.1:{sandbox}/function/http"), a.connections),
        ("(g) gateway → replica fork `cat`, unisolated", format!("http://127.0.0.1:{none}/function/cat"), 1),
        ("(h) gateway → replica fork `cat`, sandboxed", format!("http://127.0.0.1:{sandbox}/function/cat"), 1),
    ];
    for (_, url, _) in &paths {
        wait_ok(url).await?;
    }
    println!(
        "{} connections ((d), (g), (h): 1), {}s per path, on {} cores\n",
        a.connections,
        a.duration,
        std::thread::available_parallelism()?
    );
    println!("{}", bench::TABLE_HEAD);
    let mut baseline = None;
    for (name, url, connections) in paths {
        // A short warm-up so pools and page caches are in steady state.
        load(&url, "POST", b"hello", connections, Duration::from_secs(1)).await?;
        let r = load(&url, "POST", b"hello", connections, d).await?;
        println!("{}", row(name, &r, baseline));
        baseline.get_or_insert(r.rps());
    }
    println!("\nCold start, scaled to zero through the API, then one call ({COLD_STARTS} each):\n");
    println!("| function | isolation | median ms | max ms |\n|---|---|---:|---:|");
    for function in ["http", "cat"] {
        for (isolation, port) in [("none", none), ("sandbox", sandbox)] {
            let mut took = cold_starts(port, function).await?;
            took.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {function} | {isolation} | {:.1} | {:.1} |",
                ms(took[took.len() / 2]),
                ms(took[took.len() - 1])
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

const COLD_STARTS: usize = 7;

/// The times from a call to `function` at zero replicas to its answer.
async fn cold_starts(port: u16, function: &str) -> anyhow::Result<Vec<Duration>> {
    let base = format!("http://127.0.0.1:{port}");
    let mut took = vec![];
    for _ in 0..COLD_STARTS {
        request("POST", &format!("{base}/system/scale-function/{function}"), b"{\"replicas\":0}").await?;
        loop {
            let (_, f) = request("GET", &format!("{base}/system/function/{function}"), b"").await?;
            if String::from_utf8_lossy(&f).contains("\"replicas\":0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        let (status, _) = request("POST", &format!("{base}/function/{function}"), b"hello").await?;
        anyhow::ensure!(status == 200, "cold call to {function} answered {status}");
        took.push(started.elapsed());
    }
    Ok(took)
}
