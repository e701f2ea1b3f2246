//! The runner every pipeline binary's `main` calls: flags, config, engines, store, inputs,
//! the pipeline itself, then the summary and the exit code.
//!
//! This module decides what a pipeline binary prints (banner, config warnings, the summary,
//! the error) and [`crate::out`] where it goes: it is the binary's front end living in a
//! library so every pipeline shares it.

mod batch_run;
mod budget;
mod context;
mod dry;
mod engines;
mod journal;
mod load;
mod phases;
mod seed;
mod signals;
mod status_loop;
mod unchanged;

use std::collections::HashSet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atk_engine::CostTotals;
use atk_state::{DiskStore, RECORD_VERSION, RunMeta, Store, StoreOptions};
use atk_step::{Chain, PromptLibrary};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Overrides};
use crate::damage::StoredCounts;
use crate::dataset::{self, Written};
use crate::ending;
use crate::error::RunError;
use crate::flags::{CommonFlags, parse_pipeline_args};
use crate::progress::{Progress, ProgressMode};
use crate::settings::Settings;
use crate::status::{RunState, STATUS_META_KEY};
use crate::summary::{RunSummary, TOKEN_COUNTS_FILE};

pub(crate) use crate::layout::{COST_META_KEY, RUN_META_KEY, store_dir};
pub use context::RunContext;
use engines::build_engines;
pub use phases::{Dataset, RunOutcome};
use seed::{check_fingerprint, record_item_count, seed_inputs};
use signals::{CtrlC, watch_ctrl_c};
use status_loop::{StatusInputs, cost_totals, status_loop, status_of};

/// A pipeline: its config type, its prompts, its chain of steps and the datasets it writes
/// from the chain's final items. The runner does the rest, phase by phase: config, inputs,
/// store, engines (the settings of the engines the chain calls are required, the others'
/// not), the chain, the datasets (finished atomically), the meta datasets, progress, the
/// summary and the exit code.
///
/// `main.rs` of a pipeline crate is one line: `fn main() -> ExitCode { atk_cli::main(MyPipeline) }`.
#[async_trait]
pub trait Pipeline: Send + Sync + 'static {
    /// The pipeline's own config keys (the common ones are in [`CommonConfig`](crate::config::CommonConfig)).
    /// Derive `JsonSchema` on it (`#[schemars(crate = "atk_cli::config::schemars")]`): its
    /// field names, doc comments and defaults are what `--describe-config` tells.
    type Config: DeserializeOwned + config::JsonSchema + Send + Sync + 'static;
    /// The pipeline's name (shown in `--help`, the summary and `atk status`).
    fn name(&self) -> &'static str;
    /// The prompt files compiled into the binary: `(file name, contents)` (see
    /// [`atk_step::prompts!`]); the config's `prompts` folder overrides them file by file.
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)];
    /// The steps, built from the config once per run and checked before anything is read.
    fn chain(&self, config: &Self::Config) -> Chain;
    /// Whether the pipeline reads the corpus ([`RunContext::corpus`], passage steps). Default:
    /// yes. One that never does may say no: its runs then build and open no corpus index (a
    /// first run over many small documents spent ~4 % of its CPU building one), and
    /// [`RunContext::corpus`] is an error.
    fn reads_corpus(&self) -> bool {
        true
    }
    /// Adds the pipeline's own items before the chain runs ([`RunContext::seed_items`],
    /// [`RunContext::seed_texts`]). Default: nothing; the chunks of `input_dir` are the items.
    async fn seed(&self, ctx: &mut RunContext<Self::Config>) -> Result<(), RunError> {
        let _ = ctx;
        Ok(())
    }
    /// Writes the datasets from the chain's final items ([`RunContext::final_items`] into
    /// [`RunContext::dataset`]s); the runner puts every dataset in place once this returns `Ok`.
    fn write_datasets(&self, ctx: &RunContext<Self::Config>, chain: &Chain)
    -> Result<(), RunError>;
}

/// Parses the command line, runs `pipeline` and returns the exit code: 0 completed, 2 config
/// or input error, 1 fatal runtime error, 130 interrupted. Call it from `main`.
pub fn main<P: Pipeline>(pipeline: P) -> std::process::ExitCode {
    without_huge_pages();
    main_with_args(pipeline, std::env::args_os())
}

