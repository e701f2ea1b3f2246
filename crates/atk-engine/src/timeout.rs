//! Per-attempt timeouts that live inside the body stream: first byte and idle gap.
//!
//! Not a separate `Engine` layer (nor tower's `Timeout`, which boxes errors): the idle gap is
//! only visible between body chunks, so the HTTP layer wraps its byte stream with [`timed`].
//! The connect timeout is reqwest's; the total timeout wraps the whole attempt in `http.rs`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Why a timed body stream ended early.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The transport failed (reset, cut chunked encoding, ...).
    Transport(reqwest::Error),
    /// No byte arrived before the first-byte deadline.
    FirstByte(Duration),
    /// No byte arrived for this long after the previous one.
    Idle(Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::FirstByte(d) => write!(f, "no reply byte within {d:?} (first-byte timeout)"),
            Self::Idle(d) => write!(f, "reply stalled: no byte for {d:?} (idle timeout)"),
        }
    }
}

/// Wraps a body stream: the first chunk must arrive before `first_byte_deadline`, each later one
/// within `idle` of the previous. A timeout ends the stream with an error item.
pub(crate) fn timed<S, B>(
    body: S,
    first_byte_deadline: Instant,
    first_byte: Duration,
    idle: Duration,
) -> impl Stream<Item = Result<B, BodyError>> + Send
where
    S: Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
{
    let mut body = Box::pin(body);
    let mut sleep: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep_until(first_byte_deadline));
    let mut got_first = false;
    let mut finished = false;
    futures_util::stream::poll_fn(move |cx| {
        if finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
            match &item {
                Some(Ok(_)) => {
                    got_first = true;
                    sleep.as_mut().reset(Instant::now() + idle);
                }
                _ => finished = true,
            }
            return Poll::Ready(item.map(|r| r.map_err(BodyError::Transport)));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                finished = true;
                Poll::Ready(Some(Err(if got_first {
                    BodyError::Idle(idle)
                } else {
                    BodyError::FirstByte(first_byte)
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    })
}
