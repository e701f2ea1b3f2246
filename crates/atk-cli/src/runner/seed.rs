//! Seeding the store: the input folder's chunks (`seed_inputs`), texts and records a
//! pipeline brings itself ([`RunContext::seed_texts`], [`RunContext::seed_items`]), and
//! retiring the items of inputs that are gone.

use std::collections::HashSet;
use std::sync::Arc;

use atk_state::{ItemRecord, RECORD_VERSION, RunMeta, SledStore, Store};

use super::context::{RunContext, dry_run_sample};
use crate::damage::StoredCounts;
use crate::error::RunError;
use crate::flags::Shard;
use crate::layout::{INPUTS_META_KEY, InputsMeta, RUN_META_KEY};
use crate::settings::Settings;

/// Chunks turned into items and stored per call while seeding.
const SEED_SLICE: usize = 1024;

impl<C> RunContext<C> {
    /// Chunks texts the pipeline brought itself (`(source name, text)`, with
    /// `read_files_manually: false`) and adds them to the store as items after any already
    /// there. Returns how many chunks were added (under `--shard I/N`, those of the shard:
    /// the others are left to the other shards, as with the input folder's chunks).
    ///
    /// The run's inputs are the texts seeded in this run (all calls together): items an earlier
    /// run seeded from texts not given now are retired (their stored results are kept, and
    /// reused if the text comes back), so they are neither worked on nor put in the dataset.
    pub async fn seed_texts(&mut self, texts: &[(String, String)]) -> Result<u64, RunError> {
        let mut set = atk_chunk::chunk_texts(texts, &self.settings.chunk_config());
        if let Some(shard) = self.shard {
            set.chunks.retain(|c| shard.contains(&c.id));
        }
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
    /// retired. Returns how many were added (under `--shard I/N`, those of the shard; an
    /// item keeps its place in the whole dataset's order, so merged shards write the rows in
    /// the order of one unsharded run).
    pub async fn seed_items(
        &mut self,
        records: impl IntoIterator<Item = (String, atk_state::Fields)>,
    ) -> Result<u64, RunError> {
        const BATCH: usize = 1000;
        // Occurrences of each (source, fields) pair, keyed by 64 bits of its id: 8 bytes a row.
        let mut seen: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut batch = Vec::with_capacity(BATCH);
        let (mut n, mut added) = (0u64, 0u64);
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
            let order = n;
            n += 1;
            if self.shard.is_some_and(|shard| !shard.contains(&id)) {
                continue;
            }
            added += 1;
            self.seeded.insert(id.clone());
            let mut fields = fields;
            fields
                .entry("metadata")
                .or_insert_with(|| source.clone().into());
            batch.push(ItemRecord {
                v: RECORD_VERSION,
                id,
                parent: None,
                order: vec![order],
                fields,
            });
            if batch.len() == BATCH {
                self.put_seeded(std::mem::take(&mut batch)).await?;
            }
        }
        self.put_seeded(batch).await?;
        if self.dry_run.is_none() {
            retire_stale(self.store.as_ref(), &self.seeded).await?;
        }
        Ok(added)
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

/// Seeds the store with the input folder's chunks, streamed in bounded batches as they are
/// made (see [`atk_chunk::read_dir_batched`]), then retires the items of inputs that are gone.
/// Skipped entirely when the inputs, settings and store are as the last complete seeding
/// left them: a rerun over finished work reads no file and loads no tokenizer. Returns the
/// corpus index when it built one (open, so the run need not open it again); with
/// `build_corpus` false (a pipeline that reads no corpus) it builds none.
#[allow(clippy::too_many_arguments)]
pub(super) async fn seed_inputs(
    sled: &Arc<SledStore>,
    settings: &Settings,
    chunk_cfg: &atk_chunk::ChunkConfig,
    found: &atk_chunk::InputsFingerprint,
    shard: Option<Shard>,
    settings_fingerprint: String,
    stored: &StoredCounts,
    build_corpus: bool,
) -> Result<Option<BuiltCorpus>, RunError> {
    let store: &dyn Store = sled.as_ref();
    let fingerprint = match shard {
        Some(shard) => format!("{} shard {shard}", found.fingerprint),
        None => found.fingerprint.clone(),
    };
    let previous = store
        .meta(INPUTS_META_KEY)?
        .and_then(|v| serde_json::from_value::<InputsMeta>(v).ok());
    // The corpus index holds every chunk (every shard's), built from the unsharded read.
    let corpus_path = crate::layout::corpus_path(&settings.output_dir);
    // (Not wanted counts as current: it is neither built nor a reason to read the inputs again.)
    let corpus_current = !build_corpus
        || atk_state::CorpusIndex::fingerprint_at(&corpus_path).as_deref()
            == Some(&found.fingerprint);
    if corpus_current
        && let Some(prev) = &previous
        && prev.fingerprint == fingerprint
        && stored.damage.is_empty()
        && prev.items_at_end.is_some_and(|n| n == sled.item_count())
    {
        tracing::debug!("inputs unchanged since the last run: seeding skipped");
        crate::out::info(&format!(
            "{} (inputs unchanged since the last run: not read again)\n",
            prev.summary
        ));
        return Ok(None);
    }
    // A store seeded before needs the set of current ids to retire what is gone; a fresh one
    // does not (and then no id is held in memory).
    let had_items = store.item_ids().next().is_some();
    let mut seeded: HashSet<String> = HashSet::new();
    // One batch waiting while one is stored: memory holds two batches of input at most.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<atk_chunk::Chunk>>(1);
    let reader = {
        let (dir, cfg) = (settings.input_dir.clone(), chunk_cfg.clone());
        tokio::task::spawn_blocking(move || {
            atk_chunk::read_dir_batched(&dir, &cfg, &mut |batch| tx.blocking_send(batch).is_ok())
        })
    };
    let mut chunks = 0u64;
    let mut stopped: Option<Stopped> = None;
    let started = std::time::Instant::now();
    // The corpus index is written on a thread of its own while the store takes the items:
    // done in turn on this task, it was a quarter of seeding's time (issue 25, round 5).
    let mut corpus = match corpus_current {
        true => None,
        false => Some(CorpusFeed::start(
            atk_state::CorpusIndexBuilder::create(&corpus_path, &found.fingerprint)
                .map_err(RunError::fatal)?,
        )),
    };
    // Items are stored SEED_SLICE at a time, whatever the reader's batches, without waiting
    // for the disk: seeding waits once, at its end (waiting per call was 3 group commits here,
    // 12 with a call per reader batch).
    let mut pending: Vec<ItemRecord> = Vec::new();
    'batches: while let Some(batch) = rx.recv().await {
        let mine = |c: &&atk_chunk::Chunk| shard.is_none_or(|shard| shard.contains(&c.id));
        for c in batch.iter().filter(mine) {
            chunks += 1;
            if had_items {
                seeded.insert(c.id.clone());
            }
            pending.push(chunk_item(c));
            if pending.len() == SEED_SLICE
                && let Err(e) = store.put_items_unsynced(std::mem::take(&mut pending)).await
            {
                stopped = Some(Stopped::Store(e));
                break 'batches;
            }
        }
        // The corpus takes every chunk (every shard's); it gets the batch itself, no copy.
        if let Some(feed) = &mut corpus
            && !feed.send(batch).await
        {
            stopped = Some(Stopped::Corpus);
            break;
        }
    }
    if stopped.is_none()
        && !pending.is_empty()
        && let Err(e) = store.put_items_unsynced(pending).await
    {
        stopped = Some(Stopped::Store(e));
    }
    drop(rx);
    let report = reader.await.map_err(RunError::fatal)?;
    // Only a complete read puts the index in place (with the fingerprint that marks it current).
    let complete = stopped.is_none() && report.is_ok();
    // Every item seeded is made durable here, once, while the corpus index is finished, and
    // before the inputs meta below marks seeding complete: a run killed before it seeds again.
    let flush_items = stopped.is_none();
    let items_durable = async {
        if flush_items {
            store.flush().await?;
        }
        Ok::<(), RunError>(())
    };
    let (durable, built) = match corpus {
        Some(feed) => {
            let (durable, built) = tokio::join!(items_durable, feed.finish(complete));
            (durable, Some(built))
        }
        None => (items_durable.await, None),
    };
    if let Some(Stopped::Store(e)) = stopped {
        return Err(e.into());
    }
    durable?;
    let report = report.map_err(|e| RunError::Input(e.to_string()))?;
    let built = built.transpose()?.flatten();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        chunks,
        "inputs read and seeded"
    );
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
    Ok(built)
}

