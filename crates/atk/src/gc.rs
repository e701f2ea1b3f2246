//! `atk gc OUTPUT_DIR`: frees what an output dir no longer needs: the stored results and
//! failures of retired items (their input is gone), and chunk-cache packs no current input
//! uses (other folders or settings, and temporary files of interrupted writes).

use std::path::{Path, PathBuf};

use atk_state::{SledStore, Store};

use atk_cli::layout::{INPUTS_META_KEY, InputsMeta, store_dir};
use atk_cli::status::StatusSnapshot;

/// Why `atk gc` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum GcError {
    /// No store in the directory.
    #[error("no atk store in {} (is it a run's output_dir?)", .0.display())]
    NoStore(PathBuf),
    /// Reading or writing the store failed (a run holding it included).
    #[error(transparent)]
    Store(#[from] atk_state::Error),
}

impl GcError {
    /// Exit code: 2 when the directory is not usable (no store, a run holds it), else 1.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::NoStore(_)
            | Self::Store(
                atk_state::Error::Locked { .. } | atk_state::Error::Incompatible { .. },
            ) => 2,
            Self::Store(_) => 1,
        }
    }
}

/// What `atk gc` freed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GcReport {
    /// Results of retired items removed.
    pub results: u64,
    /// Failures of retired items removed.
    pub failures: u64,
    /// Bytes of those records.
    pub record_bytes: u64,
    /// Chunk-cache files removed.
    pub cache_files: Vec<PathBuf>,
    /// Their bytes.
    pub cache_bytes: u64,
}

impl GcReport {
    /// One line for the terminal.
    pub(crate) fn render(&self) -> String {
        format!(
            "freed {:.1} MB: {} results and {} failures of retired items ({:.1} MB of records; sled \
             returns the disk space as it rewrites its files), {} unused chunk-cache files ({:.1} MB)",
            (self.record_bytes + self.cache_bytes) as f64 / 1e6,
            self.results,
            self.failures,
            self.record_bytes as f64 / 1e6,
            self.cache_files.len(),
            self.cache_bytes as f64 / 1e6,
        )
    }
}

/// Collects the garbage of the run in `output_dir` (no run may hold it).
pub(crate) async fn gc(output_dir: &Path) -> Result<GcReport, GcError> {
    let store = match SledStore::try_open_read(&store_dir(output_dir)) {
        Ok(s) => s,
        Err(atk_state::Error::NotFound { .. }) => {
            return Err(GcError::NoStore(output_dir.to_path_buf()));
        }
        Err(e) => return Err(e.into()),
    };
    let collected = store.collect_garbage().await?;
    let mut report = GcReport {
        results: collected.results,
        failures: collected.failures,
        record_bytes: collected.bytes,
        ..GcReport::default()
    };
    if collected.results > 0 {
        // The counts kept outside sled follow, or the next run would call the store damaged.
        if let Ok(mut snapshot) = StatusSnapshot::read(output_dir) {
            snapshot.stored_results = store.result_counts()?;
            if let Ok(v) = serde_json::to_value(&snapshot) {
                atk_state::write_status_snapshot(output_dir, &v)?;
            }
        }
    }
    let pack = store
        .meta(INPUTS_META_KEY)?
        .and_then(|v| serde_json::from_value::<InputsMeta>(v).ok())
        .and_then(|m| m.chunk_pack);
    if let Some(pack) = pack
        && let Some(cache_dir) = pack.parent()
        && let Ok(entries) = std::fs::read_dir(cache_dir)
    {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Packs of other folders or settings, and temporary files of interrupted writes.
            let unused = (name.starts_with("pack-") && name.ends_with(".jsonl") && path != pack)
                || name.starts_with(".tmp");
            if unused && entry.file_type().is_ok_and(|t| t.is_file()) {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(&path).is_ok() {
                    report.cache_bytes += bytes;
                    report.cache_files.push(path);
                }
            }
        }
    }
    store.flush().await?;
    Ok(report)
}
