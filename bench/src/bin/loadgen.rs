//! Ad hoc load: `loadgen URL [-c CONNECTIONS] [-d SECONDS] [-m METHOD] [--body TEXT]`.

use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    url: String,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    #[arg(short, long, default_value = "POST")]
    method: String,
    #[arg(long, default_value = "hello")]
    body: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let body: &'static [u8] = Box::leak(a.body.into_bytes().into_boxed_slice());
    let r = bench::load(&a.url, &a.method, body, a.connections, Duration::from_secs(a.duration)).await?;
    println!("{}\n{}", bench::TABLE_HEAD, bench::row(&a.url, &r, None));
    Ok(())
}
