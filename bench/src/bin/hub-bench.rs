//! The hub benchmark, in one run on this machine, for both ways the hub runs
//! in front of the same gateway → watchdog (http) → upstream chain:
//!  sidecar: `switchboard connect` beside a gateway, invoking it over HTTP;
//!  up:      the hub inside the gateway's own process (`switchboard up`),
//!           invoking it in-process.
//! HTTP: a load generator calls each gateway directly, a TCP relay in front of
//! the sidecar's gateway (the cost of any extra hop, parsing nothing), and
//! each hub's CloudEvents receiver (binary mode), at one connection (added
//! latency) and at `-c` connections (throughput), in `--rounds` interleaved
//! rounds so that drift on a shared machine hits every path alike.
//! JetStream: a stream of `-n` messages drained by each topology.
//! Needs NATS with JetStream on 127.0.0.1:4222. Run with `bench/run hub`.

use bench::{Proc, Report, cpu_time, free_port, function_chain, load_with, pid_of, static_function, wait_ok};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Seconds per HTTP measurement.
    #[arg(short, long, default_value_t = 5)]
    duration: u64,
    /// Interleaved rounds of the HTTP measurements.
    #[arg(short, long, default_value_t = 3)]
    rounds: usize,
    /// Messages in each JetStream run.
    #[arg(short = 'n', long, default_value_t = 50_000)]
    messages: u64,
    /// The function's `com.switchboard.max_inflight` annotation (the hub's default when absent).
    #[arg(long)]
    max_inflight: Option<usize>,
    /// Skip the HTTP measurements and run only the JetStream drains.
    #[arg(long)]
    jetstream_only: bool,
}

const CE_HEADERS: &[(&str, &str)] =
    &[("ce-id", "bench-1"), ("ce-source", "/bench"), ("ce-type", "bench.ce"), ("ce-specversion", "1.0")];

/// One path's measurements summed over the rounds.
struct Path {
    name: &'static str,
    url: String,
    headers: &'static [(&'static str, &'static str)],
    /// Processes on the path besides the load generator.
    pids: Vec<u32>,
    total: Option<Report>,
    cpu: Duration,
}

