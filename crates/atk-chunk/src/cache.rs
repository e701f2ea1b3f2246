//! Per-file chunk cache: one JSON entry per (file bytes, chunk settings).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{Chunked, TextChunk};
use crate::ChunkConfig;

/// Bumped whenever the readers or the splitter change what they produce, so entries written
/// by an older atk-chunk are never served.
pub const CHUNKER_VERSION: u32 = 1;

/// What a cache entry holds for one file (no path: ids are computed on load).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key the entry was written under; a mismatch means a misplaced or damaged file.
    pub key: String,
    /// SHA-256 over the content below, checked on load.
    pub digest: String,
    /// The chunks and dropped-fragment count.
    pub chunked: Chunked,
    /// Warnings of the read, without the file name.
    pub warnings: Vec<String>,
}

/// The cache key of a file: SHA-256 of the chunk settings, the reader and the file bytes.
pub(crate) fn key(config: &ChunkConfig, extension: &str, bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    let settings = format!(
        "atk-chunk v{CHUNKER_VERSION}\0{}\0{}\0{}\0{extension}\0",
        config.tokenizer.name(),
        config.chunk_size,
        config.min_chars
    );
    h.update(settings.as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

fn digest(chunked: &Chunked, warnings: &[String]) -> String {
    let mut h = Sha256::new();
    let feed = |h: &mut Sha256, s: &[u8]| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    };
    for TextChunk { text, tokens, byte_start } in &chunked.chunks {
        feed(&mut h, text.as_bytes());
        feed(&mut h, format!("{tokens} {byte_start}").as_bytes());
    }
    feed(&mut h, chunked.dropped.to_string().as_bytes());
    for w in warnings {
        feed(&mut h, w.as_bytes());
    }
    hex::encode(h.finalize())
}

fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// The entry stored under `key`, if present and intact; a damaged entry is ignored.
pub(crate) fn load(dir: &Path, key: &str) -> Option<(Chunked, Vec<String>)> {
    let bytes = std::fs::read(entry_path(dir, key)).ok()?;
    let entry: Entry = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring unreadable chunk cache entry");
            return None;
        }
    };
    if entry.key != key || entry.digest != digest(&entry.chunked, &entry.warnings) {
        tracing::warn!(key, "ignoring damaged chunk cache entry");
        return None;
    }
    Some((entry.chunked, entry.warnings))
}

/// Writes the entry for `key` atomically (temporary file in `dir`, then rename).
pub(crate) fn store(dir: &Path, key: &str, chunked: &Chunked, warnings: &[String]) -> std::io::Result<()> {
    let entry = Entry {
        key: key.to_string(),
        digest: digest(chunked, warnings),
        chunked: chunked.clone(),
        warnings: warnings.to_vec(),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, &entry)?;
    tmp.flush()?;
    tmp.persist(entry_path(dir, key)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let chunked = Chunked {
            chunks: vec![TextChunk { text: "hello there".into(), tokens: 2, byte_start: 0 }],
            dropped: 1,
        };
        let cfg = ChunkConfig::new(100);
        let k = key(&cfg, "txt", b"hello there");
        assert_ne!(k, key(&ChunkConfig::new(101), "txt", b"hello there"), "size is in the key");
        assert_ne!(k, key(&cfg, "txt", b"hello there!"), "content is in the key");
        store(dir.path(), &k, &chunked, &["w".into()]).unwrap();
        assert_eq!(load(dir.path(), &k), Some((chunked.clone(), vec!["w".to_string()])));

        let path = entry_path(dir.path(), &k);
        let tampered = std::fs::read_to_string(&path).unwrap().replace("hello there", "hello THERE");
        std::fs::write(&path, tampered).unwrap();
        assert_eq!(load(dir.path(), &k), None, "edited entry fails its digest");
        std::fs::write(&path, b"{\"key\": trunc").unwrap();
        assert_eq!(load(dir.path(), &k), None, "truncated entry is ignored");
    }
}
