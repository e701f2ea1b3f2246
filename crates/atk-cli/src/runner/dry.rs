//! `--dry-run`: the whole chain on a sample of the chunks against counting mock engines, in
//! an in-memory store (or over the real store, read only, for a rework).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use atk_state::{ItemRecord, MemStore, SledStore, Store};
use atk_step::{Engines, PromptLibrary};
use tokio_util::sync::CancellationToken;

use super::context::{DryRun, dry_run_sample};
use super::engines::engine_config;
use super::phases::{RunOutcome, run_pipeline};
use super::seed::chunk_item;
use super::{Pipeline, RunContext};
use crate::config;
use crate::dataset::Written;
use crate::dry_run::CountingEngine;
use crate::error::RunError;
use crate::flags::CommonFlags;
use crate::layout::store_dir;
use crate::progress::Progress;
use crate::settings::Settings;

/// Runs the pipeline under `--dry-run`: the outcome carries the estimate.
pub(super) async fn run_dry<P: Pipeline>(
    pipeline: P,
    chain: &atk_step::Chain,
    flags: &CommonFlags,
    settings: Arc<Settings>,
    loaded: config::Loaded<P::Config>,
    prompts: Arc<PromptLibrary>,
    chunk_cfg: atk_chunk::ChunkConfig,
) -> Result<RunOutcome, RunError> {
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
    // Steps that read the corpus see every chunk read (a dry run holds them anyway).
    let corpus: Option<Arc<dyn atk_state::Corpus>> = settings.read_files_manually.then(|| {
        Arc::new(atk_state::MemCorpus::new(
            chunk_set
                .chunks
                .iter()
                .map(|c| (c.id.clone(), c.metadata.clone(), c.text.clone())),
        )) as Arc<dyn atk_state::Corpus>
    });
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
    let cap_check = settings.max_cost.map(|cap| (cap, counters.clone()));
    if let Some(warning) = super::budget::unpriced_warning(&settings) {
        crate::out::warn(&warning);
    }
    let engines = Engines {
        small: counters[0].clone(),
        large: counters[1].clone(),
    };
    let (store, chunks, sample): (Arc<dyn Store>, u64, u64) = if flags.reworks() {
        // --redo / --reprocess: the chain runs over the stored results (read, never written).
        let base = open_for_dry_run(&settings.output_dir).await?;
        let roots = base.root_ids().try_fold(0u64, |n, r| r.map(|_| n + 1))?;
        (
            Arc::new(crate::overlay::OverlayStore::new(base)),
            roots,
            roots,
        )
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
        open_datasets: Default::default(),
        row_source: Default::default(),
        seeded: HashSet::new(),
        shard: flags.shard,
        rework_flags: crate::redo::ReworkFlags::from_flags(flags),
        preview: None,
        batches: None,
        corpus,
        unchanged: Default::default(),
    };
    // The chain's phase ends a dry run with the estimate: no dataset is written.
    let outcome = run_pipeline(&pipeline, &mut ctx, chain).await?;
    if let (RunOutcome::DryRun(mut estimate), Some((cap, counters))) = (outcome.clone(), cap_check)
    {
        let estimates: Vec<_> = counters
            .iter()
            .map(|c| c.scaled_estimate(sample, chunks))
            .collect();
        estimate.push_str(&crate::dry_run::render_cap_warning(cap, &estimates));
        return Ok(RunOutcome::DryRun(estimate));
    }
    Ok(outcome)
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
