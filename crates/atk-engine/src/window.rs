//! One endpoint's adaptive in-flight window (AIMD, like TCP congestion control).
//!
//! Hand-written because no crate adapts a window to HTTP 429 + Retry-After: on a 429 the window
//! halves (once per wave: 429s from attempts that started before the last cut are ignored) and
//! new attempts to this endpoint pause until Retry-After has passed; every `window` successes it
//! grows by one, never above its ceiling. tokio's fair `Semaphore` does the queueing; shrinking
//! uses a debt counter: held permits are forgotten on release instead of being returned.
//!
//! Each engine has its own window (each endpoint, for an engine with several), so one model's
//! 429s never shrink another's. All windows sit inside one [`ConcurrencyLimit`]: the bound on
//! requests in flight in total.
//!
//! [`ConcurrencyLimit`]: crate::ConcurrencyLimit

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::limit::learned::Learned;

/// How many recent attempts a [`Window`] weighs to tell a real limit from stray 429s.
const RECENT: usize = 20;

/// The adaptive window of one endpoint.
pub(crate) struct Window {
    /// What logs and `ConcurrencyLimit::windows` call it (`small`, `small @ http://…`).
    name: String,
    max: usize,
    pub(crate) sem: Arc<Semaphore>,
    /// Attempts holding a slot here and in the bound: sent, or about to be.
    in_flight: AtomicUsize,
    /// The send rate learned from this endpoint's 429s.
    pub(crate) pace: Learned,
    state: Mutex<State>,
}

struct State {
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
    recent: VecDeque<bool>,
}

impl Window {
    /// A window of `max` (at least 1), full open.
    pub(crate) fn new(name: &str, max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            name: name.to_string(),
            max,
            sem: Arc::new(Semaphore::new(max)),
            in_flight: AtomicUsize::new(0),
            pace: Learned::default(),
            state: Mutex::new(State {
                size: max,
                debt: 0,
                successes: 0,
                paused_until: None,
                last_cut: None,
                ceiling: max,
                recent: VecDeque::with_capacity(RECENT),
            }),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The current window (lowered after 429s and cut streams, regrows on success).
    pub(crate) fn size(&self) -> usize {
        self.lock().size
    }

    /// Attempts to this endpoint holding a slot right now (in its window and in the bound).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts an attempt that got its slots (`true`) or gave them back (`false`).
    pub(crate) fn sending(&self, started: bool) {
        if started {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when a 429's Retry-After holds new attempts back, if it still does.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|t| *t > Instant::now())
    }

    /// Hands a slot back, or forgets it while the window owes permits after a cut.
    pub(crate) fn release(&self, permit: OwnedSemaphorePermit) {
        let mut st = self.lock();
        if st.debt > 0 {
            st.debt -= 1;
            permit.forget();
        }
    }

    /// Records whether an attempt was refused with 429; true when half the recent attempts
    /// were: a limit reached, even if the server's headers do not say so.
    pub(crate) fn note_429(&self, refused: bool) -> bool {
        let mut st = self.lock();
        if st.recent.len() == RECENT {
            st.recent.pop_front();
        }
        st.recent.push_back(refused);
        st.recent.len() == RECENT && st.recent.iter().filter(|r| **r).count() * 2 >= RECENT
    }

    pub(crate) fn on_success(&self) {
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
            tracing::debug!(window = st.size, max = self.max, endpoint = %self.name, "in-flight window regrows");
        }
    }

    pub(crate) fn on_rate_limited(&self, started: Instant, retry_after: Option<Duration>) {
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
            endpoint = %self.name,
            ?retry_after,
            "rate limited: in-flight window lowered"
        );
    }

    /// The endpoint cut a stream while `in_flight` requests (this one included) were out: it
    /// serves fewer at once. The window halves (once per wave) and never regrows to
    /// `in_flight` again; a server that serves one at a time ends at a window of 1. Returns
    /// the window.
    pub(crate) fn on_cut_stream(&self, started: Instant, in_flight: usize) -> usize {
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
                endpoint = %self.name,
                "the endpoint cut a stream while other requests were in flight: in-flight window lowered"
            );
        }
        st.size
    }

    /// Lowers the window to `new` (< size): free permits are forgotten now, held ones as they
    /// come back.
    fn shrink(&self, st: &mut State, new: usize, now: Instant) {
        let cut = st.size - new;
        st.size = new;
        st.successes = 0;
        st.last_cut = Some(now);
        let forgotten = self.sem.forget_permits(cut);
        st.debt += cut - forgotten;
    }
}