/// Turns transparent huge pages off for this process (Linux; best effort). With them the
/// allocator's arenas were backed by 2 MB pages, each zeroed whole on first touch: a
/// 3 000-item run peaked at ~152 MB instead of ~101 MB for the same CPU (docs/performance.md,
/// "Issue 25, round 4: store and memory").
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "transparent huge pages stay on");
    }
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
    // The run is a task on the worker threads, not the future `block_on` polls on this
    // thread: every item's task that ends wakes the executor's loop, and a loop on this
    // thread was a futex wake and a thread switch per item (issue 25, round 4).
    let outcome = runtime.block_on(async move {
        match tokio::spawn(run(pipeline, flags)).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(RunError::Fatal(format!("the run's task ended early: {e}"))),
        }
    });
    // Do not wait for stray blocking tasks (a stuck read must not hang the exit).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match &outcome {
        Ok(RunOutcome::DryRun(estimate)) | Err(RunError::Preview(estimate)) => {
            crate::out::command_result(estimate.trim_end())
        }
        Ok(_) => {}
        Err(e) => crate::out::always(&format!("error: {e}\n")),
    }
    crate::error::exit_code(&outcome)
}

/// `--describe-config`: every key the pipeline reads as one JSON object on stdout
/// (`{"pipeline", "keys": [KeyDoc...]}`), with each key's value in `--config` when given.
fn describe_config<P: Pipeline>(
    pipeline: &P,
    flags: &CommonFlags,
    overrides: &Overrides,
) -> Result<(), RunError> {
    let keys = if flags.config.as_os_str().is_empty() {
        config::describe::<P::Config>()
    } else {
        config::describe_file::<P::Config>(&flags.config, overrides, |name| {
            std::env::var(name).ok()
        })
        .map_err(|e| RunError::Config(e.to_string()))?
    };
    let described = serde_json::json!({ "pipeline": pipeline.name(), "keys": keys });
    crate::out::result(&described.to_string());
    Ok(())
}

