//! The concurrency bound: an adaptive in-flight window (`ConcurrencyLimit`) and the `Limit` layer
//! that holds a slot for exactly one attempt.
//!
//! Built on tokio's fair `Semaphore`; the adaptive part (AIMD, like TCP congestion control) is
//! hand-written because no crate adapts a window to HTTP 429 + Retry-After: on a 429 the window
//! halves (once per wave: 429s from attempts that started before the last cut are ignored) and new
//! attempts pause until Retry-After has passed; every `window` successes it grows by one, never
//! above the configured limit. Shrinking uses a debt counter: held permits are forgotten on
//! release instead of being returned.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::fuse::Fuse;
use crate::observer::Observers;
use crate::outage::{Outage, Pass, Verdict};
use crate::rate::RateLimiter;
use crate::{Engine, Error, Reply, Request, TransientKind};

/// One bound on requests in flight; share the `Arc` between engines to share the bound.
pub struct ConcurrencyLimit {
    max: usize,
    sem: Arc<Semaphore>,
    state: Mutex<Window>,
}

struct Window {
    /// Current window (1..=max).
    size: usize,
    /// Permits still out that must be forgotten on release (after a cut).
    debt: usize,
    /// Successes since the last growth step.
    successes: usize,
    /// No new attempt starts before this instant.
    paused_until: Option<Instant>,
    /// When the window was last cut.
    last_cut: Option<Instant>,
    /// The window never regrows above this: lowered when the endpoint cuts streams while
    /// others are in flight (a server that serves fewer requests at once than were sent).
    ceiling: usize,
    /// Whether each of the last [`RECENT`] attempts was refused with 429.
    recent: std::collections::VecDeque<bool>,
}

/// How many recent attempts [`ConcurrencyLimit`] weighs to tell a real limit from stray 429s.
const RECENT: usize = 20;

impl std::fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("max", &self.max)
            .field("window", &self.window())
            .finish()
    }
}

impl ConcurrencyLimit {
    /// A bound of `max` requests in flight (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            sem: Arc::new(Semaphore::new(max)),
            state: Mutex::new(Window {
                size: max,
                debt: 0,
                successes: 0,
                paused_until: None,
                last_cut: None,
                ceiling: max,
                recent: std::collections::VecDeque::with_capacity(RECENT),
            }),
        })
    }

    /// The configured bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The current window (lowered after 429s, regrows on success).
    pub fn window(&self) -> usize {
        self.lock().size
    }

    /// Requests holding a slot right now.
    pub fn in_flight(&self) -> usize {
        let st = self.lock();
        (st.size + st.debt).saturating_sub(self.sem.available_permits())
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|t| *t > Instant::now())
    }

    /// Waits for a slot (and for any 429 pause to pass); fails at once if `fuse` trips.
    pub(crate) async fn acquire(self: &Arc<Self>, fuse: &Fuse) -> Result<Permit, Error> {
        loop {
            fuse.check()?;
            if let Some(until) = self.paused_until() {
                tokio::select! {
                    biased;
                    () = fuse.tripped() => return Err(fuse.error()),
                    () = tokio::time::sleep_until(until) => continue,
                }
            }
            let permit = tokio::select! {
                biased;
                () = fuse.tripped() => return Err(fuse.error()),
                p = self.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let permit = Permit {
                limit: self.clone(),
                permit: Some(permit),
                started: Instant::now(),
            };
            // A 429 may have paused the endpoint while this call queued: wait again, slot freed.
            if self.paused_until().is_none() {
                return Ok(permit);
            }
        }
    }

    /// Records whether an attempt was refused with 429; true when half the recent attempts
    /// were: a limit reached, even if the server's headers do not say so.
    fn note_429(&self, refused: bool) -> bool {
        let mut st = self.lock();
        if st.recent.len() == RECENT {
            st.recent.pop_front();
        }
        st.recent.push_back(refused);
        st.recent.len() == RECENT && st.recent.iter().filter(|r| **r).count() * 2 >= RECENT
    }

    fn on_success(&self) {
        let mut st = self.lock();
        if st.size >= self.max.min(st.ceiling) {
            return;
        }
        st.successes += 1;
        if st.successes >= st.size {
            st.successes = 0;
            st.size += 1;
            if st.debt > 0 {
                st.debt -= 1;
            } else {
                self.sem.add_permits(1);
            }
            tracing::debug!(window = st.size, max = self.max, "in-flight window regrows");
        }
    }

    fn on_rate_limited(&self, started: Instant, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(ra) = retry_after {
            let until = now + ra;
            st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        }
        if st.last_cut.is_some_and(|cut| started <= cut) {
            return; // this wave of 429s was already answered
        }
        let new = (st.size / 2).max(1);
        self.shrink(&mut st, new, now);
        tracing::info!(
            window = new,
            max = self.max,
            ?retry_after,
            "rate limited: in-flight window lowered"
        );
    }

    /// The endpoint cut a stream while `in_flight` requests (this one included) were out: it
    /// serves fewer at once. The window halves (once per wave) and never regrows to
    /// `in_flight` again; a server that serves one at a time ends at a window of 1. Returns
    /// the window.
    fn on_cut_stream(&self, started: Instant, in_flight: usize) -> usize {
        let now = Instant::now();
        let mut st = self.lock();
        st.ceiling = st.ceiling.min(in_flight.saturating_sub(1)).max(1);
        let new = if st.last_cut.is_some_and(|cut| started <= cut) {
            st.size.min(st.ceiling)
        } else {
            (st.size / 2).max(1).min(st.ceiling)
        };
        if new < st.size {
            self.shrink(&mut st, new, now);
            tracing::warn!(
                window = new,
                in_flight,
                "the endpoint cut a stream while other requests were in flight: in-flight window lowered"
            );
        }
        st.size
    }

    /// Lowers the window to `new` (< size): free permits are forgotten now, held ones as they
    /// come back.
    fn shrink(&self, st: &mut Window, new: usize, now: Instant) {
        let cut = st.size - new;
        st.size = new;
        st.successes = 0;
        st.last_cut = Some(now);
        let forgotten = self.sem.forget_permits(cut);
        st.debt += cut - forgotten;
    }
}

