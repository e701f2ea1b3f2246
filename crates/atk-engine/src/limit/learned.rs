//! Pacing that learns an endpoint's enforced request rate from its 429s.
//!
//! Headers do not always describe the limit that is enforced: OpenAI states a per-minute limit
//! (6000/min) and what is left of it, while enforcing it over shorter periods (100/s with a
//! small burst), so a 429 arrives while the headers show thousands of requests left. A 429 is
//! evidence about the rate whatever the headers say. This pacer spaces an endpoint's sends at
//! a learned rate and adapts it AIMD-style: a wave of 429s cuts it to [`BETA`] of the rate the
//! server was admitting (multiplicative decrease; later 429s from attempts sent before the cut
//! belong to the same wave), and every success raises it by a small step ([`GROWTH`] of the cut
//! rate per second, faster the longer no 429 came: additive increase), so it settles just under
//! the enforced rate, the server's burst absorbing the short probes above it.
//!
//! 429s that do not depend on the rate (a flaky proxy, an overloaded replica) must not slow a
//! run for good. Every cut is a trial: the refusal fraction of the [`TRIAL`] attempts sent
//! after it is compared with that of the ones sent before. Lowering the rate under a real limit
//! ends the 429s; if they keep coming at much the same fraction, the cut is undone and that
//! fraction is remembered as noise, which later 429s must clearly exceed to count as a limit.
//!
//! Before an endpoint has answered anything, its first requests go out over a few milliseconds
//! (a doubling allowance) rather than all at once, and the first outcome among them (a 429 or
//! a reply) holds further sends until they are all answered (at most [`HOLD_MAX`]): 429s
//! usually come back at once, without the model's latency, so a server
//! whose burst is smaller than the concurrency refuses only the first few instead of the
//! whole first wave. The answers then say whether a limit was hit (a large share refused) and
//! the interval its rate-limit headers state gives the first rate (reset time ÷ requests used:
//! for OpenAI's per-minute limit, the pace it enforces over shorter periods). Without them its
//! Retry-After does, though a token bucket asks only for the time to its next token: up to one
//! refill interval, and the first contact's 429s come in one burst, so they may all ask for
//! the same fraction of it. Too fast a first rate is then cut again in a series whose floor is
//! the longest Retry-After of all its waves.
//!
//! Hand-written rather than `governor`: governor's quota is fixed when it is built (this rate
//! changes with every answer) and it reads its own clock, so tokio's paused-clock tests could
//! not drive it; the pacing itself is a GCRA of a dozen lines.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;
use crate::fuse::Fuse;

/// A cut lowers the rate to this share of what the server was admitting.
pub(crate) const BETA: f64 = 0.85;
/// Additive increase: per second without a cut, the rate rises by this share of the cut rate
/// (more after [`ACCELERATE_AFTER`]).
pub(crate) const GROWTH: f64 = 0.05;
/// After this long without a cut the increase speeds up (a rate learned too low recovers).
const ACCELERATE_AFTER: Duration = Duration::from_secs(3);
/// The learned rate never goes below this many requests per second.
const MIN_RATE: f64 = 0.2;
/// Attempts on each side of a cut that judge it.
pub(crate) const TRIAL: u64 = 40;
/// A trial ends with what it has after this long (slow rates give few attempts).
const TRIAL_TIME: Duration = Duration::from_secs(3);
/// Outcomes and sends remembered (for the refusal fraction, the send rate and trials).
const RING: usize = 256;
/// Recent outcomes that give the current refusal fraction.
const RECENT: usize = 32;
/// Sends allowed at once before the endpoint answered anything (the allowance then doubles).
const FIRST_BURST: u64 = 16;
const RAMP_STEP: Duration = Duration::from_millis(10);
/// Longest hold after the first outcome on first contact while its attempts are answered.
const HOLD_MAX: Duration = Duration::from_secs(2);
/// A first contact with at least this share refused met a limit (random 429s are rarer) ...
const FIRST_LIMIT_SHARE: f64 = 0.25;
/// ... with at least this many refusals ...
const FIRST_LIMIT_REFUSALS: u64 = 4;
/// ... and at least this share refused from the first refused send on. A bucket spent by
/// the first sends refuses nearly all that follow; random 429s fall anywhere (at 10 %, 4 of
/// the first 16 came in 7 % of runs and, judged a limit, paced them at ~3 requests a second).
const FIRST_LIMIT_TAIL_SHARE: f64 = 0.6;
/// A trial that still sees this share refused cuts again (stray 429s are rarer) ...
const DEEPER_SHARE: f64 = 0.25;
/// ... up to this many times in a row; then the 429s are judged independent of the rate.
const DEEPER_MAX: u32 = 3;
/// Per outcome, the remembered noise share fades by this factor (half-life ~2300 attempts).
const NOISE_FADE: f64 = 0.9997;
/// A Retry-After at most this long bounds how far a cut may lower the rate (see
/// `State::wave_retry_after`); longer ones (minutes: a quota) say nothing about pacing.
const RETRY_AFTER_FLOOR_MAX: Duration = Duration::from_secs(10);
/// Sends may run this far behind schedule and catch up (timer granularity).
const TOLERANCE: Duration = Duration::from_millis(5);

