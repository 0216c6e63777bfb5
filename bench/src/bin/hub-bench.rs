//! The hub benchmark, in one run on this machine:
//!  direct:      load generator → gateway → watchdog (http) → upstream
//!  cloudevents: load generator → hub (CloudEvents, binary mode) → the same chain
//! at one connection (added latency) and at `-c` connections (throughput);
//! then JetStream → hub → the same chain: a stream of `-n` messages drained
//! by `switchboard connect nats`. Needs NATS with JetStream on 127.0.0.1:4222.
//! Run with `bench/run hub`.

use bench::{Proc, Report, free_port, function_chain, load, load_with, row, wait_ok};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Seconds per HTTP measurement.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    /// Messages in the JetStream run.
    #[arg(short = 'n', long, default_value_t = 50_000)]
    messages: u64,
}

const CE_HEADERS: &[(&str, &str)] =
    &[("ce-id", "bench-1"), ("ce-source", "/bench"), ("ce-type", "bench.ce"), ("ce-specversion", "1.0")];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let d = Duration::from_secs(a.duration);
    let (gw, hub, ce, hub2) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let dir = std::env::temp_dir().join(format!("switchboard-hub-bench-{gw}"));
    std::fs::create_dir_all(&dir)?;
    let stream = format!("HUBBENCH{gw}");
    let subject = format!("hubbench.{gw}");

    let (_chain, gateway) =
        function_chain(&a.bin.switchboard, &a.bin.upstream, &dir, &format!("bench.ce,{subject}")).await?;
    let hub_cfg = dir.join("hub.yml");
    std::fs::write(
        &hub_cfg,
        format!(
            "hub:\n  listen: 127.0.0.1:{hub}\n  dead_letter_file: {}/dead.jsonl\ncloudevents:\n  listen: 127.0.0.1:{ce}\n",
            dir.display()
        ),
    )?;
    let _hub = Proc::start(
        &a.bin.switchboard,
        &["connect", "cloudevents", "--gateway", &gateway, "--config", &hub_cfg.display().to_string()],
        &[],
    )?;
    let direct = format!("{gateway}/function/fn");
    let via_hub = format!("http://127.0.0.1:{ce}/");
    wait_ok(&format!("http://127.0.0.1:{hub}/readyz")).await?;

    println!("HTTP: {}s per measurement, on {} cores\n", a.duration, std::thread::available_parallelism()?);
    println!("{}", bench::TABLE_HEAD.replace("vs (a)", "vs direct"));
    for c in [1, a.connections] {
        load(&direct, "POST", b"hello", c, Duration::from_secs(1)).await?;
        let base = load(&direct, "POST", b"hello", c, d).await?;
        load_with(&via_hub, "POST", CE_HEADERS, b"hello", c, Duration::from_secs(1)).await?;
        let hubbed = load_with(&via_hub, "POST", CE_HEADERS, b"hello", c, d).await?;
        println!("{}", row(&format!("direct, c={c}"), &base, None));
        println!("{}", row(&format!("cloudevents → hub, c={c}"), &hubbed, Some(base.rps())));
        println!(
            "| added by the hub, c={c} | | {:+.3} | {:+.3} | | |",
            added(&hubbed, &base, 0.5),
            added(&hubbed, &base, 0.99)
        );
    }

    // JetStream: publish everything first, then time the drain.
    let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    let js = async_nats::jetstream::new(client.clone());
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
    let js_cfg = dir.join("js.yml");
    std::fs::write(
        &js_cfg,
        format!(
            "hub:\n  listen: 127.0.0.1:{hub2}\n  dead_letter_file: {}/dead.jsonl\nnats:\n  jetstream:\n    stream: {stream}\n    durable: bench\n",
            dir.display()
        ),
    )?;
    let started = Instant::now();
    let _js_hub = Proc::start(
        &a.bin.switchboard,
        &["connect", "nats", "--gateway", &gateway, "--config", &js_cfg.display().to_string()],
        &[],
    )?;
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
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "JetStream drain did not finish in 10 minutes");
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some((t, done)) = first_ack {
        println!(
            "\nJetStream steady drain (from the first ack to the last): {:.0} events/s",
            (a.messages - done) as f64 / t.elapsed().as_secs_f64()
        );
    }
    println!(
        "JetStream → hub → gateway → watchdog → upstream: {} messages acked in {secs:.2}s = {:.0} events/s (from connector start, connect and consumer creation included)",
        a.messages,
        a.messages as f64 / secs
    );
    js.delete_stream(&stream).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn added(hub: &Report, direct: &Report, q: f64) -> f64 {
    hub.ms(q) - direct.ms(q)
}
