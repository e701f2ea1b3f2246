//! The concurrency bound and admission to an endpoint.
//!
//! [`ConcurrencyLimit`] is the one bound on requests in flight, shared by every engine of a run
//! (like the seed's single semaphore). Inside it each endpoint keeps its own adaptive
//! [`Window`]: an attempt takes a slot in its endpoint's window first, then one in the bound,
//! and holds both until it ends. A [`Gate`] is that admission for one endpoint, plus the
//! engine's RPM/TPM budget; the [`Limit`] layer puts a gate in front of a single-endpoint
//! transport, and the pool (`pool.rs`) keeps one per endpoint.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::fuse::Fuse;
use crate::observer::Observers;
use crate::rate::RateLimiter;
use crate::stack::{Layer, Next};
use crate::window::Window;
use crate::{Error, Reply, Request, TransientKind};

pub(crate) mod learned;

use learned::Outcome;

/// One bound on requests in flight; share the `Arc` between engines to share the bound. Each
/// engine (each endpoint) adapts its own window to 429s and cut streams inside it.
pub struct ConcurrencyLimit {
    max: usize,
    sem: Arc<Semaphore>,
    /// The endpoints' windows, by key (base URL and model): two engines naming the same
    /// endpoint and model share one, since the server sees them as one client.
    windows: Mutex<Vec<(String, Weak<Window>)>>,
}

impl std::fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("max", &self.max)
            .field("windows", &self.windows())
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
            windows: Mutex::new(Vec::new()),
        })
    }

    /// The configured bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many requests may be in flight now: the endpoints' windows added up (each lowered
    /// after its own 429s, regrowing on success), never more than the bound.
    pub fn window(&self) -> usize {
        let windows = self.live_windows();
        if windows.is_empty() {
            return self.max;
        }
        windows
            .iter()
            .map(|w| w.size())
            .sum::<usize>()
            .min(self.max)
    }

    /// Each endpoint's window: its name (the engine's label; `label @ url` for one of several
    /// endpoints) and its current size.
    pub fn windows(&self) -> Vec<(String, usize)> {
        self.live_windows()
            .iter()
            .map(|w| (w.name().to_string(), w.size()))
            .collect()
    }

    /// Requests holding a slot right now, all engines together.
    pub fn in_flight(&self) -> usize {
        self.max - self.sem.available_permits()
    }

    fn live_windows(&self) -> Vec<Arc<Window>> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.iter().filter_map(|(_, w)| w.upgrade()).collect()
    }

    /// The window of the endpoint `key`: the live one if an engine already uses it, else a new
    /// one called `name`, as large as the bound.
    pub(crate) fn window_for(&self, key: &str, name: &str) -> Arc<Window> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|(_, w)| w.strong_count() > 0);
        if let Some(w) = windows
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return w;
        }
        let window = Window::new(name, self.max);
        windows.push((key.to_string(), Arc::downgrade(&window)));
        window
    }

    /// Waits for a slot in `window`, then in the bound (and for any 429 pause of `window` to
    /// pass); fails at once if `fuse` trips.
    pub(crate) async fn acquire(&self, window: &Arc<Window>, fuse: &Fuse) -> Result<Permit, Error> {
        loop {
            fuse.check()?;
            if let Some(until) = window.paused_until() {
                tokio::select! {
                    biased;
                    () = fuse.tripped() => return Err(fuse.error()),
                    () = tokio::time::sleep_until(until) => continue,
                }
            }
            let own = tokio::select! {
                biased;
                () = fuse.tripped() => return Err(fuse.error()),
                p = window.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let mut permit = Permit {
                window: window.clone(),
                own: Some(own),
                shared: None,
                started: Instant::now(),
                seq: None,
            };
            // Spaced at the rate this endpoint's 429s taught (holding only its own slot).
            permit.seq = Some(window.pace.wait(fuse).await?);
            permit.shared = Some(tokio::select! {
                biased;
                () = fuse.tripped() => return Err(fuse.error()),
                p = self.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            });
            window.sending(true);
            permit.started = Instant::now();
            // A 429 may have paused the endpoint while this call queued: wait again, slot freed.
            if window.paused_until().is_none() {
                return Ok(permit);
            }
        }
    }
}

/// One slot in an endpoint's window and in the bound, held for one attempt; released (the
/// window's forgotten, after a cut) on drop.
pub(crate) struct Permit {
    window: Arc<Window>,
    own: Option<OwnedSemaphorePermit>,
    shared: Option<OwnedSemaphorePermit>,
    /// When the slot was granted.
    pub(crate) started: Instant,
    /// The attempt's number in its endpoint's pacer; taken when its outcome is reported.
    seq: Option<u64>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.seq.is_some() {
            self.window.pace.unsent();
        }
        if self.shared.take().is_some() {
            self.window.sending(false);
        }
        if let Some(own) = self.own.take() {
            self.window.release(own);
        }
    }
}

