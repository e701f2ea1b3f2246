//! Status snapshots: how a second process learns about a running run.
//!
//! sled has no read-only mode and its file lock is exclusive, so while a run holds the store
//! nobody else can open it (`atk status` gets [`Error::Locked`]). The run therefore writes a
//! small JSON snapshot beside its data now and then, and readers fall back to it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where the status snapshot of the store at `dir` lives.
pub fn status_snapshot_path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

/// Writes a status snapshot atomically (temp file + rename): readers see the old or the new
/// snapshot, never half of one.
pub fn write_status_snapshot(dir: &Path, status: &serde_json::Value) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io {
        path: dir.to_path_buf(),
        message: format!("writing the status snapshot: {e}"),
    };
    let path = status_snapshot_path(dir);
    let tmp = dir.join(format!("status.json.tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    serde_json::to_writer_pretty(&mut file, status).map_err(|e| io(e.into()))?;
    file.write_all(b"\n").map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Reads the status snapshot, if a run has written one.
pub fn read_status_snapshot(dir: &Path) -> Result<Option<serde_json::Value>, Error> {
    let path = status_snapshot_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                key: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: dir.to_path_buf(),
            message: format!("reading the status snapshot: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_status_snapshot(dir.path()).unwrap(), None);
        write_status_snapshot(dir.path(), &serde_json::json!({"done": 1})).unwrap();
        write_status_snapshot(dir.path(), &serde_json::json!({"done": 2})).unwrap();
        assert_eq!(
            read_status_snapshot(dir.path()).unwrap(),
            Some(serde_json::json!({"done": 2}))
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"], "no temp file left behind");
    }
}