/// Runs a pipeline with parsed flags (what [`main`] does inside its runtime).
pub async fn run<P: Pipeline>(pipeline: P, flags: CommonFlags) -> Result<RunOutcome, RunError> {
    crate::out::set_quiet(flags.quiet);
    let started = Instant::now();
    let started_at_ms = atk_state::now_ms();
    if flags.describe_config {
        let overrides = Overrides {
            set: flags.set.clone(),
            json: flags.override_json.clone(),
        };
        describe_config::<P>(&pipeline, &flags, &overrides)?;
        return Ok(RunOutcome::ConfigChecked);
    }
    let (loaded, chain) = load::config_and_chain(&pipeline, &flags)?;
    for w in &loaded.warnings {
        crate::out::warn(w);
    }
    if let Some(w) = crate::card::license_warning(&loaded.common).filter(|_| !flags.dry_run) {
        crate::out::note(&w);
    }
    let (small, large) = chain.engines_used();
    let used = crate::config::EnginesUsed { small, large };
    let settings = Arc::new(Settings::new(&loaded.common, used));
    tracing::debug!(config = %loaded.path.display(), "config loaded");

    // Inputs first: a missing or unreadable input dir is reported before anything is locked.
    let chunk_cfg = if flags.dry_run {
        settings.dry_run_chunk_config()
    } else {
        settings.chunk_config()
    };
    // --preview N: N seeded chunks, the same each time (a subset of its own, so the full run
    // seeds everything again and reuses what the preview stored).
    let chunk_cfg = match flags.preview {
        Some(_) if !settings.read_files_manually => {
            return Err(RunError::Input(
                "--preview picks chunks of input_dir, and this pipeline brings its own items (read_files_manually is off)".into(),
            ));
        }
        Some(n) => chunk_cfg.with_subset(atk_chunk::Subset::new(
            usize::try_from(n).unwrap_or(usize::MAX),
            settings.seed,
        )),
        None => chunk_cfg,
    };
    let inputs = if settings.read_files_manually && !flags.dry_run {
        seed::preload_tokenizer(&settings.input_dir, &chunk_cfg);
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
    if flags.check_config {
        crate::out::info(&format!("config ok: {}\n", flags.config.display()));
        return Ok(RunOutcome::ConfigChecked);
    }
    let progress_mode = flags.progress_mode();

    if flags.dry_run {
        return dry::run_dry(
            pipeline, &chain, &flags, settings, loaded, prompts, chunk_cfg,
        )
        .await;
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
        let options = StoreOptions::default().with_backend(settings.store_backend);
        Arc::new(
            tokio::task::spawn_blocking(move || DiskStore::open_with(&dir, options))
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
    if flags.cancel_batches {
        return batch_run::cancel_batches(&settings, &store, &flags, pipeline.name()).await;
    }
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
    let budget = budget::for_run(&settings, store.as_ref())?;
    let batches = journal::RunBatches::for_run(&settings, &store, flags.no_wait)?;
    if flags.no_wait && batches.journals().is_empty() {
        crate::out::warn(
            "--no-wait changes nothing here: no engine the chain calls is in batch mode (small_mode / large_mode: batch)",
        );
    }
    let (engines, counters, limit) =
        build_engines(&settings, &store, &cancel, budget.as_ref(), Some(&batches))?;
    let budget_watch = budget::watch(budget.clone(), cancel.clone());
    let baselines: Vec<CostTotals> = counters.iter().map(|c| c.snapshot()).collect();
    let status_inputs = StatusInputs {
        counters: counters.clone(),
        engines: engines.clone(),
        baselines: baselines.clone(),
        limit,
        stored: stored_counts.clone(),
        batches: Some(batches.clone()),
        budget: budget.clone(),
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

    let mut built_corpus = None;
    if let Some(found) = &inputs {
        let settings_fingerprint = crate::layout::settings_fingerprint(&loaded.redacted);
        built_corpus = seed_inputs(
            &sled,
            &settings,
            &chunk_cfg,
            found,
            flags.shard,
            settings_fingerprint,
            &stored_counts,
            pipeline.reads_corpus(),
        )
        .await?;
    }
    // The index seeding just built is open already: a second open is a dozen ms of redb's.
    let (built_corpus, corpus_in_place) = built_corpus.unzip();
    let corpus: Option<Arc<dyn atk_state::Corpus>> = match (&inputs, built_corpus) {
        (_, Some(built)) => Some(Arc::new(built)),
        (Some(_), None) if pipeline.reads_corpus() => {
            atk_state::CorpusIndex::open(&crate::layout::corpus_path(&settings.output_dir))
                .map_err(RunError::fatal)?
                .map(|c| Arc::new(c) as Arc<dyn atk_state::Corpus>)
        }
        (_, None) => None,
    };

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
    // Each step's own cost: the counters cost every call under the step that made it.
    let step_cost_fn = {
        let (counters, before) = (counters.clone(), baselines.clone());
        Arc::new(move |step: &str| {
            counters
                .iter()
                .zip(&before)
                .map(|(c, b)| {
                    let now = c.snapshot().cost_by_tag.get(step).copied().unwrap_or(0.0);
                    now - b.cost_by_tag.get(step).copied().unwrap_or(0.0)
                })
                .sum::<f64>()
                .max(0.0)
        })
    };
    let progress = Arc::new(
        Progress::stderr(progress_mode)
            .with_cost(cost_fn)
            .with_run_cost(run_cost_fn)
            .with_step_cost(step_cost_fn),
    );
    crate::logging::attach_bars(progress.multi().cloned());
    let ctrl_c = tokio::spawn(watch_ctrl_c(
        CtrlC::install(),
        cancel.clone(),
        settings.output_dir.clone(),
    ));
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
        open_datasets: Default::default(),
        row_source: Default::default(),
        seeded: HashSet::new(),
        shard: flags.shard,
        rework_flags: crate::redo::ReworkFlags::from_flags(&flags),
        preview: flags.preview,
        batches: Some(batches.clone()),
        corpus,
        unchanged: unchanged::Tracker::new(&loaded.redacted, stored_counts.clone(), sled.clone()),
    };
    ctx.unchanged.take_record(store.as_ref()).await;
    // Outside a dry run the phases end completed or with an error.
    let mut outcome = phases::run_pipeline(&pipeline, &mut ctx, &chain)
        .await
        .map(|_| ());
    if outcome.is_ok() && ctx.rework_flags.any() && ctx.reports.iter().all(|r| r.failed() == 0) {
        // The rework is done: the next run with the same flags starts a new one.
        if let Err(e) = crate::redo::finish(store.as_ref()).await {
            outcome = Err(e);
        }
    }
    let outcome = budget::outcome(outcome, budget.as_deref(), &progress.snapshot());
    // Batches still at the provider: left on purpose (--no-wait), or by a stop (Ctrl-C, an
    // error). Those whose results are stored leave the journal.
    let left = batches.left_running();
    let waiting = matches!(outcome, Err(RunError::WaitingForBatches));
    let outcome = if waiting { Ok(()) } else { outcome };
    batches.prune(outcome.is_ok() && left.is_empty()).await;
    status_task.abort();
    ctrl_c.abort();
    if let Some(watch) = budget_watch {
        watch.abort();
    }
    // Wait for the status task to be gone, so its last write cannot land after the final one.
    let _ = status_task.await;

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
    // The end of the run's store meta (totals, unchanged-datasets record, status, item count,
    // card date) is staged and made durable by one flush once the card is written: a commit
    // each was a dozen ms of the end of a run.
    let _ = store.stage_meta(COST_META_KEY, &serde_json::Value::Object(totals.clone()));
    let written = ctx
        .datasets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let staged = written.files;
    // Sample replies with keys masked: the summary and status.json show the same ones.
    let reports = crate::preview::scrubbed(
        &ctx.reports,
        &settings
            .engines
            .iter()
            .map(|e| &e.api_key)
            .collect::<Vec<_>>(),
    );
    let mut summary = RunSummary::new(
        pipeline.name(),
        started.elapsed(),
        &reports,
        &costs,
        staged
            .iter()
            .map(|(p, n)| (ending::final_path(&settings.output_dir, p), *n))
            .collect(),
        outcome.as_ref().err().map(|e| e.to_string()),
    );
    if summary.steps.is_empty() {
        // A chain stopped by a fatal error has no report: show what progress counted.
        summary.add_progress_counts(&progress.snapshot());
    }
    summary.dropped_rows = ending::dropped_rows(&settings.output_dir, written.dropped);
    // Only a run that completed publishes its datasets (and then its card).
    // A run that left its batches running has not completed: it publishes nothing yet.
    let (mut outcome, mut state) = if waiting {
        (Ok(()), RunState::WaitingForBatches)
    } else {
        ending::judge(outcome, &summary)
    };
    if waiting {
        ending::discard(&settings.output_dir);
        summary.datasets.clear();
    } else if outcome.is_ok()
        && let Err(e) = ending::publish(&settings.output_dir, &staged)
    {
        state = RunState::Failed {
            reason: e.to_string(),
        };
        outcome = Err(e);
    }
    if outcome.is_err() {
        ending::discard(&settings.output_dir);
        summary.datasets.clear();
    } else {
        unchanged::record(&ctx, &summary.datasets, &summary.dropped_rows);
    }
    progress.finish(outcome.is_ok() && !waiting);
    crate::logging::detach_bars();
    // A sled store grown past the advice threshold: how to move to redb (the summary says it
    // once; `atk status` whenever it shows this folder).
    let advice = crate::store_advice::for_run(
        &sled,
        flags
            .redb_advice_at
            .unwrap_or(crate::store_advice::ADVICE_ITEMS),
        &settings.output_dir.display().to_string(),
    );
    if let Some((text, true)) = &advice {
        summary.store_advice = Some(text.clone());
    }
    let mut snapshot = status_of(pipeline.name(), &progress, &status_inputs);
    snapshot.state = state;
    snapshot.store_advice = advice.map(|(text, _)| text);
    snapshot.reasons = crate::preview::reason_samples(&reports);
    snapshot.budget = budget::status(budget.as_deref());
    if let Ok(v) = serde_json::to_value(&snapshot) {
        let _ = atk_state::write_status_snapshot(&settings.output_dir, &v);
        let _ = store.stage_meta(STATUS_META_KEY, &v);
    }
    if let Some(in_place) = corpus_in_place {
        // Made durable beside the run; a failure costs the next run a rebuild, not this run.
        let finished = tokio::task::spawn_blocking(move || in_place.wait()).await;
        if let Ok(Err(e)) = finished {
            crate::out::warn(&format!(
                "the corpus index could not be put in place ({e}): the next run builds it again"
            ));
        }
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "pipeline finished"
    );
    record_item_count(&sled);
    let _ = dataset::write_jsonl_atomic(
        &settings.output_dir.join(TOKEN_COUNTS_FILE),
        [serde_json::to_string_pretty(&totals).unwrap_or_default()],
    );
    let _ = summary.write(&settings.output_dir);
    if !summary.datasets.is_empty() {
        let prompts = ctx.prompts.loaded();
        crate::card::write(&summary, &settings, &ctx.common, prompts, store.as_ref());
    }
    let _ = store.flush().await;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "store flushed");
    print_summary(&summary, outcome.is_err(), progress_mode);
    if !left.is_empty() {
        let command = batch_run::collect_command(&flags, pipeline.name());
        crate::out::always(&batch_run::left_message(&left, &command, waiting));
    }
    outcome.map(|()| {
        if waiting {
            RunOutcome::WaitingForBatches
        } else {
            RunOutcome::Completed
        }
    })
}

/// Prints the summary (to stderr; under `-q` too when `alarm`: it explains a failure) and
/// where each dataset went (to stdout, as `dataset_written` events with `--progress json`).
fn print_summary(summary: &RunSummary, alarm: bool, progress_mode: ProgressMode) {
    // The summary is a diagnostic (stderr; shown under -q only when it explains a failure);
    // where each dataset went is a result (stdout).
    if alarm {
        crate::out::always(&summary.render());
    } else {
        crate::out::info(&summary.render());
    }
    if progress_mode == ProgressMode::Json {
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
}

#[cfg(test)]
mod tests;
