//! Outages are the endpoint's, not the items': once an endpoint that had answered stops
//! connecting (or answers only 502/503), calls stop being sent, one probe at a time goes out
//! with back-off, and everyone resumes when it answers. Without this, every queued call spends
//! its transport attempts on "connection refused" while a replica restarts (issue 12: 76 of 600
//! items failed for good in a 90 s restart). An outage longer than `outage_limit` stops the
//! engine with a fatal error: the run ends (exit 1) and unsent items stay pending.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::fuse::Fuse;
use crate::observer::Observers;
use crate::stack::{Layer, Next};
use crate::{Error, Reply, Request, TransientKind};

/// Failures in a row (no answer between) that make an outage.
const THRESHOLD: u32 = 3;
/// First wait between probes; doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between probes.
const PROBE_MAX: Duration = Duration::from_secs(10);

/// One engine's view of whether its endpoint is there.
pub(crate) struct Outage {
    label: String,
    limit: Duration,
    /// Told when the endpoint goes down and when it answers again.
    observers: Observers,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// The endpoint answered at least once (an endpoint never reached is a config error,
    /// left to the bounded retries).
    answered: bool,
    /// Endpoint failures in a row.
    failures: u32,
    /// Set while the endpoint is down.
    down_since: Option<Instant>,
    probing: bool,
    next_probe: Option<Instant>,
    backoff: Duration,
    last_error: String,
}

/// What a call may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Go ahead.
    Send,
    /// Go ahead as the probe of a down endpoint.
    Probe,
}

/// What the limit layer does with an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Return it to the caller (and its retry policy).
    Return,
    /// The endpoint is down: keep the call, wait for it to come back, send again.
    Hold,
}

/// True for failures that say the endpoint is not there: no connection, or 502/503.
pub(crate) fn is_endpoint_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Transient {
            kind: TransientKind::Unavailable,
            ..
        }
    )
}

/// How much a failure counts towards [`THRESHOLD`]: a refused connection from an endpoint
/// that has answered before is an outage at once (a server that is up does not refuse
/// connections; waiting for two more would let a call with few attempts left spend them),
/// while a 502/503 counts one (a busy gateway answers so now and then).
fn weight(error: &Error) -> u32 {
    match error {
        Error::Transient { message, .. } if message.starts_with("HTTP ") => 1,
        _ => THRESHOLD,
    }
}

/// True for failures that say nothing about whether the endpoint is there: a connection
/// reset or closed mid-request, a timeout. They neither count towards an outage nor end one.
fn is_neutral(error: &Error) -> bool {
    matches!(
        error,
        Error::Transient {
            kind: TransientKind::Connection | TransientKind::Timeout,
            ..
        }
    )
}

impl Outage {
    pub(crate) fn new(label: &str, limit: Duration, observers: Observers) -> Self {
        Self {
            label: label.to_string(),
            limit,
            observers,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a call may be sent: at once while the endpoint is up; while it is down,
    /// until this call is the next probe or the endpoint is back. Trips `fuse` (a fatal
    /// error) once the outage outlasts the limit.
    pub(crate) async fn admit(&self, fuse: &Fuse) -> Result<Pass, Error> {
        loop {
            let notified = self.changed.notified();
            let wake = {
                let mut st = self.lock();
                let Some(since) = st.down_since else {
                    return Ok(Pass::Send);
                };
                let now = Instant::now();
                if now.duration_since(since) >= self.limit {
                    let error = Error::EndpointDown {
                        engine: self.label.clone(),
                        down_for: now.duration_since(since),
                        last: st.last_error.clone(),
                    };
                    drop(st);
                    fuse.trip(&error);
                    return Err(fuse.error());
                }
                let probe_at = st.next_probe.unwrap_or(now);
                if !st.probing && now >= probe_at {
                    st.probing = true;
                    return Ok(Pass::Probe);
                }
                let give_up = since + self.limit;
                if st.probing {
                    give_up
                } else {
                    probe_at.min(give_up)
                }
            };
            tokio::select! {
                biased;
                () = fuse.tripped() => return Err(fuse.error()),
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Takes in an attempt's outcome (`Ok` = the endpoint answered, whatever it said).
    pub(crate) fn outcome(&self, pass: Pass, result: Result<(), &Error>) -> Verdict {
        let mut st = self.lock();
        if pass == Pass::Probe {
            st.probing = false;
        }
        match result {
            Err(e) if is_endpoint_failure(e) => {
                st.failures += weight(e);
                st.last_error = e.to_string();
                let now = Instant::now();
                if st.down_since.is_none() && st.answered && st.failures >= THRESHOLD {
                    st.down_since = Some(now);
                    st.backoff = PROBE_FIRST;
                    st.next_probe = Some(now + PROBE_FIRST);
                    tracing::warn!(engine = %self.label, error = %e, limit_s = self.limit.as_secs(),
                        "the endpoint stopped answering: sending paused, probing it with back-off");
                    let error = st.last_error.clone();
                    for o in self.observers.iter() {
                        o.on_outage(&self.label, true, &error);
                    }
                } else if pass == Pass::Probe {
                    st.backoff = (st.backoff * 2).min(PROBE_MAX);
                    st.next_probe = Some(now + st.backoff);
                    tracing::info!(engine = %self.label, next_probe_ms = st.backoff.as_millis() as u64, "the endpoint is still down");
                }
                drop(st);
                self.changed.notify_waiters();
                if self.is_down() {
                    Verdict::Hold
                } else {
                    Verdict::Return
                }
            }
            Err(e) if is_neutral(e) => {
                drop(st);
                if pass == Pass::Probe {
                    // The probe learnt nothing: let the next one go.
                    self.changed.notify_waiters();
                }
                if self.is_down() {
                    Verdict::Hold
                } else {
                    Verdict::Return
                }
            }
            _ => {
                st.answered = true;
                st.failures = 0;
                if let Some(since) = st.down_since.take() {
                    st.next_probe = None;
                    tracing::warn!(engine = %self.label, down_s = since.elapsed().as_secs_f64(),
                        "the endpoint answers again: sending resumed");
                    drop(st);
                    for o in self.observers.iter() {
                        o.on_outage(&self.label, false, "");
                    }
                    self.changed.notify_waiters();
                }
                Verdict::Return
            }
        }
    }

    /// A probe that ended without an outcome (its call was dropped): the next may go.
    pub(crate) fn abandon_probe(&self) {
        self.lock().probing = false;
        self.changed.notify_waiters();
    }

    fn is_down(&self) -> bool {
        self.lock().down_since.is_some()
    }
}

/// Layer: while the endpoint is down, calls wait here (one goes out as the probe) instead of
/// spending their attempts; a failure then is held, not returned.
pub(crate) struct OutageGuard {
    outage: Outage,
    fuse: Fuse,
    cancel: Cancel,
}

impl OutageGuard {
    pub(crate) fn new(outage: Outage, fuse: Fuse, cancel: Cancel) -> Self {
        Self {
            outage,
            fuse,
            cancel,
        }
    }
}

#[async_trait]
impl Layer for OutageGuard {
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error> {
        loop {
            let pass = self.cancel.guard(self.outage.admit(&self.fuse)).await?;
            let probe = ProbeGuard {
                outage: &self.outage,
                pass: Some(pass),
            };
            let result = next.call(request).await;
            // Stopped before it was sent: says nothing of the endpoint (a probe is handed back).
            if matches!(
                result,
                Err(Error::Cancelled { .. } | Error::EngineDead { .. })
            ) {
                return result;
            }
            if probe.outcome(result.as_ref().map(|_| ())) == Verdict::Return {
                return result;
            }
        }
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
