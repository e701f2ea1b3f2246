//! The runner every pipeline binary's `main` calls: flags, config, engines, store, inputs,
//! the pipeline itself, then the summary and the exit code.
//!
//! This module decides what a pipeline binary prints (banner, config warnings, the summary,
//! the error) and [`crate::out`] where it goes: it is the binary's front end living in a
//! library so every pipeline shares it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use atk_engine::{CostCounter, CostTotals, DebugObserver, EngineConfig, Observer};
use atk_state::{ItemRecord, MemStore, RECORD_VERSION, RunMeta, SledStore, Store};
use atk_step::{Engines, Executor, ExecutorConfig, PromptLibrary, RunReport, Step, StepContext};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, CommonConfig, Overrides};
use crate::damage::StoredCounts;
use crate::dataset::{self, Conversation, DatasetWriter, Written};
use crate::dry_run::{CountingEngine, EngineEstimate, render_estimate};
use crate::error::RunError;
use crate::flags::{CommonFlags, Shard, parse_pipeline_args};
use crate::progress::Progress;
use crate::settings::{EngineSettings, Settings};
use crate::status::{EngineStatus, STATUS_META_KEY, StatusSnapshot};
use crate::summary::{RunSummary, TOKEN_COUNTS_FILE};

/// Store meta key of the per-engine cost totals (restored on resume).
pub const COST_META_KEY: &str = "cost_totals";
/// Store meta key of the run's [`RunMeta`].
pub const RUN_META_KEY: &str = "run";
/// How long the first Ctrl-C waits for in-flight requests before exiting anyway.
pub const CTRL_C_GRACE: Duration = Duration::from_secs(30);

/// A pipeline: its config type, its prompts and what it does with a prepared [`RunContext`].
///
/// `main.rs` of a pipeline crate is one line: `fn main() -> ExitCode { atk_cli::main(MyPipeline) }`.
#[async_trait]
pub trait Pipeline: Send + Sync + 'static {
    /// The pipeline's own config keys (the common ones are in [`CommonConfig`]).
    type Config: DeserializeOwned + Send + Sync + 'static;
    /// The pipeline's name (shown in `--help`, the summary and `atk status`).
    fn name(&self) -> &'static str;
    /// The prompt files compiled into the binary: `(file name, contents)`; the config's
    /// `prompts` folder overrides them file by file.
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)];
    /// Which engines the pipeline's steps call; the others' model and endpoint are not
    /// required, no API key is looked for, and a call to one fails with a clear error.
    /// Default: both.
    fn engines_used(&self) -> config::EnginesUsed {
        config::EnginesUsed::BOTH
    }
    /// Runs the pipeline: build steps, [`RunContext::run_chain`], write datasets.
    async fn run(&self, ctx: &mut RunContext<Self::Config>) -> Result<(), RunError>;
}

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
    pub progress: Arc<Progress>,
    /// Cancelled by the first Ctrl-C: no new requests start.
    pub cancel: CancellationToken,
    /// Where datasets go.
    pub output_dir: PathBuf,
    settings: Arc<Settings>,
    dry_run: Option<DryRun>,
    reports: Vec<RunReport>,
    details_sources: Vec<atk_metadatagen::MetaSource>,
    datasets: Written,
    /// Ids of the root items [`RunContext::seed_texts`] added in this run.
    seeded: HashSet<String>,
    /// `--redo`, `--redo-changed`, `--reprocess`.
    rework_flags: crate::redo::ReworkFlags,
}

struct DryRun {
    counters: Vec<Arc<CountingEngine>>,
    chunks: u64,
    /// Chunks the chain runs on (a spread sample of `chunks`).
    sample: u64,
    chunk_tokens: u64,
    verbose: bool,
    /// `--redo` / `--reprocess`: the chain runs over the stored items and results (no sample);
    /// what the pipeline seeds is already there.
    over_store: bool,
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
        ctx
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

    /// Runs a chain of steps over every item in the store with the run's executor (skipping
    /// stored results, at most `concurrency_limit` requests in flight) and returns what
    /// happened. Pass a [`Chain`](atk_step::Chain) (or a slice of steps); build it once and
    /// pass the same one to [`final_items`](Self::final_items).
    ///
    /// Before anything is sent, every `meta_datagen_keys` entry must be a details key of a step
    /// of this chain (when meta datagen is on), or the run stops with a config error.
    ///
    /// Under `--dry-run` it runs the chain on a sample of the items against counting mock
    /// engines, then ends the run with the estimate (`Err(RunError::DryRun)`, exit 0): code
    /// after it does not run. After a Ctrl-C it returns `Err(RunError::Interrupted)` once
    /// in-flight requests are stored.
    pub async fn run_chain(&mut self, chain: &[Arc<dyn Step>]) -> Result<RunReport, RunError> {
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
        let cfg = ExecutorConfig::default()
            .with_rework(prepared.rework.clone())
            .with_cancel(self.cancel.clone())
            // A dry run goes one item at a time: nothing waits on a network, and the sample
            // prompt shown is then always the first item's.
            .with_max_in_flight(if self.dry_run.is_some() {
                1
            } else {
                self.settings.concurrency_limit.saturating_mul(2).max(1)
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
            );
            if !reworked.is_empty() {
                estimate.push_str("what the run would redo (counted over the stored results):\n");
                for line in reworked.lines() {
                    estimate.push_str(&format!("  {line}\n"));
                }
            }
            return Err(RunError::DryRun(estimate));
        }
        if !reworked.is_empty() {
            crate::out::info(&reworked);
        }
        let cancelled = report.cancelled;
        self.reports.push(report.clone());
        if cancelled {
            return Err(RunError::Interrupted);
        }
        Ok(report)
    }

