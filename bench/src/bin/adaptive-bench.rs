//! Adaptive concurrency against fixed caps, in one run: a function that
//! serves `--capacity` calls at once (each `--work-ms`) and answers 429
//! beyond (the upstream binary in that mode, behind a watchdog), fed
//! CloudEvents by `-c` connections through `switchboard up`, under three
//! annotations: `max_inflight` = its capacity (the well-chosen fixed cap,
//! the baseline), `max_inflight` = the ceiling (a fixed cap set too
//! high), and `concurrency: adaptive` under that ceiling. Reported:
//! events delivered per second (from the hub's own count), the 429s the
//! function gave, and the adaptive cap at the end. Rounds interleave, so
//! drift on a shared machine hits each alike. Run with `bench/run adaptive`.

use bench::{Proc, free_port, http_watchdog, load_with, metric, static_function, wait_ok};
use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bin: bench::Binaries,
    /// Calls the function serves at once.
    #[arg(long, default_value_t = 8)]
    capacity: usize,
    /// Milliseconds each call takes.
    #[arg(long, default_value_t = 5)]
    work_ms: u64,
    /// The ceiling: the too-high fixed cap, and the adaptive cap's upper bound.
    #[arg(long, default_value_t = 64)]
    ceiling: usize,
    /// CloudEvents connections (events in flight at once).
    #[arg(short, long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(short, long, default_value_t = 5)]
    duration: u64,
    #[arg(short, long, default_value_t = 3)]
    rounds: usize,
}

/// A way to cap the function; its function subscribes to its own
/// CloudEvents type, `name`.
struct Variant {
    label: &'static str,
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const VARIANTS: [Variant; 3] = [
    Variant {
        label: "fixed cap = capacity (a)",
        name: "fixed",
        headers: &[("ce-id", "b"), ("ce-source", "/b"), ("ce-type", "fixed"), ("ce-specversion", "1.0")],
    },
    Variant {
        label: "fixed cap = ceiling",
        name: "high",
        headers: &[("ce-id", "b"), ("ce-source", "/b"), ("ce-type", "high"), ("ce-specversion", "1.0")],
    },
    Variant {
        label: "adaptive, under the ceiling",
        name: "adaptive",
        headers: &[("ce-id", "b"), ("ce-source", "/b"), ("ce-type", "adaptive"), ("ce-specversion", "1.0")],
    },
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let id = free_port()?;
    let dir = std::env::temp_dir().join(format!("switchboard-adaptive-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let function = format!("{} {} {}", a.bin.upstream, a.capacity, a.work_ms);
    let (_watchdog, watchdog) = http_watchdog(&a.bin.switchboard, &function)?;
    wait_ok(&format!("{watchdog}/_/health")).await.ok();
    // Quick retries: a 429 is answered at once, and waiting long for the
    // next try would only idle the function.
    let retry = [
        ("com.openfaas.retry.attempts", "50".to_string()),
        ("com.openfaas.retry.min_wait", "5ms".to_string()),
        ("com.openfaas.retry.max_wait", "50ms".to_string()),
    ];
    let mut functions = String::from("provider:\n  kind: static\n  functions:\n");
    for Variant { name, .. } in VARIANTS {
        let mut annotations = vec![("topic", name.to_string())];
        annotations.extend(retry.iter().cloned());
        match name {
            "fixed" => annotations.push(("com.switchboard.max_inflight", a.capacity.to_string())),
            "high" => annotations.push(("com.switchboard.max_inflight", a.ceiling.to_string())),
            _ => {
                annotations.push(("com.switchboard.max_inflight", a.ceiling.to_string()));
                annotations.push(("com.switchboard.concurrency", "adaptive".to_string()));
            }
        }
        let one = static_function(&watchdog, &annotations);
        let entry =
            one.split_once("  functions:\n").map_or("", |(_, f)| f).replacen("    fn:", &format!("    {name}:"), 1);
        functions.push_str(&entry);
    }
    let (port, hub, ce) = (free_port()?, free_port()?, free_port()?);
    let cfg = dir.join("up.yml");
    std::fs::write(
        &cfg,
        format!(
            "{functions}gateway:\n  basic_auth: false\n  port: {port}\nhub:\n  listen: 127.0.0.1:{hub}\n  dead_letter_store: {}/dead.redb\ncloudevents:\n  listen: 127.0.0.1:{ce}\nqueue:\n  enabled: false\ncron:\n  enabled: false\n",
            dir.display()
        ),
    )?;
    let _up = Proc::start(&a.bin.switchboard, &["up", "--config", &cfg.display().to_string()], &[])?;
    let hub = format!("http://127.0.0.1:{hub}");
    wait_ok(&format!("{hub}/readyz")).await?;
    println!(
        "On {} cores: a function serving {} at once, {} ms a call, 429 beyond; {} connections, {} s × {} rounds.",
        std::thread::available_parallelism()?,
        a.capacity,
        a.work_ms,
        a.connections,
        a.duration,
        a.rounds
    );
    let mut totals = [(0.0f64, 0.0f64, 0.0f64); 3]; // delivered, 429s, seconds
    for _ in 0..a.rounds {
        for (i, Variant { name, headers, .. }) in VARIANTS.iter().enumerate() {
            let label = format!(r#"function="{name}.openfaas-fn""#);
            let delivered = format!("switchboard_events_delivered_total{{{label},");
            let rejected = format!(r#"switchboard_invocation_seconds_count{{code="429",{label}}}"#);
            let (d0, r0) = (metric(&hub, &delivered).await, metric(&hub, &rejected).await);
            let url = format!("http://127.0.0.1:{ce}/");
            let r = load_with(&url, "POST", headers, b"event", a.connections, Duration::from_secs(a.duration)).await?;
            let (d1, r1) = (metric(&hub, &delivered).await, metric(&hub, &rejected).await);
            totals[i].0 += d1 - d0;
            totals[i].1 += r1 - r0;
            totals[i].2 += r.elapsed.as_secs_f64();
        }
    }
    let baseline = totals[0].0 / totals[0].2;
    println!("\n| cap | events/s | 429s per 100 events | vs (a) |\n|---|---:|---:|---:|");
    for (Variant { label, .. }, (delivered, rejected, secs)) in VARIANTS.iter().zip(totals) {
        let rate = delivered / secs;
        println!("| {label} | {rate:.0} | {:.1} | {:.2} |", 100.0 * rejected / delivered.max(1.0), rate / baseline);
    }
    let cap = metric(&hub, r#"switchboard_concurrency_limit{function="adaptive.openfaas-fn"}"#).await;
    println!("\nThe adaptive cap at the end: {cap} (the function serves {}).", a.capacity);
    Ok(())
}
