//! `atk merge DIR... --into OUT`: the output dirs of a run split with `--shard I/N` made into
//! one, so that running the pipeline on OUT sends nothing and writes the full datasets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use atk_state::{DiskStore, RunMeta, Store};

use atk_cli::Shard;
use atk_cli::layout::{COST_META_KEY, INPUTS_META_KEY, InputsMeta, RUN_META_KEY, store_dir};
use atk_cli::status::StatusSnapshot;

/// Why a merge was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum MergeError {
    /// An input dir holds no store (or one no run has seeded).
    #[error("{}: {reason}", .dir.display())]
    BadShard {
        /// The output dir given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two input dirs come from different pipelines, configs, inputs or splits.
    #[error("{} and {} cannot be merged: {what} differ ({a} vs {b})", .first.display(), .other.display())]
    Mismatch {
        /// The first dir.
        first: PathBuf,
        /// The dir that differs from it.
        other: PathBuf,
        /// What differs.
        what: &'static str,
        /// The first dir's value.
        a: String,
        /// The other dir's value.
        b: String,
    },
    /// OUT already holds a store.
    #[error("{}: {reason}", .out.display())]
    BadOut {
        /// The OUT dir.
        out: PathBuf,
        /// Why it cannot take the merge.
        reason: String,
    },
    /// Reading or writing a store failed.
    #[error(transparent)]
    Store(#[from] atk_state::Error),
}

impl MergeError {
    /// Exit code: 2 for refused inputs, 1 for a store failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Store(
                atk_state::Error::Locked { .. } | atk_state::Error::Incompatible { .. },
            ) => 2,
            Self::Store(_) => 1,
            _ => 2,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MergeReport {
    /// Shard dirs merged.
    pub shards: usize,
    /// Items copied.
    pub items: u64,
    /// Results copied.
    pub results: u64,
    /// Failures copied.
    pub failures: u64,
    /// Total cost of the shards' runs, USD.
    pub cost_usd: f64,
    /// Shards of the split that were not among the inputs (their items will be worked on by the
    /// first run on OUT).
    pub missing_shards: Vec<u32>,
}

/// One input dir's store and what it says about itself.
struct Source {
    dir: PathBuf,
    store: DiskStore,
    run: RunMeta,
    inputs: InputsMeta,
}

fn open_source(dir: &Path) -> Result<Source, MergeError> {
    let bad = |reason: String| MergeError::BadShard {
        dir: dir.to_path_buf(),
        reason,
    };
    let store = match DiskStore::try_open_read(&store_dir(dir)) {
        Ok(s) => s,
        Err(atk_state::Error::NotFound { .. }) => {
            return Err(bad("no atk store here (is it a run's output_dir?)".into()));
        }
        Err(e @ atk_state::Error::Locked { .. }) => return Err(bad(format!("{e}"))),
        Err(e) => return Err(e.into()),
    };
    let run = store
        .meta(RUN_META_KEY)?
        .and_then(|v| serde_json::from_value::<RunMeta>(v).ok())
        .ok_or_else(|| bad("the store has no run record (no run has started here)".into()))?;
    let inputs = store
        .meta(INPUTS_META_KEY)?
        .and_then(|v| serde_json::from_value::<InputsMeta>(v).ok())
        .ok_or_else(|| {
            bad(
                "the store was never fully seeded from an input folder (rerun that shard first)"
                    .into(),
            )
        })?;
    Ok(Source {
        dir: dir.to_path_buf(),
        store,
        run,
        inputs,
    })
}

/// Merges the stores of `dirs` (output dirs of `--shard` runs of one pipeline, config and
/// input folder) into a new store in `out`: items, results, failures and cost totals. The
/// new store is kept in `backend`, or else in the first shard's database.
pub(crate) async fn merge(
    dirs: &[PathBuf],
    out: &Path,
    backend: Option<atk_state::Backend>,
) -> Result<MergeReport, MergeError> {
    let mut sources = Vec::new();
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if !seen.insert(canon) {
            return Err(MergeError::BadShard {
                dir: dir.clone(),
                reason: "given twice".into(),
            });
        }
        sources.push(open_source(dir)?);
    }
    let Some(first) = sources.first() else {
        return Err(MergeError::BadOut {
            out: out.to_path_buf(),
            reason: "nothing to merge: give the shards' output dirs".into(),
        });
    };
    let shard_text = |s: Option<Shard>| s.map_or_else(|| "none".to_owned(), |s| s.to_string());
    let mut indexes = BTreeSet::new();
    for s in &sources {
        let mismatch = |what, a: String, b: String| MergeError::Mismatch {
            first: first.dir.clone(),
            other: s.dir.clone(),
            what,
            a,
            b,
        };
        if s.run.pipeline != first.run.pipeline {
            return Err(mismatch(
                "pipelines",
                first.run.pipeline.clone(),
                s.run.pipeline.clone(),
            ));
        }
        if s.inputs.settings_fingerprint != first.inputs.settings_fingerprint {
            return Err(mismatch(
                "configs (settings other than paths and concurrency)",
                short(&first.inputs.settings_fingerprint),
                short(&s.inputs.settings_fingerprint),
            ));
        }
        if s.inputs.shape != first.inputs.shape {
            return Err(mismatch(
                "input folders (files or settings)",
                short(&first.inputs.shape),
                short(&s.inputs.shape),
            ));
        }
        let (a, b) = (
            first.inputs.shard.map(|x| x.count),
            s.inputs.shard.map(|x| x.count),
        );
        if a != b {
            return Err(mismatch(
                "splits (--shard)",
                shard_text(first.inputs.shard),
                shard_text(s.inputs.shard),
            ));
        }
        if let Some(shard) = s.inputs.shard
            && !indexes.insert(shard.index)
        {
            return Err(MergeError::BadShard {
                dir: s.dir.clone(),
                reason: format!("shard {shard} is given twice"),
            });
        }
    }
    let missing_shards: Vec<u32> = match first.inputs.shard {
        Some(s) => (0..s.count).filter(|i| !indexes.contains(i)).collect(),
        None => Vec::new(),
    };

    let out_store_dir = store_dir(out);
    if atk_state::Backend::detect(&out_store_dir).is_some() {
        let existing = DiskStore::try_open_read(&out_store_dir)?;
        let reason = match existing
            .meta(RUN_META_KEY)?
            .and_then(|v| serde_json::from_value::<RunMeta>(v).ok())
        {
            Some(run) if run.pipeline != first.run.pipeline => {
                format!(
                    "holds a store of another pipeline ({}, not {}); merge into a new directory",
                    run.pipeline, first.run.pipeline
                )
            }
            _ if existing.item_count() > 0 => {
                "already holds a store; merge into a new directory".to_owned()
            }
            _ => String::new(),
        };
        if !reason.is_empty() {
            return Err(MergeError::BadOut {
                out: out.to_path_buf(),
                reason,
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| MergeError::BadOut {
        out: out.to_path_buf(),
        reason: format!("cannot create it: {e}"),
    })?;
    let backend = backend
        .or_else(|| sources.first().map(|s| s.store.backend()))
        .unwrap_or_default();
    let target = DiskStore::open_with(
        &out_store_dir,
        atk_state::StoreOptions::default().with_backend(backend),
    )?;
    let mut report = MergeReport {
        shards: sources.len(),
        missing_shards,
        ..MergeReport::default()
    };
    let mut costs = serde_json::Map::new();
    for s in &sources {
        let m = target.merge_from(&s.store).await?;
        report.items += m.items;
        report.results += m.results;
        report.failures += m.failures;
        if let Some(serde_json::Value::Object(c)) = s.store.meta(COST_META_KEY)? {
            for (label, totals) in c {
                let sum = costs.entry(label).or_insert_with(|| serde_json::json!({}));
                add_json(sum, &totals);
            }
        }
    }
    report.cost_usd = costs
        .values()
        .filter_map(|t| t.get("cost_usd").and_then(serde_json::Value::as_f64))
        .sum();
    let mut run = first.run.clone();
    run.started_at_ms = sources
        .iter()
        .map(|s| s.run.started_at_ms)
        .min()
        .unwrap_or(run.started_at_ms);
    target
        .put_meta(RUN_META_KEY, serde_json::to_value(run).unwrap_or_default())
        .await?;
    target
        .put_meta(COST_META_KEY, serde_json::Value::Object(costs))
        .await?;
    // No inputs record: the first run on OUT reads the inputs and seeds what no shard held
    // (nothing when every shard was merged), then finds every stored result.
    let snapshot = StatusSnapshot {
        pipeline: first.run.pipeline.clone(),
        stored_results: target.result_counts()?,
        ..StatusSnapshot::default()
    };
    if let Ok(v) = serde_json::to_value(&snapshot) {
        atk_state::write_status_snapshot(out, &v)?;
    }
    target.flush().await?;
    Ok(report)
}

/// Adds the numbers of `add` into `sum`, recursively (cost totals: counters, cost, retries).
fn add_json(sum: &mut serde_json::Value, add: &serde_json::Value) {
    match (sum, add) {
        (serde_json::Value::Object(s), serde_json::Value::Object(a)) => {
            for (k, v) in a {
                match s.get_mut(k) {
                    Some(existing) => add_json(existing, v),
                    None => {
                        s.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (s @ serde_json::Value::Number(_), serde_json::Value::Number(a)) => {
            *s = match (s.as_u64(), a.as_u64()) {
                (Some(x), Some(y)) => serde_json::Value::from(x + y),
                _ => serde_json::Value::from(s.as_f64().unwrap_or(0.0) + a.as_f64().unwrap_or(0.0)),
            };
        }
        _ => {}
    }
}

/// The first 12 characters of a fingerprint, for messages.
fn short(fingerprint: &str) -> String {
    fingerprint.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_totals_add_up_field_by_field() {
        let mut sum = serde_json::json!({});
        add_json(
            &mut sum,
            &serde_json::json!({"requests": 2, "cost_usd": 0.5, "retries": {"429": 1}}),
        );
        add_json(
            &mut sum,
            &serde_json::json!({"requests": 3, "cost_usd": 0.25, "retries": {"429": 2, "reset": 1}}),
        );
        assert_eq!(
            sum,
            serde_json::json!({"requests": 5, "cost_usd": 0.75, "retries": {"429": 3, "reset": 1}})
        );
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let err = merge(&[dir.path().to_path_buf()], &dir.path().join("out"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no atk store"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = merge(&[], &dir.path().join("out"), None).await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
