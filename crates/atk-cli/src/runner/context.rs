//! [`RunContext`]: what a pipeline gets from the runner, and what it does with it (run a
//! chain, read final items, write datasets). Seeding is in `seed.rs`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use atk_state::{Corpus, ItemRecord, Store};
use atk_step::{
    Engines, Executor, ExecutorConfig, Item, PromptLibrary, RunReport, Step, StepContext,
};
use tokio_util::sync::CancellationToken;

use super::phases::{ChainRun, Dataset, OpenDatasets};
use crate::config::CommonConfig;
use crate::dataset::{Conversation, DatasetWriter, Written};
use crate::dry_run::{CountingEngine, EngineEstimate, render_estimate};
use crate::error::RunError;
use crate::progress::Progress;
use crate::settings::Settings;

/// Everything a pipeline gets from the runner.
pub struct RunContext<C> {
    /// The common config (paths absolute, keys read).
    pub common: CommonConfig,
    /// The pipeline's own config.
    pub config: C,
    /// The small and large engines (counting stand-ins under `--dry-run`).
    pub engines: Engines,
    /// The store (in memory under `--dry-run`), seeded with the input chunks.
    pub store: Arc<dyn Store>,
    /// The prompt library (compiled-in defaults + the config's `prompts` folder).
    pub prompts: Arc<PromptLibrary>,
    /// The progress sink every renderer reads.
    pub(crate) progress: Arc<Progress>,
    /// Cancelled by the first Ctrl-C: no new requests start.
    pub cancel: CancellationToken,
    /// Where datasets go.
    pub output_dir: PathBuf,
    pub(super) settings: Arc<Settings>,
    pub(super) dry_run: Option<DryRun>,
    pub(super) reports: Vec<RunReport>,
    pub(super) details_sources: Vec<atk_metadatagen::MetaSource>,
    pub(super) datasets: Written,
    /// Datasets the pipeline opened; the runner finishes them.
    pub(super) open_datasets: OpenDatasets,
    /// The source document of the final item yielded last (rows written now come from it).
    pub(super) row_source: crate::dataset::RowSource,
    /// Ids of the root items [`RunContext::seed_texts`] added in this run.
    pub(super) seeded: HashSet<String>,
    /// `--shard I/N`: the pipeline's own items are kept to this shard, as the input chunks are.
    pub(super) shard: Option<crate::flags::Shard>,
    /// `--redo`, `--redo-changed`, `--reprocess`.
    pub(super) rework_flags: crate::redo::ReworkFlags,
    /// `--preview N`: the chain's report is the run's result; no dataset is written.
    pub(super) preview: Option<u64>,
    /// The batch journals of engines in `batch` mode (`--no-wait` stops the chain when it
    /// left batches running).
    pub(super) batches: Option<Arc<super::journal::RunBatches>>,
    /// The whole input, read-only (opened after seeding; `None` when the pipeline brings its
    /// own items).
    pub(super) corpus: Option<Arc<dyn Corpus>>,
    /// What the datasets are made from (a rerun that changed nothing skips writing them).
    pub(super) unchanged: super::unchanged::Tracker,
}

pub(super) struct DryRun {
    pub(super) counters: Vec<Arc<CountingEngine>>,
    pub(super) chunks: u64,
    /// Chunks the chain runs on (a spread sample of `chunks`).
    pub(super) sample: u64,
    pub(super) chunk_tokens: u64,
    pub(super) verbose: bool,
    /// `--redo` / `--reprocess`: the chain runs over the stored items and results (no sample);
    /// what the pipeline seeds is already there.
    pub(super) over_store: bool,
}

/// Chunks a dry run runs the whole chain on; its counts are scaled to every chunk.
const DRY_RUN_SAMPLE: usize = 24;

impl<C> std::fmt::Debug for RunContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("output_dir", &self.output_dir)
            .finish_non_exhaustive()
    }
}

impl<C> RunContext<C> {
    /// A step context with the run's engines, prompts and system settings (`completion_mode`,
    /// `use_stop`, details kept when meta datagen is on).
    pub fn step_context(&self) -> StepContext {
        let mut ctx = StepContext::new(self.engines.clone(), self.prompts.clone());
        ctx.completion_mode = self.settings.completion_mode;
        ctx.use_stop = self.settings.use_stop;
        ctx.include_details = self.settings.do_meta_datagen;
        ctx.corpus = self.corpus.clone();
        ctx.seed = self.settings.seed;
        ctx
    }

    /// The whole input, read-only: every chunk's id, source document and text, by id, by
    /// document and in item order — what an unsharded run seeds (after `use_subset`), the same
    /// on every shard. An error when the pipeline brings its own items.
    pub fn corpus(&self) -> Result<&dyn Corpus, RunError> {
        self.corpus
            .as_deref()
            .ok_or_else(|| RunError::fatal(atk_state::CorpusError::Missing))
    }

    /// The seed's `set_progress(progress, message)`: a milestone for bars, plain lines, JSON
    /// lines and `atk status`.
    pub fn set_progress(&self, progress: f64, message: &str) {
        self.progress.set_progress(progress, message);
    }