    /// Chunks texts the pipeline brought itself (`(source name, text)`, with
    /// `read_files_manually: false`) and adds them to the store as items after any already
    /// there. Returns how many chunks were added.
    ///
    /// The run's inputs are the texts seeded in this run (all calls together): items an earlier
    /// run seeded from texts not given now are retired (their stored results are kept, and
    /// reused if the text comes back), so they are neither worked on nor put in the dataset.
    pub async fn seed_texts(&mut self, texts: &[(String, String)]) -> Result<u64, RunError> {
        let set = atk_chunk::chunk_texts(texts, &self.settings.chunk_config());
        let n = set.chunks.len() as u64;
        self.seeded.extend(set.chunks.iter().map(|c| c.id.clone()));
        let mut items: Vec<ItemRecord> = set.chunks.iter().map(chunk_item).collect();
        if let Some(dry) = &mut self.dry_run {
            if dry.over_store {
                return Ok(n);
            }
            dry.chunks += n;
            dry.chunk_tokens += set.chunks.iter().map(|c| c.tokens as u64).sum::<u64>();
            items = dry_run_sample(items, &mut dry.sample);
        }
        self.store.put_items(items).await?;
        if self.dry_run.is_none() {
            retire_stale(self.store.as_ref(), &self.seeded).await?;
        }
        Ok(n)
    }

    /// Adds records the pipeline brought itself as items, one each and not chunked (rows of an
    /// existing dataset, say): `(source name, fields)`, in dataset order. An item's id is a
    /// hash of its source name, its fields and how often that same pair came before, so the
    /// same rows give the same ids run after run and stored results are reused. Items are
    /// written in batches as the iterator yields them (memory stays flat). As with
    /// [`seed_texts`](Self::seed_texts), items of an earlier run that are not given now are
    /// retired. Returns how many were added.
    pub async fn seed_items(
        &mut self,
        records: impl IntoIterator<Item = (String, atk_state::Fields)>,
    ) -> Result<u64, RunError> {
        const BATCH: usize = 1000;
        // Occurrences of each (source, fields) pair, keyed by 64 bits of its id: 8 bytes a row.
        let mut seen: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0u64;
        for (source, fields) in records {
            let body = serde_json::to_string(&fields).map_err(RunError::fatal)?;
            let first = atk_chunk::chunk_id(&source, &body, 0);
            let key = u64::from_str_radix(&first[..16], 16).unwrap_or_default();
            let occurrence = seen.entry(key).or_insert(0);
            let id = if *occurrence == 0 {
                first
            } else {
                atk_chunk::chunk_id(&source, &body, *occurrence)
            };
            *occurrence += 1;
            self.seeded.insert(id.clone());
            let mut fields = fields;
            fields
                .entry("metadata")
                .or_insert_with(|| source.clone().into());
            batch.push(ItemRecord {
                v: RECORD_VERSION,
                id,
                parent: None,
                order: vec![n],
                fields,
            });
            n += 1;
            if batch.len() == BATCH {
                self.put_seeded(std::mem::take(&mut batch)).await?;
            }
        }
        self.put_seeded(batch).await?;
        if self.dry_run.is_none() {
            retire_stale(self.store.as_ref(), &self.seeded).await?;
        }
        Ok(n)
    }

    async fn put_seeded(&mut self, mut items: Vec<ItemRecord>) -> Result<(), RunError> {
        if let Some(dry) = &mut self.dry_run {
            if dry.over_store {
                return Ok(());
            }
            dry.chunks += items.len() as u64;
            items = dry_run_sample(items, &mut dry.sample);
        }
        if !items.is_empty() {
            self.store.put_items(items).await?;
        }
        Ok(())
    }

