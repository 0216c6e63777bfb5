//! Ad hoc load: `loadgen URL [-c CONNECTIONS] [-d SECONDS | -n REQUESTS] [-m METHOD] [-H 'Name: value']... [--body TEXT]`.

use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    url: String,
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    /// Send this many requests instead of running for `duration`.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    #[arg(short, long, default_value = "POST")]
    method: String,
    /// A request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value = "hello")]
    body: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let body: &'static [u8] = Box::leak(a.body.into_bytes().into_boxed_slice());
    let mut headers = vec![];
    for h in a.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| anyhow::anyhow!("header {h:?}: expected Name: value"))?;
        headers.push((&*name.trim().to_string().leak(), &*value.trim().to_string().leak()));
    }
    let headers: &'static [(&str, &str)] = headers.leak();
    let until = a.requests.map_or(bench::Until::Elapsed(Duration::from_secs(a.duration)), bench::Until::Requests);
    let r = bench::load_with(&a.url, &a.method, headers, body, a.connections, until).await?;
    println!("{}\n{}", bench::TABLE_HEAD, bench::row(&a.url, &r, None));
    Ok(())
}
