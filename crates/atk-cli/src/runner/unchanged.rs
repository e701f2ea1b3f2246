//! A rerun that changed nothing skips the dataset phase: it reads no item and no result.
//!
//! A run that published its datasets records in store meta what they were made from (the
//! [`Basis`]: the pipeline binary, the resolved config, the inputs' fingerprint, the items
//! seeded, the item and per-step result counts) and the files as published (length, mtime,
//! inode, line count, rows left out). A later run whose chain stored, dropped and failed
//! nothing, with no rework asked for, the same basis and every file still as recorded, knows
//! that writing the datasets again would give the same bytes: it lists the published files
//! as they are and writes nothing. Every run takes the record out of the store before its
//! chain starts (and writes a new one only once it published), so a run killed part-way,
//! which may have replaced results without changing their count, leaves none. Anything else (a changed config, a rebuilt binary, a
//! touched dataset, a new result) writes the datasets as usual (compared row by row with the
//! published files: `dataset/same.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RunContext;

/// Store meta key of the [`Record`].
const META_KEY: &str = "datasets_written";

/// What a run's datasets were made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Basis {
    /// Length and mtime (ns) of the running binary: a rebuilt pipeline may write other rows.
    exe: Option<(u64, i128)>,
    /// SHA-256 of the resolved config (secrets masked).
    config: String,
    /// The inputs' fingerprint as recorded by seeding.
    inputs: Option<serde_json::Value>,
    /// SHA-256 of the ids seeded by this run's pipeline code (sorted).
    seeded: String,
    /// Items in the store.
    items: u64,
    /// Results per step in the store.
    results: BTreeMap<String, u64>,
}

/// One published file as it was left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

/// One published dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Published {
    path: PathBuf,
    lines: u64,
    file: FileStamp,
    /// Its `.NAME.sources` sidecar, if any.
    sidecar: Option<FileStamp>,
    /// Its `.NAME.items` sidecar, if any.
    #[serde(default)]
    items: Option<FileStamp>,
}

/// What [`META_KEY`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    basis: Basis,
    files: Vec<Published>,
    /// Rows left out: dataset, reason, count.
    dropped: Vec<(PathBuf, String, u64)>,
}

/// The dataset phase's view of a run: the config digest (known at load) and, once the chain
/// ran, the basis the datasets are written from.
#[derive(Default)]
pub(crate) struct Tracker {
    /// SHA-256 of the resolved config.
    config: String,
    /// The store's results per step (counted at open, plus what this run added).
    results: Option<std::sync::Arc<crate::damage::StoredCounts>>,
    /// The store, for its item count (on redb without a scan).
    store: Option<std::sync::Arc<atk_state::DiskStore>>,
    /// The basis of this run's datasets (set by [`reuse`]).
    basis: Option<Basis>,
    /// The record the last run left, taken out of the store by [`Tracker::take_record`].
    previous: Option<Record>,
}

impl Tracker {
    /// A tracker for a run of the resolved config `redacted` over a store with `results`.
    pub(crate) fn new(
        redacted: &serde_json::Value,
        results: std::sync::Arc<crate::damage::StoredCounts>,
        store: std::sync::Arc<atk_state::DiskStore>,
    ) -> Self {
        Self {
            config: config_digest(redacted),
            results: Some(results),
            store: Some(store),
            basis: None,
            previous: None,
        }
    }

    /// Takes the last run's record out of the store before anything can change a result: a
    /// run killed part-way (a `--redo` replaces results without changing their count) then
    /// leaves no record, and the next run writes its datasets.
    pub(crate) async fn take_record(&mut self, store: &dyn atk_state::Store) {
        let Some(v) = store.meta(META_KEY).ok().flatten().filter(|v| !v.is_null()) else {
            return;
        };
        self.previous = serde_json::from_value::<Record>(v).ok();
        let _ = store.put_meta(META_KEY, serde_json::Value::Null).await;
    }
}

/// SHA-256 (hex) of a resolved config.
fn config_digest(redacted: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(redacted).unwrap_or_default(),
    ))
}