    /// True under `--dry-run`.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Runs the chain over every item in the store with the run's executor (skipping stored
    /// results, at most `concurrency_limit` requests in flight).
    ///
    /// Before anything is sent, every `meta_datagen_keys` entry must be a details key of a step
    /// of this chain (when meta datagen is on), or the run stops with a config error.
    ///
    /// Under `--dry-run` it runs the chain on a sample of the items against counting mock
    /// engines and returns the estimate. After a Ctrl-C it returns
    /// `Err(RunError::Interrupted)` once in-flight requests are stored.
    pub(crate) async fn run_chain(
        &mut self,
        chain: &[Arc<dyn Step>],
    ) -> Result<ChainRun, RunError> {
        for step in chain {
            if let Some(key) = step.details_key() {
                let source = atk_metadatagen::MetaSource::new(step.name(), key);
                if !self.details_sources.contains(&source) {
                    self.details_sources.push(source);
                }
            }
        }
        if self.settings.do_meta_datagen {
            let known: Vec<&str> = self
                .details_sources
                .iter()
                .map(|s| s.details_key.as_str())
                .collect();
            if let Some(missing) = self
                .settings
                .meta_datagen_keys
                .iter()
                .find(|k| !known.contains(&k.as_str()))
            {
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(RunError::Config(format!(
                    "meta_datagen_keys lists `{missing}`, but no step of the chain records details under that key \
                     (details keys of its steps: {known}); nothing was sent"
                )));
            }
        }
        // Before anything is sent: results made with another prompt, params, model or version
        // are named (a warning, shown without -v), and --redo / --reprocess are checked.
        let prepared = crate::redo::prepare(
            self.store.as_ref(),
            chain,
            &self.step_context(),
            &self.rework_flags,
        )
        .await?;
        for w in &prepared.warnings {
            crate::out::warn(w);
        }
        // A shard cannot run a barrier (it needs every shard's items); a preview shows the
        // steps up to the first one. A dry run estimates them all.
        let stop_before_barrier =
            self.dry_run.is_none() && (self.shard.is_some() || self.preview.is_some());
        let cfg = ExecutorConfig::default()
            .with_stop_before_barrier(stop_before_barrier)
            .with_rework(prepared.rework.clone())
            .with_cancel(self.cancel.clone())
            // A dry run goes one item at a time: nothing waits on a network, and the sample
            // prompt shown is then always the first item's.
            .with_max_in_flight(if self.dry_run.is_some() {
                1
            } else {
                self.settings.in_flight.saturating_mul(2)
            });
        crate::preflight::warn_prompt_names(self.store.as_ref(), chain, &self.step_context());
        let executor = Executor::new(
            self.store.clone(),
            self.step_context(),
            self.progress.clone(),
            cfg,
        );
        let report = executor.run(chain).await?;
        let reworked = prepared
            .rework
            .as_ref()
            .map(|r| {
                crate::redo::render_counts(chain, &r.counts(), self.rework_flags.reprocess_only)
            })
            .unwrap_or_default();
        if let Some(dry) = &self.dry_run {
            let estimates: Vec<EngineEstimate> = dry
                .counters
                .iter()
                .map(|c| c.scaled_estimate(dry.sample, dry.chunks))
                .collect();
            let mut estimate = render_estimate(
                dry.chunks,
                dry.sample,
                dry.chunk_tokens,
                &estimates,
                dry.verbose,
                self.settings.batch_discount,
            );
            if !reworked.is_empty() {
                estimate.push_str("what the run would redo (counted over the stored results):\n");
                for line in reworked.lines() {
                    estimate.push_str(&format!("  {line}\n"));
                }
            }
            return Ok(ChainRun::Estimate(estimate));
        }
        if !reworked.is_empty() {
            crate::out::info(&reworked);
        }
        let cancelled = report.cancelled;
        let stopped_before = report.stopped_before.clone();
        self.reports.push(report);
        if cancelled {
            return Err(RunError::Interrupted);
        }
        if self
            .batches
            .as_ref()
            .is_some_and(|b| b.no_wait() && !b.left_running().is_empty())
        {
            return Err(RunError::WaitingForBatches);
        }
        if let (Some(step), Some(shard), None) = (&stopped_before, self.shard, self.preview) {
            crate::out::info(&format!(
                "shard {shard}: done up to barrier step `{step}`, which needs every shard's items; \
                 merge the shards with `atk merge SHARD_DIR... --into MERGED_DIR`, then run this \
                 pipeline binary with `--set output_dir=MERGED_DIR` to run `{step}` and the steps after it\n"
            ));
            return Ok(ChainRun::StoppedBefore(step.clone()));
        }
        if let Some(n) = self.preview {
            let secrets: Vec<_> = self.settings.engines.iter().map(|e| &e.api_key).collect();
            let report = self.reports.last().expect("the report just pushed");
            return Err(RunError::Preview(crate::preview::render(
                n, report, &secrets,
            )));
        }
        Ok(ChainRun::Done)
    }

