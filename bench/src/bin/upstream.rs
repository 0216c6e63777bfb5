//! A plain HTTP/1.1 upstream that answers every request with `OK`: the
//! baseline every benchmark path is compared against. Port from $PORT.
//! `upstream CAPACITY WORK_MS` is a function with a capacity instead: it
//! serves CAPACITY requests at once, each in WORK_MS milliseconds, and
//! answers any beyond them 429 at once (adaptive-bench).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT").unwrap_or_else(|_| "8000".into()).parse()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let capacity: usize = args.first().map_or(Ok(usize::MAX), |a| a.parse())?;
    let work = Duration::from_millis(args.get(1).map_or(Ok(0), |a| a.parse())?);
    let running = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let running = running.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let running = running.clone();
                async move {
                    req.into_body().collect().await?;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut res = http::Response::new(Full::new(Bytes::from_static(b"OK")));
                    if now > capacity {
                        *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                    } else if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, hyper::Error>(res)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
