//! Chunk cache: one pack file per (input folder, chunk settings), holding one entry per file
//! content. Read once before the run, rewritten once (atomically) after it when anything changed.
//!
//! A pack rather than one file per entry: with thousands of small inputs, creating, writing
//! and renaming one temporary file per input cost more than chunking them (measured: see the
//! crate README, "Performance").

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ChunkConfig;
use crate::chunk::{Chunked, TextChunk};

/// Bumped whenever the readers or the splitter change what they produce, so entries written
/// by an older atk-chunk are never served.
pub const CHUNKER_VERSION: u32 = 1;

/// First line of a pack; a pack with any other first line is ignored whole.
const PACK_HEADER: &str = "atk-chunk pack 1";

/// What a cache entry holds for one file (no path: ids are computed on load).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key the entry was written under; a mismatch means a misplaced or damaged line.
    pub key: String,
    /// SHA-256 over the content below, checked on load.
    pub digest: String,
    /// The chunks and dropped-fragment count.
    pub chunked: Chunked,
    /// Warnings of the read, without the file name.
    pub warnings: Vec<String>,
}

/// Chunk settings and version as one string: part of every key and of the pack's name.
fn settings(config: &ChunkConfig) -> String {
    format!(
        "atk-chunk v{CHUNKER_VERSION}\0{}\0{}\0{}\0",
        config.tokenizer.name(),
        config.chunk_size,
        config.min_chars
    )
}

/// The cache key of a file: SHA-256 of the chunk settings, the reader and the file bytes.
pub(crate) fn key(config: &ChunkConfig, extension: &str, bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(settings(config).as_bytes());
    h.update(extension.as_bytes());
    h.update(b"\0");
    h.update(bytes);
    hex::encode(h.finalize())
}