    /// The items that went through the whole chain, in stable dataset order, with each step's
    /// output merged into their fields under its `result_key`; streamed from the store (memory
    /// does not grow with the corpus). Read fields with [`ItemRecord::get`] / [`ItemRecord::text`],
    /// whose errors name the missing key.
    pub fn final_items<'a>(
        &'a self,
        chain: &'a [Arc<dyn Step>],
    ) -> impl Iterator<Item = Result<ItemRecord, RunError>> + 'a {
        atk_step::collect_final(self.store.as_ref(), chain).map(|r| r.map_err(RunError::from))
    }

    /// Starts writing `<output_dir>/<file_name>` (a folder in the name is created), row by row;
    /// [`DatasetWriter::finish`] puts it in place atomically and lists it in the summary and
    /// the dataset card.
    pub fn dataset(&self, file_name: &str) -> Result<DatasetWriter, RunError> {
        let path = self.output_dir.join(file_name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RunError::fatal(format!("creating {}: {e}", dir.display())))?;
        }
        DatasetWriter::create(path, self.datasets.clone())
    }

    /// Writes `<output_dir>/<file_name>` atomically, one ShareGPT conversation per line in
    /// the order given (an `Err` stops the writing and leaves any previous file whole), and
    /// lists it in the summary. Returns its path.
    pub fn write_sharegpt<E: Into<RunError>>(
        &self,
        file_name: &str,
        conversations: impl IntoIterator<Item = Result<Conversation, E>>,
    ) -> Result<PathBuf, RunError> {
        let mut out = self.dataset(file_name)?;
        for c in conversations {
            out.write_sharegpt(&c.map_err(Into::into)?)?;
        }
        out.finish()
    }

    /// Writes `<output_dir>/<file_name>` atomically, one JSON row per line in the order given
    /// (plain JSONL of whatever fields the rows hold). Returns its path.
    pub fn write_jsonl<T: serde::Serialize, E: Into<RunError>>(
        &self,
        file_name: &str,
        rows: impl IntoIterator<Item = Result<T, E>>,
    ) -> Result<PathBuf, RunError> {
        let mut out = self.dataset(file_name)?;
        for row in rows {
            out.write(&row.map_err(Into::into)?)?;
        }
        out.finish()
    }

    /// Writes the meta datasets under `<output_dir>/meta_datagen/` when `do_meta_datagen` is on
    /// (from the details of the chain's steps and the `meta_datagen_extras` templates rendered
    /// over the chain's final items, streamed); does nothing when it is off.
    pub fn write_meta_datasets(&mut self, chain: &[Arc<dyn Step>]) -> Result<(), RunError> {
        if !self.settings.do_meta_datagen {
            return Ok(());
        }
        let out = self.output_dir.join("meta_datagen");
        let mut first_error: Option<RunError> = None;
        let mut items =
            atk_step::collect_final(self.store.as_ref(), chain).map_while(|r| match r {
                Ok(item) => Some(item),
                Err(e) => {
                    first_error = Some(e.into());
                    None
                }
            });
        let report = atk_metadatagen::write_meta_datasets(
            self.store.as_ref(),
            &self.details_sources,
            &self.settings.meta_datagen_keys,
            &self.settings.meta_datagen_extras,
            &mut items,
            &out,
        )
        .map_err(|e| RunError::Config(format!("meta datagen: {e}")))?;
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut written = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        for d in &report.datasets {
            written.push((d.path.clone(), d.lines));
        }
        Ok(())
    }
}

/// Keeps an evenly spread sample of at most [`DRY_RUN_SAMPLE`] items in all (`taken` counts
/// what earlier calls kept).
fn dry_run_sample(items: Vec<ItemRecord>, taken: &mut u64) -> Vec<ItemRecord> {
    let room = DRY_RUN_SAMPLE.saturating_sub(*taken as usize);
    if room == 0 {
        return Vec::new();
    }
    let step = items.len().div_ceil(room).max(1);
    let kept: Vec<ItemRecord> = items.into_iter().step_by(step).take(room).collect();
    *taken += kept.len() as u64;
    kept
}

/// Retires the items of inputs that are no longer there (see
/// [`atk_state::retire_stale_items`]) and says how many at info level.
async fn retire_stale(store: &dyn Store, current: &HashSet<String>) -> Result<(), RunError> {
    let retired = atk_state::retire_stale_items(store, current).await?;
    if retired.total() > 0 {
        tracing::info!(
            chunks = retired.roots,
            derived_items = retired.children,
            "retired items whose input is no longer there (their stored results are kept and reused if it comes back)"
        );
    }
    Ok(())
}

/// Parses the command line, runs `pipeline` and returns the exit code: 0 completed, 2 config
/// or input error, 1 fatal runtime error, 130 interrupted. Call it from `main`.
pub fn main<P: Pipeline>(pipeline: P) -> std::process::ExitCode {
    main_with_args(pipeline, std::env::args_os())
}

/// [`main`] with explicit arguments (the first is the program name); for tests.
pub fn main_with_args<P, I, T>(pipeline: P, args: I) -> std::process::ExitCode
where
    P: Pipeline,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let flags = match parse_pipeline_args(pipeline.name(), args) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    crate::logging::init(flags.verbosity());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::out::always(&format!("error: cannot start the async runtime: {e}\n"));
            return std::process::ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(pipeline, flags));
    // Do not wait for stray blocking tasks (a stuck read must not hang the exit).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match &outcome {
        Ok(()) => {}
        Err(RunError::DryRun(estimate)) => crate::out::result(estimate.trim_end()),
        Err(e) => crate::out::always(&format!("error: {e}\n")),
    }
    crate::error::exit_code(&outcome)
}

