//! The async queue benchmark, in one run on this machine: `/async-function`
//! calls accepted (202) per second by 16 connections for a while, and
//! completed per second (from the first call until the workers have run
//! every accepted one), for
//!  (a) the synchronous chain the workers invoke (gateway → watchdog → upstream)
//!  (b) the embedded queue, its worker in the gateway
//!  (c) JetStream, the worker in the gateway
//!  (d) JetStream, the gateway only publishing, one `queue-worker`
//!  (e) JetStream, the gateway only publishing, two `queue-worker`s
//! JetStream is the NATS server at 127.0.0.1:4222 (scripts/services starts it).
//! Run with `bench/run queue`.

use bench::{Proc, free_port, load, metric, wait_ok};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Seconds of calls per path.
    #[arg(short, long, default_value_t = 5)]
    duration: u64,
    /// Calls each worker runs at once (queue.max_inflight).
    #[arg(long, default_value_t = 16)]
    inflight: usize,
}

const NATS: &str = "nats://127.0.0.1:4222";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (_watchdog, watchdog) = bench::http_watchdog(&a.bin.switchboard, &a.bin.upstream)?;
    let dir = std::env::temp_dir().join(format!("switchboard-queue-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let function = bench::static_function(&watchdog, &[("x", "y".into())]);
    let js = async_nats::jetstream::new(
        async_nats::connect(NATS)
            .await
            .map_err(|e| anyhow::anyhow!("NATS at {NATS} ({e}); scripts/services starts it"))?,
    );

    println!(
        "{} connections, {}s of calls per path, {} in flight per worker, on {} cores\n",
        a.connections,
        a.duration,
        a.inflight,
        std::thread::available_parallelism()?
    );
    println!("| path | accepted/s | completed/s | vs (a) |\n|---|---:|---:|---:|");
    let mut baseline = None;
    let paths: [(&str, Option<&str>, usize); 5] = [
        ("(a) synchronous chain, no queue", None, 0),
        ("(b) embedded, worker in the gateway", Some("embedded"), 0),
        ("(c) JetStream, worker in the gateway", Some("jetstream"), 0),
        ("(d) JetStream, one queue-worker", Some("jetstream"), 1),
        ("(e) JetStream, two queue-workers", Some("jetstream"), 2),
    ];
    for (n, (name, backend, workers)) in paths.into_iter().enumerate() {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let stream = format!("BENCH_QUEUE_{port}");
        let queue = match backend {
            None => "queue:\n  enabled: false\n".to_string(),
            Some("embedded") => {
                format!("queue:\n  path: {}/queue-{n}.redb\n  max_inflight: {}\n", dir.display(), a.inflight)
            }
            Some(_) => format!(
                "queue:\n  backend: jetstream\n  consume: {}\n  max_inflight: {}\n  jetstream:\n    stream: {stream}\n    subject: bench.queue.{port}\n    dead_letter_stream: {stream}_DEAD\n    dead_letter_subject: bench.queue-dead.{port}\nnats:\n  url: {NATS}\n",
                workers == 0,
                a.inflight
            ),
        };
        let config = dir.join(format!("gateway-{n}.yml"));
        std::fs::write(&config, format!("{}{function}{queue}", bench::OPEN_API))?;
        let config = config.display().to_string();
        let mut procs =
            vec![Proc::start(&a.bin.switchboard, &["gateway", "--config", &config, "--port", &port.to_string()], &[])?];
        for _ in 0..workers {
            let listen = format!("127.0.0.1:{}", free_port()?);
            let args = ["queue-worker", "--config", &config, "--listen", &listen, "--gateway", &url];
            procs.push(Proc::start(&a.bin.switchboard, &args, &[])?);
        }
        wait_ok(&format!("{url}/function/fn")).await?;
        let duration = Duration::from_secs(a.duration);
        let (accepted, completed) = match backend {
            None => {
                load(&format!("{url}/function/fn"), "POST", b"hello", a.connections, Duration::from_secs(1)).await?;
                let r = load(&format!("{url}/function/fn"), "POST", b"hello", a.connections, duration).await?;
                (r.rps(), r.rps())
            }
            Some(_) => {
                let async_url = format!("{url}/async-function/fn");
                let done = || metric(&url, "gateway_function_invocation_total{");
                let before = done().await;
                let started = Instant::now();
                let r = load(&async_url, "POST", b"hello", a.connections, duration).await?;
                // Every accepted call has run, or the run gives up after a minute.
                let deadline = Instant::now() + Duration::from_secs(60);
                while done().await - before < r.requests as f64 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let ran = done().await - before;
                anyhow::ensure!(ran >= r.requests as f64, "{name}: {ran} of {} accepted calls ran", r.requests);
                (r.rps(), r.requests as f64 / started.elapsed().as_secs_f64())
            }
        };
        let ratio = baseline.map_or("1.00".into(), |b: f64| format!("{:.2}", completed / b));
        println!("| {name} | {accepted:.0} | {completed:.0} | {ratio} |");
        baseline.get_or_insert(completed);
        drop(procs);
        if backend == Some("jetstream") {
            let _ = js.delete_stream(&stream).await;
            let _ = js.delete_stream(format!("{stream}_DEAD")).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
