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
    // When the idle gap ends: moved forward by each chunk without touching the timer (a
    // streamed reply has a chunk per token); the timer is re-armed only when it fires early.
    let mut idle_until = first_byte_deadline;
    futures_util::stream::poll_fn(move |cx| {
        if finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
            match &item {
                Some(Ok(_)) => {
                    if !got_first {
                        got_first = true;
                        idle_until = Instant::now() + idle;
                        sleep.as_mut().reset(idle_until);
                    } else {
                        idle_until = Instant::now() + idle;
                    }
                }
                _ => finished = true,
            }
            return Poll::Ready(item.map(|r| r.map_err(BodyError::Transport)));
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) if sleep.deadline() < idle_until => {
                    sleep.as_mut().reset(idle_until);
                }
                Poll::Ready(()) => {
                    finished = true;
                    return Poll::Ready(Some(Err(if got_first {
                        BodyError::Idle(idle)
                    } else {
                        BodyError::FirstByte(first_byte)
                    })));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A body that yields `n` chunks `gap` apart, then stalls for good.
    fn body(n: u32, gap: Duration) -> impl Stream<Item = Result<u32, reqwest::Error>> + Send {
        futures_util::stream::unfold(0u32, move |i| async move {
            if i >= n {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(i), i + 1))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_inside_the_idle_gap_never_time_out_and_a_stall_after_them_does() {
        let idle = Duration::from_secs(1);
        let first = Duration::from_secs(2);
        let body = body(50, Duration::from_millis(900));
        let mut stream = std::pin::pin!(timed(body, Instant::now() + first, first, idle));
        for i in 0..50 {
            assert_eq!(
                stream.next().await.unwrap().unwrap(),
                i,
                "chunk {i} arrives"
            );
        }
        let last = Instant::now();
        match stream.next().await {
            Some(Err(BodyError::Idle(d))) => assert_eq!(d, idle),
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        let waited = last.elapsed();
        assert!(
            waited >= idle && waited <= idle + Duration::from_millis(2),
            "the stall is cut one idle gap after the last chunk: {waited:?}"
        );
        assert!(
            stream.next().await.is_none(),
            "the stream ends after its error"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_first_byte_by_the_deadline_is_a_first_byte_timeout() {
        let first = Duration::from_secs(2);
        let body = body(0, Duration::ZERO);
        let mut stream = std::pin::pin!(timed(body, Instant::now() + first, first, first * 10));
        let started = Instant::now();
        match stream.next().await {
            Some(Err(BodyError::FirstByte(d))) => assert_eq!(d, first),
            other => panic!("expected a first-byte timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= first);
    }
}