/// Runs a pipeline with parsed flags (what [`main`] does inside its runtime).
pub async fn run<P: Pipeline>(pipeline: P, flags: CommonFlags) -> Result<(), RunError> {
    crate::out::set_quiet(flags.quiet);
    let started = Instant::now();
    let started_at_ms = now_ms();
    let overrides = Overrides {
        set: flags.set.clone(),
        json: flags.override_json.clone(),
    };
    let used = pipeline.engines_used();
    let loaded = if flags.dry_run {
        config::load_for_dry_run::<P::Config>(&flags.config, &overrides, used)
    } else {
        config::load_for::<P::Config>(&flags.config, &overrides, used)
    }
    .map_err(|e| RunError::Config(e.to_string()))?;
    for w in &loaded.warnings {
        crate::out::warn(w);
    }
    let settings = Arc::new(
        Settings::from_common(&loaded.common)
            .map_err(RunError::Config)?
            .with_engines_used(used),
    );
    tracing::debug!(config = %loaded.path.display(), "config loaded");

    // Inputs first: a missing or unreadable input dir is reported before anything is locked.
    let chunk_cfg = if flags.dry_run {
        settings.dry_run_chunk_config()
    } else {
        settings.chunk_config()
    };
    let inputs = if settings.read_files_manually && !flags.dry_run {
        let (dir, cfg) = (settings.input_dir.clone(), chunk_cfg.clone());
        let found = tokio::task::spawn_blocking(move || atk_chunk::fingerprint_dir(&dir, &cfg))
            .await
            .map_err(RunError::fatal)?
            .map_err(|e| RunError::Input(e.to_string()))?;
        tracing::debug!(
            files = found.files,
            ms = started.elapsed().as_millis() as u64,
            "inputs fingerprinted"
        );
        if found.files == 0 {
            // Nothing to read: read_dir names the folder and what it skipped.
            atk_chunk::read_dir(&settings.input_dir, &chunk_cfg)
                .map_err(|e| RunError::Input(e.to_string()))?;
        }
        Some(found)
    } else {
        None
    };

    let prompts = Arc::new(
        PromptLibrary::new(pipeline.default_prompts())
            .with_override_dir(settings.prompts.clone())
            .with_default_dir(settings.default_prompts.clone()),
    );
    for w in prompts.override_warnings() {
        crate::out::warn(&w);
    }
    let progress_mode = flags.progress_mode();

    if flags.dry_run {
        let chunk_set = if settings.read_files_manually {
            let input_dir = settings.input_dir.clone();
            let cfg = chunk_cfg.clone();
            tokio::task::spawn_blocking(move || atk_chunk::read_dir(&input_dir, &cfg))
                .await
                .map_err(RunError::fatal)?
                .map_err(|e| RunError::Input(e.to_string()))?
        } else {
            // The pipeline brings its own texts (RunContext::seed_texts).
            atk_chunk::chunk_texts(&[], &chunk_cfg)
        };
        for m in chunk_set.report.messages() {
            crate::out::info(&format!("{m}\n"));
        }
        if settings.read_files_manually {
            crate::out::info(&format!("{}\n", chunk_set.report.summary()));
        }
        let items: Vec<ItemRecord> = chunk_set.chunks.iter().map(chunk_item).collect();
        let chunk_tokens: u64 = chunk_set.chunks.iter().map(|c| c.tokens as u64).sum();
        let counter = settings.chunk_config().tokenizer.counter();
        let counters: Vec<Arc<CountingEngine>> = settings
            .engines
            .iter()
            .map(|e| {
                let mock = atk_engine::build_engine(
                    engine_config(&settings, e)
                        .with_mode(atk_engine::Mode::Mock)
                        .with_mock(atk_engine::MockConfig::default()),
                    Vec::new(),
                )?;
                let counting = CountingEngine::answering(
                    &e.label,
                    &e.model,
                    counter,
                    e.price_in,
                    e.price_out,
                    mock,
                );
                counting.set_stands_for_mock(e.mode == atk_engine::Mode::Mock);
                Ok(counting)
            })
            .collect::<Result<_, RunError>>()?;
        let engines = Engines {
            small: counters[0].clone(),
            large: counters[1].clone(),
        };
        let (store, chunks, sample): (Arc<dyn Store>, u64, u64) = if flags.reworks() {
            // --redo / --reprocess: the chain runs over the stored results (read, never written).
            let base = open_for_dry_run(&settings.output_dir).await?;
            let roots = base.root_ids().try_fold(0u64, |n, r| r.map(|_| n + 1))?;
            (Arc::new(crate::OverlayStore::new(base)), roots, roots)
        } else {
            let store: Arc<dyn Store> = Arc::new(MemStore::default());
            let chunks = items.len() as u64;
            let mut sample = 0;
            store.put_items(dry_run_sample(items, &mut sample)).await?;
            (store, chunks, sample)
        };
        let mut ctx = RunContext {
            common: loaded.common,
            config: loaded.custom,
            engines,
            store,
            prompts,
            progress: Arc::new(Progress::off()),
            cancel: CancellationToken::new(),
            output_dir: settings.output_dir.clone(),
            settings: settings.clone(),
            dry_run: Some(DryRun {
                counters,
                chunks,
                sample,
                chunk_tokens,
                verbose: flags.verbosity() >= 1,
                over_store: flags.reworks(),
            }),
            reports: Vec::new(),
            details_sources: Vec::new(),
            datasets: Written::default(),
            seeded: HashSet::new(),
            rework_flags: crate::redo::ReworkFlags::from_flags(&flags),
        };
        // run_chain ends a dry run with the estimate; a pipeline that runs no chain has none.
        pipeline.run(&mut ctx).await?;
        return Err(RunError::DryRun(
            "dry run: the pipeline ran no chain; nothing to estimate\n".into(),
        ));
    }

    // The store: `<output_dir>/store`, locked for the whole run.
    std::fs::create_dir_all(&settings.output_dir).map_err(|e| {
        RunError::Input(format!(
            "cannot create output_dir {}: {e}",
            settings.output_dir.display()
        ))
    })?;
    let store_dir = store_dir(&settings.output_dir);
    let sled = {
        let dir = store_dir.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .map_err(RunError::fatal)??,
        )
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "store opened");
    // Before anything is sent: say so loudly when the store lost results since the last run.
    let stored_counts = Arc::new(StoredCounts::check(sled.clone(), &settings.output_dir).await?);
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "stored results counted"
    );
    let store: Arc<dyn Store> = sled.clone();
    check_fingerprint(store.as_ref(), &loaded.fingerprint);
    store
        .put_meta(
            RUN_META_KEY,
            serde_json::to_value(RunMeta {
                v: RECORD_VERSION,
                atk_version: env!("CARGO_PKG_VERSION").to_string(),
                pipeline: pipeline.name().to_string(),
                config_fingerprint: loaded.fingerprint.clone(),
                started_at_ms,
            })
            .map_err(RunError::fatal)?,
        )
        .await?;

    // Engines: one shared concurrency bound (the seed's semaphore), cost counters restored
    // from the store so totals survive a resume.
    // The first Ctrl-C cancels this token: the executor starts no new item, and both engines
    // stop calls still waiting for a slot or a retry backoff (they are not sent).
    let cancel = CancellationToken::new();
    let (engines, counters, limit) = build_engines(&settings, store.as_ref(), &cancel)?;
    let baselines: Vec<CostTotals> = counters.iter().map(|c| c.snapshot()).collect();
    let status_inputs = StatusInputs {
        counters: counters.clone(),
        engines: engines.clone(),
        baselines: baselines.clone(),
        limit,
        stored: stored_counts.clone(),
    };
    if engines.small.is_mock() || engines.large.is_mock() {
        let which: Vec<&str> = [&engines.small, &engines.large]
            .iter()
            .filter(|e| e.is_mock())
            .map(|e| e.label())
            .collect();
        crate::out::info(&format!(
            "MOCK ENGINE: replies are fake ({} engine in mock mode); the dataset is a demo, not training data\n",
            which.join(" and ")
        ));
    }

    if let Some(found) = &inputs {
        let settings_fingerprint = crate::merge::settings_fingerprint(&loaded.redacted);
        seed_inputs(
            &sled,
            &settings,
            &chunk_cfg,
            found,
            flags.shard,
            settings_fingerprint,
            &stored_counts,
        )
        .await?;
    }

    let cost_fn = {
        let counters = counters.clone();
        Arc::new(move || counters.iter().map(|c| c.snapshot().cost_usd).sum::<f64>())
    };
    // The progress line keeps this run's cost apart from every run's.
    let run_cost_fn = {
        let (counters, before) = (
            counters.clone(),
            baselines.iter().map(|b| b.cost_usd).sum::<f64>(),
        );
        Arc::new(move || {
            (counters.iter().map(|c| c.snapshot().cost_usd).sum::<f64>() - before).max(0.0)
        })
    };
    let progress = Arc::new(
        Progress::stderr(progress_mode)
            .with_cost(cost_fn)
            .with_run_cost(run_cost_fn),
    );
    crate::logging::attach_bars(progress.multi().cloned());
    let ctrl_c = tokio::spawn(watch_ctrl_c(CtrlC::install(), cancel.clone()));
    let status_task = tokio::spawn(status_loop(
        settings.output_dir.clone(),
        pipeline.name(),
        progress.clone(),
        status_inputs.clone(),
        store.clone(),
    ));

    let mut ctx = RunContext {
        common: loaded.common,
        config: loaded.custom,
        engines: engines.clone(),
        store: store.clone(),
        prompts,
        progress: progress.clone(),
        cancel: cancel.clone(),
        output_dir: settings.output_dir.clone(),
        settings: settings.clone(),
        dry_run: None,
        reports: Vec::new(),
        details_sources: Vec::new(),
        datasets: Written::default(),
        seeded: HashSet::new(),
        rework_flags: crate::redo::ReworkFlags::from_flags(&flags),
    };
    let mut outcome = pipeline.run(&mut ctx).await;
    if outcome.is_ok() && ctx.rework_flags.any() && ctx.reports.iter().all(|r| r.failed() == 0) {
        // The rework is done: the next run with the same flags starts a new one.
        if let Err(e) = crate::redo::finish(store.as_ref()).await {
            outcome = Err(e);
        }
    }
    status_task.abort();
    ctrl_c.abort();
    // Wait for the status task to be gone, so its last write cannot land after the final one.
    let _ = status_task.await;
    progress.finish();
    crate::logging::detach_bars();

    // Whatever happened, keep the totals and say what was done.
    let costs: Vec<(String, String, bool, CostTotals, CostTotals)> = counters
        .iter()
        .zip([&engines.small, &engines.large])
        .zip(&baselines)
        .map(|((c, e), start)| {
            (
                c.label().to_string(),
                e.model().to_string(),
                e.is_mock(),
                c.snapshot(),
                start.clone(),
            )
        })
        .collect();
    let totals = cost_totals(&counters);
    let _ = store
        .put_meta(COST_META_KEY, serde_json::Value::Object(totals.clone()))
        .await;
    let mut snapshot = status_of(pipeline.name(), &progress, &status_inputs);
    snapshot.running = false;
    if let Ok(v) = serde_json::to_value(&snapshot) {
        let _ = atk_state::write_status_snapshot(&settings.output_dir, &v);
        let _ = store.put_meta(STATUS_META_KEY, v).await;
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "pipeline finished"
    );
    record_item_count(&sled).await;
    let _ = store.flush().await;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "store flushed");
    let datasets = ctx
        .datasets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut summary = RunSummary::new(
        pipeline.name(),
        started.elapsed(),
        &ctx.reports,
        &costs,
        datasets,
        outcome.as_ref().err().map(|e| e.to_string()),
    );
    if summary.steps.is_empty() {
        // A chain stopped by a fatal error has no report: show what progress counted.
        summary.add_progress_counts(&progress.snapshot());
    }
    let _ = dataset::write_jsonl_atomic(
        &settings.output_dir.join(TOKEN_COUNTS_FILE),
        [serde_json::to_string_pretty(&totals).unwrap_or_default()],
    );
    let _ = summary.write(&settings.output_dir);
    if !summary.datasets.is_empty() {
        let facts = crate::card::CardFacts {
            summary: &summary,
            output_dir: &settings.output_dir,
            license: &ctx.common.dataset_license,
            engines: settings
                .engines
                .iter()
                .map(|e| {
                    (
                        e.label.clone(),
                        e.model.clone(),
                        format!("{:?}", e.mode).to_lowercase(),
                    )
                })
                .collect(),
            concurrency_limit: settings.concurrency_limit,
            chunk_size: ctx.common.chunk_size,
            prompts: ctx.prompts.loaded(),
        };
        let card = crate::card::render(&facts);
        if let Err(e) = dataset::write_jsonl_atomic(
            &settings.output_dir.join(crate::card::CARD_FILE),
            [card.trim_end()],
        ) {
            tracing::warn!(error = %e, "could not write the dataset card");
        }
    }
    let nothing_kept = summary.nothing_kept();
    // The summary is a diagnostic (stderr; shown under -q only when it explains a failure);
    // where each dataset went is a result (stdout).
    if outcome.is_err() || summary.all_failed() || nothing_kept.is_some() {
        crate::out::always(&summary.render());
    } else {
        crate::out::info(&summary.render());
    }
    if progress_mode == crate::progress::ProgressMode::Json {
        // stdout stays JSON lines only: one `dataset_written` event per dataset.
        for (path, lines) in &summary.datasets {
            crate::out::event(
                &serde_json::json!({"event": "dataset_written", "path": path, "lines": lines})
                    .to_string(),
            );
        }
    } else {
        for line in summary.dataset_lines() {
            crate::out::result(&line);
        }
    }
    outcome?;
    if summary.all_failed() {
        return Err(RunError::AllFailed);
    }
    if let Some(why) = nothing_kept {
        return Err(RunError::NothingKept(why));
    }
    Ok(())
}

