//! Progress: the executor reports to an [`atk_step::ProgressSink`]; [`Progress`] keeps per-step
//! counts once (`progress/counts.rs`, the source of `status.json` too) and hands each update
//! to one renderer ([`Render`](render::Render)): indicatif bars on a terminal
//! (`progress/bars.rs`), plain periodic lines otherwise (`plain.rs`), JSON lines for a UI
//! (`json.rs`), or nothing.

mod bars;
mod counts;
mod json;
mod plain;
mod render;

use std::io::IsTerminal;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atk_step::{ProgressEvent, ProgressSink};
use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::status::StatusSnapshot;
use counts::Counts;
pub(crate) use counts::split_reason;
use render::Render;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// indicatif bars per step.
    Bars,
    /// A plain line per step every few seconds.
    Plain,
    /// JSON lines `{event, step, done, total, failed, in_flight, tokens, cost, run_cost, message}` for a UI,
    /// on stdout; the run ends them with one `{event: "dataset_written", path, lines}` per dataset.
    Json,
    /// Nothing (set by `-q`; `--progress json` still wins).
    Off,
}

impl ProgressMode {
    /// Resolves `Auto` against whether stderr is a terminal.
    pub(crate) fn resolve(self, stderr_is_terminal: bool) -> Self {
        match self {
            Self::Auto if stderr_is_terminal => Self::Bars,
            Self::Auto => Self::Plain,
            other => other,
        }
    }
}

/// Returns the run's total cost so far (summed over engines), in USD.
pub(crate) type CostFn = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Returns this run's cost so far of one step's calls (USD), by the step's name.
pub(crate) type StepCostFn = Arc<dyn Fn(&str) -> f64 + Send + Sync>;

/// A step's own cost in this run, shown beside the run's (`None`: not known, so not shown).
pub(crate) fn step_cost_text(step_cost: Option<f64>) -> String {
    step_cost.map(|c| format!(", ${c:.4}")).unwrap_or_default()
}

/// Cost so far: this run's, and every run's on this output dir (USD).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Costs {
    run: f64,
    all: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a renderer must not take progress (and the run) down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The progress sink the runner hands the executor; cheap, never blocks on anything but a
/// short mutex and a write to stderr.
pub(crate) struct Progress {
    counts: Counts,
    renderer: Box<dyn Render>,
    /// A milestone at 100 % ("pipeline complete"), held back until the run is known to have
    /// completed: a run that ends in failure never shows it.
    last_milestone: Mutex<Option<String>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

impl Progress {
    /// A renderer for `mode`: bars and plain lines on stderr, JSON lines on stdout (`Auto`
    /// resolved against stderr).
    pub(crate) fn stderr(mode: ProgressMode) -> Self {
        match mode.resolve(std::io::stderr().is_terminal()) {
            ProgressMode::Bars => Self::bars(ProgressDrawTarget::stderr()),
            ProgressMode::Plain => Self::plain(Box::new(std::io::stderr()), Duration::from_secs(5)),
            // stdout carries nothing else, so a UI reads clean JSON lines there; logs stay on stderr.
            ProgressMode::Json => {
                Self::json(Box::new(std::io::stdout()), Duration::from_millis(200))
            }
            ProgressMode::Off | ProgressMode::Auto => Self::off(),
        }
    }

    /// indicatif bars, one per step, drawn to `target`.
    pub(crate) fn bars(target: ProgressDrawTarget) -> Self {
        Self::with(Box::new(bars::Bars::new(target)))
    }

    /// Plain lines to `out`, a line per step at most every `every` (and at step start/end).
    pub(crate) fn plain(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self::with(Box::new(plain::Plain::new(out, every)))
    }

    /// JSON lines to `out`; item events of one step are throttled to one line per `every`
    /// (step start/finish, a step's last item and milestones always print).
    pub(crate) fn json(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self::with(Box::new(json::Json::new(out, every)))
    }

    /// Counts only, renders nothing.
    pub(crate) fn off() -> Self {
        Self::with(Box::new(render::Off))
    }

    fn with(renderer: Box<dyn Render>) -> Self {
        Self {
            counts: Counts::default(),
            renderer,
            last_milestone: Mutex::new(None),
        }
    }

    /// Sets where the "cost so far" figure comes from (the engines' cost counters).
    pub(crate) fn with_cost(mut self, cost: CostFn) -> Self {
        self.counts.cost = Some(cost);
        self
    }

