//! What progress is made of: per-step counts, kept from the executor's events, and the
//! [`Update`] each event becomes for the renderers.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use atk_step::ProgressEvent;

use super::{CostFn, Costs, StepCostFn, lock};
use crate::status::{StatusSnapshot, StepStatus};

/// One step's counts in this run (`done` includes what earlier runs stored).
#[derive(Debug, Default, Clone)]
pub(crate) struct StepCounts {
    pub(crate) total: u64,
    pub(crate) done: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) in_flight: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) finished: bool,
    /// When the step started in this run, and how many items were already finished then.
    pub(crate) started: Option<(Instant, u64)>,
    /// Items that failed or were dropped in this run, by reason (`failed: KIND: REASON`,
    /// `dropped: REASON`); at most [`MAX_REASONS`] reasons, the rest counted together.
    pub(crate) reasons: BTreeMap<String, u64>,
}

/// Distinct reasons counted per step (reasons that carry item text would be unbounded).
const MAX_REASONS: usize = 32;
/// Longest reason kept (characters).
const MAX_REASON_CHARS: usize = 200;

impl StepCounts {
    /// Time left at this run's pace, once something finished.
    pub(crate) fn eta(&self) -> Option<Duration> {
        let (at, before) = self.started?;
        let finished = (self.done + self.failed).saturating_sub(before);
        let remaining = self.total.saturating_sub(self.done + self.failed);
        if finished == 0 || remaining == 0 {
            return None;
        }
        Some(at.elapsed().mul_f64(remaining as f64 / finished as f64))
    }

    /// Counts one more item under `reason`.
    fn count_reason(&mut self, reason: String) {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let key = if self.reasons.contains_key(&reason) || self.reasons.len() < MAX_REASONS {
            reason
        } else {
            "other reasons".to_string()
        };
        *self.reasons.entry(key).or_default() += 1;
    }

    /// True once every item the step sees is done or failed.
    fn complete(&self) -> bool {
        self.done + self.failed >= self.total
    }
}

/// A reason key of [`StepCounts::reasons`] as (kind, reason): `failed: KIND: REASON` gives the
/// failure's kind, `dropped: REASON` gives `dropped` (the kinds the run's report uses).
pub(crate) fn split_reason(key: &str) -> (&str, &str) {
    if let Some(rest) = key.strip_prefix("dropped: ") {
        return ("dropped", rest);
    }
    let rest = key.strip_prefix("failed: ").unwrap_or(key);
    rest.split_once(": ").unwrap_or(("failed", rest))
}

/// `1h02m`, `3m05s`, `12s`.
pub(crate) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Every step's counts, in the order steps first started, and the last milestone.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) order: Vec<String>,
    pub(crate) steps: BTreeMap<String, StepCounts>,
    pub(crate) milestone: Option<(f64, String)>,
}

impl State {
    /// The steps in order, with their counts.
    pub(crate) fn in_order(&self) -> impl Iterator<Item = (&String, &StepCounts)> {
        self.order
            .iter()
            .filter_map(|name| self.steps.get(name).map(|c| (name, c)))
    }
}

/// What happened, as the renderers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    StepStarted,
    ItemStarted,
    ItemDone,
    ItemFailed,
    ItemDropped,
    ItemArrived,
    ItemLeft,
    TokensSpent,
    StepFinished,
    Milestone,
}

impl Kind {
    /// The `event` of a JSON line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::StepStarted => "step_started",
            Self::ItemStarted => "item_started",
            Self::ItemDone => "item_done",
            Self::ItemFailed => "item_failed",
            Self::ItemDropped => "item_dropped",
            Self::ItemArrived => "item_arrived",
            Self::ItemLeft => "item_left",
            Self::TokensSpent => "tokens_spent",
            Self::StepFinished => "step_finished",
            Self::Milestone => "milestone",
        }
    }
}

/// One event after the counts took it in.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    pub(crate) kind: Kind,
    /// The step (`None` for a milestone) and its counts after the event.
    pub(crate) step: Option<(String, StepCounts)>,
    /// Always worth showing: a step's start, end or last item, a milestone.
    pub(crate) force: bool,
    /// A milestone's message, or why an item failed or was dropped.
    pub(crate) message: Option<String>,
    /// A milestone's progress, 0.0..=1.0.
    pub(crate) progress: Option<f64>,
}

/// The counts and the cost figures, shared by the progress sink and its renderer.
pub(crate) struct Counts {
    state: Mutex<State>,
    pub(crate) cost: Option<CostFn>,
    pub(crate) run_cost: Option<CostFn>,
    pub(crate) step_cost: Option<StepCostFn>,
    started: Instant,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            cost: None,
            run_cost: None,
            step_cost: None,
            started: Instant::now(),
        }
    }
}