/// How an attempt ended, as the pacer weighs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// A reply.
    Answered,
    /// Refused with 429; `used_up`: its headers show the limit used up; `retry_after`: what it
    /// asked for; `interval`: the refill interval its rate-limit headers state.
    Refused {
        used_up: bool,
        retry_after: Option<Duration>,
        interval: Option<Duration>,
    },
    /// Any other failure (says nothing about the rate).
    Failed,
}

/// One endpoint's learned send rate (shared by every engine that names the endpoint).
pub(crate) struct Learned {
    /// Waiters for a send slot queue here (FIFO), so only the head one sleeps on the timer.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

/// What the pacer knows.
struct State {
    /// Requests per second; `None` while no limit was met (sends are not spaced).
    rate: Option<f64>,
    /// The instant the next send is due at `rate` (GCRA's theoretical arrival time).
    due: Instant,
    /// The rate set by the last cut (the unit of the additive increase), and when.
    cut_rate: f64,
    cut_at: Option<Instant>,
    /// Sequence number of the first send after the last cut (earlier ones are its wave).
    cut_seq: u64,
    /// Sequence number of the next send.
    seq: u64,
    first: First,
    /// Recent send instants (for the send rate).
    sends: VecDeque<Instant>,
    /// Recent outcomes: the attempt's sequence number and whether it was refused with 429.
    outcomes: VecDeque<(u64, bool)>,
    /// When recent replies came (the rate the server admitted).
    answers: VecDeque<Instant>,
    /// The refusal fraction judged independent of the rate.
    noise: f64,
    /// The cut being judged: the rate before it (before the first of a series of cuts).
    trial: Option<Option<f64>>,
    /// Cuts in a row whose trial still saw many refusals.
    series: u32,
    /// The cut in force answered 429s whose headers showed the limit used up: a limit, never
    /// undone.
    proven: bool,
    /// The longest Retry-After (under [`RETRY_AFTER_FLOOR_MAX`]) among the 429s since the last
    /// cut: the server takes a request at least that often, so no cut paces slower.
    wave_retry_after: Option<Duration>,
    /// The longest of those over the series of cuts in force (see [`State::cut`]).
    series_retry_after: Option<Duration>,
}

/// The first contact with the endpoint.
enum First {
    /// Nothing answered yet: at most `allowance` sends; it doubles [`RAMP_STEP`] after the
    /// last of them went out (`full_at`), so a busy client that sends slowly ramps slowly too.
    Open {
        allowance: u64,
        full_at: Option<Instant>,
        answered: u64,
        refused: u64,
        /// Longest Retry-After among the refusals under a second.
        retry_after: Option<Duration>,
        /// A 429 or a reply came: no more sends until the ones out are answered.
        hold_since: Option<Instant>,
    },
    Closed,
}

impl Default for Learned {
    fn default() -> Self {
        Self {
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                rate: None,
                due: Instant::now(),
                cut_rate: 0.0,
                cut_at: None,
                cut_seq: 0,
                seq: 0,
                first: First::Open {
                    allowance: FIRST_BURST,
                    full_at: None,
                    answered: 0,
                    refused: 0,
                    retry_after: None,
                    hold_since: None,
                },
                sends: VecDeque::with_capacity(RECENT),
                outcomes: VecDeque::with_capacity(RING),
                answers: VecDeque::with_capacity(RING),
                noise: 0.0,
                trial: None,
                series: 0,
                proven: false,
                wave_retry_after: None,
                series_retry_after: None,
            }),
        }
    }
}

