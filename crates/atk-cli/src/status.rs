//! The run status behind `atk status`: a snapshot the runner writes atomically to
//! `<output_dir>/status.json` about once a second, and its text rendering.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the snapshot inside the output dir.
pub const STATUS_FILE: &str = "status.json";
/// Store meta key holding the last snapshot of a run (read when no run holds the store).
pub const STATUS_META_KEY: &str = "atk_status";

/// Per-step counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Step name.
    pub step: String,
    /// Items the step sees.
    pub total: u64,
    /// Items with a stored result.
    pub done: u64,
    /// Items that failed the step (in the latest run).
    pub failed: u64,
    /// Items sent and not yet answered.
    #[serde(default)]
    pub in_flight: u64,
    /// Items neither done nor failed.
    pub pending: u64,
    /// Prompt tokens spent on the step in the latest run.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens spent on the step in the latest run.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Cost so far of one engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Engine label (`small`, `large`).
    pub label: String,
    /// Model name.
    pub model: String,
    /// Requests answered.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// What `atk status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Pipeline name.
    #[serde(default)]
    pub pipeline: String,
    /// True while the run that wrote it is going.
    #[serde(default)]
    pub running: bool,
    /// Process id of the run.
    #[serde(default)]
    pub pid: u32,
    /// Unix time (ms) of the snapshot.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Milliseconds since the run started.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Per-step counts, in the order steps started.
    pub steps: Vec<StepStatus>,
    /// Per-engine cost (earlier runs included).
    #[serde(default)]
    pub engines: Vec<EngineStatus>,
    /// Total cost so far, USD.
    pub cost_usd: f64,
    /// The last `set_progress` milestone: (progress 0..=1, message).
    #[serde(default)]
    pub milestone: Option<(f64, String)>,
}

impl StatusSnapshot {
    /// Human rendering for `atk status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let state = if self.running { format!("running (pid {})", self.pid) } else { "not running".to_string() };
        let name = if self.pipeline.is_empty() { "run" } else { &self.pipeline };
        let _ = writeln!(s, "{name}: {state}, {:.0} s elapsed", self.elapsed_ms as f64 / 1000.0);
        if let Some((p, m)) = &self.milestone {
            let _ = writeln!(s, "  milestone: [{:>3.0}%] {m}", p * 100.0);
        }
        if self.steps.is_empty() {
            let _ = writeln!(s, "  no step has started");
        }
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:<20} {:>6} done {:>6} failed {:>6} pending {:>6} in flight  (of {})",
                st.step, st.done, st.failed, st.pending, st.in_flight, st.total
            );
        }
        for e in &self.engines {
            let _ = writeln!(
                s,
                "  engine {:<6} {:<24} {:>6} requests {:>9} in {:>9} out  ${:.4}",
                e.label, e.model, e.requests, e.prompt_tokens, e.completion_tokens, e.cost_usd
            );
        }
        let _ = writeln!(s, "  cost so far: ${:.4}", self.cost_usd);
        s
    }

    /// Reads `<output_dir>/status.json`.
    pub fn read(output_dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(output_dir.join(STATUS_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = StatusSnapshot {
            pipeline: "example".into(),
            steps: vec![StepStatus { step: "write_poem".into(), total: 3, done: 2, pending: 1, ..Default::default() }],
            cost_usd: 0.5,
            ..Default::default()
        };
        let back: StatusSnapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
