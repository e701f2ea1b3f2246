//! indicatif bars (`--progress bars`, and `auto` on a terminal): one bar per step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::counts::{Counts, Kind, StepCounts, Update};
use super::render::Render;
use super::{Costs, lock};

/// A bar per step, drawn to one target.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<BTreeMap<String, ProgressBar>>>,
}

impl Bars {
    /// indicatif bars, one per step, drawn to `target`.
    pub(crate) fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Arc::default(),
        }
    }
}

impl Render for Bars {
    fn event(&self, update: &Update, counts: &Counts) {
        let cost = counts.costs();
        match (update.kind, &update.step) {
            (Kind::Milestone, _) => {
                if let (Some(p), Some(m)) = (update.progress, &update.message) {
                    let _ = self.multi.println(format!("[{:>3.0}%] {m}", p * 100.0));
                }
            }
            (Kind::StepStarted, Some((step, c))) => {
                let bar = self.multi.add(
                    ProgressBar::new(c.total)
                        .with_style(bar_style())
                        .with_prefix(step.clone())
                        .with_position(c.done),
                );
                bar.reset_eta();
                bar.set_message(bar_message(c, counts.step_cost(step), cost));
                if let Some(old) = lock(&self.bars).insert(step.clone(), bar) {
                    old.finish_and_clear();
                }
            }
            (kind, Some((step, c))) => {
                if let Some(bar) = lock(&self.bars).get(step) {
                    bar.set_position(c.done + c.failed);
                    bar.set_message(bar_message(c, counts.step_cost(step), cost));
                    if kind == Kind::StepFinished {
                        // abandon keeps the real position (finish would jump to 100 %).
                        bar.abandon();
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(&self) {
        for bar in lock(&self.bars).values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }

    fn multi(&self) -> Option<&MultiProgress> {
        Some(&self.multi)
    }
}

fn bar_message(c: &StepCounts, step_cost: Option<f64>, cost: Costs) -> String {
    format!(
        "failed {} · in progress {} · this run {} tok{} (all steps ${:.4}) · all runs ${:.4}",
        c.failed,
        c.in_flight,
        c.prompt_tokens + c.completion_tokens,
        super::step_cost_text(step_cost),
        cost.run,
        cost.all
    )
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg} · ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use atk_step::{ProgressEvent, ProgressSink};

    use super::super::Progress;
    use super::super::testing::{done, item, started};
    use super::*;

    #[test]
    fn bars_render_without_a_terminal() {
        let renderer = Bars::new(ProgressDrawTarget::hidden());
        let bars = renderer.bars.clone();
        let p = Progress::with(Box::new(renderer));
        p.event(started("a", 2, 0));
        p.event(item("a"));
        p.event(done("a"));
        p.event(ProgressEvent::StepFinished { step: "a".into() });
        p.finish(true);
        let bars = lock(&bars);
        let bar = bars.get("a").expect("a bar per step");
        assert_eq!(bar.position(), 1);
        assert!(bar.message().contains("failed 0"));
        assert!(bar.is_finished());
    }
}