/// One slot, held for one attempt; released (or forgotten, after a cut) on drop.
pub(crate) struct Permit {
    limit: Arc<ConcurrencyLimit>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut st = self.limit.lock();
        if st.debt > 0 {
            st.debt -= 1;
            permit.forget();
        }
        drop(st);
    }
}

/// Layer: admission to the endpoint. Holds a slot (and RPM/TPM budget) for one attempt of the
/// inner engine, adapts the window to 429s, and trips the fuse on fatal errors.
pub(crate) struct Limit<E> {
    inner: E,
    limit: Arc<ConcurrencyLimit>,
    rate: Option<RateLimiter>,
    fuse: Fuse,
    cancel: Cancel,
    observers: Observers,
    outage: Outage,
}

impl<E: Engine> Limit<E> {
    pub(crate) fn new(
        inner: E,
        limit: Arc<ConcurrencyLimit>,
        rate: Option<RateLimiter>,
        fuse: Fuse,
        cancel: Cancel,
        observers: Observers,
        outage: Outage,
    ) -> Self {
        Self {
            inner,
            limit,
            rate,
            fuse,
            cancel,
            observers,
            outage,
        }
    }
}

#[async_trait]
impl<E: Engine> Engine for Limit<E> {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let queued_since = Instant::now();
        loop {
            // While the endpoint is down, calls wait here (one goes out as the probe) instead
            // of spending their attempts; a failure then is held, not returned.
            let pass = self.cancel.guard(self.outage.admit(&self.fuse)).await?;
            let probe = ProbeGuard {
                outage: &self.outage,
                pass: Some(pass),
            };
            let (result, verdict) = self.attempt(request.clone(), queued_since, probe).await?;
            if verdict == Verdict::Return {
                return result;
            }
        }
    }
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn is_mock(&self) -> bool {
        self.inner.is_mock()
    }
}

/// A probe's pass, handed back if the call ends (cancelled, dropped) before its outcome.
struct ProbeGuard<'a> {
    outage: &'a Outage,
    pass: Option<Pass>,
}

impl ProbeGuard<'_> {
    fn outcome(mut self, result: Result<(), &Error>) -> Verdict {
        let pass = self.pass.take().unwrap_or(Pass::Send);
        self.outage.outcome(pass, result)
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.pass == Some(Pass::Probe) {
            self.outage.abandon_probe();
        }
    }
}