    /// The items that went through the whole chain, in stable dataset order, with each step's
    /// output merged into their fields under its `result_key`; streamed from the store (memory
    /// does not grow with the corpus). Read fields with [`Item::get`] / [`Item::text`], whose
    /// errors name the missing key. Pass the whole chain, or [`Chain::up_to`](atk_step::Chain::up_to)
    /// a step to read what passed it (e.g. the pairs a vote kept).
    pub fn final_items<'a>(
        &'a self,
        chain: &'a [Arc<dyn Step>],
    ) -> impl Iterator<Item = Result<Item, RunError>> + 'a {
        atk_step::collect_final(self.store.as_ref(), chain).map(|r| {
            let item = r.map_err(RunError::from)?;
            self.row_source.set_from(self.store.as_ref(), &item);
            Ok(Item::from_record(item))
        })
    }

    /// Starts writing `<output_dir>/<file_name>` (a folder in the name is created), row by row.
    /// The file is staged: the runner finishes it once
    /// [`Pipeline::write_datasets`](super::Pipeline::write_datasets) returned `Ok` (it is then
    /// listed in the summary and the dataset card), and moves it into place when the run
    /// exits 0 (a failed run leaves the previous file as it was).
    pub fn dataset(&self, file_name: &str) -> Result<Dataset, RunError> {
        Ok(self.open_datasets.open(self.dataset_writer(file_name)?))
    }

    /// A staged writer for `<output_dir>/<file_name>` that the caller finishes.
    fn dataset_writer(&self, file_name: &str) -> Result<DatasetWriter, RunError> {
        let path = crate::layout::staging_dir(&self.output_dir).join(file_name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RunError::fatal(format!("creating {}: {e}", dir.display())))?;
        }
        let target = self.output_dir.join(file_name);
        DatasetWriter::create(
            path,
            target,
            self.datasets.clone(),
            Some(self.row_source.clone()),
        )
    }

    /// Writes `<output_dir>/<file_name>` atomically, one ShareGPT conversation per line in
    /// the order given (an `Err` stops the writing and leaves any previous file whole), and
    /// lists it in the summary. Returns its path.
    pub fn write_sharegpt<E: Into<RunError>>(
        &self,
        file_name: &str,
        conversations: impl IntoIterator<Item = Result<Conversation, E>>,
    ) -> Result<PathBuf, RunError> {
        // A ShareGPT line is the conversation serialised as it is.
        self.write_jsonl(file_name, conversations)
    }

    /// Writes `<output_dir>/<file_name>` atomically, one JSON row per line in the order given
    /// (plain JSONL of whatever fields the rows hold). Returns its path.
    pub fn write_jsonl<T: serde::Serialize, E: Into<RunError>>(
        &self,
        file_name: &str,
        rows: impl IntoIterator<Item = Result<T, E>>,
    ) -> Result<PathBuf, RunError> {
        let mut out = self.dataset_writer(file_name)?;
        for row in rows {
            out.write(&row.map_err(Into::into)?)?;
        }
        let staged = out.finish()?;
        Ok(crate::ending::final_path(&self.output_dir, &staged))
    }

    /// Writes the meta datasets under `<output_dir>/meta_datagen/` when `do_meta_datagen` is on
    /// (from the details of the chain's steps — by default only of kept results of items that
    /// reached the end of the chain, every one with `meta_datagen_include_all` — and the
    /// `meta_datagen_extras` templates rendered over the chain's final items, streamed); does
    /// nothing when it is off.
    pub(crate) fn write_meta_datasets(&mut self, chain: &[Arc<dyn Step>]) -> Result<(), RunError> {
        if !self.settings.do_meta_datagen {
            return Ok(());
        }
        let out = crate::layout::staging_dir(&self.output_dir).join("meta_datagen");
        let reached = if self.common.meta_datagen_include_all {
            None
        } else {
            Some(atk_step::reached_end(self.store.as_ref(), chain)?)
        };
        let mut first_error: Option<RunError> = None;
        let mut items =
            atk_step::collect_final(self.store.as_ref(), chain).map_while(|r| match r {
                Ok(item) => Some(item),
                Err(e) => {
                    first_error = Some(e.into());
                    None
                }
            });
        let report = atk_metadatagen::write_meta_datasets_of(
            self.store.as_ref(),
            &self.details_sources,
            &self.settings.meta_datagen_keys,
            &self.settings.meta_datagen_extras,
            &mut items,
            &out,
            reached.as_ref(),
        )
        .map_err(|e| RunError::Config(format!("meta datagen: {e}")))?;
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut written = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        for d in &report.datasets {
            written.files.push((d.path.clone(), d.lines));
        }
        Ok(())
    }
}

/// Keeps an evenly spread sample of at most [`DRY_RUN_SAMPLE`] items in all (`taken` counts
/// what earlier calls kept).
pub(super) fn dry_run_sample(items: Vec<ItemRecord>, taken: &mut u64) -> Vec<ItemRecord> {
    let room = DRY_RUN_SAMPLE.saturating_sub(*taken as usize);
    if room == 0 {
        return Vec::new();
    }
    let step = items.len().div_ceil(room).max(1);
    let kept: Vec<ItemRecord> = items.into_iter().step_by(step).take(room).collect();
    *taken += kept.len() as u64;
    kept
}
