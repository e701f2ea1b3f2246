//! A JSONL dataset file written atomically (atomic-write-file: a temp file beside the
//! target, fsynced and renamed over it, then the folder fsynced) only when every line is
//! written. A crash leaves either the old file or the new one, never half of one.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;
use serde::Serialize;

use crate::Error;

/// A dataset file being written; nothing is visible at `path` until [`JsonlFile::commit`].
pub struct JsonlFile {
    path: PathBuf,
    out: BufWriter<AtomicWriteFile>,
    lines: u64,
}

impl JsonlFile {
    /// Starts writing `path` (through a temp file in the same directory).
    pub fn create(path: &Path) -> Result<Self, Error> {
        let tmp = AtomicWriteFile::open(path).map_err(|source| io(path, source))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(tmp),
            lines: 0,
        })
    }

    /// Appends one JSON line.
    pub fn write<T: Serialize>(&mut self, line: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(|e| io(&self.path, std::io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(|e| io(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }

    /// Syncs the temp file and renames it over the target; returns the line count.
    pub fn commit(self) -> Result<u64, Error> {
        let Self { path, out, lines } = self;
        let file = out.into_inner().map_err(|e| io(&path, e.into_error()))?;
        file.commit().map_err(|e| io(&path, e))?;
        Ok(lines)
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_visible_before_commit_and_no_temp_is_left_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut file = JsonlFile::create(&path).unwrap();
        file.write(&serde_json::json!({"text": "new"})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(file.commit().unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"text\":\"new\"}\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.jsonl")]);
    }

    #[test]
    fn a_dropped_writer_leaves_the_old_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut file = JsonlFile::create(&path).unwrap();
        file.write(&"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
