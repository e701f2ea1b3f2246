//! [`SledStore`]: the [`Store`] on sled 0.34, made SIGKILL-safe by group commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::codec::{decode, encode};
use crate::commit::GroupCommit;
use crate::key::{display, display_item, item_id_of, item_key, item_key_id, step_key, step_prefix};
use crate::{Error, FailureRecord, ItemRecord, RECORD_VERSION, Records, ResultRecord, Store};

/// Version of the store's layout (trees, keys, encodings), kept in the store and checked on open.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// Key of the format version in sled's default tree.
const FORMAT_KEY: &[u8] = b"atk_state_format";
/// File naming the pid of the process holding the store.
const PID_FILE: &str = "atk-run.pid";
/// Items written per batch by `put_items` (bounds the memory of one batch).
const ITEMS_PER_BATCH: usize = 256;

/// An item on its way into the store.
struct PendingItem {
    /// Its key in `items`.
    key: Vec<u8>,
    /// Its id.
    id: String,
    /// The encoded record.
    bytes: Vec<u8>,
    /// Its key in `items` before this write, from the id index.
    old_key: Option<sled::IVec>,
}

/// What [`SledStore::merge_from`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Items (children included).
    pub items: u64,
    /// Results, all steps.
    pub results: u64,
    /// Failures, all steps.
    pub failures: u64,
}

/// What [`SledStore::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Results of retired items.
    pub results: u64,
    /// Failures of retired items.
    pub failures: u64,
    /// Bytes of the records removed (sled gives the disk space back as it rewrites segments).
    pub bytes: u64,
}

/// Options for [`SledStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// sled's page cache size in bytes (default 64 MB; sled's own default of 1 GiB lets a long
    /// run's RSS grow towards it).
    pub cache_capacity: u64,
    /// Least time between the starts of two group commits (default 0: flush as soon as a
    /// writer waits and the previous flush is done; a few ms batches more writes per flush
    /// at the price of that much latency).
    pub flush_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 64 * 1024 * 1024,
            flush_interval: Duration::ZERO,
        }
    }
}

impl StoreOptions {
    /// Sets the page cache size in bytes.
    #[must_use]
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Sets the least time between the starts of two group commits.
    #[must_use]
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }
}

