//! The run's states, defined once: the runner records them (in `status.json` and the store's
//! status meta), and `atk status`, the interface, batch collection and the budget cap read them.
//!
//! On disk a state is two fields of the snapshot, `"state"` (a snake_case name) and, for
//! `failed` and `budget_reached`, `"reason"`; `"running"` is written too, for readers of
//! snapshots made before states existed. A snapshot without `"state"` (written by release 0.1)
//! reads as `running` when its `running` flag is set (then `killed` once its process is found
//! gone) and as `finished` otherwise.

use serde::{Deserialize, Serialize};

/// How a run stands or ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateFields", into = "StateFields")]
pub enum RunState {
    /// The run is going (its process rewrites the snapshot about once a second).
    Running,
    /// The run ended and exited 0: its datasets and card are written.
    #[default]
    Finished,
    /// The run ended with an error (exit 1 or 2), or kept nothing; it wrote no dataset.
    Failed {
        /// What went wrong, as the run printed it.
        reason: String,
    },
    /// Stopped by Ctrl-C or SIGTERM (exit 130); rerun the same command to resume.
    Interrupted,
    /// The snapshot says running but its process is gone (killed or crashed). Never written by
    /// a run: readers detect it.
    Killed,
    /// The run stopped sending because its cost cap was reached.
    BudgetReached {
        /// What was spent against which cap.
        reason: String,
    },
    /// Requests were sent through a provider's batch API; a later run collects the results.
    WaitingForBatches,
}

impl RunState {
    /// Its name in `status.json` (`running`, `finished`, `failed`, ...).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// True while the run is going.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }

    /// The reason of a `failed` or `budget_reached` state.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Failed { reason } | Self::BudgetReached { reason } => Some(reason),
            _ => None,
        }
    }

    fn kind(&self) -> StateKind {
        match self {
            Self::Running => StateKind::Running,
            Self::Finished => StateKind::Finished,
            Self::Failed { .. } => StateKind::Failed,
            Self::Interrupted => StateKind::Interrupted,
            Self::Killed => StateKind::Killed,
            Self::BudgetReached { .. } => StateKind::BudgetReached,
            Self::WaitingForBatches => StateKind::WaitingForBatches,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name().replace('_', " ");
        match self.reason() {
            Some(reason) => write!(f, "{name}: {reason}"),
            None => f.write_str(&name),
        }
    }
}

/// The state's name on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StateKind {
    Running,
    Finished,
    Failed,
    Interrupted,
    Killed,
    BudgetReached,
    WaitingForBatches,
}

impl StateKind {
    fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Killed => "killed",
            Self::BudgetReached => "budget_reached",
            Self::WaitingForBatches => "waiting_for_batches",
        }
    }
}

/// The state's fields in a snapshot (flattened into it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<StateKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Written for older readers; read only when `state` is absent.
    #[serde(default)]
    running: bool,
    /// Set by release 0.1's reader on a snapshot whose process was gone; read only.
    #[serde(default, skip_serializing)]
    stale: bool,
}

impl From<StateFields> for RunState {
    fn from(f: StateFields) -> Self {
        let reason = f.reason.unwrap_or_default();
        match f.state {
            Some(StateKind::Running) => Self::Running,
            Some(StateKind::Finished) => Self::Finished,
            Some(StateKind::Failed) => Self::Failed { reason },
            Some(StateKind::Interrupted) => Self::Interrupted,
            Some(StateKind::Killed) => Self::Killed,
            Some(StateKind::BudgetReached) => Self::BudgetReached { reason },
            Some(StateKind::WaitingForBatches) => Self::WaitingForBatches,
            None if f.stale => Self::Killed,
            None if f.running => Self::Running,
            None => Self::Finished,
        }
    }
}

impl From<RunState> for StateFields {
    fn from(s: RunState) -> Self {
        Self {
            state: Some(s.kind()),
            reason: s.reason().map(str::to_string),
            running: s.is_running(),
            stale: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(flatten)]
        state: RunState,
    }

    fn json(state: RunState) -> String {
        serde_json::to_string(&Holder { state }).unwrap()
    }

    #[test]
    fn every_state_has_a_stable_name_and_round_trips() {
        let all = [
            (RunState::Running, r#"{"state":"running","running":true}"#),
            (
                RunState::Finished,
                r#"{"state":"finished","running":false}"#,
            ),
            (
                RunState::Failed {
                    reason: "every item failed".into(),
                },
                r#"{"state":"failed","reason":"every item failed","running":false}"#,
            ),
            (
                RunState::Interrupted,
                r#"{"state":"interrupted","running":false}"#,
            ),
            (RunState::Killed, r#"{"state":"killed","running":false}"#),
            (
                RunState::BudgetReached {
                    reason: "$5.01 of max_cost $5".into(),
                },
                r#"{"state":"budget_reached","reason":"$5.01 of max_cost $5","running":false}"#,
            ),
            (
                RunState::WaitingForBatches,
                r#"{"state":"waiting_for_batches","running":false}"#,
            ),
        ];
        for (state, text) in all {
            assert_eq!(json(state.clone()), text);
            let back: Holder = serde_json::from_str(text).unwrap();
            assert_eq!(back.state, state);
        }
    }

    #[test]
    fn snapshots_from_release_0_1_read_as_running_killed_or_finished() {
        let read = |text: &str| serde_json::from_str::<Holder>(text).unwrap().state;
        assert_eq!(read(r#"{"running":true}"#), RunState::Running);
        assert_eq!(read(r#"{"running":false,"stale":true}"#), RunState::Killed);
        assert_eq!(read(r#"{"running":false}"#), RunState::Finished);
        assert_eq!(read("{}"), RunState::Finished);
    }

    #[test]
    fn shown_with_its_reason() {
        let failed = RunState::Failed {
            reason: "auth refused".into(),
        };
        assert_eq!(failed.to_string(), "failed: auth refused");
        assert_eq!(
            RunState::WaitingForBatches.to_string(),
            "waiting for batches"
        );
    }
}