/// Why the seeding loop stopped before the reader's last batch.
enum Stopped {
    /// The store refused the items.
    Store(atk_state::Error),
    /// The corpus index's thread stopped (its error comes from `CorpusFeed::finish`).
    Corpus,
}

/// Starts loading the tokenizer on a thread of its own when the inputs are about to be
/// chunked (the chunk cache has no pack for them yet: a first run, or a new `chunk_size`), so
/// the load (~20-30 ms) runs while the inputs are fingerprinted and the store opened, instead
/// of holding up the first files' chunking. A run the pack will serve loads nothing.
pub(super) fn preload_tokenizer(input_dir: &std::path::Path, chunk_cfg: &atk_chunk::ChunkConfig) {
    let pack_missing = match &chunk_cfg.cache_dir {
        Some(dir) => !dir
            .join(atk_chunk::pack_name(input_dir, chunk_cfg))
            .exists(),
        None => true,
    };
    if pack_missing {
        chunk_cfg.tokenizer.preload();
    }
}

/// A corpus index seeding built: open, and being put in place (the runner waits for that before
/// the run ends; a run killed before leaves none, and the next run builds it again).
pub(super) type BuiltCorpus = (atk_state::CorpusIndex, atk_state::IndexInPlace);

/// The corpus index being built on a thread of its own, fed the reader's batches in order.
struct CorpusFeed {
    tx: tokio::sync::mpsc::Sender<Vec<atk_chunk::Chunk>>,
    thread: std::thread::JoinHandle<Result<atk_state::CorpusIndexBuilder, RunError>>,
}