/// Admission to one endpoint: a slot in its window and in the shared bound, then the engine's
/// RPM/TPM budget; afterwards the attempt's outcome adapts the window, and 401/403/404 trip the
/// engine's fuse (queued calls then fail at once).
pub(crate) struct Gate {
    window: Arc<Window>,
    bound: Arc<ConcurrencyLimit>,
    rate: Option<Arc<RateLimiter>>,
    fuse: Fuse,
    cancel: Cancel,
    observers: Observers,
}

/// An attempt let through a [`Gate`]: its slot, the tokens reserved, the time it queued.
pub(crate) struct Admitted {
    permit: Permit,
    reserved: u64,
    queued: Duration,
}

impl Gate {
    pub(crate) fn new(
        window: Arc<Window>,
        bound: Arc<ConcurrencyLimit>,
        rate: Option<Arc<RateLimiter>>,
        fuse: Fuse,
        cancel: Cancel,
        observers: Observers,
    ) -> Self {
        Self {
            window,
            bound,
            rate,
            fuse,
            cancel,
            observers,
        }
    }

    /// This endpoint's window.
    pub(crate) fn window(&self) -> &Window {
        &self.window
    }

    /// Waits for a slot. A stopping run sends nothing new: the wait ends at cancel.
    pub(crate) async fn slot(&self) -> Result<Permit, Error> {
        self.cancel
            .guard(self.bound.acquire(&self.window, &self.fuse))
            .await
    }

    /// With a slot: waits for the RPM/TPM budget and checks the cancel token once more right
    /// before sending (a slot freed at the moment of a Ctrl-C must not carry a queued request
    /// out). `queued_since`: when the call began waiting.
    pub(crate) async fn budget(
        &self,
        permit: Permit,
        request: &Request,
        queued_since: Instant,
    ) -> Result<Admitted, Error> {
        let reserved = match &self.rate {
            Some(rate) => self.cancel.guard(rate.admit(request, &self.fuse)).await?,
            None => 0,
        };
        if let Err(e) = self.cancel.check() {
            if let Some(rate) = &self.rate {
                rate.settle(reserved, 0);
            }
            return Err(e);
        }
        Ok(Admitted {
            permit,
            reserved,
            queued: queued_since.elapsed(),
        })
    }

    /// Both waits, for an attempt that goes straight out.
    pub(crate) async fn admit(&self, request: &Request) -> Result<Admitted, Error> {
        let queued_since = Instant::now();
        let permit = self.slot().await?;
        self.budget(permit, request, queued_since).await
    }

    /// Takes in an attempt's outcome (the window adapts, fatal errors trip the fuse), frees its
    /// slot and settles its budget. `label`: the engine's, for observers.
    pub(crate) fn settle(
        &self,
        admitted: Admitted,
        result: Result<Reply, Error>,
        label: &str,
    ) -> Result<Reply, Error> {
        let Admitted {
            mut permit,
            reserved,
            queued,
        } = admitted;
        if let Some(seq) = permit.seq.take() {
            let outcome = match &result {
                Ok(_) => Outcome::Answered,
                Err(Error::Transient {
                    kind: TransientKind::RateLimited,
                    retry_after,
                    limit_used_up,
                    limit_interval,
                    ..
                }) => Outcome::Refused {
                    used_up: *limit_used_up,
                    retry_after: *retry_after,
                    interval: *limit_interval,
                },
                Err(_) => Outcome::Failed,
            };
            self.window.pace.outcome(seq, outcome);
        }
        let refused = matches!(
            &result,
            Err(Error::Transient {
                kind: TransientKind::RateLimited,
                ..
            })
        );
        let limit_reached = self.window.note_429(refused);
        match &result {
            Ok(_) => self.window.on_success(),
            // A 429 whose headers show the limit used up (or one of many): the endpoint is at
            // its limit, every request to it waits and its window shrinks. A stray 429 (headers
            // showing room, or none among mostly answered requests) delays only its own retry.
            Err(Error::Transient {
                kind: TransientKind::RateLimited,
                retry_after,
                limit_used_up,
                ..
            }) => {
                if *limit_used_up || limit_reached {
                    self.window.on_rate_limited(permit.started, *retry_after);
                }
            }
            Err(Error::Transient {
                kind: TransientKind::CutStream,
                ..
            }) => {
                // Others in flight to this endpoint when it cut this stream: a congestion signal.
                let in_flight = self.window.in_flight();
                if in_flight > 1 {
                    let window = self.window.on_cut_stream(permit.started, in_flight);
                    for o in self.observers.iter() {
                        o.on_cut_while_busy(label, window);
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
        result.map(|mut reply| {
            reply.timing.queued += queued;
            reply
        })
    }
}

/// Layer: admission to a single-endpoint transport through its [`Gate`].
pub(crate) struct Limit {
    gate: Gate,
}

impl Limit {
    pub(crate) fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

#[async_trait]
impl Layer for Limit {
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error> {
        let admitted = self.gate.admit(request).await?;
        let result = next.call(request).await;
        self.gate.settle(admitted, result, next.label())
    }
}

#[cfg(test)]
mod tests;
