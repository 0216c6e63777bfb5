//! The request body every handler reads: hyper's, with a limit on the wait
//! for each piece of it, and a record of whether it was read to the end.

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
    idle: Duration,
    /// Armed while a reader waits for data; a sender that stalls longer
    /// than `idle` fails the body. Not armed while nobody reads, so a
    /// handler that waits before reading is not cut short.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    finished: Arc<AtomicBool>,
}

/// A sender that stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived within {0:?}")]
pub struct BodyTimeout(pub Duration);

impl RequestBody {
    /// The body, and a flag that turns true once it has been read to its end.
    pub(crate) fn new(inner: Incoming, idle: Duration) -> (Self, Arc<AtomicBool>) {
        let finished = Arc::new(AtomicBool::new(inner.is_end_stream()));
        (Self { inner, idle, timer: None, waiting: false, finished: finished.clone() }, finished)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if frame.is_none() || this.inner.is_end_stream() {
                    this.finished.store(true, Ordering::Release);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = match &mut this.timer {
                    Some(timer) if this.waiting => timer,
                    // The wait starts now: arm the timer (made on the first wait).
                    slot => {
                        let deadline = Instant::now() + this.idle;
                        this.waiting = true;
                        let timer = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        timer.as_mut().reset(deadline);
                        timer
                    }
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.idle).into()))),
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