impl CorpusFeed {
    /// Starts the thread that adds each batch it is sent to `index`.
    fn start(mut index: atk_state::CorpusIndexBuilder) -> Self {
        // One batch waiting at most: memory stays bounded when the index falls behind.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<atk_chunk::Chunk>>(1);
        let thread = std::thread::spawn(move || {
            while let Some(batch) = rx.blocking_recv() {
                index
                    .add(
                        batch
                            .iter()
                            .map(|c| (c.id.as_str(), c.metadata.as_str(), c.text.as_str())),
                    )
                    .map_err(RunError::fatal)?;
            }
            Ok(index)
        });
        Self { tx, thread }
    }

    /// Hands a batch to the index; `false` when its thread stopped (its error is in `finish`).
    async fn send(&mut self, batch: Vec<atk_chunk::Chunk>) -> bool {
        self.tx.send(batch).await.is_ok()
    }

    /// Waits for every batch sent to be written; when the read was `complete`, returns the
    /// index, open, with its durable move into place under way on a thread of its own (the
    /// first requests need not wait for its fsync). An incomplete index is left where it was
    /// built, never marked current.
    async fn finish(self, complete: bool) -> Result<Option<BuiltCorpus>, RunError> {
        drop(self.tx);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || {
            let index = thread
                .join()
                .map_err(|_| RunError::fatal("the corpus index's thread panicked"))??;
            match complete {
                true => index
                    .finish_in_background()
                    .map(Some)
                    .map_err(RunError::fatal),
                false => Ok(None),
            }
        })
        .await
        .map_err(RunError::fatal)?
    }
}

/// Notes in the inputs meta how many items the store holds as the run ends: the next run skips
/// seeding only when it finds the same number (a store that lost items is seeded again).
/// Staged: durable with the store's next flush.
pub(super) fn record_item_count(sled: &SledStore) {
    let Ok(Some(value)) = sled.meta(INPUTS_META_KEY) else {
        return;
    };
    let Ok(mut meta) = serde_json::from_value::<InputsMeta>(value) else {
        return;
    };
    meta.items_at_end = Some(sled.item_count());
    if let Ok(v) = serde_json::to_value(meta) {
        let _ = sled.stage_meta(INPUTS_META_KEY, &v);
    }
}

/// An item record for a chunk: fields `text`, `metadata`, `tokens`; order `[file, chunk]`.
pub(super) fn chunk_item(c: &atk_chunk::Chunk) -> ItemRecord {
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

pub(super) fn check_fingerprint(store: &dyn Store, fingerprint: &str) {
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
