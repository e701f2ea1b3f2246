//! Transport retries: a plain policy function plus the `Retry` layer that applies it.
//!
//! Hand-written rather than tower's `Retry` or the `backoff` crates: the decision needs atk's typed
//! error classes and the server's Retry-After, and the whole policy is a dozen lines that a table
//! test pins down completely. The wait happens outside the `Limit` layer, so a request waiting out
//! its backoff holds no concurrency slot.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::config::RetryConfig;
use crate::fuse::Fuse;
use crate::observer::Observers;
use crate::stack::{Layer, Next};
use crate::{Error, Reply, Request, TransientKind};

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Return the error.
    Stop,
    /// Try again after this delay.
    Wait(Duration),
}

/// The transport retry policy. `attempt` is the number of the attempt that just failed (1-based),
/// `elapsed` the time since the call began, `jitter` a number in `0..1`.
///
/// Only transient errors are retried. With a Retry-After the wait is what the server asked for
/// (at least the first backoff step). Otherwise it is a backoff of `base_delay * 2^(attempt-1)`,
/// capped at `max_delay` (at [`GLITCH_MAX_DELAY`] for a bad reply or a 500: garbage, a cut or
/// broken stream, a server error say nothing about load; a 429 does, with its Retry-After, and
/// 502/503 or no connection say the endpoint is gone), scaled by `0.5 + 0.5 * jitter` ("equal jitter": never less
/// than half, so callers that failed together spread out without hammering). An endpoint that
/// stops answering is the outage guard's business (`outage.rs`), not backoff's. Stops when
/// attempts run out or the wait would end past `max_elapsed`.
pub(crate) fn policy(
    error: &Error,
    attempt: u32,
    elapsed: Duration,
    cfg: &RetryConfig,
    jitter: f64,
) -> Decision {
    let Error::Transient {
        retry_after, kind, ..
    } = error
    else {
        return Decision::Stop;
    };
    if attempt >= cfg.max_attempts {
        return Decision::Stop;
    }
    let jitter = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
    let glitch = matches!(
        kind,
        TransientKind::Malformed
            | TransientKind::Incomplete
            | TransientKind::CutStream
            | TransientKind::ServerError
    );
    let cap = if glitch {
        cfg.max_delay.min(GLITCH_MAX_DELAY)
    } else {
        cfg.max_delay
    };
    let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    let backoff = cfg.base_delay.saturating_mul(exp).min(cap).mul_f64(jitter);
    let wait = match retry_after {
        Some(ra) => (*ra).max(cfg.base_delay.min(cap).mul_f64(jitter)),
        None => backoff,
    };
    if elapsed.saturating_add(wait) >= cfg.max_elapsed {
        Decision::Stop
    } else {
        Decision::Wait(wait)
    }
}

/// Longest backoff after a bad reply (garbage, a cut or broken stream) or a 500: glitches of
/// one response, not a sign of load.
pub(crate) const GLITCH_MAX_DELAY: Duration = Duration::from_secs(1);

/// Layer: retries transient failures of the inner engine per [`policy`].
pub(crate) struct Retry {
    cfg: RetryConfig,
    observers: Observers,
    fuse: Fuse,
    cancel: Cancel,
}

impl Retry {
    pub(crate) fn new(cfg: RetryConfig, observers: Observers, fuse: Fuse, cancel: Cancel) -> Self {
        Self {
            cfg,
            observers,
            fuse,
            cancel,
        }
    }
}