/// Store meta key of what the last seeding read ([`InputsMeta`]).
pub const INPUTS_META_KEY: &str = "inputs";

/// What the last complete seeding of a store read, to skip the next one when nothing changed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputsMeta {
    /// [`atk_chunk::InputsFingerprint::fingerprint`] of the inputs, with the shard.
    pub fingerprint: String,
    /// [`atk_chunk::InputsFingerprint::shape`]: the same on every machine holding the inputs.
    pub shape: String,
    /// Root items seeded.
    pub chunks: u64,
    /// The read's summary line, shown again when reading is skipped.
    pub summary: String,
    /// Items in the store (children included) when the last run ended; `None` until one has.
    #[serde(default)]
    pub items_at_end: Option<u64>,
    /// The shard this store holds (`--shard`), `None` for all items.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// The chunk-cache pack the inputs were read through (for `atk gc`), when the cache is on.
    #[serde(default)]
    pub chunk_pack: Option<PathBuf>,
    /// The config's fingerprint without its paths and concurrency (see
    /// [`crate::merge::settings_fingerprint`]): equal in the shards of one run on any machine.
    #[serde(default)]
    pub settings_fingerprint: String,
}

/// Seeds the store with the input folder's chunks, streamed in bounded batches as they are
/// made (see [`atk_chunk::read_dir_batched`]), then retires the items of inputs that are gone.
/// Skipped entirely when the inputs, settings and store are as the last complete seeding
/// left them: a rerun over finished work reads no file and loads no tokenizer.
#[allow(clippy::too_many_arguments)]
async fn seed_inputs(
    sled: &Arc<SledStore>,
    settings: &Settings,
    chunk_cfg: &atk_chunk::ChunkConfig,
    found: &atk_chunk::InputsFingerprint,
    shard: Option<Shard>,
    settings_fingerprint: String,
    stored: &StoredCounts,
) -> Result<(), RunError> {
    let store: &dyn Store = sled.as_ref();
    let fingerprint = match shard {
        Some(shard) => format!("{} shard {shard}", found.fingerprint),
        None => found.fingerprint.clone(),
    };
    let previous = store
        .meta(INPUTS_META_KEY)?
        .and_then(|v| serde_json::from_value::<InputsMeta>(v).ok());
    if let Some(prev) = &previous
        && prev.fingerprint == fingerprint
        && stored.damage.is_empty()
        && prev.items_at_end.is_some_and(|n| n == sled.item_count())
    {
        tracing::debug!("inputs unchanged since the last run: seeding skipped");
        crate::out::info(&format!(
            "{} (inputs unchanged since the last run: not read again)\n",
            prev.summary
        ));
        return Ok(());
    }
    // A store seeded before needs the set of current ids to retire what is gone; a fresh one
    // does not (and then no id is held in memory).
    let had_items = store.item_ids().next().is_some();
    let mut seeded: HashSet<String> = HashSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<atk_chunk::Chunk>>(2);
    let reader = {
        let (dir, cfg) = (settings.input_dir.clone(), chunk_cfg.clone());
        tokio::task::spawn_blocking(move || {
            atk_chunk::read_dir_batched(&dir, &cfg, &mut |batch| tx.blocking_send(batch).is_ok())
        })
    };
    let mut chunks = 0u64;
    let mut failed = None;
    while let Some(mut batch) = rx.recv().await {
        if let Some(shard) = shard {
            batch.retain(|c| shard.contains(&c.id));
        }
        chunks += batch.len() as u64;
        if had_items {
            seeded.extend(batch.iter().map(|c| c.id.clone()));
        }
        if let Err(e) = store
            .put_items(batch.iter().map(chunk_item).collect())
            .await
        {
            failed = Some(e);
            break;
        }
    }
    drop(rx);
    let report = reader.await.map_err(RunError::fatal)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let report = report.map_err(|e| RunError::Input(e.to_string()))?;
    for m in report.messages() {
        crate::out::info(&format!("{m}\n"));
    }
    let summary = match shard {
        Some(shard) => format!("{}; shard {shard}: {chunks} of them", report.summary()),
        None => report.summary(),
    };
    crate::out::info(&format!("{summary}\n"));
    if had_items {
        // The run's inputs are what was just seeded: items of removed files (or of chunks
        // `use_subset` no longer picks) go, so no request is sent for them and no dataset
        // line comes from them. With read_files_manually off, seed_texts does this.
        retire_stale(store, &seeded).await?;
    }
    let meta = InputsMeta {
        fingerprint,
        shape: found.shape.clone(),
        chunks,
        summary,
        items_at_end: None,
        shard,
        settings_fingerprint,
        chunk_pack: chunk_cfg
            .cache_dir
            .as_ref()
            .map(|d| d.join(atk_chunk::pack_name(&settings.input_dir, chunk_cfg))),
    };
    store
        .put_meta(
            INPUTS_META_KEY,
            serde_json::to_value(meta).map_err(RunError::fatal)?,
        )
        .await?;
    Ok(())
}

