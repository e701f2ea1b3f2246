//! The corpus: every chunk a run's inputs give (what an unsharded run seeds, after
//! `use_subset`), read-only, by id, by document and by position, the same on every shard.
//!
//! [`Corpus`] is the trait steps read (through their step context) and pipeline code reads
//! (through the run context); [`CorpusIndex`] is the on-disk implementation the runner builds
//! while seeding (one redb file in the output dir: texts stay on disk, only what a lookup asks
//! for is read); [`MemCorpus`] holds a few chunks in memory (tests, dry runs). [`ItemRng`] is
//! the deterministic random source a step draws from, and
//! [`Corpus::sample_other_docs`] picks chunks of *other* documents with it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};

/// position → (id, document).
const BY_POS: TableDefinition<'static, u64, (&'static str, &'static str)> =
    TableDefinition::new("by_pos");
/// id → (position, document, text).
const BY_ID: TableDefinition<'static, &'static str, (u64, &'static str, &'static str)> =
    TableDefinition::new("by_id");
/// (document, position) → id.
const BY_DOC: TableDefinition<'static, (&'static str, u64), &'static str> =
    TableDefinition::new("by_doc");
/// "fingerprint" → what the index was built from.
const META: TableDefinition<'static, &'static str, &'static str> = TableDefinition::new("meta");

/// Why a corpus lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// The index file could not be opened, read or written.
    #[error("corpus index {path}: {message}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The run has no corpus (its pipeline brings its own items, or none was built).
    #[error(
        "this run has no corpus: only a pipeline reading input_dir (read_files_manually on) whose `reads_corpus()` is true has one"
    )]
    Missing,
}

/// One chunk of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusChunk {
    /// The chunk's id (its item id).
    pub id: String,
    /// Its source document (the input path relative to `input_dir`: the item's `metadata`).
    pub doc: String,
    /// Its text.
    pub text: String,
    /// Its place in item order (0-based, over the whole corpus).
    pub pos: u64,
}

/// The whole input, read-only: every chunk by id, by document and by position (item order).
/// The same on every shard of a `--shard I/N` run.
pub trait Corpus: Send + Sync + std::fmt::Debug {
    /// How many chunks there are.
    fn len(&self) -> u64;
    /// True when there is no chunk.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The chunk with this id.
    fn chunk(&self, id: &str) -> Result<Option<CorpusChunk>, CorpusError>;
    /// The id and document of the chunk at `pos` in item order (no text read).
    fn entry(&self, pos: u64) -> Result<Option<(String, String)>, CorpusError>;
    /// The ids of a document's chunks, in item order.
    fn chunks_of(&self, doc: &str) -> Result<Vec<String>, CorpusError>;

