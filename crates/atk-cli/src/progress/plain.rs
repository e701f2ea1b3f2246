//! Plain lines (`--progress plain`, and `auto` off a terminal): a line when a step starts or
//! ends and at each milestone, and a line per running step every few seconds.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::counts::{Counts, Kind, StepCounts, Update, short_duration};
use super::render::Render;
use super::{Costs, lock};

/// Plain lines to a writer, the periodic ones at most every `every`.
pub(crate) struct Plain {
    out: Mutex<Box<dyn Write + Send>>,
    every: Duration,
    clock: Mutex<Clock>,
}

/// When the last periodic lines went out, and whether anything changed since.
#[derive(Default)]
struct Clock {
    last: Option<Instant>,
    dirty: bool,
}

impl Plain {
    /// Plain lines to `out`, a line per step at most every `every` (and at step start/end).
    pub(crate) fn new(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self {
            out: Mutex::new(out),
            every,
            clock: Mutex::default(),
        }
    }
}

impl Render for Plain {
    fn event(&self, update: &Update, counts: &Counts) {
        lock(&self.clock).dirty = true;
        let text = match (update.kind, &update.step) {
            (Kind::StepStarted, Some((step, c))) => Some(format!(
                "{step}: starting, {} items ({} already done)",
                c.total, c.done
            )),
            (Kind::StepFinished, Some((step, c))) => {
                Some(plain_line(step, c, counts.step_cost(step), counts.costs()))
            }
            (Kind::Milestone, _) => update
                .progress
                .zip(update.message.as_ref())
                .map(|(p, m)| format!("[{:>3.0}%] {m}", p * 100.0)),
            _ => None,
        };
        if let Some(text) = text {
            let _ = writeln!(lock(&self.out), "{text}");
        }
        self.tick(counts);
    }

    fn tick(&self, counts: &Counts) {
        {
            let mut clock = lock(&self.clock);
            let due = clock.dirty && clock.last.is_none_or(|t| t.elapsed() >= self.every);
            if !due {
                return;
            }
            clock.last = Some(Instant::now());
            clock.dirty = false;
        }
        let costs = counts.costs();
        let lines: Vec<String> = counts
            .state()
            .in_order()
            .filter(|(_, c)| !c.finished)
            .map(|(name, c)| plain_line(name, c, counts.step_cost(name), costs))
            .collect();
        let mut out = lock(&self.out);
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
}

/// A step's plain line. Its items, tokens and cost are this run's (the step's own cost, then
/// the whole run's); "in progress" counts items started and not finished (some may wait for a
/// request slot: `atk status` shows requests in flight).
fn plain_line(step: &str, c: &StepCounts, step_cost: Option<f64>, cost: Costs) -> String {
    let eta = c
        .eta()
        .map(|d| format!(", ETA {}", short_duration(d)))
        .unwrap_or_default();
    format!(
        "{step}: {}/{} done, {} failed, {} in progress; this run: {} tokens{} (all steps ${:.4}); all runs: ${:.4}{eta}",
        c.done,
        c.total,
        c.failed,
        c.in_flight,
        c.prompt_tokens + c.completion_tokens,
        super::step_cost_text(step_cost),
        cost.run,
        cost.all
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atk_step::{ProgressEvent, ProgressSink};

    use super::super::Progress;
    use super::super::testing::{SharedBuf, done, item, started};
    use super::*;

    #[test]
    fn plain_prints_start_finish_and_periodic_lines() {
        let buf = SharedBuf::default();
        let p = Progress::plain(Box::new(buf.clone()), Duration::ZERO)
            .with_cost(Arc::new(|| 1.5))
            .with_step_cost(Arc::new(
                |step: &str| {
                    if step == "write_poem" { 0.25 } else { 0.0 }
                },
            ));
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
        assert!(text.contains("write_poem: 1/2 done, 0 failed, 0 in progress; this run: 15 tokens, $0.2500 (all steps $1.5000); all runs: $1.5000"), "{text}");
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
        assert!(text.contains("write_poem: 5/5 done, 0 failed, 0 in progress; this run: 0 tokens (all steps $0.0000); all runs: $0.0006"), "{text}");
    }
}
