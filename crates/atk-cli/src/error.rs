//! The runner's error and the one place outcomes become exit codes:
//! 0 completed, 2 config or input error, 1 fatal runtime error, 130 interrupted twice.

use std::process::ExitCode;

/// Why a run did not complete. Pipelines return it from [`crate::Pipeline::run`] (`?` works
/// on store, engine, step, config and I/O errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The config is wrong (file, key and line are in the message). Exit 2.
    #[error("{0}")]
    Config(String),
    /// The inputs are unusable: missing or empty input dir, output dir in use. Exit 2.
    #[error("{0}")]
    Input(String),
    /// A fatal runtime error: key refused, endpoint gone, disk full, store broken. Exit 1.
    #[error("{0}")]
    Fatal(String),
    /// Every item failed; the summary says why. Exit 1.
    #[error("every item failed; see the summary above")]
    AllFailed,
    /// No item reached the end of the chain (every one was dropped or failed), or every dataset
    /// came out empty; the summary lists the reasons. Exit 1.
    #[error("{0}")]
    NothingKept(String),
    /// `max_cost` reached: nothing more was sent, requests in flight were stored. Exit 1 (run
    /// state `budget_reached`).
    #[error(
        "budget reached: ${spent_usd:.4} of ${cap_usd:.4} spent, {pending} items pending — raise max_cost and rerun to go on"
    )]
    BudgetReached {
        /// Spent on this output dir so far, USD.
        spent_usd: f64,
        /// The cap, USD.
        cap_usd: f64,
        /// Items not through the chain.
        pending: u64,
    },
    /// Stopped by Ctrl-C before finishing. Exit 130.
    #[error("interrupted; rerun the same command to resume")]
    Interrupted,
    /// Not a failure: `--preview N` finished; carries the report to print. Exit 0.
    #[error("{0}")]
    Preview(String),
    /// Not a failure: `--no-wait` left batches running at the provider; the chain stops there
    /// (no dataset yet) and a later run collects them. Exit 0 (run state
    /// `waiting_for_batches`).
    #[error("batches left running at the provider; rerun the same command to collect them")]
    WaitingForBatches,
    /// The store refused: locked by another run or of an unknown format (exit 2), or broken
    /// (exit 1).
    #[error("{0}")]
    Store(#[source] atk_state::Error),
    /// An engine failed for good: a config problem (exit 2) or a fatal runtime one (exit 1).
    #[error("{0}")]
    Engine(#[source] atk_engine::Error),
    /// A step failed for good: its config (a prompt that does not load: exit 2) or at run time
    /// (exit 1).
    #[error("{0}")]
    Step(#[source] atk_step::StepError),
    /// A pipeline read a field its items do not have (a typo in a key, a step that did not
    /// run): a bug in the pipeline, reported with the item, the key and the keys present. Exit 1.
    #[error("reading the results: {0}")]
    Field(#[source] atk_state::FieldError),
    /// A file could not be read or written. Exit 1.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

impl RunError {
    /// A fatal runtime error from anything printable.
    pub fn fatal(message: impl std::fmt::Display) -> Self {
        Self::Fatal(message.to_string())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Input(_) => 2,
            Self::Fatal(_)
            | Self::AllFailed
            | Self::NothingKept(_)
            | Self::BudgetReached { .. } => 1,
            Self::Preview(_) | Self::WaitingForBatches => 0,
            Self::Field(_) | Self::Io(_) => 1,
            Self::Interrupted => 130,
            Self::Store(e) => store_exit_code(e),
            Self::Engine(e) => engine_exit_code(e),
            Self::Step(e) if e.is_config_error() => 2,
            Self::Step(atk_step::StepError::Engine(e)) => engine_exit_code(e),
            Self::Step(atk_step::StepError::Store(e)) => store_exit_code(e),
            Self::Step(_) => 1,
        }
    }
}

fn store_exit_code(e: &atk_state::Error) -> u8 {
    match e {
        atk_state::Error::Locked { .. } | atk_state::Error::Incompatible { .. } => 2,
        _ => 1,
    }
}

fn engine_exit_code(e: &atk_engine::Error) -> u8 {
    match e {
        atk_engine::Error::Config(_) => 2,
        _ => 1,
    }
}

/// Turns a run's outcome into the process exit code (printing nothing: the runner reports).
pub(crate) fn exit_code<T>(outcome: &Result<T, RunError>) -> ExitCode {
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(e.exit_code()),
    }
}

impl From<atk_state::Error> for RunError {
    fn from(e: atk_state::Error) -> Self {
        Self::Store(e)
    }
}

impl From<atk_engine::Error> for RunError {
    fn from(e: atk_engine::Error) -> Self {
        Self::Engine(e)
    }
}

impl From<atk_step::StepError> for RunError {
    fn from(e: atk_step::StepError) -> Self {
        Self::Step(e)
    }
}

impl From<atk_state::FieldError> for RunError {
    fn from(e: atk_state::FieldError) -> Self {
        Self::Field(e)
    }
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(exit_code(&Ok(())), ExitCode::SUCCESS);
        let locked = RunError::from(atk_state::Error::Locked {
            path: "store".into(),
            pid: None,
        });
        assert_eq!(locked.exit_code(), 2, "another run holds the store");
        assert!(
            std::error::Error::source(&locked).is_some(),
            "the cause is kept, not flattened"
        );
        assert_eq!(RunError::Config("x".into()).exit_code(), 2);
        assert_eq!(RunError::Input("x".into()).exit_code(), 2);
        assert_eq!(RunError::fatal("x").exit_code(), 1);
        assert_eq!(RunError::AllFailed.exit_code(), 1);
        assert_eq!(RunError::Interrupted.exit_code(), 130);
    }

    #[test]
    fn a_locked_store_is_an_input_error_and_a_refused_key_is_fatal() {
        let locked = atk_state::Error::Locked {
            path: "out".into(),
            pid: Some(7),
        };
        assert_eq!(RunError::from(locked).exit_code(), 2);
        let refused = atk_engine::Error::AuthRefused {
            engine: "small".into(),
            status: 401,
            message: "bad key".into(),
        };
        let e = RunError::from(refused);
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("refused"), "{e}");
        assert_eq!(
            RunError::from(atk_engine::Error::Config("no base_url".into())).exit_code(),
            2
        );
    }
}
