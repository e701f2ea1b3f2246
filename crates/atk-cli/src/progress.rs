//! Progress renderers: the executor reports to an [`atk_step::ProgressSink`]; [`Progress`]
//! keeps per-step counts (the source of `status.json` too) and renders them one of three
//! ways: indicatif bars on a terminal, plain periodic lines otherwise, JSON lines for a UI.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use atk_step::{ProgressEvent, ProgressSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::status::{StatusSnapshot, StepStatus};

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

/// One JSON progress line (`--progress json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct JsonLine {
    /// `step_started`, `item_done`, `item_failed`, `item_dropped`, `step_finished` or `milestone`.
    pub event: &'static str,
    /// Step name (`null` for a milestone).
    pub step: Option<String>,
    /// Items with a stored result for the step (earlier runs included).
    pub done: u64,
    /// Items the step sees in this run.
    pub total: u64,
    /// Items that failed the step in this run.
    pub failed: u64,
    /// Items started and not finished (some may wait for a request slot).
    pub in_flight: u64,
    /// Tokens (prompt + completion) spent on the step in this run.
    pub tokens: u64,
    /// Cost so far of every run on this output dir (all engines, earlier runs included), USD.
    pub cost: f64,
    /// Cost so far of this run only (all engines), USD.
    pub run_cost: f64,
    /// Milestone message, or the reason for `item_failed` / `item_dropped`.
    pub message: Option<String>,
    /// Milestone progress 0.0..=1.0 (milestones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct StepCounts {
    total: u64,
    done: u64,
    failed: u64,
    dropped: u64,
    in_flight: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    finished: bool,
    last_emit: Option<Instant>,
    /// When the step started in this run, and how many items were already finished then.
    started: Option<(Instant, u64)>,
}

impl StepCounts {
    /// Time left at this run's pace, once something finished.
    fn eta(&self) -> Option<Duration> {
        let (at, before) = self.started?;
        let finished = (self.done + self.failed).saturating_sub(before);
        let remaining = self.total.saturating_sub(self.done + self.failed);
        if finished == 0 || remaining == 0 {
            return None;
        }
        Some(at.elapsed().mul_f64(remaining as f64 / finished as f64))
    }
}

/// `1h02m`, `3m05s`, `12s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[derive(Default)]
struct State {
    /// Step order of first appearance, then counts.
    order: Vec<String>,
    steps: BTreeMap<String, StepCounts>,
    milestone: Option<(f64, String)>,
    last_plain: Option<Instant>,
    dirty: bool,
}

enum Renderer {
    Bars {
        multi: MultiProgress,
        bars: Mutex<BTreeMap<String, ProgressBar>>,
    },
    Plain {
        out: Mutex<Box<dyn Write + Send>>,
        every: Duration,
    },
    Json {
        out: Mutex<Box<dyn Write + Send>>,
        every: Duration,
    },
    Off,
}