impl Path {
    fn rps(&self) -> f64 {
        self.total.as_ref().map_or(0.0, Report::rps)
    }
    fn ms(&self, q: f64) -> f64 {
        self.total.as_ref().map_or(0.0, |r| r.ms(q))
    }
    fn cpu_per_request(&self) -> f64 {
        let n = self.total.as_ref().map_or(0, |r| r.requests).max(1);
        self.cpu.as_secs_f64() * 1e6 / n as f64
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let id = free_port()?;
    let dir = std::env::temp_dir().join(format!("switchboard-hub-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let subject = |topology: &str| format!("hubbench.{id}.{topology}");
    let mut annotations = vec![("topic", format!("bench.ce,{},{}", subject("sidecar"), subject("up")))];
    if let Some(n) = a.max_inflight {
        annotations.push(("com.switchboard.max_inflight", n.to_string()));
    }
    let chain = function_chain(&a.bin.switchboard, &a.bin.upstream, &dir, &annotations).await?;
    let function = static_function(&chain.watchdog, &annotations);
    let (watchdog, upstream_pid, gateway_pid) =
        (chain.procs[0].pid(), upstream_pid(chain.procs[0].pid()), chain.procs[1].pid());
    println!("On {} cores.", std::thread::available_parallelism()?);

    if !a.jetstream_only {
        let (relay_port, hub_port, ce_port) = (free_port()?, free_port()?, free_port()?);
        let relay = Proc::start(
            &a.bin.relay,
            &[&format!("127.0.0.1:{relay_port}"), chain.gateway.trim_start_matches("http://")],
            &[],
        )?;
        let hub_cfg = dir.join("hub.yml");
        std::fs::write(
            &hub_cfg,
            format!(
                "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\ncloudevents:\n  listen: 127.0.0.1:{ce_port}\n",
                dir.display()
            ),
        )?;
        let sidecar = Proc::start(
            &a.bin.switchboard,
            &["connect", "cloudevents", "--gateway", &chain.gateway, "--config", &hub_cfg.display().to_string()],
            &[],
        )?;
        wait_ok(&format!("http://127.0.0.1:{hub_port}/readyz")).await?;
        let (up_port, up_hub, up_ce) = (free_port()?, free_port()?, free_port()?);
        let up = start_up(
            &a.bin.switchboard,
            &dir,
            "up-ce",
            &format!(
                "{function}gateway:\n  basic_auth: false\n  bind: 127.0.0.1\n  port: {up_port}\nhub:\n  listen: 127.0.0.1:{up_hub}\ncloudevents:\n  listen: 127.0.0.1:{up_ce}\n"
            ),
        )?;
        wait_ok(&format!("http://127.0.0.1:{up_hub}/readyz")).await?;

        // The load generator is this process.
        let me = std::process::id();
        let chain_pids = vec![me, gateway_pid, watchdog, upstream_pid];
        let up_pids = vec![me, up.pid(), watchdog, upstream_pid];
        let path = |name, url: String, headers, pids: Vec<u32>| Path {
            name,
            url,
            headers,
            pids,
            total: None,
            cpu: Duration::ZERO,
        };
        for c in [1, a.connections] {
            let mut paths = [
                path(
                    "sidecar: direct to the gateway",
                    format!("{}/function/fn", chain.gateway),
                    &[][..],
                    chain_pids.clone(),
                ),
                path(
                    "sidecar: TCP relay → gateway",
                    format!("http://127.0.0.1:{relay_port}/function/fn"),
                    &[],
                    [vec![relay.pid()], chain_pids.clone()].concat(),
                ),
                path(
                    "sidecar: CloudEvents → hub → gateway",
                    format!("http://127.0.0.1:{ce_port}/"),
                    CE_HEADERS,
                    [vec![sidecar.pid()], chain_pids.clone()].concat(),
                ),
                path(
                    "up: direct to the gateway",
                    format!("http://127.0.0.1:{up_port}/function/fn"),
                    &[],
                    up_pids.clone(),
                ),
                path(
                    "up: CloudEvents → hub → gateway",
                    format!("http://127.0.0.1:{up_ce}/"),
                    CE_HEADERS,
                    up_pids.clone(),
                ),
            ];
            for p in &paths {
                load_with(&p.url, "POST", p.headers, b"hello", c, Duration::from_secs(1)).await?;
            }
            for _ in 0..a.rounds {
                for p in &mut paths {
                    let before = cpu_time(&p.pids);
                    let r = load_with(&p.url, "POST", p.headers, b"hello", c, Duration::from_secs(a.duration)).await?;
                    p.cpu += cpu_time(&p.pids).saturating_sub(before);
                    match &mut p.total {
                        Some(t) => {
                            t.requests += r.requests;
                            t.errors += r.errors;
                            t.elapsed += r.elapsed;
                            t.latency.add(&r.latency)?;
                        }
                        None => p.total = Some(r),
                    }
                }
            }
            println!(
                "\n{c} connection(s), {} rounds of {} s per path\n\n| path | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | vs direct |\n|---|---:|---:|---:|---:|---:|---:|",
                a.rounds, a.duration
            );
            for (i, p) in paths.iter().enumerate() {
                let direct = if i < 3 { &paths[0] } else { &paths[3] };
                println!(
                    "| {} | {:.0} | {:.3} | {:.3} | {:.0} | {} | {:.2} |",
                    p.name,
                    p.rps(),
                    p.ms(0.5),
                    p.ms(0.99),
                    p.cpu_per_request(),
                    p.total.as_ref().map_or(0, |r| r.errors),
                    p.rps() / direct.rps()
                );
            }
            for (hub, direct) in [(&paths[2], &paths[0]), (&paths[4], &paths[3])] {
                println!(
                    "| added by the hub ({}) | | {:+.3} | {:+.3} | {:+.0} | | |",
                    hub.name.split(':').next().unwrap_or_default(),
                    hub.ms(0.5) - direct.ms(0.5),
                    hub.ms(0.99) - direct.ms(0.99),
                    hub.cpu_per_request() - direct.cpu_per_request()
                );
            }
        }
    }

    // JetStream: publish everything first, then start the hub and time the drain.
    println!(
        "\n| JetStream → hub → chain | events | events/s (steady) | events/s (from start) | CPU µs/event |\n|---|---:|---:|---:|---:|"
    );
    let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    let js = async_nats::jetstream::new(client.clone());
    let nats_pid = pid_of("nats-server");
    for topology in ["sidecar", "up"] {
        let (stream, subject) = (format!("HUBBENCH{id}{topology}"), subject(topology));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await?;
        let mut acks = Vec::with_capacity(1024);
        for i in 0..a.messages {
            acks.push(js.publish(subject.clone(), format!("m{i}").into()).await?);
            if acks.len() == 1024 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
        for ack in acks {
            ack.await?;
        }
        let hub_port = free_port()?;
        let nats = format!(
            "hub:\n  listen: 127.0.0.1:{hub_port}\n  dead_letter_store: {}/dead-{hub_port}.redb\nnats:\n  enabled: true\n  jetstream:\n    stream: {stream}\n    durable: bench\n",
            dir.display()
        );
        let chain_pids = [vec![gateway_pid, watchdog, upstream_pid], nats_pid.into_iter().collect()].concat();
        let cpu_before = cpu_time(&chain_pids);
        let started = Instant::now();
        let hub = match topology {
            "sidecar" => {
                let cfg = dir.join("js.yml");
                std::fs::write(&cfg, &nats)?;
                Proc::start(
                    &a.bin.switchboard,
                    &["connect", "nats", "--gateway", &chain.gateway, "--config", &cfg.display().to_string()],
                    &[],
                )?
            }
            _ => start_up(
                &a.bin.switchboard,
                &dir,
                "up-js",
                &format!(
                    "{function}gateway:\n  basic_auth: false\n  bind: 127.0.0.1\n  port: {}\ncloudevents:\n  enabled: false\n{nats}",
                    free_port()?
                ),
            )?,
        };
        let consumer_name = format!("bench-{}", subject.replace('.', "_"));
        let mut consumer: Option<async_nats::jetstream::consumer::PullConsumer> = None;
        // When acks began, and how many were done then: the steady rate excludes start-up.
        let mut first_ack: Option<(Instant, u64)> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if consumer.is_none() {
                consumer = js.get_stream(&stream).await?.get_consumer(&consumer_name).await.ok();
            }
            if let Some(c) = consumer.as_mut() {
                let info = c.info().await?;
                if first_ack.is_none() && info.ack_floor.stream_sequence > 0 {
                    first_ack = Some((Instant::now(), info.ack_floor.stream_sequence));
                }
                if info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= a.messages {
                    break;
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "JetStream drain did not finish in 10 minutes"
            );
        }
        let secs = started.elapsed().as_secs_f64();
        // The chain and the NATS server, plus the hub's process (new, so all of its time counts).
        let cpu = cpu_time(&chain_pids).saturating_sub(cpu_before) + cpu_time(&[hub.pid()]);
        let steady = first_ack.map_or(0.0, |(t, done)| (a.messages - done) as f64 / t.elapsed().as_secs_f64());
        println!(
            "| {topology} | {} | {steady:.0} | {:.0} | {:.0} |",
            a.messages,
            a.messages as f64 / secs,
            cpu.as_secs_f64() * 1e6 / a.messages as f64
        );
        drop(hub);
        js.delete_stream(&stream).await?;
    }
    println!(
        "\nCPU µs is user + system time of every process on the path (NATS server included for JetStream), per request or event."
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `switchboard up` with this config (which names its ports), without queue or cron.
fn start_up(switchboard: &str, dir: &std::path::Path, name: &str, config: &str) -> anyhow::Result<Proc> {
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg, format!("{config}queue:\n  enabled: false\ncron:\n  enabled: false\n"))?;
    Proc::start(switchboard, &["up", "--config", &cfg.display().to_string()], &[])
}

/// The upstream is the watchdog's child.
fn upstream_pid(watchdog: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{watchdog}/task/{watchdog}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(watchdog)
}
