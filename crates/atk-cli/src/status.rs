//! The run status behind `atk status`: a snapshot the runner writes atomically to
//! `<output_dir>/status.json` about once a second (the types, here), the run's states
//! (`status/state.rs`), how it is read without disturbing a run (`status/read.rs`) and its
//! text rendering (`status/render.rs`).

mod batches;
mod read;
mod render;
mod state;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use atk_engine::OutageNow;
pub use batches::BatchStatus;
pub(crate) use batches::read_batches;
pub use read::read_status;
pub use state::RunState;

pub use crate::layout::STATUS_FILE;
pub(crate) use crate::layout::STATUS_META_KEY;

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
    /// Items a filter step dropped (included in `done`).
    #[serde(default)]
    pub dropped: u64,
    /// Items started and not finished (some may wait for a request slot; the requests in
    /// flight are [`StatusSnapshot::requests_in_flight`]).
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
    /// Time left for this step at this run's pace (what the progress bars show), once an
    /// item finished; `None` when nothing is left or nothing finished yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    /// Items that failed or were dropped at this step in this run, by reason
    /// (`failed: KIND: REASON`, `dropped: REASON`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, u64>,
    /// This run's cost of the step's own calls (USD; 0 in snapshots written before it was
    /// recorded).
    #[serde(default)]
    pub cost_usd: f64,
}

/// How a step's stored results compare with its current fingerprint (prompt, params, model,
/// version): counted from a store no run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintStatus {
    /// Results made with the current fingerprint.
    pub current: u64,
    /// Results made with an older one (`--redo-changed` remakes them).
    pub older: u64,
}

/// Requests, tokens and cost of one engine: every run's on this output dir, and this run's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Engine label (`small`, `large`).
    pub label: String,
    /// Model name.
    pub model: String,
    /// Requests answered, all runs.
    pub requests: u64,
    /// Prompt tokens, all runs.
    pub prompt_tokens: u64,
    /// Completion tokens, all runs.
    pub completion_tokens: u64,
    /// Cost in USD, all runs.
    pub cost_usd: f64,
    /// Requests answered in this run.
    #[serde(default)]
    pub run_requests: u64,
    /// Prompt tokens in this run.
    #[serde(default)]
    pub run_prompt_tokens: u64,
    /// Completion tokens in this run.
    #[serde(default)]
    pub run_completion_tokens: u64,
    /// Cost of this run, USD.
    #[serde(default)]
    pub run_cost_usd: f64,
    /// Requests that failed for good (every transport attempt spent).
    #[serde(default)]
    pub failed_requests: u64,
    /// Transport retries by cause (`rate_limited` is a 429, `server_error`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u64>,
    /// Per endpoint (several `base_url`s): `[calls, failures]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, [u64; 2]>,
    /// Outages of the endpoint so far (it stopped answering; calls waited while it was
    /// probed), all runs.
    #[serde(default)]
    pub outages: u64,
    /// The outage in progress: calls wait and one probe at a time goes out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageNow>,
}

/// A failure or drop reason of the last run, with one raw reply that met it (keys masked).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasonSample {
    /// Step name.
    pub step: String,
    /// `dropped`, or the failure's class (`validation`, `length`, `transport`, ...).
    pub kind: String,
    /// The reason.
    pub reason: String,
    /// Items it happened to in the run.
    pub count: u64,
    /// The first raw reply it happened to, when a reply came (truncated).
    pub sample: Option<String>,
}

/// The run's `max_cost` and where it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The cap, USD.
    pub cap_usd: f64,
    /// Spent on the output dir so far, USD.
    pub spent_usd: f64,
    /// True when the run stopped at the cap (run state `budget_reached`).
    pub reached: bool,
}

/// What `atk status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Pipeline name.
    #[serde(default)]
    pub pipeline: String,
    /// How the run stands or ended (`"state"` and `"reason"` in the JSON; see [`RunState`]).
    #[serde(flatten)]
    pub state: RunState,
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
    /// Per-engine requests, tokens and cost (all runs, and this run).
    #[serde(default)]
    pub engines: Vec<EngineStatus>,
    /// Total cost so far, all runs, USD.
    pub cost_usd: f64,
    /// Total cost of this run, USD.
    #[serde(default)]
    pub run_cost_usd: f64,
    /// Failure and drop reasons of the last run, one sample raw reply each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReasonSample>,
    /// The run's `max_cost`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// Requests holding a slot of the engines' concurrency limit (what the engine counts as in
    /// flight; never above the limit), at the snapshot.
    #[serde(default)]
    pub requests_in_flight: u64,
    /// The concurrency limit's current window (`concurrency_limit`, lowered after 429s).
    #[serde(default)]
    pub request_limit: u64,
    /// The last `set_progress` milestone: (progress 0..=1, message).
    #[serde(default)]
    pub milestone: Option<(f64, String)>,
    /// Per step: results made with the current fingerprint and with an older one (counted
    /// from the store when no run holds it; empty in a running run's snapshot).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fingerprints: std::collections::BTreeMap<String, FingerprintStatus>,
    /// Per step, how many results the store held (kept here, outside sled, so that a store
    /// that comes back with fewer is noticed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_results: BTreeMap<String, u64>,
    /// Results found missing when the run opened its store (a damaged store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<MissingResults>,
    /// The run's provider batches (engines in `batch` mode), from its batch journal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchStatus>,
    /// How to move a large sled store to redb and what it saves (set at the end of a run whose
    /// sled store is past the advice threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_advice: Option<String>,
}

/// A step whose store came back with fewer results than were last recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResults {
    /// Step name.
    pub step: String,
    /// Results recorded (in `status.json`) after the last run.
    pub recorded: u64,
    /// Results the store holds now.
    pub found: u64,
}

impl MissingResults {
    /// How many results are gone.
    pub(crate) fn missing(&self) -> u64 {
        self.recorded.saturating_sub(self.found)
    }

    /// Its line in a damage report: `step NAME  N missing (recorded R, found F)`.
    pub(crate) fn line(&self) -> String {
        format!(
            "step {:<20} {:>8} missing (recorded {}, found {})",
            self.step,
            self.missing(),
            self.recorded,
            self.found
        )
    }
}

impl StatusSnapshot {
    /// True while the run that wrote it is going.
    pub fn is_running(&self) -> bool {
        self.state.is_running()
    }

    /// Reads `<output_dir>/status.json`.
    pub fn read(output_dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(output_dir.join(STATUS_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// Why `atk status` could not say anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Neither a store nor a status snapshot is in the directory.
    #[error("no atk run in {}: no store and no status.json", .0.display())]
    NoRun(std::path::PathBuf),
    /// The store or the snapshot could not be read.
    #[error("{0}")]
    Read(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = StatusSnapshot {
            pipeline: "example".into(),
            steps: vec![StepStatus {
                step: "write_poem".into(),
                total: 3,
                done: 2,
                pending: 1,
                ..Default::default()
            }],
            cost_usd: 0.5,
            ..Default::default()
        };
        let back: StatusSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
