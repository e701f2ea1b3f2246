//! Status snapshots: how a second process learns about a running run.
//!
//! sled has no read-only mode and its file lock is exclusive, so while a run holds the store
//! nobody else can open it (`atk status` gets [`Error::Locked`]). The run therefore writes a
//! small JSON snapshot beside its data now and then, and readers fall back to it.

use std::io::Write;
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;

use crate::Error;

/// Where the status snapshot of the store at `dir` lives.
pub fn status_snapshot_path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

/// Writes a status snapshot atomically (temp file, fsync, rename): readers see the old or the
/// new snapshot, never half of one.
pub fn write_status_snapshot(dir: &Path, status: &serde_json::Value) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io {
        path: dir.to_path_buf(),
        message: format!("writing the status snapshot: {e}"),
    };
    let mut bytes = serde_json::to_vec_pretty(status).map_err(|e| io(e.into()))?;
    bytes.push(b'\n');
    let mut file = AtomicWriteFile::open(status_snapshot_path(dir)).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.commit().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let read = || {
            std::fs::read(status_snapshot_path(dir.path()))
                .ok()
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        assert_eq!(read(), None);
        write_status_snapshot(dir.path(), &serde_json::json!({"done": 1})).unwrap();
        write_status_snapshot(dir.path(), &serde_json::json!({"done": 2})).unwrap();
        assert_eq!(read(), Some(serde_json::json!({"done": 2})));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"], "no temp file left behind");
    }
}