impl Counts {
    /// The counts, locked (briefly: never while writing output).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn cost(&self) -> f64 {
        self.cost.as_ref().map_or(0.0, |f| f())
    }

    /// This run's cost and every run's cost so far (USD).
    pub(crate) fn costs(&self) -> Costs {
        let all = self.cost();
        Costs {
            run: self.run_cost.as_ref().map_or(all, |f| f()),
            all,
        }
    }

    /// One step's own cost in this run, when the engines' counters say.
    pub(crate) fn step_cost(&self, step: &str) -> Option<f64> {
        self.step_cost.as_ref().map(|f| f(step))
    }

    /// Takes in one event; `None` for events progress does not show.
    pub(crate) fn apply(&self, event: ProgressEvent) -> Option<Update> {
        let mut st = self.state();
        let (kind, step, force, message) = match event {
            ProgressEvent::StepStarted {
                step,
                total,
                already_done,
            } => {
                if !st.steps.contains_key(&step) {
                    st.order.push(step.clone());
                }
                let c = st.steps.entry(step.clone()).or_default();
                *c = StepCounts {
                    total,
                    done: already_done,
                    started: Some((Instant::now(), already_done)),
                    ..StepCounts::default()
                };
                (Kind::StepStarted, step, true, None)
            }
            ProgressEvent::ItemStarted { step } => {
                st.steps.entry(step.clone()).or_default().in_flight += 1;
                (Kind::ItemStarted, step, false, None)
            }
            ProgressEvent::ItemDone {
                step,
                prompt_tokens,
                completion_tokens,
            } => {
                let c = st.steps.entry(step.clone()).or_default();
                c.done += 1;
                c.in_flight = c.in_flight.saturating_sub(1);
                c.prompt_tokens += prompt_tokens;
                c.completion_tokens += completion_tokens;
                let last = c.complete();
                (Kind::ItemDone, step, last, None)
            }
            ProgressEvent::ItemFailed {
                step,
                kind,
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let c = st.steps.entry(step.clone()).or_default();
                c.failed += 1;
                c.prompt_tokens += prompt_tokens;
                c.completion_tokens += completion_tokens;
                c.in_flight = c.in_flight.saturating_sub(1);
                let last = c.complete();
                c.count_reason(format!("failed: {kind}: {reason}"));
                let message = Some(format!("{kind}: {reason}"));
                (Kind::ItemFailed, step, last, message)
            }
            ProgressEvent::ItemDropped { step, reason } => {
                // A filter's verdict: the item is finished for this step (counted as done,
                // and separately as dropped).
                let c = st.steps.entry(step.clone()).or_default();
                c.done += 1;
                c.dropped += 1;
                c.in_flight = c.in_flight.saturating_sub(1);
                c.count_reason(format!("dropped: {reason}"));
                let last = c.complete();
                (Kind::ItemDropped, step, last, Some(reason))
            }
            ProgressEvent::ItemArrived { step, already_done } => {
                // A step over a fan-out's children: its total grows as they arrive.
                let c = st.steps.entry(step.clone()).or_default();
                c.total += 1;
                if already_done {
                    c.done += 1;
                }
                (Kind::ItemArrived, step, false, None)
            }
            ProgressEvent::ItemLeft { step } => {
                let c = st.steps.entry(step.clone()).or_default();
                c.total = c.total.saturating_sub(1);
                (Kind::ItemLeft, step, false, None)
            }
            ProgressEvent::TokensSpent {
                step,
                prompt_tokens,
                completion_tokens,
            } => {
                let c = st.steps.entry(step.clone()).or_default();
                c.prompt_tokens += prompt_tokens;
                c.completion_tokens += completion_tokens;
                (Kind::TokensSpent, step, false, None)
            }
            ProgressEvent::StepFinished { step } => {
                let c = st.steps.entry(step.clone()).or_default();
                c.finished = true;
                c.in_flight = 0;
                (Kind::StepFinished, step, true, None)
            }
            ProgressEvent::Milestone { progress, message } => {
                st.milestone = Some((progress, message.clone()));
                return Some(Update {
                    kind: Kind::Milestone,
                    step: None,
                    force: true,
                    message: Some(message),
                    progress: Some(progress),
                });
            }
            _ => return None,
        };
        let counts = st.steps.get(&step).cloned().unwrap_or_default();
        Some(Update {
            kind,
            step: Some((step, counts)),
            force,
            message,
            progress: None,
        })
    }

    /// Per-step counts for `status.json` and `atk status`.
    pub(crate) fn snapshot(&self) -> StatusSnapshot {
        let st = self.state();
        let steps = st
            .in_order()
            .map(|(name, c)| StepStatus {
                step: name.clone(),
                total: c.total,
                done: c.done,
                failed: c.failed,
                dropped: c.dropped,
                in_flight: c.in_flight,
                pending: c.total.saturating_sub(c.done + c.failed),
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                eta_ms: c
                    .eta()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                reasons: c.reasons.clone(),
                cost_usd: self.step_cost(name).unwrap_or_default(),
            })
            .collect();
        let milestone = st.milestone.clone();
        drop(st);
        StatusSnapshot {
            steps,
            cost_usd: self.cost(),
            milestone,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..StatusSnapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_this_runs_pace() {
        let mut c = StepCounts {
            total: 10,
            done: 4,
            started: Some((Instant::now() - Duration::from_secs(4), 2)),
            ..Default::default()
        };
        // 2 finished in ~4 s this run, 6 left: ~12 s.
        let eta = c.eta().unwrap().as_secs_f64();
        assert!((11.9..13.0).contains(&eta), "{eta}");
        c.done = 10;
        assert_eq!(c.eta(), None, "nothing left");
        assert_eq!(
            split_reason("failed: validation: no <poem> tag"),
            ("validation", "no <poem> tag")
        );
        assert_eq!(
            split_reason("dropped: off topic: a TOC"),
            ("dropped", "off topic: a TOC")
        );
        assert_eq!(short_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }
}