    /// Up to `n` distinct chunks of documents other than `doc`, drawn with `rng` (the same
    /// draws give the same chunks), only among `allowed` ids when given, in the order drawn.
    /// Fewer than `n` only when fewer such chunks exist.
    fn sample_other_docs(
        &self,
        doc: &str,
        n: usize,
        rng: &mut ItemRng,
        allowed: Option<&HashSet<String>>,
    ) -> Result<Vec<CorpusChunk>, CorpusError> {
        let len = self.len();
        let mut picked: Vec<u64> = Vec::new();
        let fits = |pos: u64, picked: &[u64]| -> Result<bool, CorpusError> {
            if picked.contains(&pos) {
                return Ok(false);
            }
            Ok(match self.entry(pos)? {
                Some((id, d)) => d != doc && allowed.is_none_or(|a| a.contains(&id)),
                None => false,
            })
        };
        // Random positions first (cheap when most chunks qualify), then one pass from a random
        // start: a bounded number of lookups, and every qualifying chunk found if few exist.
        for _ in 0..n.saturating_mul(16) {
            if picked.len() == n || len == 0 {
                break;
            }
            let pos = rng.below(len);
            if fits(pos, &picked)? {
                picked.push(pos);
            }
        }
        if picked.len() < n && len > 0 {
            let start = rng.below(len);
            for k in 0..len {
                if picked.len() == n {
                    break;
                }
                let pos = (start + k) % len;
                if fits(pos, &picked)? {
                    picked.push(pos);
                }
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for pos in picked {
            if let Some((id, _)) = self.entry(pos)?
                && let Some(chunk) = self.chunk(&id)?
            {
                out.push(chunk);
            }
        }
        Ok(out)
    }
}

/// A deterministic random source for one item: seeded from the run's `seed`, the item's id and
/// a salt (so two uses on one item draw differently), the same on every run, shard and
/// platform. Hand-written (SplitMix64) because its output must never change with a
/// dependency's version: `rand`'s generators do not promise value stability across releases.
#[derive(Debug, Clone)]
pub struct ItemRng(u64);

impl ItemRng {
    /// The source for `item_id` under run seed `seed` and `salt`.
    pub fn new(seed: u64, item_id: &str, salt: &str) -> Self {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(item_id.as_bytes());
        h.update([0]);
        h.update(salt.as_bytes());
        let d = h.finalize();
        Self(u64::from_le_bytes(d[..8].try_into().expect("8 bytes")))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; 0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: no modulo bias worth the name for corpus-sized n.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A corpus held in memory (tests, dry runs over a sample).
#[derive(Debug, Clone, Default)]
pub struct MemCorpus {
    chunks: Vec<CorpusChunk>,
    by_id: std::collections::HashMap<String, usize>,
}

impl MemCorpus {
    /// A corpus of `(id, document, text)` in item order.
    pub fn new<I, S>(chunks: I) -> Self
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: Into<String>,
    {
        let mut corpus = Self::default();
        for (id, doc, text) in chunks {
            corpus.push(id.into(), doc.into(), text.into());
        }
        corpus
    }

    /// Appends a chunk (a second one with the same id is ignored).
    pub fn push(&mut self, id: String, doc: String, text: String) {
        if self.by_id.contains_key(&id) {
            return;
        }
        let pos = self.chunks.len() as u64;
        self.by_id.insert(id.clone(), self.chunks.len());
        self.chunks.push(CorpusChunk { id, doc, text, pos });
    }
}

impl Corpus for MemCorpus {
    fn len(&self) -> u64 {
        self.chunks.len() as u64
    }
    fn chunk(&self, id: &str) -> Result<Option<CorpusChunk>, CorpusError> {
        Ok(self.by_id.get(id).map(|&i| self.chunks[i].clone()))
    }
    fn entry(&self, pos: u64) -> Result<Option<(String, String)>, CorpusError> {
        Ok(usize::try_from(pos)
            .ok()
            .and_then(|p| self.chunks.get(p))
            .map(|c| (c.id.clone(), c.doc.clone())))
    }
    fn chunks_of(&self, doc: &str) -> Result<Vec<String>, CorpusError> {
        Ok(self
            .chunks
            .iter()
            .filter(|c| c.doc == doc)
            .map(|c| c.id.clone())
            .collect())
    }
}

/// The on-disk corpus: one redb file holding every chunk by id, by position and by document.
/// Built by [`CorpusIndexBuilder`] into a temporary file and moved into place only when whole,
/// so an index found is complete; its `fingerprint` says what inputs it was built from.
pub struct CorpusIndex {
    path: PathBuf,
    /// Shared with the thread putting a just-built index in place
    /// ([`CorpusIndexBuilder::finish_in_background`]).
    db: std::sync::Arc<Database>,
    len: u64,
}

impl std::fmt::Debug for CorpusIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusIndex")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

fn index_err(path: &Path, e: impl std::fmt::Display) -> CorpusError {
    CorpusError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl CorpusIndex {
    /// Opens a complete index; `Ok(None)` when there is none at `path`.
    pub fn open(path: &Path) -> Result<Option<Self>, CorpusError> {
        if !path.exists() {
            return Ok(None);
        }
        let db = Database::builder()
            .set_cache_size(CORPUS_CACHE)
            .open(path)
            .map_err(|e| index_err(path, e))?;
        let len = {
            let txn = db.begin_read().map_err(|e| index_err(path, e))?;
            let table = txn.open_table(BY_POS).map_err(|e| index_err(path, e))?;
            table.len().map_err(|e| index_err(path, e))?
        };
        Ok(Some(Self {
            path: path.to_path_buf(),
            db: std::sync::Arc::new(db),
            len,
        }))
    }

    /// What the index was built from (the builder's `fingerprint`).
    pub fn fingerprint(&self) -> Result<Option<String>, CorpusError> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| index_err(p, e))?;
        let table = txn.open_table(META).map_err(|e| index_err(p, e))?;
        Ok(table
            .get("fingerprint")
            .map_err(|e| index_err(p, e))?
            .map(|v| v.value().to_string()))
    }

    /// Reads the fingerprint of the index at `path` without keeping it open.
    pub fn fingerprint_at(path: &Path) -> Option<String> {
        Self::open(path)
            .ok()
            .flatten()?
            .fingerprint()
            .ok()
            .flatten()
    }
}

impl Corpus for CorpusIndex {
    fn len(&self) -> u64 {
        self.len
    }

    fn chunk(&self, id: &str) -> Result<Option<CorpusChunk>, CorpusError> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| index_err(p, e))?;
        let table = txn.open_table(BY_ID).map_err(|e| index_err(p, e))?;
        Ok(table.get(id).map_err(|e| index_err(p, e))?.map(|v| {
            let (pos, doc, text) = v.value();
            CorpusChunk {
                id: id.to_string(),
                doc: doc.to_string(),
                text: text.to_string(),
                pos,
            }
        }))
    }

    fn entry(&self, pos: u64) -> Result<Option<(String, String)>, CorpusError> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| index_err(p, e))?;
        let table = txn.open_table(BY_POS).map_err(|e| index_err(p, e))?;
        Ok(table.get(pos).map_err(|e| index_err(p, e))?.map(|v| {
            let (id, doc) = v.value();
            (id.to_string(), doc.to_string())
        }))
    }

    fn chunks_of(&self, doc: &str) -> Result<Vec<String>, CorpusError> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| index_err(p, e))?;
        let table = txn.open_table(BY_DOC).map_err(|e| index_err(p, e))?;
        let mut ids = Vec::new();
        for entry in table
            .range((doc, 0u64)..=(doc, u64::MAX))
            .map_err(|e| index_err(p, e))?
        {
            let (_, id) = entry.map_err(|e| index_err(p, e))?;
            ids.push(id.value().to_string());
        }
        Ok(ids)
    }
}

