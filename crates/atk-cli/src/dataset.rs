//! Dataset files: JSON lines written atomically (temp file, fsync, rename), streamed row by
//! row, and the shapes most pipelines write (ShareGPT, OpenAI messages, plain JSONL).

mod check;
mod same;
mod sources;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atomic_write_file::AtomicWriteFile;
use serde::Serialize;

pub use atk_metadatagen::{Conversation, Turn};

use crate::RunError;

pub(crate) use same::{same_bytes, write_text_if_changed};
pub(crate) use sources::RowSource;

/// Datasets written in this run, in the order they were finished, and the rows left out.
pub(crate) type Written = Arc<Mutex<WrittenSet>>;

/// What [`Written`] holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrittenSet {
    /// Staged path and line count of each dataset.
    pub(crate) files: Vec<(PathBuf, u64)>,
    /// Rows not written because they were not valid for their format: staged path of the
    /// dataset, reason, count.
    pub(crate) dropped: Vec<(PathBuf, String, u64)>,
}

/// One dataset file being written, row by row, from [`RunContext::dataset`](crate::RunContext::dataset).
/// Nothing appears at its path until [`finish`](Self::finish): a run that fails half-way
/// leaves the previous file whole. Memory stays flat however many rows go through.
///
/// Rows are compared with the published file as they come and nothing is staged while they
/// match it (`same.rs`): a rerun whose dataset did not change writes nothing and leaves the
/// file as it was (same inode, same mtime).
pub struct DatasetWriter {
    file: same::StagedLines,
    path: PathBuf,
    written: Written,
    /// The row being written (reused).
    line: Vec<u8>,
    /// The rows' source documents (for `atk export --test-fraction`).
    sources: Option<sources::SourceLog>,
    /// Rows dropped by the format check, by reason.
    dropped: BTreeMap<String, u64>,
}

impl std::fmt::Debug for DatasetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DatasetWriter {
    /// A writer staging at `path` the dataset published at `target`.
    pub(crate) fn create(
        path: PathBuf,
        target: PathBuf,
        written: Written,
        source: Option<RowSource>,
    ) -> Result<Self, RunError> {
        let fail = |e: std::io::Error| write_error(&path, &e);
        let file = same::StagedLines::open(path.clone(), target.clone()).map_err(fail)?;
        let sources = source
            .map(|s| sources::SourceLog::create(&path, &target, s))
            .transpose()
            .map_err(fail)?;
        Ok(Self {
            file,
            path,
            written,
            line: Vec::new(),
            sources,
            dropped: BTreeMap::new(),
        })
    }

    /// Appends one row as a JSON line. A ShareGPT or OpenAI messages row is checked first: a
    /// trailing user turn is cut off, and a row whose turns trainers would reject (no user turn
    /// first, turns not alternating, no reply) is left out and counted with its reason in the
    /// summary and the card.
    pub fn write(&mut self, row: &impl Serialize) -> Result<(), RunError> {
        let fail = |e: &dyn std::fmt::Display| {
            RunError::fatal(format!("writing {}: {e}", self.path.display()))
        };
        let value = serde_json::to_value(row).map_err(|e| fail(&e))?;
        let value = match check::check_row(&value) {
            check::Checked::Valid => value,
            check::Checked::Fixed(fixed) => fixed,
            check::Checked::Invalid(reason) => {
                *self.dropped.entry(reason).or_default() += 1;
                return Ok(());
            }
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &value).map_err(|e| fail(&e))?;
        self.line.push(b'\n');
        self.file.write_line(&self.line).map_err(|e| fail(&e))?;
        if let Some(sources) = &mut self.sources {
            sources.record().map_err(|e| fail(&e))?;
        }
        Ok(())
    }

    /// Appends a conversation as a ShareGPT line: `{"conversations": [{"from", "value"}]}`.
    pub fn write_sharegpt(&mut self, conversation: &Conversation) -> Result<(), RunError> {
        self.write(conversation)
    }

    /// Appends a conversation as an OpenAI messages line: `{"messages": [{"role", "content"}]}`.
    pub fn write_openai(&mut self, conversation: &Conversation) -> Result<(), RunError> {
        self.write(&conversation.to_openai_messages())
    }

    /// Syncs and renames the file into place in the run's staging folder; the run's summary
    /// and dataset card list it, and the runner publishes it when the run completes. Returns
    /// its staged path (where nothing is when the rows equal the published file's: then there
    /// is nothing to publish).
    pub fn finish(self) -> Result<PathBuf, RunError> {
        let Self {
            file,
            path,
            written,
            sources,
            dropped,
            ..
        } = self;
        let fail = |e: std::io::Error| write_error(&path, &e);
        let lines = file.lines();
        file.finish().map_err(fail)?;
        if let Some(sources) = sources {
            sources.commit().map_err(fail)?;
        }
        let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
        written.files.push((path.clone(), lines));
        for (reason, n) in dropped {
            written.dropped.push((path.clone(), reason, n));
        }
        Ok(path)
    }
}

fn write_error(path: &Path, e: &std::io::Error) -> RunError {
    RunError::fatal(format!("writing {}: {e}", path.display()))
}

/// Writes `lines` (one JSON document each, without the newline) to `path` atomically (temp
/// file, fsync, rename, fsync of the folder): a reader sees the old file or the new one,
/// never half of one. Returns the number of lines.
pub(crate) fn write_jsonl_atomic<I, S>(path: &Path, lines: I) -> std::io::Result<u64>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Dropped before `commit` (an error), the temp file is removed and the old file stays.
    let mut out = std::io::BufWriter::new(AtomicWriteFile::open(path)?);
    let mut n = 0u64;
    for line in lines {
        out.write_all(line.as_ref().as_bytes())?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.commit()?;
    Ok(n)
}

/// A two-turn ShareGPT conversation: `human` asks, `gpt` answers.
pub fn sharegpt_pair(human: impl Into<String>, gpt: impl Into<String>) -> Conversation {
    Conversation {
        conversations: vec![Turn::new("human", human), Turn::new("gpt", gpt)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes ShareGPT conversations to `path` atomically, one `{"conversations": [...]}` per
    /// line, in the order given. Returns the number of lines.
    fn write_sharegpt<I>(path: &Path, conversations: I) -> std::io::Result<u64>
    where
        I: IntoIterator<Item = Conversation>,
    {
        let lines = conversations
            .into_iter()
            .map(|c| serde_json::to_string(&c).unwrap_or_default());
        write_jsonl_atomic(path, lines)
    }

    #[test]
    fn writes_lines_atomically_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharegpt_format.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let n = write_sharegpt(
            &path,
            [
                sharegpt_pair("a poem about tides?", "<poem>"),
                sharegpt_pair("q", "a"),
            ],
        )
        .unwrap();
        assert_eq!(n, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"conversations":[{"from":"human","value":"a poem about tides?"},{"from":"gpt","value":"<poem>"}]}"#
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