/// The sled-backed [`Store`]: one directory, locked by the process that opened it.
///
/// Trees: `items` (key: `order` then id, so iteration follows `order`), `item_ids` (id ->
/// items key), `results` and `failures` (key: `step \0 item_id`), `meta` (name -> JSON).
/// Every async write returns once a group commit covering it has reached the OS.
pub struct SledStore {
    /// Store directory.
    dir: PathBuf,
    /// The database (its default tree holds the format version).
    db: sled::Db,
    /// Items keyed by order then id.
    items: sled::Tree,
    /// Item id -> key in `items`.
    item_ids: sled::Tree,
    /// Results keyed by step and item id.
    results: sled::Tree,
    /// Failures keyed by step and item id.
    failures: sled::Tree,
    /// Named metadata values.
    meta: sled::Tree,
    /// The commit thread.
    commit: GroupCommit,
    /// The pid file this process wrote, removed on drop.
    pid_file: Option<PathBuf>,
    /// Per step, results stored (durably) since open under a key that had none.
    added: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`. [`Error::Locked`] when another process (or
    /// another handle in this one) holds it; [`Error::Incompatible`] when another atk wrote it.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            message: format!("creating the store directory: {e}"),
        })?;
        Self::open_inner(dir, &options, true)
    }

    /// Opens an existing store without creating one, e.g. for `atk status`.
    ///
    /// sled has no read-only mode: this takes the same exclusive lock as a run, so while a
    /// run is going it returns [`Error::Locked`]; read the run's status snapshot
    /// ([`status_snapshot_path`](crate::status_snapshot_path)) then. [`Error::NotFound`] when
    /// `dir` holds no store.
    pub fn try_open_read(dir: &Path) -> Result<Self, Error> {
        if !dir.join("db").is_file() {
            return Err(Error::NotFound {
                path: dir.to_path_buf(),
            });
        }
        Self::open_inner(dir, &StoreOptions::default(), false)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Group commits (flushes) completed since open: writes / commits is the batching achieved.
    pub fn commit_count(&self) -> u64 {
        self.commit.flushes()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.db.size_on_disk().map_err(|e| self.io(e))
    }

    /// How many results each step has, counted from keys alone (no record decoded), in one
    /// pass over the results. Steps without results are absent.
    pub fn result_counts(&self) -> Result<BTreeMap<String, u64>, Error> {
        let mut counts = BTreeMap::new();
        let mut last: Option<(Vec<u8>, u64)> = None;
        for key in self.results.iter().keys() {
            let key = key.map_err(|e| self.io(e))?;
            let step = key.split(|b| *b == 0).next().unwrap_or_default();
            match &mut last {
                Some((name, n)) if name.as_slice() == step => *n += 1,
                _ => {
                    if let Some((name, n)) = last.take() {
                        counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
                    }
                    last = Some((step.to_vec(), 1));
                }
            }
        }
        if let Some((name, n)) = last {
            counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
        }
        Ok(counts)
    }

    /// Copies every item, result and failure of `other` into this store as stored (bytes
    /// as they are: no record is decoded, so any record version merges), durably. A failure
    /// is left out where this store has a result for the same step and item. Metadata is not
    /// copied. For `atk merge`: the shards of one run hold disjoint items.
    pub async fn merge_from(&self, other: &SledStore) -> Result<Merged, Error> {
        let mut merged = Merged::default();
        let copy = |from: &sled::Tree,
                    to: &sled::Tree,
                    skip: &dyn Fn(&[u8]) -> Result<bool, Error>|
         -> Result<u64, Error> {
            let mut n = 0u64;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0usize;
            for entry in from.iter() {
                let (key, value) = entry.map_err(|e| other.io(e))?;
                if skip(&key)? {
                    continue;
                }
                batch.insert(key, value);
                in_batch += 1;
                n += 1;
                if in_batch == 1024 {
                    to.apply_batch(std::mem::take(&mut batch))
                        .map_err(|e| self.io(e))?;
                    in_batch = 0;
                }
            }
            to.apply_batch(batch).map_err(|e| self.io(e))?;
            Ok(n)
        };
        let never = |_: &[u8]| Ok(false);
        merged.items = copy(&other.items, &self.items, &never)?;
        copy(&other.item_ids, &self.item_ids, &never)?;
        merged.results = copy(&other.results, &self.results, &never)?;
        merged.failures = copy(&other.failures, &self.failures, &|key| {
            self.results.contains_key(key).map_err(|e| self.io(e))
        })?;
        self.durable().await?;
        Ok(merged)
    }

    /// Removes the results and failures of items the store no longer holds (retired: their
    /// input is gone), durably, and says how much was removed. Keys are read to decide; no
    /// record is decoded.
    pub async fn collect_garbage(&self) -> Result<Collected, Error> {
        let mut collected = Collected::default();
        for (tree, removed) in [
            (&self.results, &mut collected.results),
            (&self.failures, &mut collected.failures),
        ] {
            let mut batch = sled::Batch::default();
            for entry in tree.iter() {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                let Some(at) = key.iter().position(|b| *b == 0) else {
                    continue;
                };
                if self
                    .item_ids
                    .contains_key(&key[at + 1..])
                    .map_err(|e| self.io(e))?
                {
                    continue;
                }
                collected.bytes += (key.len() + value.len()) as u64;
                *removed += 1;
                batch.remove(key);
            }
            tree.apply_batch(batch).map_err(|e| self.io(e))?;
        }
        if collected.results + collected.failures > 0 {
            self.durable().await?;
        }
        Ok(collected)
    }

    /// How many items the store holds (children included), counted on the id index (small
    /// values), without reading any item.
    pub fn item_count(&self) -> u64 {
        self.item_ids.len() as u64
    }

    /// Per step, the results this handle stored under a key that had none (counted once each
    /// is durable): add them to [`SledStore::result_counts`] taken at open for a live count.
    pub fn results_added(&self) -> BTreeMap<String, u64> {
        self.added
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Opens sled, checks the format, starts the commit thread.
    fn open_inner(dir: &Path, options: &StoreOptions, write_pid: bool) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            // The commit thread flushes whenever a writer waits; sled's timer would only add
            // flushes competing with it.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let io = |e: sled::Error| Error::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let items = tree("items")?;
        let item_ids = tree("item_ids")?;
        let results = tree("results")?;
        let failures = tree("failures")?;
        let meta = tree("meta")?;
        match db.get(FORMAT_KEY).map_err(io)? {
            Some(found) => {
                let found = std::str::from_utf8(&found)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if found != STORE_FORMAT_VERSION {
                    return Err(Error::Incompatible {
                        path: dir.to_path_buf(),
                        found,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
            None if items.is_empty()
                && results.is_empty()
                && failures.is_empty()
                && meta.is_empty() =>
            {
                db.insert(FORMAT_KEY, STORE_FORMAT_VERSION.to_string().as_bytes())
                    .map_err(io)?;
                db.flush().map_err(io)?;
            }
            None => {
                return Err(Error::Incompatible {
                    path: dir.to_path_buf(),
                    found: 0,
                    expected: STORE_FORMAT_VERSION,
                });
            }
        }
        let pid_file = if write_pid {
            let path = dir.join(PID_FILE);
            // Best effort: the pid only improves another process's Locked message.
            if let Err(error) = std::fs::write(&path, std::process::id().to_string()) {
                tracing::warn!(%error, path = %path.display(), "could not write the store's pid file");
            }
            Some(path)
        } else {
            None
        };
        let commit =
            GroupCommit::start(db.clone(), options.flush_interval).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                message: format!("starting the commit thread: {e}"),
            })?;
        tracing::debug!(dir = %dir.display(), items = items.len(), "store opened");
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            items,
            item_ids,
            results,
            failures,
            meta,
            commit,
            pid_file,
            added: Default::default(),
        })
    }

    /// Maps a sled error to [`Error::Io`] for this store.
    fn io(&self, e: impl std::fmt::Display) -> Error {
        let message = e.to_string();
        // sled's `Error::Corruption` (a bad checksum met while reading a page) reads so.
        if message.starts_with("Read corrupted data") {
            return Error::Damaged {
                path: self.dir.clone(),
                message,
            };
        }
        Error::Io {
            path: self.dir.clone(),
            message,
        }
    }

    /// Waits until everything written so far is on disk (group commit).
    async fn durable(&self) -> Result<(), Error> {
        self.commit
            .durable()
            .await
            .map_err(|message| self.io(format!("flush failed: {message}")))
    }

    /// Writes a chunk of items: the `items` batch first, then the id index batch, each atomic.
    ///
    /// Not one transaction: sled transactions made seeding ~2.7x slower than bare inserts.
    /// A crash between the two batches (before `put_items` returned) leaves items whose index
    /// entry is missing or stale; the next seeding finds the index differs and rewrites both,
    /// removing the item's old key, so the store converges.
    fn put_item_chunk(&self, chunk: &[PendingItem]) -> Result<(), Error> {
        let mut items = sled::Batch::default();
        let mut ids = sled::Batch::default();
        for pending in chunk {
            if let Some(old) = &pending.old_key
                && old.as_ref() != pending.key.as_slice()
            {
                items.remove(old.as_ref());
            }
            items.insert(pending.key.as_slice(), pending.bytes.as_slice());
            ids.insert(pending.id.as_bytes(), pending.key.as_slice());
        }
        self.items.apply_batch(items).map_err(|e| self.io(e))?;
        self.item_ids.apply_batch(ids).map_err(|e| self.io(e))
    }

    /// Iterates a step's records in `tree`, decoding each value.
    fn step_records<T: crate::codec::Versioned + Send + 'static>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        step: &str,
    ) -> Records<'_, (String, T)> {
        let prefix = match step_prefix(step) {
            Ok(prefix) => prefix,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let prefix_len = prefix.len();
        Box::new(tree.scan_prefix(prefix).map(move |entry| {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let id = item_id_of(prefix_len, &key)?;
            let record = decode(&self.dir, || format!("{name}:{}", display(&key)), &value)?;
            Ok((id, record))
        }))
    }

    /// Counts the keys of a step's records in `tree` without decoding values.
    fn count_step(&self, tree: &sled::Tree, step: &str) -> Result<u64, Error> {
        tree.scan_prefix(step_prefix(step)?)
            .keys()
            .try_fold(0, |n, key| key.map(|_| n + 1).map_err(|e| self.io(e)))
    }
}

/// Whether an encoded item is a root, read from the start of its bytes: [`encode`] writes
/// `{"v":1,"id":"…","parent":null,…` (fields in declaration order). `None` when the bytes do
/// not start that way (another layout version, a corrupt record): the caller decodes then.
///
/// Allocation-free for ids that JSON writes unescaped (it runs once per item on resume).
fn is_root_encoded(id: &str, bytes: &[u8]) -> Option<bool> {
    let rest = bytes.strip_prefix(b"{\"v\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let version: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    // Items kept their layout from version 1 on.
    if !(crate::record::OLDEST_READABLE_VERSION..=RECORD_VERSION).contains(&version) {
        return None;
    }
    let rest = rest[digits..].strip_prefix(b",\"id\":")?;
    let rest = if id.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        rest.strip_prefix(serde_json::to_string(id).ok()?.as_bytes())?
    } else {
        rest.strip_prefix(b"\"")?
            .strip_prefix(id.as_bytes())?
            .strip_prefix(b"\"")?
    };
    let rest = rest.strip_prefix(b",\"parent\":")?;
    if rest.starts_with(b"null") {
        Some(true)
    } else if rest.starts_with(b"\"") {
        Some(false)
    } else {
        None
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.commit.shutdown();
        if let Some(path) = &self.pid_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::debug!(dir = %self.dir.display(), "store closed");
    }
}

/// Maps an open failure: sled's lock error becomes [`Error::Locked`] naming the holder.
fn open_error(dir: &Path, error: sled::Error) -> Error {
    match error {
        // sled 0.34 reports a held lock only as this Io message (config.rs, `try_lock`).
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            let pid = std::fs::read_to_string(dir.join(PID_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            Error::Locked {
                path: dir.to_path_buf(),
                pid,
            }
        }
        sled::Error::Corruption { at, .. } => Error::Damaged {
            path: dir.to_path_buf(),
            message: match at {
                Some(at) => format!("sled found a bad checksum at {at:?}"),
                None => "sled found a bad checksum".to_owned(),
            },
        },
        sled::Error::Unsupported(message) | sled::Error::ReportableBug(message) => Error::Io {
            path: dir.to_path_buf(),
            message: format!("this store cannot be read by this atk (sled 0.34): {message}"),
        },
        other => Error::Io {
            path: dir.to_path_buf(),
            message: format!("opening the store: {other}"),
        },
    }
}

#[async_trait]
impl Store for SledStore {
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        let mut chunk: Vec<PendingItem> = Vec::with_capacity(ITEMS_PER_BATCH.min(items.len()));
        let mut in_chunk = std::collections::HashSet::new();
        let mut written = 0_usize;
        for item in items {
            if in_chunk.contains(&item.id) {
                // The same id twice in one call: write the first before reading its key back.
                self.put_item_chunk(&chunk)?;
                chunk.clear();
                in_chunk.clear();
            }
            let key = item_key(&item.order, &item.id);
            let old_key = self
                .item_ids
                .get(item.id.as_bytes())
                .map_err(|e| self.io(e))?;
            let id = item.id.clone();
            let bytes = encode(item);
            // A resumed run re-seeds the same chunks: reads are far cheaper than sled writes.
            if old_key.as_deref() == Some(key.as_slice())
                && self.items.get(&key).map_err(|e| self.io(e))?.as_deref()
                    == Some(bytes.as_slice())
            {
                continue;
            }
            written += 1;
            in_chunk.insert(id.clone());
            chunk.push(PendingItem {
                key,
                id,
                bytes,
                old_key,
            });
            if chunk.len() == ITEMS_PER_BATCH {
                self.put_item_chunk(&chunk)?;
                chunk.clear();
                in_chunk.clear();
                // Seeding can be large: let other tasks on this worker run between chunks.
                tokio::task::yield_now().await;
            }
        }
        if !chunk.is_empty() {
            self.put_item_chunk(&chunk)?;
        }
        if written == 0 {
            // Re-seeding a resumed run: nothing changed, nothing to flush.
            return Ok(());
        }
        self.durable().await
    }

    fn item(&self, id: &str) -> Result<Option<ItemRecord>, Error> {
        let Some(key) = self.item_ids.get(id.as_bytes()).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        match self.items.get(&key).map_err(|e| self.io(e))? {
            Some(bytes) => decode(
                &self.dir,
                || format!("items:{}", display_item(&key)),
                &bytes,
            )
            .map(Some),
            None => Err(Error::Corrupt {
                key: format!("item_ids:{id}"),
                message: "the id index points at a missing item".to_owned(),
            }),
        }
    }

    fn items(&self) -> Records<'_, ItemRecord> {
        Box::new(self.items.iter().map(move |entry| {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            decode(
                &self.dir,
                || format!("items:{}", display_item(&key)),
                &value,
            )
        }))
    }

    fn item_ids(&self) -> Records<'_, String> {
        Box::new(
            self.items
                .iter()
                .keys()
                .map(move |key| item_key_id(&key.map_err(|e| self.io(e))?)),
        )
    }

    fn root_ids(&self) -> Records<'_, String> {
        Box::new(
            self.items
                .iter()
                .map(move |entry| {
                    let (key, value) = entry.map_err(|e| self.io(e))?;
                    let id = item_key_id(&key)?;
                    let root = match is_root_encoded(&id, &value) {
                        Some(root) => root,
                        None => {
                            let item: ItemRecord = decode(
                                &self.dir,
                                || format!("items:{}", display_item(&key)),
                                &value,
                            )?;
                            item.parent.is_none()
                        }
                    };
                    Ok(root.then_some(id))
                })
                .filter_map(Result::transpose),
        )
    }

    async fn remove_items(&self, ids: Vec<String>) -> Result<(), Error> {
        let mut removed = 0_usize;
        for chunk in ids.chunks(ITEMS_PER_BATCH) {
            // Rare (inputs removed between runs), so one transaction per chunk: a crash never
            // leaves an index entry pointing at a removed item, or an item without its entry.
            let n = (&self.items, &self.item_ids)
                .transaction(|(items, item_ids)| {
                    let mut n = 0_usize;
                    for id in chunk {
                        if let Some(key) = item_ids.remove(id.as_bytes())? {
                            items.remove(key)?;
                            n += 1;
                        }
                    }
                    Ok::<usize, ConflictableTransactionError<()>>(n)
                })
                .map_err(|e: TransactionError<()>| self.io(format!("removing items: {e:?}")))?;
            removed += n;
        }
        if removed == 0 {
            return Ok(());
        }
        self.durable().await
    }

    async fn put_result(
        &self,
        step: &str,
        item_id: &str,
        record: ResultRecord,
    ) -> Result<(), Error> {
        let key = step_key(step, item_id)?;
        let bytes = encode(record);
        let replaced = if self.failures.contains_key(&key).map_err(|e| self.io(e))? {
            // Both in one transaction: a crash never leaves a result beside a stale failure.
            (&self.results, &self.failures)
                .transaction(|(results, failures)| {
                    let old = results.insert(key.as_slice(), bytes.as_slice())?;
                    failures.remove(key.as_slice())?;
                    Ok::<bool, ConflictableTransactionError<()>>(old.is_some())
                })
                .map_err(|e: TransactionError<()>| self.io(format!("storing a result: {e:?}")))?
        } else {
            self.results
                .insert(key, bytes)
                .map_err(|e| self.io(e))?
                .is_some()
        };
        self.durable().await?;
        if !replaced {
            // Counted only once durable: a count saved elsewhere never exceeds what is on disk.
            *self
                .added
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(step.to_owned())
                .or_default() += 1;
        }
        Ok(())
    }

    fn result(&self, step: &str, item_id: &str) -> Result<Option<ResultRecord>, Error> {
        let key = step_key(step, item_id)?;
        match self.results.get(&key).map_err(|e| self.io(e))? {
            Some(bytes) => {
                decode(&self.dir, || format!("results:{}", display(&key)), &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, Error> {
        self.results
            .contains_key(step_key(step, item_id)?)
            .map_err(|e| self.io(e))
    }

    fn results(&self, step: &str) -> Records<'_, (String, ResultRecord)> {
        self.step_records(&self.results, "results", step)
    }

    async fn put_failure(
        &self,
        step: &str,
        item_id: &str,
        record: FailureRecord,
    ) -> Result<(), Error> {
        let key = step_key(step, item_id)?;
        self.failures
            .insert(key, encode(record))
            .map_err(|e| self.io(e))?;
        self.durable().await
    }

    fn failures(&self, step: &str) -> Records<'_, (String, FailureRecord)> {
        self.step_records(&self.failures, "failures", step)
    }

    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, Error> {
        match self.meta.get(key.as_bytes()).map_err(|e| self.io(e))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    key: format!("meta:{key}"),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&value).map_err(|e| self.io(e))?;
        self.meta
            .insert(key.as_bytes(), bytes)
            .map_err(|e| self.io(e))?;
        self.durable().await
    }

    async fn flush(&self) -> Result<(), Error> {
        self.durable().await
    }

    fn count_results(&self, step: &str) -> Result<u64, Error> {
        self.count_step(&self.results, step)
    }

    fn count_failures(&self, step: &str) -> Result<u64, Error> {
        self.count_step(&self.failures, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Details, RECORD_VERSION};
    use serde_json::json;

    fn item(id: &str, order: &[u64]) -> ItemRecord {
        let mut fields = crate::Fields::new();
        fields.insert("text".into(), json!(format!("text of {id}")));
        ItemRecord {
            v: RECORD_VERSION,
            id: id.into(),
            parent: None,
            order: order.to_vec(),
            fields,
        }
    }

    fn result(output: &str) -> ResultRecord {
        ResultRecord {
            v: RECORD_VERSION,
            output: json!(output),
            details: Some(Details {
                messages: vec![json!({"role": "user", "content": "hi {x}"})],
                prompt: None,
                reply: output.into(),
                finish_reason: Some("stop".into()),
                model: "mock".into(),
            }),
            attempts: 2,
            prompt_tokens: 10,
            completion_tokens: 5,
            elapsed_ms: 7,
            stored_at_ms: 1,
            ..ResultRecord::new(serde_json::Value::Null)
        }
    }

    fn failure(reason: &str) -> FailureRecord {
        FailureRecord {
            v: RECORD_VERSION,
            kind: "validation".into(),
            reason: reason.into(),
            last_output: Some("nope".into()),
            attempts: 3,
            stored_at_ms: 2,
        }
    }

    fn ids(store: &SledStore) -> Vec<String> {
        store.items().map(|r| r.unwrap().id).collect()
    }

    #[tokio::test]
    async fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_items(vec![item("a", &[0]), item("b", &[1])])
            .await
            .unwrap();
        store.put_result("qa", "a", result("answer")).await.unwrap();
        store
            .put_failure("qa", "b", failure("no JSON"))
            .await
            .unwrap();
        store
            .put_meta("run", json!({"pipeline": "poems"}))
            .await
            .unwrap();

        assert_eq!(store.item("a").unwrap(), Some(item("a", &[0])));
        assert_eq!(store.item("missing").unwrap(), None);
        assert_eq!(store.result("qa", "a").unwrap(), Some(result("answer")));
        assert_eq!(store.result("other", "a").unwrap(), None);
        assert!(store.has_result("qa", "a").unwrap());
        assert!(!store.has_result("qa", "b").unwrap());
        let results: Vec<_> = store.results("qa").map(Result::unwrap).collect();
        assert_eq!(results, vec![("a".to_owned(), result("answer"))]);
        let failures: Vec<_> = store.failures("qa").map(Result::unwrap).collect();
        assert_eq!(failures, vec![("b".to_owned(), failure("no JSON"))]);
        assert_eq!(
            store.meta("run").unwrap(),
            Some(json!({"pipeline": "poems"}))
        );
        assert_eq!(store.meta("absent").unwrap(), None);
        assert_eq!(
            (
                store.count_results("qa").unwrap(),
                store.count_failures("qa").unwrap()
            ),
            (1, 1)
        );
        assert_eq!(store.count_results("other").unwrap(), 0);
    }

    #[tokio::test]
    async fn steps_do_not_see_each_others_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // "qa" is a prefix of "qa2": the NUL separator keeps them apart.
        store.put_result("qa", "x", result("1")).await.unwrap();
        store.put_result("qa2", "y", result("2")).await.unwrap();
        let ids: Vec<_> = store.results("qa").map(|r| r.unwrap().0).collect();
        assert_eq!(ids, ["x"]);
        assert!(matches!(
            store.put_result("bad\0step", "x", result("1")).await,
            Err(Error::InvalidStep { .. })
        ));
        assert!(matches!(
            store.results("").next(),
            Some(Err(Error::InvalidStep { .. }))
        ));
    }

    #[tokio::test]
    async fn items_iterate_in_order_and_replacing_moves_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let batch = vec![
            item("c", &[10]),
            item("b", &[1, 5]),
            item("a", &[2]),
            item("d", &[1]),
            item("e", &[1, 0]),
        ];
        store.put_items(batch).await.unwrap();
        assert_eq!(ids(&store), ["d", "e", "b", "a", "c"]);
        // Re-seeding an item with a new order moves it instead of duplicating it.
        store.put_items(vec![item("c", &[0])]).await.unwrap();
        assert_eq!(ids(&store), ["c", "d", "e", "b", "a"]);
        assert_eq!(store.item("c").unwrap().unwrap().order, [0]);
    }

    #[tokio::test]
    async fn reseeding_the_same_items_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_items(vec![item("a", &[0]), item("b", &[1])])
            .await
            .unwrap();
        let commits = store.commit_count();
        store
            .put_items(vec![item("a", &[0]), item("b", &[1])])
            .await
            .unwrap();
        assert_eq!(
            store.commit_count(),
            commits,
            "an unchanged re-seed needs no commit"
        );
        let mut changed = item("b", &[1]);
        changed.fields.insert("text".into(), json!("edited"));
        store
            .put_items(vec![item("a", &[0]), changed.clone()])
            .await
            .unwrap();
        assert_eq!(store.item("b").unwrap(), Some(changed));
        assert_eq!(ids(&store), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_crash_between_the_item_batches_heals_on_reseed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.put_items(vec![item("a", &[5])]).await.unwrap();
        // What survives a crash after the items batch of a re-seed at order [0]: the id
        // index still points at the old key.
        store.items.remove(item_key(&[5], "a")).unwrap();
        store
            .items
            .insert(item_key(&[0], "a"), encode(item("a", &[0])))
            .unwrap();
        assert!(matches!(store.item("a"), Err(Error::Corrupt { .. })));
        store.put_items(vec![item("a", &[0])]).await.unwrap();
        assert_eq!(ids(&store), ["a"]);
        assert_eq!(store.item("a").unwrap().unwrap().order, [0]);
    }

    #[tokio::test]
    async fn an_id_repeated_in_one_call_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_items(vec![item("a", &[5]), item("b", &[1]), item("a", &[0])])
            .await
            .unwrap();
        assert_eq!(ids(&store), ["a", "b"]);
        assert_eq!(store.item("a").unwrap().unwrap().order, [0]);
    }

    #[tokio::test]
    async fn many_items_span_several_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let n = ITEMS_PER_BATCH as u64 * 2 + 7;
        store
            .put_items((0..n).rev().map(|i| item(&format!("i{i}"), &[i])).collect())
            .await
            .unwrap();
        let orders: Vec<u64> = store.items().map(|r| r.unwrap().order[0]).collect();
        assert_eq!(orders, (0..n).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn ids_come_in_order_without_decoding_and_roots_leave_out_children() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut child = item("kid \"quoted\"", &[1, 0]);
        child.parent = Some("b".into());
        store
            .put_items(vec![item("b", &[1]), child, item("a", &[2])])
            .await
            .unwrap();
        // A record no decoder accepts: ids never look at it; roots fall back to decoding it.
        store
            .items
            .insert(item_key(&[3], "junk"), b"{not json".as_slice())
            .unwrap();
        let ids: Vec<String> = store.item_ids().map(Result::unwrap).collect();
        assert_eq!(ids, ["b", "kid \"quoted\"", "a", "junk"]);
        let roots: Vec<_> = store.root_ids().collect();
        assert_eq!(roots.len(), 3);
        assert_eq!(
            roots[..2]
                .iter()
                .map(|r| r.as_ref().unwrap().as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(matches!(roots[2], Err(Error::Corrupt { .. })));
    }

    #[test]
    fn roots_are_told_from_the_encoded_bytes_without_decoding() {
        for id in ["a1b2", "kid \"quoted\" \\ \u{1}", "日本"] {
            let root = item(id, &[1]);
            let mut child = item(id, &[1, 0]);
            child.parent = Some("p".into());
            assert_eq!(is_root_encoded(id, &encode(root)), Some(true), "{id}");
            assert_eq!(is_root_encoded(id, &encode(child)), Some(false), "{id}");
        }
        assert_eq!(
            is_root_encoded("a", br#"{"v":99,"id":"a","parent":null}"#),
            None,
            "another layout: decode"
        );
        assert_eq!(
            is_root_encoded("a", br#"{"v":1,"id":"b","parent":null}"#),
            None,
            "not this id: decode"
        );
    }

    #[tokio::test]
    async fn removed_items_go_but_their_results_stay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .put_items(vec![item("a", &[0]), item("b", &[1]), item("c", &[2])])
                .await
                .unwrap();
            store.put_result("qa", "b", result("kept")).await.unwrap();
            store
                .put_failure("qa", "c", failure("kept too"))
                .await
                .unwrap();
            store
                .remove_items(vec!["b".into(), "c".into(), "never".into()])
                .await
                .unwrap();
            assert_eq!(ids(&store), ["a"]);
            assert_eq!(store.item("b").unwrap(), None);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(ids(&store), ["a"], "the removal is durable");
        assert_eq!(store.result("qa", "b").unwrap(), Some(result("kept")));
        assert_eq!(store.count_failures("qa").unwrap(), 1);
        // Seeded again: back in place, and its result is still there to reuse.
        store.put_items(vec![item("b", &[1])]).await.unwrap();
        assert_eq!(ids(&store), ["a", "b"]);
        assert!(store.has_result("qa", "b").unwrap());
        let commits = store.commit_count();
        store.remove_items(vec!["gone".into()]).await.unwrap();
        assert_eq!(
            store.commit_count(),
            commits,
            "removing nothing needs no commit"
        );
    }

    #[tokio::test]
    async fn a_result_clears_the_items_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_failure("qa", "a", failure("no JSON"))
            .await
            .unwrap();
        store
            .put_failure("qa", "b", failure("no JSON"))
            .await
            .unwrap();
        store
            .put_failure("other", "a", failure("no JSON"))
            .await
            .unwrap();
        store.put_result("qa", "a", result("ok")).await.unwrap();
        let failed: Vec<_> = store.failures("qa").map(|r| r.unwrap().0).collect();
        assert_eq!(failed, ["b"], "a's failure went away, b's stays");
        assert_eq!(
            store.count_failures("other").unwrap(),
            1,
            "other steps keep theirs"
        );
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_items(vec![item("a", &[0])]).await.unwrap();
            store.put_result("qa", "a", result("kept")).await.unwrap();
            store
                .put_failure("qa", "z", failure("kept too"))
                .await
                .unwrap();
            store.put_meta("cost", json!(1.5)).await.unwrap();
            assert!(dir.path().join(PID_FILE).is_file());
        }
        assert!(
            !dir.path().join(PID_FILE).exists(),
            "a clean close removes the pid file"
        );
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(ids(&store), ["a"]);
        assert_eq!(store.result("qa", "a").unwrap(), Some(result("kept")));
        assert_eq!(store.count_failures("qa").unwrap(), 1);
        assert_eq!(store.meta("cost").unwrap(), Some(json!(1.5)));
    }

    #[tokio::test]
    async fn a_second_open_is_locked_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Locked { pid: Some(pid), .. } if pid == std::process::id()),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!(
                "in use by another run (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        assert!(matches!(
            SledStore::try_open_read(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(first);
        let reopened = SledStore::try_open_read(dir.path()).unwrap();
        assert!(
            !dir.path().join(PID_FILE).exists(),
            "a read-open writes no pid file"
        );
        drop(reopened);
    }

    #[test]
    fn reading_a_missing_store_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = SledStore::try_open_read(&dir.path().join("nothing")).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(!dir.path().join("nothing").exists(), "nothing was created");
    }

    #[test]
    fn a_store_of_another_format_is_refused_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(FORMAT_KEY, b"9".as_slice()).unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Incompatible {
                    found: 9,
                    expected: STORE_FORMAT_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("format version 9") && message.contains("fresh output_dir"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn bad_records_are_errors_naming_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .results
            .insert(step_key("qa", "junk").unwrap(), b"{not json".as_slice())
            .unwrap();
        store
            .results
            .insert(
                step_key("qa", "newer").unwrap(),
                br#"{"v": 99, "output": 1}"#.as_slice(),
            )
            .unwrap();
        let err = store.result("qa", "junk").unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { key, .. } if key == "results:qa/junk"),
            "{err}"
        );
        let err = store.result("qa", "newer").unwrap_err();
        assert!(
            matches!(err, Error::Incompatible { found: 99, .. }),
            "{err}"
        );
        // Iteration reports each bad record and goes on.
        let all: Vec<_> = store.results("qa").collect();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(Result::is_err));
        store
            .items
            .insert(item_key(&[4], "x"), b"[]".as_slice())
            .unwrap();
        let err = store.items().next().unwrap().unwrap_err();
        assert!(err.to_string().contains("items:[4]/x"), "{err}");
    }
}

#[cfg(test)]
mod damage_tests {
    use super::*;
    use serde_json::json;

    fn result() -> ResultRecord {
        ResultRecord::new(json!("x".repeat(3000)))
    }

    #[tokio::test]
    async fn counts_follow_new_results_and_damage_shows_in_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            for i in 0..200 {
                store
                    .put_result("write", &format!("item{i:03}"), result())
                    .await
                    .unwrap();
            }
            store
                .put_result("write", "item000", result())
                .await
                .unwrap();
            store
                .put_result("judge", "item000", result())
                .await
                .unwrap();
            let added = store.results_added();
            assert_eq!(
                added,
                BTreeMap::from([("judge".to_owned(), 1), ("write".to_owned(), 200)]),
                "a replaced result is not new"
            );
            assert_eq!(store.result_counts().unwrap(), added);
        }
        // 64 KiB of garbage in the middle of the data file: sled drops what follows it on
        // open, or meets a bad checksum when reading; either way the count shows it.
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2;
        let end = (mid + 64 * 1024).min(bytes.len());
        bytes[mid..end]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8).wrapping_mul(151).wrapping_add(7));
        std::fs::write(&db, bytes).unwrap();
        match SledStore::open(dir.path()).and_then(|store| store.result_counts()) {
            Ok(counts) => assert!(
                counts.get("write").copied().unwrap_or(0) < 200,
                "damage lost results: {counts:?}"
            ),
            Err(e) => assert!(matches!(e, Error::Damaged { .. }), "{e}"),
        }
    }
}

#[cfg(test)]
mod gc_tests {
    use super::*;

    #[tokio::test]
    async fn garbage_is_what_no_item_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let item = |id: &str| ItemRecord {
            v: RECORD_VERSION,
            id: id.into(),
            parent: None,
            order: vec![0],
            fields: Default::default(),
        };
        store
            .put_items(vec![item("kept"), item("gone")])
            .await
            .unwrap();
        for id in ["kept", "gone", "never"] {
            store
                .put_result("s", id, ResultRecord::new(serde_json::json!(id)))
                .await
                .unwrap();
        }
        store.remove_items(vec!["gone".into()]).await.unwrap();
        let c = store.collect_garbage().await.unwrap();
        assert_eq!((c.results, c.failures), (2, 0));
        assert!(c.bytes > 0);
        assert!(store.has_result("s", "kept").unwrap());
        assert!(!store.has_result("s", "gone").unwrap());
        assert_eq!(store.collect_garbage().await.unwrap(), Collected::default());
    }
}
