//! Which source document each dataset row came from, kept beside the dataset (a hidden
//! sidecar, [`crate::layout::row_sources_path`]: one JSON line per row, the document's path
//! relative to `input_dir`, or `null`) so that `atk export --test-fraction` can keep every
//! document in one split; and which item (a second sidecar,
//! [`crate::layout::row_items_path`]: the final item's id, or `null`), so that the
//! interface's review marks follow their item across reruns.
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

/// The final item yielded last: a count of items yielded, its source document and its id.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowSource(Arc<Mutex<Current>>);

/// What [`RowSource`] holds.
#[derive(Debug, Clone, Default)]
struct Current {
    count: u64,
    source: Option<String>,
    item: Option<String>,
}

impl RowSource {
    /// Records that `item` was just yielded: its root's `metadata` (the source document) and
    /// its id.
    pub(crate) fn set_from(&self, store: &dyn Store, item: &ItemRecord) {
        let source = source_of(store, item);
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cur.count += 1;
        cur.source = source;
        cur.item = Some(item.id.clone());
    }

    fn current(&self) -> Current {
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

/// The sidecars of one dataset being written: each row's source document and item id.
pub(crate) struct SourceLog {
    file: super::same::StagedLines,
    items: super::same::StagedLines,
    line: Vec<u8>,
    from: RowSource,
    /// The item count at this writer's last row.
    last: u64,
}

impl SourceLog {
    /// Starts the sidecars of the dataset staged at `dataset` and published at `target`
    /// (staged beside it, atomically, each only where it differs from the published one).
    pub(crate) fn create(dataset: &Path, target: &Path, from: RowSource) -> std::io::Result<Self> {
        use crate::layout::{row_items_path, row_sources_path};
        Ok(Self {
            file: super::same::StagedLines::open(
                row_sources_path(dataset),
                row_sources_path(target),
            )?,
            items: super::same::StagedLines::open(row_items_path(dataset), row_items_path(target))?,
            line: Vec::new(),
            from,
            last: 0,
        })
    }

    /// Records the source and item of the row just written.
    pub(crate) fn record(&mut self) -> std::io::Result<()> {
        let cur = self.from.current();
        let fresh = cur.count != self.last;
        self.last = cur.count;
        Self::write(
            &mut self.line,
            &mut self.file,
            &cur.source.filter(|_| fresh),
        )?;
        Self::write(&mut self.line, &mut self.items, &cur.item.filter(|_| fresh))
    }

    fn write(
        line: &mut Vec<u8>,
        to: &mut super::same::StagedLines,
        value: &Option<String>,
    ) -> std::io::Result<()> {
        line.clear();
        serde_json::to_writer(&mut *line, value).map_err(std::io::Error::other)?;
        line.push(b'\n');
        to.write_line(line)
    }

    /// Stages the sidecars (each unless it equals the published one); whether either was.
    pub(crate) fn commit(self) -> std::io::Result<bool> {
        let items = self.items.finish()?;
        Ok(self.file.finish()? | items)
    }
}