impl<E: Engine> Limit<E> {
    /// One attempt: a slot, the RPM/TPM budget, the inner call, and what its outcome says
    /// about the endpoint. `Err` only for a call stopped before it was sent.
    async fn attempt(
        &self,
        request: Request,
        queued_since: Instant,
        probe: ProbeGuard<'_>,
    ) -> Result<(Result<Reply, Error>, Verdict), Error> {
        // A stopping run sends nothing new: the waits end at cancel, and the token is checked
        // once more right before sending (a slot freed at the moment of a Ctrl-C must not carry
        // a queued request out). Dropping `permit` hands the slot on.
        let permit = self.cancel.guard(self.limit.acquire(&self.fuse)).await?;
        let reserved = match &self.rate {
            Some(rate) => self.cancel.guard(rate.admit(&request, &self.fuse)).await?,
            None => 0,
        };
        if let Err(e) = self.cancel.check() {
            if let Some(rate) = &self.rate {
                rate.settle(reserved, 0);
            }
            return Err(e);
        }
        let queued = queued_since.elapsed();
        let result = self.inner.call(request).await;
        let verdict = probe.outcome(result.as_ref().map(|_| ()));
        let refused = matches!(
            &result,
            Err(Error::Transient {
                kind: TransientKind::RateLimited,
                ..
            })
        );
        let limit_reached = self.limit.note_429(refused);
        match &result {
            Ok(_) => self.limit.on_success(),
            // A 429 whose headers show the limit used up (or one of many): the endpoint is at
            // its limit, every request waits and the window shrinks. A stray 429 (headers
            // showing room, or none among mostly answered requests) delays only its own retry.
            Err(Error::Transient {
                kind: TransientKind::RateLimited,
                retry_after,
                limit_used_up,
                ..
            }) => {
                if *limit_used_up || limit_reached {
                    self.limit.on_rate_limited(permit.started, *retry_after);
                }
            }
            Err(Error::Transient {
                kind: TransientKind::CutStream,
                ..
            }) => {
                // Others in flight when the server cut this stream: a congestion signal.
                let in_flight = self.limit.in_flight();
                if in_flight > 1 {
                    let window = self.limit.on_cut_stream(permit.started, in_flight);
                    for o in self.observers.iter() {
                        o.on_cut_while_busy(self.inner.label(), window);
                    }
                }
            }
            Err(e @ (Error::AuthRefused { .. } | Error::NotFound { .. })) => self.fuse.trip(e),
            Err(_) => {}
        }
        drop(permit);
        if let Some(rate) = &self.rate {
            let used = result
                .as_ref()
                .map_or(0, |r| r.usage.prompt_tokens + r.usage.completion_tokens);
            rate.settle(reserved, used);
        }
        let result = result.map(|mut reply| {
            reply.timing.queued += queued;
            reply
        });
        Ok((result, verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_halves_on_429_pauses_and_regrows() {
        let limit = ConcurrencyLimit::new(8);
        let fuse = Fuse::new("t");
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(limit.acquire(&fuse).await.unwrap());
        }
        assert_eq!(limit.in_flight(), 8);
        // A wave of 429s from attempts that all started before the cut: one halving only.
        let started = held[0].started;
        for _ in 0..8 {
            limit.on_rate_limited(started, Some(Duration::from_secs(2)));
        }
        assert_eq!(limit.window(), 4);
        held.clear();
        assert_eq!(limit.in_flight(), 0);
        // Paused until Retry-After passes.
        let t0 = Instant::now();
        let p = limit.acquire(&fuse).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(2));
        drop(p);
        // Only 4 slots now.
        let four: Vec<_> =
            futures_util::future::join_all((0..4).map(|_| limit.acquire(&fuse))).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), limit.acquire(&fuse))
                .await
                .is_err()
        );
        drop(four);
        // Additive increase: +1 per window of successes, never above max.
        for _ in 0..100 {
            limit.on_success();
        }
        assert_eq!(limit.window(), 8);
        let eight: Vec<_> =
            futures_util::future::join_all((0..8).map(|_| limit.acquire(&fuse))).await;
        assert!(eight.iter().all(|p| p.is_ok()));
        assert!(
            tokio::time::timeout(Duration::from_millis(10), limit.acquire(&fuse))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn queued_calls_fail_at_once_when_the_fuse_trips() {
        let limit = ConcurrencyLimit::new(1);
        let fuse = Fuse::new("t");
        let _held = limit.acquire(&fuse).await.unwrap();
        let waiter = {
            let (limit, fuse) = (limit.clone(), fuse.clone());
            tokio::spawn(async move { limit.acquire(&fuse).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        fuse.trip(&Error::AuthRefused {
            engine: "t".into(),
            status: 401,
            message: "bad key".into(),
        });
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::EngineDead { .. }), "{err}");
        assert!(err.to_string().contains("bad key"));
    }
}
