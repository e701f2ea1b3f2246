//! What the runner does with a pipeline once everything is open, phase by phase: the
//! pipeline's own items, the chain, the datasets (finished here), the meta datasets, each
//! phase shown as a progress milestone.

use std::sync::{Arc, Mutex};

use atk_step::Chain;

use super::{Pipeline, RunContext};
use crate::dataset::{Conversation, DatasetWriter};
use crate::error::RunError;

/// How a run that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// Every phase ran; the datasets are written.
    Completed,
    /// `--dry-run`: the chain ran on a sample against counting stand-ins; the estimate to show.
    DryRun(String),
    /// A `--shard I/N` run went as far as it can: every item of the shard passed the steps
    /// before this barrier step; merge the shards and run on the merge for the rest.
    StoppedBeforeBarrier(String),
    /// `--describe-config` or `--check-config`: the config was described or checked, nothing ran.
    ConfigChecked,
    /// `--no-wait`: batches were submitted and left running at the provider; a later run
    /// collects them (no dataset written yet).
    WaitingForBatches,
    /// `--cancel-batches`: the batches still at the provider were cancelled.
    BatchesCancelled,
}

/// What running the chain gave.
pub(crate) enum ChainRun {
    /// The chain ran over every item.
    Done,
    /// A dry run: the estimate.
    Estimate(String),
    /// A `--shard` run stopped before this barrier step (the shards are merged, then run).
    StoppedBefore(String),
}

/// Runs the pipeline's phases over a prepared context.
pub(super) async fn run_pipeline<P: Pipeline>(
    pipeline: &P,
    ctx: &mut RunContext<P::Config>,
    chain: &Chain,
) -> Result<RunOutcome, RunError> {
    pipeline.seed(ctx).await?;
    ctx.set_progress(0.1, &format!("running {}", chain.names().join(" → ")));
    match ctx.run_chain(chain).await? {
        ChainRun::Estimate(estimate) => return Ok(RunOutcome::DryRun(estimate)),
        ChainRun::StoppedBefore(step) => return Ok(RunOutcome::StoppedBeforeBarrier(step)),
        ChainRun::Done => {}
    }
    ctx.set_progress(0.9, "writing the datasets");
    if super::unchanged::reuse(ctx) {
        ctx.set_progress(1.0, "pipeline complete (datasets unchanged)");
        return Ok(RunOutcome::Completed);
    }
    pipeline.write_datasets(ctx, chain)?;
    ctx.open_datasets.finish_all()?;
    ctx.write_meta_datasets(chain)?;
    ctx.set_progress(1.0, "pipeline complete");
    Ok(RunOutcome::Completed)
}

/// A dataset file a pipeline is writing ([`RunContext::dataset`]); the runner finishes it
/// (puts it in place atomically) once [`Pipeline::write_datasets`] returned without error.
#[derive(Clone, Debug)]
pub struct Dataset(Arc<Mutex<Option<DatasetWriter>>>);

impl Dataset {
    fn with(
        &self,
        f: impl FnOnce(&mut DatasetWriter) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(writer) => f(writer),
            None => Err(RunError::fatal(
                "a dataset was written after it was finished",
            )),
        }
    }

    /// Appends one row as a JSON line.
    pub fn write(&self, row: &impl serde::Serialize) -> Result<(), RunError> {
        self.with(|w| w.write(row))
    }

    /// Appends a conversation as a ShareGPT line.
    pub fn write_sharegpt(&self, conversation: &Conversation) -> Result<(), RunError> {
        self.with(|w| w.write_sharegpt(conversation))
    }

    /// Appends a conversation as an OpenAI messages line.
    pub fn write_openai(&self, conversation: &Conversation) -> Result<(), RunError> {
        self.with(|w| w.write_openai(conversation))
    }
}

/// The datasets opened in a run, finished together by the runner.
#[derive(Default, Debug)]
pub(crate) struct OpenDatasets(Mutex<Vec<Dataset>>);

impl OpenDatasets {
    /// Keeps `writer` to be finished later; returns its handle.
    pub(crate) fn open(&self, writer: DatasetWriter) -> Dataset {
        let dataset = Dataset(Arc::new(Mutex::new(Some(writer))));
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dataset.clone());
        dataset
    }

    /// Finishes every open dataset, in the order they were opened.
    pub(crate) fn finish_all(&self) -> Result<(), RunError> {
        let open = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for dataset in open {
            let writer = dataset.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(writer) = writer {
                writer.finish()?;
            }
        }
        Ok(())
    }
}