    /// Sets where "this run's cost" comes from (the engines' counters minus their totals at
    /// the start); without it, this run's cost is the whole cost.
    pub(crate) fn with_run_cost(mut self, cost: CostFn) -> Self {
        self.counts.run_cost = Some(cost);
        self
    }

    /// Sets where each step's own cost in this run comes from (the engines' counters, which
    /// cost each call under the step that made it).
    pub(crate) fn with_step_cost(mut self, cost: StepCostFn) -> Self {
        self.counts.step_cost = Some(cost);
        self
    }

    /// The indicatif handle when bars are drawn (logs print above the bars through it).
    pub(crate) fn multi(&self) -> Option<&MultiProgress> {
        self.renderer.multi()
    }

    /// The seed's `set_progress(progress, message)`: a milestone shown by every renderer. One
    /// at 100 % waits for [`finish`](Self::finish) of a run that completed.
    pub(crate) fn set_progress(&self, progress: f64, message: &str) {
        if progress >= 1.0 {
            *lock(&self.last_milestone) = Some(message.to_string());
            return;
        }
        self.event(ProgressEvent::Milestone {
            progress,
            message: message.to_string(),
        });
    }

    /// Per-step counts for `status.json` and `atk status`.
    pub(crate) fn snapshot(&self) -> StatusSnapshot {
        self.counts.snapshot()
    }

    /// Prints the periodic plain lines when due; the runner calls it about once a second so
    /// a quiet step still reports.
    pub(crate) fn tick(&self) {
        self.renderer.tick(&self.counts);
    }

    /// Shows the held-back 100 % milestone when the run `completed`, then finishes every bar
    /// (call before printing the summary).
    pub(crate) fn finish(&self, completed: bool) {
        let last = lock(&self.last_milestone).take();
        if let Some(message) = last.filter(|_| completed) {
            self.event(ProgressEvent::Milestone {
                progress: 1.0,
                message,
            });
        }
        self.renderer.finish();
    }
}

impl ProgressSink for Progress {
    fn event(&self, event: ProgressEvent) {
        if let Some(update) = self.counts.apply(event) {
            self.renderer.event(&update, &self.counts);
        }
    }
}

/// What the renderers' tests share: a buffer to write to, and events.
#[cfg(test)]
mod testing {
    use super::*;

    /// A `Write` over a shared buffer, to read back what a renderer wrote.
    #[derive(Debug, Clone, Default)]
    pub(super) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        /// Everything written so far, as text.
        pub(super) fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(super) fn started(step: &str, total: u64, already_done: u64) -> ProgressEvent {
        ProgressEvent::StepStarted {
            step: step.into(),
            total,
            already_done,
        }
    }

    pub(super) fn done(step: &str) -> ProgressEvent {
        ProgressEvent::ItemDone {
            step: step.into(),
            prompt_tokens: 10,
            completion_tokens: 5,
        }
    }

    pub(super) fn item(step: &str) -> ProgressEvent {
        ProgressEvent::ItemStarted { step: step.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{done, item, started};
    use super::*;

    #[test]
    fn snapshot_counts_pending_per_step() {
        let p = Progress::off();
        p.event(started("a", 5, 2));
        p.event(item("a"));
        p.event(done("a"));
        p.event(item("a"));
        p.event(ProgressEvent::ItemFailed {
            step: "a".into(),
            kind: "transport".into(),
            reason: "x".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        p.event(item("a"));
        let s = p.snapshot();
        assert_eq!(s.steps.len(), 1);
        let a = &s.steps[0];
        assert_eq!(
            (a.done, a.failed, a.in_flight, a.pending, a.total),
            (3, 1, 1, 1, 5)
        );
    }

    #[test]
    fn a_complete_milestone_shows_only_when_the_run_completed() {
        for completed in [true, false] {
            let p = Progress::off();
            p.set_progress(0.5, "half way");
            p.set_progress(1.0, "pipeline complete");
            assert_eq!(
                p.snapshot().milestone,
                Some((0.5, "half way".into())),
                "held back while the run is judged"
            );
            p.finish(completed);
            let shown = p.snapshot().milestone.map(|(_, m)| m);
            let expected = if completed {
                "pipeline complete"
            } else {
                "half way"
            };
            assert_eq!(shown.as_deref(), Some(expected));
        }
    }

    #[test]
    fn auto_mode_picks_bars_only_on_a_terminal() {
        assert_eq!(ProgressMode::Auto.resolve(true), ProgressMode::Bars);
        assert_eq!(ProgressMode::Auto.resolve(false), ProgressMode::Plain);
        assert_eq!(ProgressMode::Json.resolve(true), ProgressMode::Json);
    }
}