fn digest(chunked: &Chunked, warnings: &[String]) -> String {
    let mut h = Sha256::new();
    let feed = |h: &mut Sha256, s: &[u8]| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    };
    for TextChunk {
        text,
        tokens,
        byte_start,
    } in &chunked.chunks
    {
        feed(&mut h, text.as_bytes());
        feed(&mut h, format!("{tokens} {byte_start}").as_bytes());
    }
    feed(&mut h, chunked.dropped.to_string().as_bytes());
    for w in warnings {
        feed(&mut h, w.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The JSON of the entry for `key` (one pack line, after the key and a tab).
pub(crate) fn entry_json(key: &str, chunked: &Chunked, warnings: &[String]) -> String {
    let entry = Entry {
        key: key.to_string(),
        digest: digest(chunked, warnings),
        chunked: chunked.clone(),
        warnings: warnings.to_vec(),
    };
    serde_json::to_string(&entry).expect("a cache entry always serializes")
}

/// A pack as read at the start of a run: key -> entry JSON, each checked only when used.
#[derive(Debug)]
pub(crate) struct Pack {
    path: PathBuf,
    entries: HashMap<String, String>,
    /// The file was missing or some line of it unusable: rewrite it even if every file hits.
    needs_write: bool,
}

impl Pack {
    /// The pack of `input_dir` under these settings in `cache_dir`; missing or unreadable
    /// packs and damaged lines yield no entries (the files are chunked again).
    pub(crate) fn open(cache_dir: &Path, input_dir: &Path, config: &ChunkConfig) -> Self {
        let input = std::fs::canonicalize(input_dir).unwrap_or_else(|_| input_dir.to_path_buf());
        let mut h = Sha256::new();
        h.update(settings(config).as_bytes());
        h.update(input.to_string_lossy().as_bytes());
        let name = format!("pack-{}.jsonl", &hex::encode(h.finalize())[..32]);
        let path = cache_dir.join(name);
        let mut pack = Self {
            path,
            entries: HashMap::new(),
            needs_write: true,
        };
        let text = match std::fs::read(&pack.path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    tracing::warn!(path = %pack.path.display(), "ignoring chunk cache pack that is not UTF-8");
                    return pack;
                }
            },
            Err(_) => return pack,
        };
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(PACK_HEADER) {
            tracing::warn!(path = %pack.path.display(), "ignoring chunk cache pack with an unknown header");
            return pack;
        }
        let mut damaged = 0usize;
        for line in lines {
            match line.split_once('\t') {
                Some((k, json)) if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    pack.entries.insert(k.to_string(), json.to_string());
                }
                _ => damaged += 1,
            }
        }
        if damaged > 0 {
            tracing::warn!(path = %pack.path.display(), damaged, "ignoring damaged chunk cache lines");
        }
        pack.needs_write = damaged > 0 || !text.ends_with('\n');
        pack
    }

    /// The entry stored under `key`, if present and intact (key and digest checked), with its
    /// JSON for rewriting the pack; a damaged entry is ignored.
    pub(crate) fn get(&self, key: &str) -> Option<(Chunked, Vec<String>, Cow<'_, str>)> {
        let json = self.entries.get(key)?;
        let entry: Entry = match serde_json::from_str(json) {
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
        Some((entry.chunked, entry.warnings, Cow::Borrowed(json.as_str())))
    }

    /// Rewrites the pack with exactly `entries` (key, JSON; duplicates written once) when
    /// they differ from what was read: temporary file in the cache folder, then rename, so a
    /// reader sees the old pack or the new one, never a partial one.
    pub(crate) fn save<'e>(
        &self,
        entries: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> std::io::Result<bool> {
        let mut seen = std::collections::HashSet::new();
        let mut body = String::new();
        let mut same = !self.needs_write;
        for (k, json) in entries {
            if !seen.insert(k) {
                continue;
            }
            same &= self.entries.get(k).is_some_and(|j| j == json);
            body.push_str(k);
            body.push('\t');
            body.push_str(json);
            body.push('\n');
        }
        if same && seen.len() == self.entries.len() {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(PACK_HEADER.as_bytes())?;
        tmp.write_all(b"\n")?;
        tmp.write_all(body.as_bytes())?;
        tmp.flush()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(true)
    }

    /// Number of entries read.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the pack lives.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(text: &str) -> Chunked {
        Chunked {
            chunks: vec![TextChunk {
                text: text.into(),
                tokens: 2,
                byte_start: 0,
            }],
            dropped: 1,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_never_served() {
        let cache = tempfile::tempdir().unwrap();
        let input = tempfile::tempdir().unwrap();
        let cfg = ChunkConfig::new(100);
        let k = key(&cfg, "txt", b"hello there");
        assert_ne!(
            k,
            key(&ChunkConfig::new(101), "txt", b"hello there"),
            "size is in the key"
        );
        assert_ne!(
            k,
            key(&cfg, "txt", b"hello there!"),
            "content is in the key"
        );
        assert_ne!(
            k,
            key(&cfg, "md", b"hello there"),
            "the reader is in the key"
        );

        let c = chunked("hello there");
        let json = entry_json(&k, &c, &["w".into()]);
        let pack = Pack::open(cache.path(), input.path(), &cfg);
        assert!(
            pack.save([(k.as_str(), json.as_str())]).unwrap(),
            "a new pack is written"
        );
        let pack = Pack::open(cache.path(), input.path(), &cfg);
        let (got, warnings, line) = pack.get(&k).unwrap();
        assert_eq!((got, warnings), (c.clone(), vec!["w".to_string()]));
        assert!(
            !pack.save([(k.as_str(), line.as_ref())]).unwrap(),
            "an unchanged pack is not rewritten"
        );
        assert_ne!(
            Pack::open(cache.path(), input.path(), &cfg.clone().with_min_chars(3)).path(),
            pack.path(),
            "other settings use another pack"
        );

        let path = pack.path().to_path_buf();
        let tampered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("hello there", "hello THERE");
        std::fs::write(&path, tampered).unwrap();
        assert!(
            Pack::open(cache.path(), input.path(), &cfg)
                .get(&k)
                .is_none(),
            "edited entry fails its digest"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let pack = Pack::open(cache.path(), input.path(), &cfg);
        assert!(pack.get(&k).is_none(), "truncated entry is ignored");
        std::fs::write(&path, b"\x00\xffgarbage").unwrap();
        let pack = Pack::open(cache.path(), input.path(), &cfg);
        assert!(pack.get(&k).is_none(), "garbage pack is ignored");
        assert!(
            pack.save([(k.as_str(), json.as_str())]).unwrap(),
            "and rewritten"
        );
        assert!(
            Pack::open(cache.path(), input.path(), &cfg)
                .get(&k)
                .is_some()
        );
    }
}
