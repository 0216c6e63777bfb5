//! The request body every handler reads: hyper's, with a bound on the
//! time its sender may keep a reader waiting, and a record of whether it was
//! read to the end.

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct RequestBody {
    inner: Incoming,
    /// The most time, all waits together, a reader may spend waiting for
    /// the sender: a body dripped a byte at a time ends once it is spent.
    /// Only waits count, so a handler that reads slowly (a function that
    /// takes its time over an upload) is not cut short.
    limit: Duration,
    /// The waits so far.
    spent: Duration,
    /// Armed while a reader waits, for what is left of the limit.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait began.
    waiting: Option<Instant>,
    finished: Arc<AtomicBool>,
}

/// A sender that kept its reader waiting too long for its body.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not sent within {0:?} (read_timeout)")]
pub struct BodyTimeout(pub Duration);

impl RequestBody {
    /// The body, and a flag that turns true once it has been read to its end.
    pub(crate) fn new(inner: Incoming, limit: Duration) -> (Self, Arc<AtomicBool>) {
        let finished = Arc::new(AtomicBool::new(inner.is_end_stream()));
        (Self { inner, limit, spent: Duration::ZERO, timer: None, waiting: None, finished: finished.clone() }, finished)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(began) = this.waiting.take() {
                    this.spent += began.elapsed();
                }
                if frame.is_none() || this.inner.is_end_stream() {
                    this.finished.store(true, Ordering::Release);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.waiting.is_none() {
                    // A wait begins: the timer gets what is left of the limit.
                    let now = Instant::now();
                    this.waiting = Some(now);
                    let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(now)));
                    timer.as_mut().reset(now + this.limit.saturating_sub(this.spent));
                }
                let timer = this.timer.as_mut().expect("armed when the wait began");
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The most of a function's answer a Switchboard component reads whole (the
/// hub, the in-process gateway, the queue worker): a larger answer is an
/// error, never a buffer the size of whatever the function wrote.
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Over the limit: reading it again would end the same way.
    #[error("answer over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// Reads all of `body`, or fails once it passes `limit` bytes.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge(limit)),
        Err(e) => Err(ReadError::Failed(e.to_string())),
    }
}