/// Lists the datasets a previous run published, as they are, when this run changed nothing
/// they are made from; returns whether it did (then the pipeline's `write_datasets` and the
/// meta datasets are skipped). Also keeps the basis for [`record`].
pub(crate) fn reuse<C>(ctx: &mut RunContext<C>) -> bool {
    let basis = basis_of(ctx);
    let quiet = ctx.reports.iter().all(|r| {
        !r.cancelled
            && r.steps
                .iter()
                .all(|s| s.done == 0 && s.failed == 0 && s.dropped == 0)
    });
    let eligible =
        quiet && !ctx.rework_flags.any() && ctx.preview.is_none() && ctx.dry_run.is_none();
    ctx.unchanged.basis = Some(basis.clone());
    if !eligible {
        return false;
    }
    let Some(record) = ctx.unchanged.previous.take() else {
        return false;
    };
    if record.basis != basis || record.files.is_empty() {
        return false;
    }
    let intact = record.files.iter().all(|f| {
        stamp(&f.path).as_ref() == Some(&f.file)
            && stamp(&crate::layout::row_sources_path(&f.path)) == f.sidecar
            && stamp(&crate::layout::row_items_path(&f.path)) == f.items
    });
    if !intact {
        return false;
    }
    let mut written = ctx.datasets.lock().unwrap_or_else(|e| e.into_inner());
    written
        .files
        .extend(record.files.iter().map(|f| (f.path.clone(), f.lines)));
    written.dropped.extend(record.dropped);
    tracing::debug!(
        files = record.files.len(),
        "nothing changed since the datasets were written: they are kept as they are"
    );
    true
}

/// Records what the datasets just published (`files`: final paths and line counts) were made
/// from, for the next run's [`reuse`].
pub(crate) fn record<C>(
    ctx: &RunContext<C>,
    files: &[(PathBuf, u64)],
    dropped: &[crate::summary::DroppedRows],
) {
    let Some(basis) = ctx.unchanged.basis.clone() else {
        return;
    };
    let mut published = Vec::with_capacity(files.len());
    for (path, lines) in files {
        let Some(file) = stamp(path) else { return };
        published.push(Published {
            path: path.clone(),
            lines: *lines,
            file,
            sidecar: stamp(&crate::layout::row_sources_path(path)),
            items: stamp(&crate::layout::row_items_path(path)),
        });
    }
    let record = Record {
        basis,
        files: published,
        dropped: dropped
            .iter()
            .map(|d| (d.file.clone(), d.reason.clone(), d.count))
            .collect(),
    };
    if let Ok(v) = serde_json::to_value(&record) {
        // Staged: the runner's last flush makes it durable (a run killed before it leaves no
        // record, and the next run writes its datasets again, as it would without one).
        let _ = ctx.store.stage_meta(META_KEY, &v);
    }
}

fn basis_of<C>(ctx: &RunContext<C>) -> Basis {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .ok()
        .map(|m| (m.len(), mtime_ns(&m)));
    let mut seeded: Vec<&String> = ctx.seeded.iter().collect();
    seeded.sort_unstable();
    let mut h = Sha256::new();
    for id in seeded {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    let mut results = ctx
        .unchanged
        .results
        .as_ref()
        .map(|r| r.live())
        .unwrap_or_default();
    results.retain(|_, n| *n > 0);
    Basis {
        exe,
        config: ctx.unchanged.config.clone(),
        inputs: ctx
            .store
            .meta(crate::layout::INPUTS_META_KEY)
            .ok()
            .flatten()
            .map(|mut v| {
                // Rewritten at the end of every run: the item count is `items` here.
                if let Some(o) = v.as_object_mut() {
                    o.remove("items_at_end");
                }
                v
            }),
        seeded: hex::encode(h.finalize()),
        items: match &ctx.unchanged.store {
            Some(store) => store.item_count(),
            None => ctx.store.item_ids().count() as u64,
        },
        results,
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(FileStamp {
        len: m.len(),
        mtime_ns: mtime_ns(&m),
        ino,
    })
}