/// Writes a [`CorpusIndex`] chunk by chunk (in item order), a batch per transaction, into
/// `<path>.building`; [`finish`](Self::finish) moves it to `path`.
pub struct CorpusIndexBuilder {
    path: PathBuf,
    building: PathBuf,
    db: Database,
    next: u64,
    fingerprint: String,
}

impl std::fmt::Debug for CorpusIndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusIndexBuilder")
            .field("path", &self.path)
            .field("next", &self.next)
            .finish()
    }
}

/// The corpus index's page cache (redb's default, 1 GiB, let building the index of 100 k
/// chunks hold ~130 MB: seeding's peak was twice the rest of the run's).
const CORPUS_CACHE: usize = 8 << 20;

impl CorpusIndexBuilder {
    /// Starts a new index for `path`, built from inputs identified by `fingerprint`.
    pub fn create(path: &Path, fingerprint: &str) -> Result<Self, CorpusError> {
        let building = path.with_extension("building");
        let _ = std::fs::remove_file(&building);
        let db = Database::builder()
            .set_cache_size(CORPUS_CACHE)
            .create(&building)
            .map_err(|e| index_err(&building, e))?;
        // The tables exist from the start: an index read before it is finished finds them.
        let mut txn = db.begin_write().map_err(|e| index_err(&building, e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| index_err(&building, e))?;
        txn.open_table(BY_POS)
            .map_err(|e| index_err(&building, e))?;
        txn.open_table(BY_ID).map_err(|e| index_err(&building, e))?;
        txn.open_table(BY_DOC)
            .map_err(|e| index_err(&building, e))?;
        txn.commit().map_err(|e| index_err(&building, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            building,
            db,
            next: 0,
            fingerprint: fingerprint.to_string(),
        })
    }

    /// Adds a batch of `(id, document, text)` after those added before (an id seen before is
    /// skipped).
    pub fn add<'a>(
        &mut self,
        chunks: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<(), CorpusError> {
        let b = self.building.clone();
        let mut txn = self.db.begin_write().map_err(|e| index_err(&b, e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| index_err(&b, e))?;
        {
            let mut by_pos = txn.open_table(BY_POS).map_err(|e| index_err(&b, e))?;
            let mut by_id = txn.open_table(BY_ID).map_err(|e| index_err(&b, e))?;
            let mut by_doc = txn.open_table(BY_DOC).map_err(|e| index_err(&b, e))?;
            for (id, doc, text) in chunks {
                if by_id.get(id).map_err(|e| index_err(&b, e))?.is_some() {
                    continue;
                }
                let pos = self.next;
                self.next += 1;
                by_pos
                    .insert(pos, (id, doc))
                    .map_err(|e| index_err(&b, e))?;
                by_id
                    .insert(id, (pos, doc, text))
                    .map_err(|e| index_err(&b, e))?;
                by_doc
                    .insert((doc, pos), id)
                    .map_err(|e| index_err(&b, e))?;
            }
        }
        txn.commit().map_err(|e| index_err(&b, e))
    }

    /// Writes the fingerprint, makes the file durable and moves it into place; returns the index,
    /// still open (closing and opening it again is several fsyncs of redb's own).
    pub fn finish(self) -> Result<CorpusIndex, CorpusError> {
        let (index, in_place) = self.finish_in_background()?;
        in_place.wait()?;
        Ok(index)
    }

    /// [`finish`](Self::finish) with the durable commit and the move into place done on a
    /// thread of its own: the index answers at once (everything added is committed, not yet
    /// durable), and is at `path` once [`IndexInPlace::wait`] returned `Ok`. A crash before
    /// that leaves no index at `path` (the next run builds it again).
    pub fn finish_in_background(self) -> Result<(CorpusIndex, IndexInPlace), CorpusError> {
        let db = std::sync::Arc::new(self.db);
        let index = CorpusIndex {
            path: self.path.clone(),
            db: std::sync::Arc::clone(&db),
            len: self.next,
        };
        let (building, path, fingerprint) = (self.building, self.path, self.fingerprint);
        let thread = std::thread::Builder::new()
            .name("atk-corpus-finish".to_owned())
            .spawn(move || put_in_place(&db, &building, &path, &fingerprint))
            .map_err(|e| index_err(&index.path, format!("starting its thread: {e}")))?;
        Ok((index, IndexInPlace(thread)))
    }
}

/// A built index being made durable and moved into place ([`CorpusIndexBuilder::finish_in_background`]).
#[derive(Debug)]
pub struct IndexInPlace(std::thread::JoinHandle<Result<(), CorpusError>>);

impl IndexInPlace {
    /// Waits until the index is durable at its path.
    pub fn wait(self) -> Result<(), CorpusError> {
        self.0.join().unwrap_or_else(|_| {
            Err(CorpusError::Index {
                path: PathBuf::new(),
                message: "the thread finishing the corpus index panicked".to_owned(),
            })
        })
    }
}

/// Writes the fingerprint, commits durably, and moves the file from `building` to `path` (an
/// open file moves with its handle).
fn put_in_place(
    db: &Database,
    building: &Path,
    path: &Path,
    fingerprint: &str,
) -> Result<(), CorpusError> {
    let txn = db.begin_write().map_err(|e| index_err(building, e))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| index_err(building, e))?;
        meta.insert("fingerprint", fingerprint)
            .map_err(|e| index_err(building, e))?;
    }
    txn.commit().map_err(|e| index_err(building, e))?;
    std::fs::rename(building, path).map_err(|e| index_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<(String, String, String)> {
        (0..12)
            .map(|i| {
                (
                    format!("c{i}"),
                    format!("doc{}", i / 3),
                    format!("text of chunk {i}"),
                )
            })
            .collect()
    }

    #[test]
    fn the_disk_index_answers_like_the_memory_one_and_samples_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.redb");
        let mut b = CorpusIndexBuilder::create(&path, "fp1").unwrap();
        let all = chunks();
        b.add(
            all[..5]
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .unwrap();
        b.add(
            all[5..]
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .unwrap();
        let disk = b.finish().unwrap();
        let mem = MemCorpus::new(all.clone());
        assert_eq!(disk.fingerprint().unwrap().as_deref(), Some("fp1"));
        assert_eq!(disk.len(), 12);
        assert_eq!(disk.chunk("c4").unwrap(), mem.chunk("c4").unwrap());
        assert_eq!(disk.chunk("c4").unwrap().unwrap().doc, "doc1");
        assert_eq!(disk.chunks_of("doc2").unwrap(), ["c6", "c7", "c8"]);
        assert_eq!(
            disk.chunks_of("doc2").unwrap(),
            mem.chunks_of("doc2").unwrap()
        );
        assert_eq!(disk.entry(11).unwrap(), Some(("c11".into(), "doc3".into())));
        let allowed: HashSet<String> = ["c0", "c1", "c4", "c9", "c10"].map(String::from).into();
        for id in ["c0", "c5", "c9"] {
            let own = mem.chunk(id).unwrap().unwrap().doc;
            let a = disk
                .sample_other_docs(&own, 2, &mut ItemRng::new(7, id, "d"), Some(&allowed))
                .unwrap();
            let b = mem
                .sample_other_docs(&own, 2, &mut ItemRng::new(7, id, "d"), Some(&allowed))
                .unwrap();
            assert_eq!(a, b, "same draws, same chunks");
            assert_eq!(a.len(), 2);
            assert!(a.iter().all(|c| c.doc != own && allowed.contains(&c.id)));
            assert_ne!(a[0].id, a[1].id);
        }
        // Only two qualifying chunks exist: both are found, no more.
        let few: HashSet<String> = ["c0", "c1", "c3"].map(String::from).into();
        let got = disk
            .sample_other_docs("doc1", 5, &mut ItemRng::new(1, "x", "d"), Some(&few))
            .unwrap();
        let mut ids: Vec<_> = got.iter().map(|c| c.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["c0", "c1"]);
        drop(disk);
        assert_eq!(CorpusIndex::fingerprint_at(&path).as_deref(), Some("fp1"));
    }

    #[test]
    fn an_index_finished_in_the_background_answers_at_once_and_is_in_place_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.redb");
        let mut b = CorpusIndexBuilder::create(&path, "fp2").unwrap();
        let all = chunks();
        b.add(
            all.iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .unwrap();
        let (index, in_place) = b.finish_in_background().unwrap();
        assert_eq!(index.len(), 12);
        assert_eq!(index.chunks_of("doc1").unwrap(), ["c3", "c4", "c5"]);
        in_place.wait().unwrap();
        assert!(path.is_file() && !path.with_extension("building").exists());
        assert_eq!(index.chunk("c7").unwrap().unwrap().text, "text of chunk 7");
        drop(index);
        let reopened = CorpusIndex::open(&path).unwrap().unwrap();
        assert_eq!(reopened.fingerprint().unwrap().as_deref(), Some("fp2"));
        assert_eq!(reopened.len(), 12);
        // An empty corpus has its tables before and after.
        let empty = dir.path().join("empty.redb");
        let (index, in_place) = CorpusIndexBuilder::create(&empty, "fp3")
            .unwrap()
            .finish_in_background()
            .unwrap();
        assert_eq!(index.chunks_of("doc1").unwrap(), Vec::<String>::new());
        in_place.wait().unwrap();
        drop(index);
        assert_eq!(CorpusIndex::fingerprint_at(&empty).as_deref(), Some("fp3"));
    }

    #[test]
    fn item_rngs_differ_by_seed_item_and_salt_and_repeat_exactly() {
        let draw = |s, id, salt| ItemRng::new(s, id, salt).next_u64();
        assert_eq!(draw(1, "a", "x"), draw(1, "a", "x"));
        assert_ne!(draw(1, "a", "x"), draw(2, "a", "x"));
        assert_ne!(draw(1, "a", "x"), draw(1, "b", "x"));
        assert_ne!(draw(1, "a", "x"), draw(1, "a", "y"));
        let mut r = ItemRng::new(3, "a", "");
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