/// Notes in the inputs meta how many items the store holds as the run ends: the next run skips
/// seeding only when it finds the same number (a store that lost items is seeded again).
async fn record_item_count(sled: &SledStore) {
    let Ok(Some(value)) = sled.meta(INPUTS_META_KEY) else {
        return;
    };
    let Ok(mut meta) = serde_json::from_value::<InputsMeta>(value) else {
        return;
    };
    meta.items_at_end = Some(sled.item_count());
    if let Ok(v) = serde_json::to_value(meta) {
        let _ = sled.put_meta(INPUTS_META_KEY, v).await;
    }
}

/// An item record for a chunk: fields `text`, `metadata`, `tokens`; order `[file, chunk]`.
pub fn chunk_item(c: &atk_chunk::Chunk) -> ItemRecord {
    let mut fields = atk_state::Fields::new();
    fields.insert("text".into(), c.text.clone().into());
    fields.insert("metadata".into(), c.metadata.clone().into());
    fields.insert("tokens".into(), (c.tokens as u64).into());
    ItemRecord {
        v: RECORD_VERSION,
        id: c.id.clone(),
        parent: None,
        order: vec![c.position.file_index as u64, c.position.chunk_index as u64],
        fields,
    }
}

/// The store of an earlier run, for a dry run of `--redo` / `--reprocess`.
async fn open_for_dry_run(output_dir: &Path) -> Result<Arc<dyn Store>, RunError> {
    let dir = store_dir(output_dir);
    let opened = tokio::task::spawn_blocking(move || SledStore::try_open_read(&dir))
        .await
        .map_err(RunError::fatal)?;
    match opened {
        Ok(store) => Ok(Arc::new(store)),
        Err(atk_state::Error::NotFound { .. }) => Err(RunError::Input(format!(
            "--redo and --reprocess work on the results of an earlier run, and {} has none",
            output_dir.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

fn check_fingerprint(store: &dyn Store, fingerprint: &str) {
    let previous = store
        .meta(RUN_META_KEY)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value::<RunMeta>(v).ok());
    if let Some(prev) = previous
        && prev.config_fingerprint != fingerprint
    {
        tracing::info!(
            "the config differs from the one that last wrote this output_dir; stored results are \
             reused as they are (a warning names each step whose results were made with another \
             prompt, params, model or version; --redo STEP remakes them)"
        );
    }
}

type Counters = Vec<Arc<CostCounter>>;

fn build_engines(
    settings: &Settings,
    store: &dyn Store,
    cancel: &CancellationToken,
) -> Result<(Engines, Counters, Arc<atk_engine::ConcurrencyLimit>), RunError> {
    let saved = store.meta(COST_META_KEY)?.unwrap_or_default();
    // One bound on requests in flight for the run; each engine keeps its own window inside it.
    let shared_limit = atk_engine::ConcurrencyLimit::new(settings.concurrency_limit.max(1));
    let debug = settings
        .debug_outputs
        .then(|| DebugObserver::new(settings.output_dir.join("debug_outputs")));
    let mut built: Vec<Arc<dyn atk_engine::Engine>> = Vec::new();
    let mut counters = Vec::new();
    for e in &settings.engines {
        let counter = CostCounter::new(
            e.label.clone(),
            atk_engine::Pricing {
                input_per_million: e.price_in,
                output_per_million: e.price_out,
            },
        );
        if let Some(prev) = saved
            .get(&e.label)
            .and_then(|v| serde_json::from_value::<CostTotals>(v.clone()).ok())
        {
            counter.restore(&prev);
        }
        let mut observers: Vec<Arc<dyn Observer>> = vec![counter.clone()];
        if let Some(d) = &debug {
            observers.push(d.clone());
        }
        if !e.used {
            built.push(Arc::new(crate::unused::UnusedEngine::new(
                &e.label, &e.model,
            )));
            counters.push(counter);
            continue;
        }
        let limit = atk_engine::LimitConfig::new(shared_limit.clone())
            .with_requests_per_minute(settings.requests_per_minute)
            .with_tokens_per_minute(settings.tokens_per_minute)
            .with_rate_burst(settings.burst);
        let engine = atk_engine::EngineBuilder::transport(&engine_config(settings, e))
            .observe(observers)
            .retry(settings.retry)
            .outage(settings.outage_limit)
            .limit(limit)
            .cancel(cancel.clone())
            .build()?;
        built.push(engine);
        counters.push(counter);
    }
    let large = built
        .pop()
        .ok_or_else(|| RunError::fatal("no large engine"))?;
    let small = built
        .pop()
        .ok_or_else(|| RunError::fatal("no small engine"))?;
    Ok((Engines { small, large }, counters, shared_limit))
}

fn engine_config(s: &Settings, e: &EngineSettings) -> EngineConfig {
    EngineConfig::default()
        .with_label(e.label.clone())
        .with_mode(e.mode)
        .with_model(e.model.clone())
        .with_base_url(e.base_url.clone())
        .with_api_key(e.api_key.clone())
        .with_concurrency_limit(s.concurrency_limit.max(1))
        .with_stream(s.stream)
        .with_require_finish_reason(e.require_finish_reason)
        .with_endpoints(e.endpoints.clone())
        .with_timeouts(s.timeouts)
        .with_retry(s.retry)
        .with_outage_limit(s.outage_limit)
        .with_rate_burst(s.burst)
        .with_requests_per_minute(s.requests_per_minute)
        .with_tokens_per_minute(s.tokens_per_minute)
        .with_mock(s.mock.clone())
}

/// First Ctrl-C: stop new requests, let in-flight ones finish (at most [`CTRL_C_GRACE`]).
/// Second Ctrl-C, or the grace running out: exit 130 at once (stored results are durable).
async fn watch_ctrl_c(mut ctrl_c: CtrlC, cancel: CancellationToken) {
    if !ctrl_c.recv().await {
        return;
    }
    cancel.cancel();
    crate::out::always(&format!(
        "\nstopping: no new requests; waiting up to {} s for those in flight (Ctrl-C again to quit now)\n",
        CTRL_C_GRACE.as_secs()
    ));
    tokio::select! {
        _ = ctrl_c.recv() => crate::out::always("quitting now; rerun the same command to resume\n"),
        () = tokio::time::sleep(CTRL_C_GRACE) => crate::out::always("in-flight requests did not finish in time; quitting; rerun to resume\n"),
    }
    std::process::exit(130);
}

/// Ctrl-C, listened for from the moment [`CtrlC::install`] returns (tokio's `ctrl_c()` only
/// registers on its first poll, which could come after the run has started).
struct CtrlC {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl CtrlC {
    fn install() -> Self {
        #[cfg(unix)]
        {
            Self {
                signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// True when Ctrl-C was pressed; false (or never returning) when it cannot be listened for.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            match &mut self.signal {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// What a status snapshot is made of besides progress counts.
#[derive(Clone)]
struct StatusInputs {
    counters: Counters,
    engines: Engines,
    /// The counters' totals when this run started (this run's figures are the difference).
    baselines: Vec<CostTotals>,
    /// The engines' shared concurrency limit: requests in flight as the engine counts them.
    limit: Arc<atk_engine::ConcurrencyLimit>,
    /// Results stored, counted at open and since (kept in `status.json` outside sled).
    stored: Arc<StoredCounts>,
}

fn status_of(name: &str, progress: &Progress, inputs: &StatusInputs) -> StatusSnapshot {
    let mut s = progress.snapshot();
    s.stored_results = inputs.stored.live();
    s.damage = inputs.stored.damage.clone();
    s.pipeline = name.to_string();
    s.running = true;
    s.pid = std::process::id();
    s.updated_at_ms = now_ms();
    s.requests_in_flight = inputs.limit.in_flight() as u64;
    s.request_limit = inputs.limit.window() as u64;
    s.engines = inputs
        .counters
        .iter()
        .zip([&inputs.engines.small, &inputs.engines.large])
        .zip(&inputs.baselines)
        .map(|((c, e), start)| {
            let t = c.snapshot();
            EngineStatus {
                label: c.label().to_string(),
                model: e.model().to_string(),
                requests: t.requests,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_usd: t.cost_usd,
                run_requests: t.requests.saturating_sub(start.requests),
                run_prompt_tokens: t.prompt_tokens.saturating_sub(start.prompt_tokens),
                run_completion_tokens: t.completion_tokens.saturating_sub(start.completion_tokens),
                run_cost_usd: (t.cost_usd - start.cost_usd).max(0.0),
            }
        })
        .collect();
    s.cost_usd = s.engines.iter().map(|e| e.cost_usd).sum();
    s.run_cost_usd = s.engines.iter().map(|e| e.run_cost_usd).sum();
    s
}

/// The per-engine cost totals as stored under [`COST_META_KEY`].
fn cost_totals(counters: &Counters) -> serde_json::Map<String, serde_json::Value> {
    counters
        .iter()
        .map(|c| {
            (
                c.label().to_string(),
                serde_json::to_value(c.snapshot()).unwrap_or_default(),
            )
        })
        .collect()
}

/// About once a second: writes `status.json`, saves the cost totals in the store (so a killed
/// run loses at most a second of them), and ticks the plain-line renderer.
async fn status_loop(
    dir: PathBuf,
    name: &'static str,
    progress: Arc<Progress>,
    inputs: StatusInputs,
    store: Arc<dyn Store>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut saved = serde_json::Map::new();
    loop {
        tick.tick().await;
        progress.tick();
        let totals = cost_totals(&inputs.counters);
        if totals != saved {
            if let Err(e) = store
                .put_meta(COST_META_KEY, serde_json::Value::Object(totals.clone()))
                .await
            {
                tracing::debug!(error = %e, "could not save cost totals");
            }
            saved = totals;
        }
        let snapshot = status_of(name, &progress, &inputs);
        if let Ok(v) = serde_json::to_value(&snapshot)
            && let Err(e) = atk_state::write_status_snapshot(&dir, &v)
        {
            tracing::debug!(error = %e, "could not write status.json");
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `<output_dir>/store`: where a run's store lives.
pub fn store_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("store")
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
