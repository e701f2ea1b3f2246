//! Fingerprints of an input folder: decide, without reading a file, whether a folder is as it
//! was when it was last chunked.

use std::path::Path;
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::dir::list_files;
use crate::{ChunkConfig, Error};

/// What [`fingerprint_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputsFingerprint {
    /// SHA-256 (hex) over the chunk settings and every file's relative path, size and
    /// modification time: equal fingerprints mean the chunks would come out the same.
    pub fingerprint: String,
    /// SHA-256 (hex) over the chunk settings and every file's relative path and size, without
    /// times: the same on two machines holding copies of the same inputs.
    pub shape: String,
    /// Files found.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Fingerprints the files [`crate::read_dir`] would read under `input_dir` with `config`, from
/// their metadata alone (no file is opened). A file rewritten with the same size within the
/// file system's time resolution goes unnoticed; touch it, or change a setting, to force a
/// fresh read.
pub fn fingerprint_dir(input_dir: &Path, config: &ChunkConfig) -> Result<InputsFingerprint, Error> {
    let files = list_files(input_dir, config)?;
    let settings = format!(
        "atk-chunk v{}\0{}\0{}\0{}\0{:?}\0",
        crate::CHUNKER_VERSION,
        config.tokenizer.name(),
        config.chunk_size,
        config.min_chars,
        config
            .subset
            .map(|s| (s.size, s.seed, s.spread_across_files))
    );
    let mut full = Sha256::new();
    let mut shape = Sha256::new();
    full.update(settings.as_bytes());
    shape.update(settings.as_bytes());
    let mut bytes = 0u64;
    // One stat per file, spread over the rayon pool (a rerun over 100 k files waits on it).
    let stats: Vec<(u64, u128)> = files
        .par_iter()
        .map(|(path, _)| {
            let meta = std::fs::metadata(path).ok();
            let len = meta.as_ref().map_or(u64::MAX, std::fs::Metadata::len);
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            (len, mtime)
        })
        .collect();
    for ((_, rel), (len, mtime)) in files.iter().zip(stats) {
        bytes = bytes.saturating_add(len);
        let line = format!("{rel}\0{len}\0");
        shape.update(line.as_bytes());
        full.update(line.as_bytes());
        full.update(format!("{mtime}\n").as_bytes());
    }
    Ok(InputsFingerprint {
        fingerprint: hex::encode(full.finalize()),
        shape: hex::encode(shape.finalize()),
        files: files.len(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_files_and_settings_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "alpha").unwrap();
        let cfg = ChunkConfig::new(100);
        let one = fingerprint_dir(dir.path(), &cfg).unwrap();
        assert_eq!(one, fingerprint_dir(dir.path(), &cfg).unwrap());
        assert_eq!((one.files, one.bytes), (1, 5));
        assert_ne!(
            one.fingerprint,
            fingerprint_dir(dir.path(), &ChunkConfig::new(101))
                .unwrap()
                .fingerprint
        );
        std::fs::write(dir.path().join("b.txt"), "beta").unwrap();
        let two = fingerprint_dir(dir.path(), &cfg).unwrap();
        assert_ne!(one.fingerprint, two.fingerprint);
        assert_ne!(one.shape, two.shape);
        std::fs::write(dir.path().join("b.txt"), "BETA!").unwrap();
        assert_ne!(
            two.shape,
            fingerprint_dir(dir.path(), &cfg).unwrap().shape,
            "a size change shows"
        );
        assert!(fingerprint_dir(&dir.path().join("missing"), &cfg).is_err());
    }
}
