//! JSON lines for a UI (`--progress json`, on stdout): one line per update, a step's item
//! lines throttled.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::counts::{Counts, Kind, Update};
use super::lock;
use super::render::Render;

/// One JSON progress line (`--progress json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct JsonLine {
    /// `step_started`, `item_done`, `item_failed`, `item_dropped`, `step_finished` or `milestone`.
    event: &'static str,
    /// Step name (`null` for a milestone).
    step: Option<String>,
    /// Items with a stored result for the step (earlier runs included).
    done: u64,
    /// Items the step sees in this run.
    total: u64,
    /// Items that failed the step in this run.
    failed: u64,
    /// Items started and not finished (some may wait for a request slot).
    in_flight: u64,
    /// Tokens (prompt + completion) spent on the step in this run.
    tokens: u64,
    /// Cost so far of every run on this output dir (all engines, earlier runs included), USD.
    cost: f64,
    /// Cost so far of this run only (all engines), USD.
    run_cost: f64,
    /// Milestone message, or the reason for `item_failed` / `item_dropped`.
    message: Option<String>,
    /// Milestone progress 0.0..=1.0 (milestones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<f64>,
}

/// JSON lines to a writer.
pub(crate) struct Json {
    out: Mutex<Box<dyn Write + Send>>,
    every: Duration,
    /// When each step's last line went out.
    last_line: Mutex<HashMap<String, Instant>>,
}

impl Json {
    /// JSON lines to `out`; item events of one step are throttled to one line per `every`
    /// (step start/finish, a step's last item and milestones always print).
    pub(crate) fn new(out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self {
            out: Mutex::new(out),
            every,
            last_line: Mutex::default(),
        }
    }
}

impl Render for Json {
    fn event(&self, update: &Update, counts: &Counts) {
        // An item starting is not a line of its own (it would double the volume for no news).
        if update.kind == Kind::ItemStarted {
            return;
        }
        let mut line = JsonLine {
            event: update.kind.name(),
            step: update.step.as_ref().map(|(step, _)| step.clone()),
            done: 0,
            total: 0,
            failed: 0,
            in_flight: 0,
            tokens: 0,
            cost: 0.0,
            run_cost: 0.0,
            message: update.message.clone(),
            progress: None,
        };
        if let Some((step, c)) = &update.step {
            let mut last_line = lock(&self.last_line);
            let due = last_line
                .get(step)
                .is_none_or(|t| t.elapsed() >= self.every);
            if !update.force && !due {
                return;
            }
            last_line.insert(step.clone(), Instant::now());
            line.done = c.done;
            line.total = c.total;
            line.failed = c.failed;
            line.in_flight = c.in_flight;
            line.tokens = c.prompt_tokens + c.completion_tokens;
        } else {
            line.progress = update.progress;
        }
        let costs = counts.costs();
        line.cost = costs.all;
        line.run_cost = costs.run;
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = writeln!(lock(&self.out), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atk_step::{ProgressEvent, ProgressSink};

    use super::super::Progress;
    use super::super::testing::{SharedBuf, done, item, started};
    use super::*;

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
        p.finish(true);
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
    fn a_rerun_keeps_this_runs_cost_apart_from_all_runs() {
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
}