/// The progress sink the runner hands the executor; cheap, never blocks on anything but a
/// short mutex and a write to stderr.
pub(crate) struct Progress {
    state: Mutex<State>,
    renderer: Renderer,
    cost: Option<CostFn>,
    run_cost: Option<CostFn>,
    started: Instant,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a renderer must not take progress (and the run) down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let multi = MultiProgress::with_draw_target(target);
        Self::with(Renderer::Bars {
            multi,
            bars: Mutex::new(BTreeMap::new()),
        })
    }

    /// Plain lines to `out`, a line per step at most every `every` (and at step start/end).
    pub(crate) fn plain(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self::with(Renderer::Plain {
            out: Mutex::new(out),
            every,
        })
    }

    /// JSON lines to `out`; item events of one step are throttled to one line per `every`
    /// (step start/finish, a step's last item and milestones always print).
    pub(crate) fn json(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self::with(Renderer::Json {
            out: Mutex::new(out),
            every,
        })
    }

    /// Counts only, renders nothing.
    pub(crate) fn off() -> Self {
        Self::with(Renderer::Off)
    }

    fn with(renderer: Renderer) -> Self {
        Self {
            state: Mutex::new(State::default()),
            renderer,
            cost: None,
            run_cost: None,
            started: Instant::now(),
        }
    }

    /// Sets where the "cost so far" figure comes from (the engines' cost counters).
    pub(crate) fn with_cost(mut self, cost: CostFn) -> Self {
        self.cost = Some(cost);
        self
    }

    /// The indicatif handle when bars are drawn (logs print above the bars through it).
    pub(crate) fn multi(&self) -> Option<&MultiProgress> {
        match &self.renderer {
            Renderer::Bars { multi, .. } => Some(multi),
            _ => None,
        }
    }

    /// The seed's `set_progress(progress, message)`: a milestone shown by every renderer.
    pub(crate) fn set_progress(&self, progress: f64, message: &str) {
        self.event(ProgressEvent::Milestone {
            progress,
            message: message.to_string(),
        });
    }

    /// Sets where "this run's cost" comes from (the engines' counters minus their totals at
    /// the start); without it, this run's cost is the whole cost.
    pub(crate) fn with_run_cost(mut self, cost: CostFn) -> Self {
        self.run_cost = Some(cost);
        self
    }

    fn cost(&self) -> f64 {
        self.cost.as_ref().map_or(0.0, |f| f())
    }

    /// (this run's cost, every run's cost), USD.
    fn costs(&self) -> Costs {
        let all = self.cost();
        Costs {
            run: self.run_cost.as_ref().map_or(all, |f| f()),
            all,
        }
    }

    /// Per-step counts for `status.json` and `atk status`.
    pub(crate) fn snapshot(&self) -> StatusSnapshot {
        let st = lock(&self.state);
        let steps = st
            .order
            .iter()
            .filter_map(|name| st.steps.get(name).map(|c| (name, c)))
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

    /// Prints the periodic plain lines when due; the runner calls it about once a second so
    /// a quiet step still reports.
    pub(crate) fn tick(&self) {
        if let Renderer::Plain { out, every } = &self.renderer {
            let mut st = lock(&self.state);
            let due = st.dirty && st.last_plain.is_none_or(|t| t.elapsed() >= *every);
            if !due {
                return;
            }
            st.last_plain = Some(Instant::now());
            st.dirty = false;
            let lines: Vec<String> = st
                .order
                .iter()
                .filter_map(|n| {
                    st.steps
                        .get(n)
                        .filter(|c| !c.finished)
                        .map(|c| plain_line(n, c, self.costs()))
                })
                .collect();
            drop(st);
            let mut out = lock(out);
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        }
    }

    /// Finishes every bar (call before printing the summary).
    pub(crate) fn finish(&self) {
        if let Renderer::Bars { bars, .. } = &self.renderer {
            for bar in lock(bars).values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

/// Cost so far: this run's, and every run's on this output dir (USD).
#[derive(Debug, Clone, Copy)]
struct Costs {
    run: f64,
    all: f64,
}

/// A step's plain line. Its items and tokens are this run's; "in progress" counts items started
/// and not finished (some may wait for a request slot: `atk status` shows requests in flight).
fn plain_line(step: &str, c: &StepCounts, cost: Costs) -> String {
    let eta = c
        .eta()
        .map(|d| format!(", ETA {}", short_duration(d)))
        .unwrap_or_default();
    format!(
        "{step}: {}/{} done, {} failed, {} in progress; this run: {} tokens, ${:.4}; all runs: ${:.4}{eta}",
        c.done,
        c.total,
        c.failed,
        c.in_flight,
        c.prompt_tokens + c.completion_tokens,
        cost.run,
        cost.all
    )
}

fn bar_message(c: &StepCounts, cost: Costs) -> String {
    format!(
        "failed {} · in progress {} · this run {} tok ${:.4} · all runs ${:.4}",
        c.failed,
        c.in_flight,
        c.prompt_tokens + c.completion_tokens,
        cost.run,
        cost.all
    )
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg} · ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl ProgressSink for Progress {
    fn event(&self, event: ProgressEvent) {
        let mut st = lock(&self.state);
        st.dirty = true;
        // (event name, step, force a JSON line, message)
        let (kind, step, force, message): (&'static str, Option<String>, bool, Option<String>) =
            match event {
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
                    ("step_started", Some(step), true, None)
                }
                ProgressEvent::ItemStarted { step } => {
                    st.steps.entry(step.clone()).or_default().in_flight += 1;
                    ("item_started", Some(step), false, None)
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
                    let last = c.done + c.failed >= c.total;
                    ("item_done", Some(step), last, None)
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
                    let last = c.done + c.failed >= c.total;
                    (
                        "item_failed",
                        Some(step),
                        last,
                        Some(format!("{kind}: {reason}")),
                    )
                }
                ProgressEvent::ItemDropped { step, reason } => {
                    // A filter's verdict: the item is finished for this step (counted as done,
                    // and separately as dropped).
                    let c = st.steps.entry(step.clone()).or_default();
                    c.done += 1;
                    c.dropped += 1;
                    c.in_flight = c.in_flight.saturating_sub(1);
                    let last = c.done + c.failed >= c.total;
                    ("item_dropped", Some(step), last, Some(reason))
                }
                ProgressEvent::ItemArrived { step, already_done } => {
                    // A step over a fan-out's children: its total grows as they arrive.
                    let c = st.steps.entry(step.clone()).or_default();
                    c.total += 1;
                    if already_done {
                        c.done += 1;
                    }
                    ("item_arrived", Some(step), false, None)
                }
                ProgressEvent::ItemLeft { step } => {
                    let c = st.steps.entry(step.clone()).or_default();
                    c.total = c.total.saturating_sub(1);
                    ("item_left", Some(step), false, None)
                }
                ProgressEvent::TokensSpent {
                    step,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let c = st.steps.entry(step.clone()).or_default();
                    c.prompt_tokens += prompt_tokens;
                    c.completion_tokens += completion_tokens;
                    ("tokens_spent", Some(step), false, None)
                }
                ProgressEvent::StepFinished { step } => {
                    let c = st.steps.entry(step.clone()).or_default();
                    c.finished = true;
                    c.in_flight = 0;
                    ("step_finished", Some(step), true, None)
                }
                ProgressEvent::Milestone { progress, message } => {
                    st.milestone = Some((progress, message.clone()));
                    ("milestone", None, true, Some(message))
                }
                _ => return,
            };
        match &self.renderer {
            Renderer::Off => {}
            Renderer::Json { out, every } => {
                if kind == "item_started" {
                    return;
                }
                let counts = step.as_ref().and_then(|s| st.steps.get_mut(s));
                let mut line = JsonLine {
                    event: kind,
                    step: step.clone(),
                    done: 0,
                    total: 0,
                    failed: 0,
                    in_flight: 0,
                    tokens: 0,
                    cost: 0.0,
                    run_cost: 0.0,
                    message,
                    progress: None,
                };
                if let Some(c) = counts {
                    let due = c.last_emit.is_none_or(|t| t.elapsed() >= *every);
                    if !force && !due {
                        return;
                    }
                    c.last_emit = Some(Instant::now());
                    line.done = c.done;
                    line.total = c.total;
                    line.failed = c.failed;
                    line.in_flight = c.in_flight;
                    line.tokens = c.prompt_tokens + c.completion_tokens;
                } else if let Some((p, _)) = &st.milestone {
                    line.progress = Some(*p);
                }
                drop(st);
                let costs = self.costs();
                line.cost = costs.all;
                line.run_cost = costs.run;
                if let Ok(text) = serde_json::to_string(&line) {
                    let _ = writeln!(lock(out), "{text}");
                }
            }
            Renderer::Plain { out, .. } => {
                let text = match kind {
                    "step_started" => step.as_ref().and_then(|s| st.steps.get(s)).map(|c| {
                        format!(
                            "{}: starting, {} items ({} already done)",
                            step.as_deref().unwrap_or(""),
                            c.total,
                            c.done
                        )
                    }),
                    "step_finished" => step
                        .as_ref()
                        .and_then(|s| st.steps.get(s))
                        .map(|c| plain_line(step.as_deref().unwrap_or(""), c, self.costs())),
                    "milestone" => st
                        .milestone
                        .as_ref()
                        .map(|(p, m)| format!("[{:>3.0}%] {m}", p * 100.0)),
                    _ => None,
                };
                drop(st);
                if let Some(text) = text {
                    let _ = writeln!(lock(out), "{text}");
                }
                self.tick();
            }
            Renderer::Bars { multi, bars } => {
                let counts = step.as_ref().and_then(|s| st.steps.get(s)).cloned();
                let milestone = st.milestone.clone();
                drop(st);
                let cost = self.costs();
                match (kind, step, counts) {
                    ("milestone", _, _) => {
                        if let Some((p, m)) = milestone {
                            let _ = multi.println(format!("[{:>3.0}%] {m}", p * 100.0));
                        }
                    }
                    ("step_started", Some(step), Some(c)) => {
                        let bar = multi.add(
                            ProgressBar::new(c.total)
                                .with_style(bar_style())
                                .with_prefix(step.clone())
                                .with_position(c.done),
                        );
                        bar.reset_eta();
                        bar.set_message(bar_message(&c, cost));
                        if let Some(old) = lock(bars).insert(step, bar) {
                            old.finish_and_clear();
                        }
                    }
                    (_, Some(step), Some(c)) => {
                        if let Some(bar) = lock(bars).get(&step) {
                            bar.set_position(c.done + c.failed);
                            bar.set_message(bar_message(&c, cost));
                            if kind == "step_finished" {
                                // abandon keeps the real position (finish would jump to 100 %).
                                bar.abandon();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A `Write` over a shared buffer: lets tests (and the runner's status writer) capture output.
#[derive(Debug, Clone, Default)]
#[cfg(test)]
pub(crate) struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl SharedBuf {
    /// Everything written so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

#[cfg(test)]
impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(step: &str, total: u64, already_done: u64) -> ProgressEvent {
        ProgressEvent::StepStarted {
            step: step.into(),
            total,
            already_done,
        }
    }
    fn done(step: &str) -> ProgressEvent {
        ProgressEvent::ItemDone {
            step: step.into(),
            prompt_tokens: 10,
            completion_tokens: 5,
        }
    }
    fn item(step: &str) -> ProgressEvent {
        ProgressEvent::ItemStarted { step: step.into() }
    }

    fn json_lines(buf: &SharedBuf) -> Vec<serde_json::Value> {
        buf.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn json_lines_have_the_documented_shape() {
        let buf = SharedBuf::default();
        let p = Progress::json(Box::new(buf.clone()), Duration::ZERO).with_cost(Arc::new(|| 0.25));
        p.event(started("write_poem", 3, 1));
        p.event(item("write_poem"));
        p.event(item("write_poem"));
        p.event(done("write_poem"));
        p.event(ProgressEvent::ItemFailed {
            step: "write_poem".into(),
            kind: "validation".into(),
            reason: "no poem".into(),
            prompt_tokens: 100,
            completion_tokens: 20,
        });
        p.event(ProgressEvent::StepFinished {
            step: "write_poem".into(),
        });
        p.set_progress(1.0, "Pipeline complete");
        let lines = json_lines(&buf);
        // item_started is not a line of its own (it would double the volume for no news).
        assert_eq!(lines.len(), 5, "{}", buf.text());
        for l in &lines {
            for key in [
                "step", "done", "total", "failed", "tokens", "cost", "message",
            ] {
                assert!(l.get(key).is_some(), "missing {key} in {l}");
            }
        }
        assert_eq!(lines[0]["event"], "step_started");
        assert_eq!(lines[0]["done"], 1);
        assert_eq!(lines[0]["total"], 3);
        assert_eq!(lines[1]["event"], "item_done");
        assert_eq!(lines[1]["done"], 2);
        assert_eq!(lines[1]["in_flight"], 1);
        assert_eq!(lines[1]["tokens"], 15);
        assert_eq!(lines[1]["cost"], 0.25);
        assert_eq!(lines[2]["failed"], 1);
        assert_eq!(
            lines[2]["tokens"], 135,
            "a failed item's tokens are spent too"
        );
        assert_eq!(lines[2]["message"], "validation: no poem");
        assert_eq!(lines[4]["event"], "milestone");
        assert_eq!(lines[4]["step"], serde_json::Value::Null);
        assert_eq!(lines[4]["message"], "Pipeline complete");
        assert_eq!(lines[4]["progress"], 1.0);
    }

    #[test]
    fn json_throttles_item_lines_but_always_prints_the_last() {
        let buf = SharedBuf::default();
        let p = Progress::json(Box::new(buf.clone()), Duration::from_secs(3600));
        p.event(started("s", 100, 0));
        for _ in 0..100 {
            p.event(item("s"));
            p.event(done("s"));
        }
        let lines = json_lines(&buf);
        // step_started (which starts the throttle window) and the last item (done == total).
        assert_eq!(lines.len(), 2, "{}", buf.text());
        assert_eq!(lines.last().map(|l| l["done"].clone()), Some(100.into()));
    }

    #[test]
    fn plain_prints_start_finish_and_periodic_lines() {
        let buf = SharedBuf::default();
        let p = Progress::plain(Box::new(buf.clone()), Duration::ZERO).with_cost(Arc::new(|| 1.5));
        p.event(started("write_poem", 2, 0));
        p.event(item("write_poem"));
        p.event(done("write_poem"));
        p.event(ProgressEvent::StepFinished {
            step: "write_poem".into(),
        });
        p.set_progress(0.5, "half way");
        let text = buf.text();
        assert!(
            text.contains("write_poem: starting, 2 items (0 already done)"),
            "{text}"
        );
        assert!(text.contains("write_poem: 1/2 done, 0 failed, 0 in progress; this run: 15 tokens, $1.5000; all runs: $1.5000"), "{text}");
        assert!(text.contains("[ 50%] half way"), "{text}");
    }

    #[test]
    fn a_rerun_keeps_this_runs_figures_apart_from_all_runs() {
        // A rerun over finished work: this run spent nothing, earlier runs $0.0006.
        let buf = SharedBuf::default();
        let p = Progress::plain(Box::new(buf.clone()), Duration::ZERO)
            .with_cost(Arc::new(|| 0.0006))
            .with_run_cost(Arc::new(|| 0.0));
        p.event(started("write_poem", 5, 5));
        p.event(ProgressEvent::StepFinished {
            step: "write_poem".into(),
        });
        let text = buf.text();
        assert!(text.contains("write_poem: 5/5 done, 0 failed, 0 in progress; this run: 0 tokens, $0.0000; all runs: $0.0006"), "{text}");

        let buf = SharedBuf::default();
        let p = Progress::json(Box::new(buf.clone()), Duration::ZERO)
            .with_cost(Arc::new(|| 0.5))
            .with_run_cost(Arc::new(|| 0.25));
        p.event(started("s", 1, 0));
        let line = &json_lines(&buf)[0];
        assert_eq!(
            (line["cost"].clone(), line["run_cost"].clone()),
            (0.5.into(), 0.25.into())
        );
    }

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
    fn bars_render_without_a_terminal() {
        let p = Progress::bars(ProgressDrawTarget::hidden());
        p.event(started("a", 2, 0));
        p.event(item("a"));
        p.event(done("a"));
        p.event(ProgressEvent::StepFinished { step: "a".into() });
        p.finish();
        let Renderer::Bars { bars, .. } = &p.renderer else {
            panic!("bars")
        };
        let bars = lock(bars);
        let bar = bars.get("a").expect("a bar per step");
        assert_eq!(bar.position(), 1);
        assert!(bar.message().contains("failed 0"));
        assert!(bar.is_finished());
    }

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
        assert_eq!(short_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn auto_mode_picks_bars_only_on_a_terminal() {
        assert_eq!(ProgressMode::Auto.resolve(true), ProgressMode::Bars);
        assert_eq!(ProgressMode::Auto.resolve(false), ProgressMode::Plain);
        assert_eq!(ProgressMode::Json.resolve(true), ProgressMode::Json);
    }
}