#[async_trait]
impl Layer for Retry {
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error> {
        let label = next.label();
        let start = Instant::now();
        let mut attempt = 0u32;
        // A copy only once an attempt changes the request (`stream: false`, below).
        let mut changed: Option<Request> = None;
        loop {
            attempt += 1;
            let sent = changed.as_ref().unwrap_or(request);
            let error = match next.call(sent).await {
                Ok(mut reply) => {
                    reply.timing.attempts = attempt;
                    reply.timing.total = start.elapsed();
                    return Ok(reply);
                }
                Err(error) => error,
            };
            let elapsed = start.elapsed();
            match policy(&error, attempt, elapsed, &self.cfg, rand::random::<f64>()) {
                Decision::Stop if error.is_transient() => {
                    tracing::warn!(engine = label, attempt, %error, "transport retries exhausted");
                    return Err(Error::RetriesExhausted {
                        engine: label.to_string(),
                        attempts: attempt,
                        elapsed,
                        last: Box::new(error),
                    });
                }
                Decision::Stop => return Err(error),
                Decision::Wait(delay) => {
                    // An empty or unreadable streamed body says nothing; the same request
                    // without streaming gets the server's own error (llama-cpp-python answers
                    // an over-long streamed prompt with an empty 200, unstreamed with a 400).
                    if matches!(
                        &error,
                        Error::Transient {
                            kind: TransientKind::Malformed,
                            ..
                        }
                    ) && !sent.params.contains_key("stream")
                    {
                        let mut unstreamed = sent.clone();
                        unstreamed
                            .params
                            .insert("stream".into(), serde_json::Value::Bool(false));
                        changed = Some(unstreamed);
                    }
                    let cause = match &error {
                        Error::Transient { kind, .. } => kind.as_str(),
                        _ => "other",
                    };
                    tracing::warn!(engine = label, attempt, cause, delay_ms = delay.as_millis() as u64, %error, "retrying");
                    for o in self.observers.iter() {
                        o.on_retry(label, &error, attempt, delay);
                    }
                    tokio::select! {
                        biased;
                        () = self.fuse.tripped() => return Err(self.fuse.error()),
                        () = self.cancel.cancelled() => return Err(self.cancel.error()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(kind: TransientKind, retry_after: Option<Duration>) -> Error {
        Error::Transient {
            engine: "t".into(),
            kind,
            message: "x".into(),
            retry_after,
            limit_used_up: false,
            limit_interval: None,
        }
    }

    fn check(error: Error, attempt: u32, elapsed_s: u64, jitter: f64, expected: Decision) {
        // 8 attempts, 600 s, 500 ms base, 60 s cap
        let cfg = RetryConfig::default().with_base_delay(Duration::from_millis(500));
        let got = policy(
            &error,
            attempt,
            Duration::from_secs(elapsed_s),
            &cfg,
            jitter,
        );
        assert_eq!(got, expected, "{error:?} attempt {attempt}");
    }

    #[test]
    fn policy_table() {
        use Decision::*;
        use TransientKind::*;
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        // 429 without Retry-After: jittered exponential backoff.
        check(transient(RateLimited, None), 1, 0, 0.0, Wait(ms(250)));
        check(transient(RateLimited, None), 1, 0, 1.0, Wait(ms(500)));
        check(transient(RateLimited, None), 3, 0, 1.0, Wait(ms(2000)));
        // 429 with Retry-After: what the server asked for, at least the first backoff step.
        check(transient(RateLimited, Some(s(7))), 1, 0, 1.0, Wait(s(7)));
        check(
            transient(RateLimited, Some(ms(10))),
            2,
            0,
            1.0,
            Wait(ms(500)),
        );
        check(
            transient(RateLimited, Some(ms(300))),
            5,
            0,
            1.0,
            Wait(ms(500)),
        );
        // Backoff is capped at max_delay, Retry-After is not.
        check(transient(Timeout, None), 7, 0, 1.0, Wait(s(32)));
        check(transient(ServerError, None), 30, 0, 1.0, Stop);
        check(
            transient(RateLimited, Some(s(120))),
            2,
            0,
            0.0,
            Wait(s(120)),
        );
        // Retry-After as an HTTP date arrives here already converted: a past date is zero
        // (the backoff wins), a far-future one is capped at MAX_RETRY_AFTER, which is not below
        // the default max_elapsed, so the call gives up instead of waiting.
        check(transient(RateLimited, Some(s(0))), 1, 0, 1.0, Wait(ms(500)));
        // A bad reply is a glitch: its backoff stops growing at 1 s.
        check(transient(Malformed, None), 6, 0, 1.0, Wait(s(1)));
        check(transient(CutStream, None), 6, 0, 0.0, Wait(ms(500)));
        check(
            transient(RateLimited, Some(crate::http::retry_after::MAX_RETRY_AFTER)),
            1,
            0,
            1.0,
            Stop,
        );
        check(transient(RateLimited, Some(s(45))), 1, 0, 0.0, Wait(s(45)));
        // 5xx, reset, stall, cut stream, garbage: all retried.
        for kind in [ServerError, Connection, Timeout, Incomplete, Malformed] {
            check(transient(kind, None), 2, 0, 0.5, Wait(ms(750)));
        }
        // Bounded: attempts and elapsed time.
        check(transient(Connection, None), 8, 0, 0.0, Stop);
        check(transient(Connection, None), 2, 599, 1.0, Stop);
        check(transient(RateLimited, Some(s(30))), 2, 580, 0.0, Stop);
        // Fatal and per-call errors: never retried.
        let auth = Error::AuthRefused {
            engine: "t".into(),
            status: 401,
            message: "bad key".into(),
        };
        let forbidden = Error::AuthRefused {
            engine: "t".into(),
            status: 403,
            message: "no".into(),
        };
        let missing = Error::NotFound {
            engine: "t".into(),
            url: "u".into(),
            message: "no model".into(),
        };
        let rejected = Error::Rejected {
            engine: "t".into(),
            status: 400,
            message: "context_length_exceeded".into(),
        };
        let dead = Error::EngineDead {
            engine: "t".into(),
            reason: "r".into(),
        };
        for e in [auth, forbidden, missing, rejected, dead] {
            check(e, 1, 0, 0.5, Stop);
        }
    }
}
