//! Chunk cache: one pack file per (input folder, chunk settings), holding one entry per file
//! content. Read once before the run, rewritten once (atomically) after it when anything changed.
//!
//! A pack rather than one file per entry: with thousands of small inputs, creating, writing
//! and renaming one temporary file per input cost more than chunking them (measured: see the
//! crate README, "Performance").

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;
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

/// The file name of the pack of `input_dir` under `config`'s chunk settings, inside the
/// cache folder: what a chunk cache holds for the current inputs (other packs in the folder
/// are of other folders or settings, and may be collected).
pub fn pack_name(input_dir: &Path, config: &ChunkConfig) -> String {
    let input = std::fs::canonicalize(input_dir).unwrap_or_else(|_| input_dir.to_path_buf());
    let mut h = Sha256::new();
    h.update(settings(config).as_bytes());
    h.update(input.to_string_lossy().as_bytes());
    format!("pack-{}.jsonl", &hex::encode(h.finalize())[..32])
}

/// A pack as found at the start of a run: an index of its entries (key -> where the entry's
/// JSON lies in the file), each entry read and checked only when used. Only the index is held
/// in memory (about 48 bytes an entry), never the entries themselves.
#[derive(Debug)]
pub(crate) struct Pack {
    path: PathBuf,
    /// The pack file, read at the offsets of the index.
    file: Option<std::sync::Mutex<std::fs::File>>,
    /// `(key, offset of the JSON, its length)`, sorted by key.
    index: Vec<([u8; 32], u64, u32)>,
    /// The file was missing or some line of it unusable: rewrite it even if every file hits.
    needs_write: bool,
}

/// A key's 32 bytes, from its 64 hex digits.
fn key_bytes(key: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(key, &mut out).ok()?;
    Some(out)
}

impl Pack {
    /// The pack of `input_dir` under these settings in `cache_dir`; missing or unreadable
    /// packs and damaged lines yield no entries (the files are chunked again).
    pub(crate) fn open(cache_dir: &Path, input_dir: &Path, config: &ChunkConfig) -> Self {
        use std::io::{BufRead, BufReader};
        let path = cache_dir.join(pack_name(input_dir, config));
        let mut pack = Self {
            path,
            file: None,
            index: Vec::new(),
            needs_write: true,
        };
        let Ok(file) = std::fs::File::open(&pack.path) else {
            return pack;
        };
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut damaged = 0usize;
        let mut complete = true;
        let mut first = true;
        loop {
            line.clear();
            let n = match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    damaged += 1;
                    break;
                }
            };
            let start = offset;
            offset += n as u64;
            complete = line.ends_with(b"\n");
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            if first {
                first = false;
                if body != PACK_HEADER.as_bytes() {
                    tracing::warn!(path = %pack.path.display(), "ignoring chunk cache pack with an unknown header");
                    return pack;
                }
                continue;
            }
            match body.get(..65) {
                Some([k @ .., b'\t']) if k.len() == 64 => {
                    match std::str::from_utf8(k).ok().and_then(key_bytes) {
                        Some(key) => pack.index.push((
                            key,
                            start + 65,
                            u32::try_from(body.len() - 65).unwrap_or(u32::MAX),
                        )),
                        None => damaged += 1,
                    }
                }
                _ => damaged += 1,
            }
        }
        if damaged > 0 {
            tracing::warn!(path = %pack.path.display(), damaged, "ignoring damaged chunk cache lines");
        }
        pack.index.sort_unstable_by_key(|e| e.0);
        pack.needs_write = damaged > 0 || !complete || first;
        pack.file = Some(std::sync::Mutex::new(file));
        pack
    }

    /// The JSON stored under `key`, read from the file.
    fn read_json(&self, key: &str) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let key = key_bytes(key)?;
        let at = self.index.binary_search_by(|e| e.0.cmp(&key)).ok()?;
        let (_, offset, len) = self.index[at];
        let mut buf = vec![0u8; len as usize];
        let mut file = self
            .file
            .as_ref()?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut buf).ok()?;
        drop(file);
        String::from_utf8(buf).ok()
    }

    /// The entry stored under `key`, if present and intact (key and digest checked), with its
    /// JSON for rewriting the pack; a damaged entry is ignored.
    pub(crate) fn get(&self, key: &str) -> Option<(Chunked, Vec<String>, Cow<'static, str>)> {
        let json = self.read_json(key)?;
        let entry: Entry = match serde_json::from_str(&json) {
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
        Some((entry.chunked, entry.warnings, Cow::Owned(json)))
    }

    /// Starts the pack's replacement: entries are written to a temporary file in the cache
    /// folder as they come, and [`PackWriter::finish`] renames it over the pack only when it
    /// differs from what was read (a reader sees the old pack or the new one, never a part).
    pub(crate) fn writer(&self) -> std::io::Result<PackWriter> {
        let mut tmp = std::io::BufWriter::new(AtomicWriteFile::open(&self.path)?);
        tmp.write_all(PACK_HEADER.as_bytes())?;
        tmp.write_all(b"\n")?;
        Ok(PackWriter {
            out: tmp,
            written: 0,
            changed: self.needs_write,
            old_len: self.index.len(),
        })
    }

    /// Rewrites the pack with exactly `entries` (key, JSON) when they differ from what was
    /// read. Returns whether it was written.
    #[cfg(test)]
    pub(crate) fn save<'e>(
        &self,
        entries: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> std::io::Result<bool> {
        let mut w = self.writer()?;
        for (k, json) in entries {
            let same = self.read_json(k).is_some_and(|j| j == json);
            w.add(k, json, same)?;
        }
        w.finish()
    }

    /// Number of entries read.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Where the pack lives.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A pack being written entry by entry (see [`Pack::writer`]).
pub(crate) struct PackWriter {
    out: std::io::BufWriter<AtomicWriteFile>,
    written: usize,
    changed: bool,
    old_len: usize,
}

impl PackWriter {
    /// Appends an entry; `unchanged` when it is the old pack's entry served as is.
    pub(crate) fn add(&mut self, key: &str, json: &str, unchanged: bool) -> std::io::Result<()> {
        self.changed |= !unchanged;
        self.written += 1;
        self.out.write_all(key.as_bytes())?;
        self.out.write_all(b"\t")?;
        self.out.write_all(json.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Puts the new pack in place when it differs from the old one (an entry changed, or the
    /// number of entries did: an input gone drops its entry); else discards it. Returns
    /// whether the pack was replaced.
    pub(crate) fn finish(self) -> std::io::Result<bool> {
        if !self.changed && self.written == self.old_len {
            return Ok(false);
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.commit()?;
        Ok(true)
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