impl Learned {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The learned rate in requests per second (`None`: not paced).
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Waits until a send is due; returns its sequence number (for [`Learned::outcome`]).
    /// Fails at once if `fuse` trips.
    pub(crate) async fn wait(&self, fuse: &Fuse) -> Result<u64, Error> {
        let _turn = tokio::select! {
            biased;
            () = fuse.tripped() => return Err(fuse.error()),
            t = self.turn.lock() => t,
        };
        loop {
            let wait = match self.lock().reserve(Instant::now()) {
                Ok(seq) => return Ok(seq),
                Err(wait) => wait,
            };
            tokio::select! {
                biased;
                () = fuse.tripped() => return Err(fuse.error()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Takes in how the attempt `seq` ended.
    pub(crate) fn outcome(&self, seq: u64, outcome: Outcome) {
        self.lock().outcome(seq, outcome, Instant::now());
    }

    /// An attempt given a slot that never went out (its outcome will not come).
    pub(crate) fn unsent(&self) {
        let mut st = self.lock();
        if let First::Open { answered, .. } = &mut st.first {
            *answered += 1;
        }
    }
}

impl State {
    /// A send now (its sequence number), or how long until one is due.
    fn reserve(&mut self, now: Instant) -> Result<u64, Duration> {
        if let First::Open {
            allowance,
            full_at,
            answered,
            hold_since,
            ..
        } = &mut self.first
        {
            if let Some(held) = *hold_since {
                if *answered < self.seq && now.duration_since(held) < HOLD_MAX {
                    return Err(Duration::from_millis(1));
                }
                self.close_first(now);
            } else if self.seq >= *allowance {
                let next = *full_at.get_or_insert(now) + RAMP_STEP;
                if next > now {
                    return Err(next - now);
                }
                *allowance *= 2;
                *full_at = None;
            }
        }
        if let Some(rate) = self.rate {
            let interval = Duration::from_secs_f64(1.0 / rate);
            if self.due > now {
                return Err(self.due - now);
            }
            self.due = self.due.max(now.checked_sub(TOLERANCE).unwrap_or(now)) + interval;
        }
        if self.sends.len() == RECENT {
            self.sends.pop_front();
        }
        self.sends.push_back(now);
        self.seq += 1;
        Ok(self.seq - 1)
    }

    fn outcome(&mut self, seq: u64, outcome: Outcome, now: Instant) {
        let (refused, used_up, retry_after) = match outcome {
            // A token bucket's Retry-After is the time to its next token: anything up to one
            // refill interval, however much of a token it held. The interval the headers
            // state is the whole of it, so the longer of the two stands for the interval.
            Outcome::Refused {
                used_up,
                retry_after,
                interval,
            } => (true, used_up, retry_after.max(interval)),
            _ => (false, false, None),
        };
        if self.outcomes.len() == RING {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back((seq, refused));
        if outcome == Outcome::Answered {
            if self.answers.len() == RING {
                self.answers.pop_front();
            }
            self.answers.push_back(now);
        }
        // Noise seen long ago fades.
        self.noise *= NOISE_FADE;
        if let First::Open {
            answered,
            refused: refusals,
            retry_after: longest,
            hold_since,
            ..
        } = &mut self.first
        {
            *answered += 1;
            if refused {
                *refusals += 1;
                if let Some(ra) = retry_after.filter(|ra| *ra < Duration::from_secs(1)) {
                    *longest = Some(longest.map_or(ra, |l| l.max(ra)));
                }
                hold_since.get_or_insert(now);
            } else {
                // Answered: the sends already out say whether a limit is there (their 429s
                // may come after this reply), so hold the rest until they are all answered
                // and judge their share then. Closing here let a busy client run unpaced
                // into a limit whose refusals were still on their way (7-12 % refused).
                hold_since.get_or_insert(now);
            }
            if *answered >= self.seq {
                self.close_first(now);
            }
            return;
        }
        if let Some(ra) = retry_after.filter(|ra| !ra.is_zero() && *ra <= RETRY_AFTER_FLOOR_MAX) {
            self.wave_retry_after = Some(self.wave_retry_after.map_or(ra, |w| w.max(ra)));
        }
        if refused {
            self.refused(seq, used_up, now);
        } else if let (Outcome::Answered, Some(rate)) = (outcome, self.rate) {
            // Grow only while the pace is what holds sends back (the queue keeps up with it):
            // a rate nobody sends at proves nothing and would only make the next cut too mild.
            let interval = Duration::from_secs_f64(1.0 / rate);
            if self.due + 2 * interval < now {
                self.judge(now);
                return;
            }
            let since_cut = self
                .cut_at
                .map_or(0.0, |c| now.duration_since(c).as_secs_f64());
            let speed = (since_cut / ACCELERATE_AFTER.as_secs_f64()).max(1.0);
            // `rate` successes a second, each adding its share: GROWTH × cut_rate per second.
            self.rate = Some(rate + GROWTH * self.cut_rate * speed / rate);
        }
        self.judge(now);
    }

    /// Ends the first contact: a large share refused (or headers that said so) is a limit,
    /// paced from the Retry-After it asked for; a small share is noise.
    fn close_first(&mut self, now: Instant) {
        let First::Open {
            answered,
            refused,
            retry_after,
            ..
        } = std::mem::replace(&mut self.first, First::Closed)
        else {
            return;
        };
        let share = refused as f64 / answered.max(1) as f64;
        // From the first refused send on (in the order they went out), the share refused.
        let tail_share = self
            .outcomes
            .iter()
            .filter(|o| o.1)
            .map(|o| o.0)
            .min()
            .map_or(0.0, |first| {
                let tail = self.outcomes.iter().filter(|o| o.0 >= first);
                let (n, r) = tail.fold((0u64, 0u64), |(n, r), o| (n + 1, r + u64::from(o.1)));
                r as f64 / n as f64
            });
        // A few refusals among a few answers say little: a limit needs both, refusals that
        // come as a spent bucket's do.
        if share >= FIRST_LIMIT_SHARE
            && refused >= FIRST_LIMIT_REFUSALS
            && tail_share >= FIRST_LIMIT_TAIL_SHARE
        {
            // One refill interval: the headers' (folded into `retry_after`), else the longest
            // Retry-After (the time to a token bucket's next token).
            let estimate = retry_after.map_or((answered - refused) as f64, |ra| {
                1.0 / ra.as_secs_f64().max(1e-3)
            });
            self.cut(estimate, now);
            tracing::info!(
                refused,
                answered,
                rate = self.rate.unwrap_or(0.0),
                "rate limited on first contact: sends paced"
            );
        }
    }

    /// A 429 after first contact.
    fn refused(&mut self, seq: u64, used_up: bool, now: Instant) {
        if seq < self.cut_seq {
            return; // the wave already answered by the last cut
        }
        if self.trial.is_some() {
            // The cut in force is being judged; headers showing the limit used up settle it.
            self.proven |= used_up;
            return;
        }
        let share = self.recent_share();
        if !used_up
            && (share <= 2.0 * self.noise || share * (self.outcomes.len().min(RECENT) as f64) < 1.5)
        {
            return; // one stray 429, or no more than the rate-independent ones seen before
        }
        let estimate = self.admitted_rate(now);
        self.cut(estimate, now);
        self.proven = used_up;
        tracing::debug!(
            rate = self.rate.unwrap_or(0.0),
            used_up,
            "rate limited: send rate lowered"
        );
    }

    /// The rate the server was admitting lately: the pace in force (unpaced: the recent send
    /// rate) less the share refused, and no more than the replies that came in the last second
    /// (a burst's send rate says nothing of what the server admits).
    fn admitted_rate(&self, now: Instant) -> f64 {
        let sent = self
            .rate
            .unwrap_or_else(|| match (self.sends.front(), self.sends.back()) {
                (Some(a), Some(b)) if self.sends.len() >= 4 && b > a => {
                    (self.sends.len() - 1) as f64 / b.duration_since(*a).as_secs_f64()
                }
                _ => MIN_RATE,
            });
        let estimate = sent * (1.0 - self.recent_share());
        let second = Duration::from_secs(1);
        let replies = self
            .answers
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < second)
            .count();
        let span = self
            .answers
            .iter()
            .rev()
            .nth(replies.saturating_sub(1))
            .map_or(Duration::ZERO, |t| now.duration_since(*t));
        if replies >= 10 && span >= Duration::from_millis(200) {
            let window = if replies == self.answers.len() {
                span
            } else {
                second
            };
            estimate.min(replies as f64 / window.as_secs_f64())
        } else {
            estimate
        }
    }

    /// The share refused among the last [`RECENT`] outcomes.
    fn recent_share(&self) -> f64 {
        let n = self.outcomes.len().min(RECENT);
        if n == 0 {
            return 0.0;
        }
        let refused = self.outcomes.iter().rev().take(n).filter(|o| o.1).count();
        refused as f64 / n as f64
    }

    /// Lowers the rate to [`BETA`] of `estimate` (never above the rate in force) and starts
    /// judging the cut. The first cut of an unpaced endpoint rests on a rate measured from few
    /// sends (a slow or loaded client measures it badly), so it never goes below [`BETA`] of
    /// one send per the longest Retry-After the 429s asked for: the server says it takes a
    /// request that often. The deeper cuts of a series stop at half that (they may go under it
    /// for a limit shared with other clients, but not to one send in seconds while the
    /// server asks for a retry in 300 ms); a cut of a settled pace, judged on many replies,
    /// has no floor but [`MIN_RATE`].
    fn cut(&mut self, estimate: f64, now: Instant) {
        let before = self.rate;
        let in_force = before.unwrap_or(f64::INFINITY);
        // Over a series, the longest Retry-After of all its waves: a token bucket's asks for the
        // time to its next token, and one wave's 429s may all have come at much the same
        // fraction of a token (a floor from 3 ms of a 10 ms interval held a series at 142/s
        // against a limit of 100/s).
        let wave = self.wave_retry_after.take();
        let longest = if self.series > 0 {
            wave.max(self.series_retry_after)
        } else {
            wave
        };
        self.series_retry_after = longest;
        let floor = match (longest, before.is_none(), self.series > 0) {
            (Some(ra), true, _) => (BETA / ra.as_secs_f64()).min(in_force),
            (Some(ra), false, true) => (BETA / (2.0 * ra.as_secs_f64())).min(in_force),
            _ => MIN_RATE,
        };
        let new = (BETA * estimate.min(in_force)).max(floor).max(MIN_RATE);
        self.rate = Some(new);
        self.cut_rate = new;
        self.cut_at = Some(now);
        self.cut_seq = self.seq;
        // The refusal says the server's allowance is spent: the next send waits one interval
        // (a Retry-After pause is the window's business, for a limit shown used up).
        self.due = self
            .due
            .max(now + Duration::from_secs_f64(1.0 / new).min(Duration::from_secs(1)));
        self.trial = Some(before);
    }

    /// Judges the cut in trial once the attempts after it are answered: 429s gone (or down by
    /// more than half), it stands; as many as before, it is undone and they are noise.
    fn judge(&mut self, now: Instant) {
        let Some(before) = self.trial else { return };
        let cut = self.cut_seq;
        let (mut a, mut a_refused, mut b, mut b_refused) = (0u64, 0u64, 0u64, 0u64);
        for &(seq, refused) in &self.outcomes {
            if seq >= cut.saturating_sub(TRIAL) && seq < cut {
                a += 1;
                a_refused += u64::from(refused);
            } else if seq >= cut && seq < cut + TRIAL {
                b += 1;
                b_refused += u64::from(refused);
            }
        }
        let timed_out = self
            .cut_at
            .is_some_and(|c| now.duration_since(c) >= TRIAL_TIME);
        // Many refused already: no need to wait for the rest of the trial.
        let clear = b_refused as f64 >= DEEPER_SHARE * TRIAL as f64;
        if b < TRIAL && !clear && !(timed_out && b >= 5) {
            if timed_out
                && b == 0
                && self
                    .cut_at
                    .is_some_and(|c| now.duration_since(c) >= 2 * TRIAL_TIME)
            {
                self.trial = None;
            }
            return;
        }
        self.trial = None;
        let (fa, fb) = (
            a_refused as f64 / a.max(1) as f64,
            b_refused as f64 / b as f64,
        );
        // Under a real limit a cut below what the server admitted ends the refusals;
        // rate-independent ones go on at much their old share. The share before the cut is
        // inflated (a high share is what set it off), hence the wide margin (a quarter).
        if b_refused == 0 || fb < 0.25 * fa {
            self.series = 0;
            return; // lowering the rate lowered the refusals: a limit
        }
        if self.proven || (fb >= DEEPER_SHARE && self.series < DEEPER_MAX) {
            // Too many still refused for stray 429s: not low enough yet. Cut again, judged
            // against the rate before the first cut of the series.
            self.series += 1;
            let estimate = self.admitted_rate(now);
            let proven = self.proven;
            self.cut(estimate, now);
            self.trial = Some(before);
            self.proven = proven;
            return;
        }
        self.series = 0;
        // As many refused at the lower rate: these 429s do not depend on the rate.
        self.rate = before;
        self.noise = self.noise.max(fb);
        tracing::debug!(
            noise = self.noise,
            "429s independent of the send rate: the cut is undone"
        );
    }
}

#[cfg(test)]
mod tests;
