//! Which source document each dataset row came from, kept beside the dataset (a hidden
//! sidecar, [`crate::layout::row_sources_path`]: one JSON line per row, the document's path
//! relative to `input_dir`, or `null`) so that `atk export --test-fraction` can keep every
//! document in one split.
//!
//! A row is attributed to the item [`RunContext::final_items`](crate::RunContext::final_items)
//! yielded last before the row was written, the way pipelines write datasets (mapping each
//! final item to its rows as it comes). A writer whose next row comes with no new item since
//! its last row records `null` rather than guess.

use std::path::Path;
use std::sync::{Arc, Mutex};

use atk_state::{ItemRecord, Store};

/// Parent links followed to reach an item's root (deeper chains are not made by any step).
const MAX_DEPTH: usize = 64;

/// The source document of the final item yielded last, with a count of items yielded.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowSource(Arc<Mutex<(u64, Option<String>)>>);

impl RowSource {
    /// Records that `item` was just yielded: its root's `metadata` (the source document).
    pub(crate) fn set_from(&self, store: &dyn Store, item: &ItemRecord) {
        let source = source_of(store, item);
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cur.0 += 1;
        cur.1 = source;
    }

    fn current(&self) -> (u64, Option<String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The `metadata` field (the source document's path) of the root item `item` descends from.
fn source_of(store: &dyn Store, item: &ItemRecord) -> Option<String> {
    let mut parent = item.parent.clone();
    let mut fields = None;
    for _ in 0..MAX_DEPTH {
        let Some(id) = parent else { break };
        let record = store.item(&id).ok().flatten()?;
        parent = record.parent.clone();
        fields = Some(record.fields);
    }
    let fields = fields.as_ref().unwrap_or(&item.fields);
    fields
        .get("metadata")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// The sidecar of one dataset being written.
pub(crate) struct SourceLog {
    file: super::same::StagedLines,
    line: Vec<u8>,
    from: RowSource,
    /// The item count at this writer's last row.
    last: u64,
}

impl SourceLog {
    /// Starts the sidecar of the dataset staged at `dataset` and published at `target`
    /// (staged beside it, atomically, only where it differs from the published sidecar).
    pub(crate) fn create(dataset: &Path, target: &Path, from: RowSource) -> std::io::Result<Self> {
        Ok(Self {
            file: super::same::StagedLines::open(
                crate::layout::row_sources_path(dataset),
                crate::layout::row_sources_path(target),
            )?,
            line: Vec::new(),
            from,
            last: 0,
        })
    }

    /// Records the source of the row just written.
    pub(crate) fn record(&mut self) -> std::io::Result<()> {
        let (count, source) = self.from.current();
        let fresh = count != self.last;
        self.last = count;
        self.line.clear();
        serde_json::to_writer(&mut self.line, &source.filter(|_| fresh))
            .map_err(std::io::Error::other)?;
        self.line.push(b'\n');
        self.file.write_line(&self.line)
    }

    /// Stages the sidecar (unless it equals the published one).
    pub(crate) fn commit(self) -> std::io::Result<bool> {
        self.file.finish()
    }
}
