//! Progress events: the executor reports to a [`ProgressSink`]; `atk-cli` renders them
//! (bars on a terminal, plain lines otherwise, JSON lines for a UI). No library prints.

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A step starts over `total` items (`already_done` of them were stored by an earlier run).
    StepStarted {
        /// Step name.
        step: String,
        /// Items the step will see in this run (including already done ones).
        total: u64,
        /// Items skipped because their result is already stored.
        already_done: u64,
    },
    /// An item was sent to the engine for a step (in flight until Done/Failed).
    ItemStarted {
        /// Step name.
        step: String,
    },
    /// An item's result for a step is stored.
    ItemDone {
        /// Step name.
        step: String,
        /// Prompt tokens spent on it (all attempts).
        prompt_tokens: u64,
        /// Completion tokens spent on it (all attempts).
        completion_tokens: u64,
    },
    /// An item failed a step for good in this run (recorded in the store).
    ItemFailed {
        /// Step name.
        step: String,
        /// Short failure class.
        kind: String,
        /// Readable reason.
        reason: String,
        /// Prompt tokens spent on its failed attempts (they cost money too).
        prompt_tokens: u64,
        /// Completion tokens spent on its failed attempts.
        completion_tokens: u64,
    },
    /// A filter dropped an item (stored with its reason; it goes no further).
    ItemDropped {
        /// Step name.
        step: String,
        /// Why it was dropped.
        reason: String,
    },
    /// An item reached a step that runs on children of a fan-out: such a step's total is not
    /// known up front and grows by one with each arrival (`already_done` when its result was
    /// stored by an earlier run).
    ItemArrived {
        /// Step name.
        step: String,
        /// True when the result is already stored (it will be skipped).
        already_done: bool,
    },
    /// An item counted in a step's total will not reach it (it was dropped or failed at an
    /// earlier step): the step's total shrinks by one.
    ItemLeft {
        /// Step name.
        step: String,
    },
    /// Tokens spent on an item that was then dropped (a filter's or a vote's calls cost too).
    TokensSpent {
        /// Step name.
        step: String,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
    },
    /// A step has no more work in this run.
    StepFinished {
        /// Step name.
        step: String,
    },
    /// The seed's `set_progress(progress, message)`: overall progress 0.0..=1.0 and a message.
    Milestone {
        /// Overall progress, 0.0 to 1.0.
        progress: f64,
        /// What is happening.
        message: String,
    },
}

/// Receives progress events. Must be cheap and non-blocking: it is called on the hot path.
pub trait ProgressSink: Send + Sync {
    /// Handles one event.
    fn event(&self, event: ProgressEvent);
}

/// A sink that ignores everything (library default, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn event(&self, _event: ProgressEvent) {}
}
