//! The step layer's typed errors.

/// Why a step or a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A prompt file is missing or malformed (a config error: the CLI exits 2).
    #[error("prompt {file}{}: {message}", line_suffix(.line))]
    Prompt {
        /// The file (path, or `built-in:NAME` for a compiled-in default).
        file: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A chain or step is set up wrongly (duplicate step names, empty chain, ...). Exit 2.
    #[error("step configuration: {0}")]
    Config(String),
    /// A fatal engine error (key refused, endpoint not found, engine dead): the run stops. Exit 1.
    #[error(transparent)]
    Engine(#[from] atk_engine::Error),
    /// The store failed (disk full, corrupt record, locked). Exit 1.
    #[error("store: {0}")]
    Store(#[from] atk_state::Error),
    /// One item failed this step for good (recorded; the run carries on).
    #[error("{0}")]
    Failed(ItemFailure),
    /// The run was stopped before this item's next engine call was sent; nothing is recorded
    /// for it and the next run does it.
    #[error("the run was stopped before this item's request was sent")]
    Cancelled,
    /// A step task panicked or was lost.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StepError {
    /// True for errors the user fixes in config or prompt files (the CLI exits 2).
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::Prompt { .. } | Self::Config(_))
    }

    /// A per-item failure of the given kind.
    pub fn failed(kind: &str, reason: impl Into<String>) -> Self {
        Self::Failed(ItemFailure {
            kind: kind.to_string(),
            reason: reason.into(),
            last_output: None,
            last_prompt: None,
            attempts: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
        })
    }
}

/// One item's failure of one step: the last reason and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item failed ({kind}) after {attempts} attempt(s): {reason}")]
pub struct ItemFailure {
    /// Short class: `validation`, `length`, `rejected`, `transport`, `fan_out`, ...
    pub kind: String,
    /// The last reason, readable.
    pub reason: String,
    /// The last raw output, when there was one.
    pub last_output: Option<String>,
    /// The last prompt sent, readable (see `atk_state::FailureRecord::last_prompt`).
    pub last_prompt: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Prompt tokens spent on all attempts.
    pub prompt_tokens: u64,
    /// Completion tokens spent on all attempts.
    pub completion_tokens: u64,
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}
