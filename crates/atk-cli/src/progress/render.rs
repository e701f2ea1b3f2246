//! The renderer trait: how one way of showing progress takes each update. The counts are kept
//! once, in [`Counts`]; a renderer only shows them (and keeps its own pacing).

use indicatif::MultiProgress;

use super::counts::{Counts, Update};

/// One way of showing progress (`--progress bars|plain|json|off`).
pub(crate) trait Render: Send + Sync {
    /// Shows one update; `counts` holds every step's counts and the cost so far. Called on the
    /// executor's tasks: keep it short, and never hold the counts' lock while writing.
    fn event(&self, update: &Update, counts: &Counts);

    /// Called about once a second, so that a quiet step still reports.
    fn tick(&self, _counts: &Counts) {}

    /// The run is over: close whatever is still drawn.
    fn finish(&self) {}

    /// The indicatif handle when bars are drawn (logs print above the bars through it).
    fn multi(&self) -> Option<&MultiProgress> {
        None
    }
}

/// Shows nothing (`--progress off`, `-q`, a dry run); the counts are still kept.
pub(crate) struct Off;

impl Render for Off {
    fn event(&self, _update: &Update, _counts: &Counts) {}
}
