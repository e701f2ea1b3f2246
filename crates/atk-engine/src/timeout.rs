//! Per-attempt timeouts on one timer: first byte, idle gap, total.
//!
//! Not a separate `Engine` layer (nor tower's `Timeout`, which boxes errors): the idle gap is
//! only visible between body chunks, so the HTTP layer wraps its byte stream with [`timed`].
//! The connect timeout is reqwest's. One attempt arms one tokio timer for all three (nested
//! `timeout`s armed three, each a registration and a removal in the timer wheel): it waits
//! for the nearer of the first-byte and total deadlines while the head is awaited, then for
//! the nearer of the idle and total deadlines while the body is read.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// A transport failure while a body is read, from reqwest or an inline connection.
#[derive(Debug)]
pub(crate) enum TransportError {
    Reqwest(reqwest::Error),
    Inline(crate::http::InlineError),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reqwest(e) => e.fmt(f),
            Self::Inline(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Reqwest(e) => e.source(),
            Self::Inline(e) => e.source(),
        }
    }
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        Self::Reqwest(e)
    }
}

/// Why a timed body stream ended early.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The transport failed (reset, cut chunked encoding, ...).
    Transport(TransportError),
    /// No byte arrived before the first-byte deadline.
    FirstByte(Duration),
    /// No byte arrived for this long after the previous one.
    Idle(Duration),
    /// The attempt's total time ran out.
    Total(Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::FirstByte(d) => write!(f, "no reply byte within {d:?} (first-byte timeout)"),
            Self::Idle(d) => write!(f, "reply stalled: no byte for {d:?} (idle timeout)"),
            Self::Total(d) => write!(f, "no complete reply within {d:?} (total timeout)"),
        }
    }
}

/// An attempt's deadlines and the one timer that watches them.
pub(crate) struct Deadlines {
    /// When the head and the first body chunk must have arrived.
    pub(crate) first_byte_at: Instant,
    /// When the whole attempt must be over.
    pub(crate) total_at: Instant,
    /// The configured durations, for the error messages.
    pub(crate) first_byte: Duration,
    pub(crate) idle: Duration,
    pub(crate) total: Duration,
}

impl Deadlines {
    /// What the timer waits for while the head is awaited: the nearer of first byte and total.
    pub(crate) fn head(&self) -> Instant {
        self.first_byte_at.min(self.total_at)
    }

    /// The error of a timer that fired at `deadline` (the total's, or the first byte's).
    pub(crate) fn expired(&self, deadline: Instant) -> BodyError {
        if deadline >= self.total_at {
            BodyError::Total(self.total)
        } else {
            BodyError::FirstByte(self.first_byte)
        }
    }
}

/// Wraps a body stream: the first chunk must arrive before the first-byte deadline, each later
/// one within `idle` of the previous, all before the total deadline; `timer` (the attempt's,
/// set to [`Deadlines::head`]) watches them. A timeout ends the stream with an error item.
pub(crate) fn timed<'t, S, B, E>(
    body: S,
    mut timer: Pin<&'t mut Sleep>,
    deadlines: &'t Deadlines,
) -> impl Stream<Item = Result<B, BodyError>> + Send + 't
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    E: Into<TransportError>,
{
    let mut body = Box::pin(body);
    let mut got_first = false;
    let mut finished = false;
    // When the idle gap ends: moved forward by each chunk without touching the timer (a
    // streamed reply has a chunk per token); the timer is re-armed only when it fires early.
    let mut idle_until = deadlines.head();
    futures_util::stream::poll_fn(move |cx| {
        if finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
            match &item {
                Some(Ok(_)) => {
                    idle_until = (Instant::now() + deadlines.idle).min(deadlines.total_at);
                    if !got_first {
                        got_first = true;
                        timer.as_mut().reset(idle_until);
                    }
                }
                _ => finished = true,
            }
            return Poll::Ready(item.map(|r| r.map_err(|e| BodyError::Transport(e.into()))));
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) if timer.deadline() < idle_until => {
                    timer.as_mut().reset(idle_until);
                }
                Poll::Ready(()) => {
                    finished = true;
                    return Poll::Ready(Some(Err(if timer.deadline() >= deadlines.total_at {
                        BodyError::Total(deadlines.total)
                    } else if got_first {
                        BodyError::Idle(deadlines.idle)
                    } else {
                        BodyError::FirstByte(deadlines.first_byte)
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

    fn deadlines(first_byte: Duration, idle: Duration, total: Duration) -> Deadlines {
        let now = Instant::now();
        Deadlines {
            first_byte_at: now + first_byte,
            total_at: now + total,
            first_byte,
            idle,
            total,
        }
    }

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
        let deadlines = deadlines(first, idle, Duration::from_secs(3600));
        let timer = std::pin::pin!(tokio::time::sleep_until(deadlines.head()));
        let mut stream = std::pin::pin!(timed(body, timer, &deadlines));
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
        let deadlines = deadlines(first, first * 10, Duration::from_secs(3600));
        let timer = std::pin::pin!(tokio::time::sleep_until(deadlines.head()));
        let mut stream = std::pin::pin!(timed(body, timer, &deadlines));
        let started = Instant::now();
        match stream.next().await {
            Some(Err(BodyError::FirstByte(d))) => assert_eq!(d, first),
            other => panic!("expected a first-byte timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_is_cut_at_the_total_deadline() {
        // Chunks well inside the idle gap, forever: only the total deadline ends it.
        let total = Duration::from_secs(10);
        let deadlines = deadlines(Duration::from_secs(5), Duration::from_secs(2), total);
        let timer = std::pin::pin!(tokio::time::sleep_until(deadlines.head()));
        let started = Instant::now();
        let mut stream = std::pin::pin!(timed(
            body(u32::MAX, Duration::from_millis(600)),
            timer,
            &deadlines
        ));
        let mut chunks = 0;
        loop {
            match stream.next().await {
                Some(Ok(_)) => chunks += 1,
                Some(Err(BodyError::Total(d))) => {
                    assert_eq!(d, total);
                    break;
                }
                other => panic!("expected the total timeout, got {other:?}"),
            }
        }
        assert_eq!(
            started.elapsed(),
            total,
            "cut exactly at the total deadline"
        );
        assert_eq!(chunks, 16, "every chunk before it was passed on");
    }
}
