//! The cheapest hop there is: a TCP relay that copies bytes both ways
//! between each accepted connection and its own connection to `TARGET`,
//! parsing nothing. Put in front of a chain, it measures what any extra
//! loopback hop costs on this machine, before a single header is read.
//! `relay LISTEN TARGET`, e.g. `relay 127.0.0.1:19006 127.0.0.1:19003`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (listen, target) = match (args.next(), args.next()) {
        (Some(l), Some(t)) => (l, t),
        _ => anyhow::bail!("usage: relay LISTEN TARGET (host:port each)"),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}
