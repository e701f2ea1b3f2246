//! [`DiskStore`]: the [`Store`] on disk, over a sled or redb [`Backend`], SIGKILL-safe by
//! group commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::redb::RedbKv;
use crate::backend::sled::SledKv;
use crate::backend::{Backend, Kv, Op, Tree};
use crate::codec::{decode, encode};
use crate::key::{display, display_item, item_id_of, item_key, item_key_id, step_key, step_prefix};
use crate::{Error, FailureRecord, ItemRecord, Records, ResultRecord, Store};
#[cfg(test)]
use layout::{FORMAT_KEY, ROOTS_KEY};
use layout::{build_done_index, build_roots_index, check_format, is_root};
pub use maintenance::{Collected, Merged};

/// Version of the store's layout (trees, keys, encodings), kept in the store and checked on open.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// File naming the pid of the process holding the store.
pub(crate) const PID_FILE: &str = "atk-run.pid";
/// Items written per batch by `put_items` (bounds the memory of one batch).
pub(crate) const ITEMS_PER_BATCH: usize = 256;
/// How long an open waits for a lock whose holder closed cleanly (see `open_inner`).
const LOCK_GRACE: Duration = Duration::from_secs(2);
/// How often it looks again.
const LOCK_POLL: Duration = Duration::from_millis(20);
/// sled's default page cache.
const SLED_CACHE: u64 = 64 << 20;
/// Least time between two sled group commits while writers are concurrent (see
/// [`StoreOptions::flush_interval`]).
const SLED_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// redb's default page cache.
const REDB_CACHE: u64 = 16 << 20;
/// Records copied per batch by merges and collections.
pub(super) const RECORDS_PER_BATCH: usize = 1024;

/// Options for [`DiskStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The database of a new store (an existing store keeps the one it was made with).
    pub backend: Backend,
    /// The database's page cache size in bytes; `None`: the backend's default, 64 MB for sled
    /// (its own default of 1 GiB lets a long run's RSS grow towards it) and 16 MB for redb
    /// (measured at 100 k items: peak RSS 94 MB with 16 MB, 183 MB with 64 MB, reruns as fast).
    pub cache_capacity: Option<u64>,
    /// Least time between the starts of two sled group commits while writers are concurrent
    /// (default 10 ms: a 3 000-item run at concurrency 200 made ~250 flushes instead of
    /// ~370 at 3 ms and ~1 800 unpaced, each one a wake-up of sled's I/O threads; a lone
    /// writer is never held back). Zero flushes as
    /// soon as a writer waits and the previous flush is done.
    pub flush_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            cache_capacity: None,
            flush_interval: SLED_FLUSH_INTERVAL,
        }
    }
}

impl StoreOptions {
    /// Sets the database of a new store.
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Sets the page cache size in bytes.
    #[must_use]
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = Some(bytes);
        self
    }

    /// Sets the least time between the starts of two group commits.
    #[must_use]
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }
}

/// The store on disk: one directory, locked by the process that opened it.
///
/// Trees: `items` (key: `order` then id, so iteration follows `order`), `item_ids` (id ->
/// items key), `roots` (the items keys of root items), `results` and `failures` (key:
/// `step \0 item_id`), `done` (the keys of `results`), `meta` (name -> JSON).
/// Every async write returns once a group commit covering it has reached the OS.
pub struct DiskStore {
    /// Store directory.
    dir: PathBuf,
    /// The database.
    kv: Box<dyn Kv>,
    /// Whether the key-only `roots` and `done` indexes are kept (redb, where they are written
    /// in the same transaction as what they index). sled applies each tree's writes apart, so
    /// a damaged log could keep a record and lose its index entry: sled stores read the
    /// records themselves, as before the indexes.
    indexed: bool,
    /// The pid file this process wrote, removed on drop.
    pid_file: Option<PathBuf>,
    /// Per step, results stored (durably) since open under a key that had none.
    added: std::sync::Mutex<BTreeMap<String, u64>>,
    /// False while the store is known to hold no failure (none at open, none written since):
    /// then a result's put clears none and skips looking for one.
    failures_possible: std::sync::atomic::AtomicBool,
    /// The item ids this handle wrote into a store that held none when it was opened: then
    /// `put_items` looks up only the ids it may have written before (seeding a fresh store
    /// reads nothing back), and the item count needs no walk of the id index.
    known_ids: std::sync::Mutex<Option<KnownIds>>,
}

/// Every item id a store holds, as far as its handle knows them (see `DiskStore::known_ids`).
#[derive(Default)]
struct KnownIds {
    /// Hashes of every id written (a hash seen means "look it up", so a collision only costs
    /// a read); ids removed since stay in.
    hashes: rustc_hash::FxHashSet<u64>,
    /// How many ids the store holds.
    count: u64,
}

/// Most ids [`KnownIds`] remembers (about 16 bytes each); past it ids are looked up again.
const MAX_KNOWN_IDS: usize = 1 << 20;

/// The hash [`KnownIds`] keeps of an item id.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// The store's former name, from when sled was its only database.
pub type SledStore = DiskStore;

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .field("backend", &self.kv.backend())
            .finish_non_exhaustive()
    }
}

/// [`Error::Locked`] for the store in `dir`, naming the holder from its pid file.
pub(crate) fn locked(dir: &Path) -> Error {
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Error::Locked {
        path: dir.to_path_buf(),
        pid,
    }
}

impl DiskStore {
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
    /// Neither database has a read-only mode that shares the file with a writer: this takes
    /// the same exclusive lock as a run, so while a run is going it returns
    /// [`Error::Locked`]; read the run's status snapshot then. [`Error::NotFound`] when `dir`
    /// holds no store.
    pub fn try_open_read(dir: &Path) -> Result<Self, Error> {
        if Backend::detect(dir).is_none() {
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

    /// The database this store is kept in.
    pub fn backend(&self) -> Backend {
        self.kv.backend()
    }

    /// Commits completed since open: writes / commits is the batching achieved.
    pub fn commit_count(&self) -> u64 {
        self.kv.commits()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.kv.size_on_disk()
    }

    /// How many items the store holds (children included): counted by this handle when it
    /// opened a store with no item and wrote them all, else on the id index (small values),
    /// without reading any item.
    pub fn item_count(&self) -> u64 {
        if let Some(known) = self.known_ids().as_ref() {
            return known.count;
        }
        self.kv.len(Tree::ItemIds).unwrap_or(0)
    }

    /// The ids this handle knows the store holds (`None`: it does not know them all).
    fn known_ids(&self) -> std::sync::MutexGuard<'_, Option<KnownIds>> {
        self.known_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an item with this id may be in the store (then its key is looked up); an id
    /// said to be absent is remembered as written from here on.
    fn may_hold_item(&self, id: &str) -> bool {
        let mut known = self.known_ids();
        let Some(ids) = known.as_mut() else {
            return true;
        };
        if ids.hashes.len() >= MAX_KNOWN_IDS {
            *known = None;
            return true;
        }
        !ids.hashes.insert(id_hash(id))
    }

    /// Stops trusting the ids this handle knows (ids were written another way).
    fn forget_known_ids(&self) {
        *self.known_ids() = None;
    }

    /// Counts ids added to (`added`) and removed from the store, where the count is known.
    fn count_ids(&self, added: u64, removed: u64) {
        if let Some(ids) = self.known_ids().as_mut() {
            ids.count = (ids.count + added).saturating_sub(removed);
        }
    }

    /// Per step, the results this handle stored under a key that had none (counted once each
    /// is durable): add them to [`DiskStore::result_counts`] taken at open for a live count.
    pub fn results_added(&self) -> BTreeMap<String, u64> {
        self.added
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Opens the database (the one already in `dir`, else the one asked for), checks the
    /// format.
    fn open_inner(dir: &Path, options: &StoreOptions, write_pid: bool) -> Result<Self, Error> {
        let backend = match Backend::detect(dir) {
            Some(found) => {
                // Said to a run that asked for the other database, not to readers (`atk status`,
                // `atk merge` reading shards) that ask for none in particular.
                if found != options.backend && write_pid {
                    tracing::info!(
                        dir = %dir.display(),
                        found = found.name(),
                        asked = options.backend.name(),
                        "the store keeps the database it was made with; `atk merge` copies it into a new output dir in another"
                    );
                }
                found
            }
            None => options.backend,
        };
        let open = || -> Result<Box<dyn Kv>, Error> {
            Ok(match backend {
                Backend::Sled => Box::new(SledKv::open(
                    dir,
                    options.cache_capacity.unwrap_or(SLED_CACHE),
                    options.flush_interval,
                )?),
                Backend::Redb => Box::new(RedbKv::open(
                    dir,
                    options.cache_capacity.unwrap_or(REDB_CACHE),
                )?),
            })
        };
        // A store just closed by this process can stay locked for a moment: sled's own I/O
        // threads finish their last writes after the handle is dropped. With no pid file
        // (the holder closed cleanly), wait a little for the lock instead of failing.
        let mut waited = Duration::ZERO;
        let kv = loop {
            match open() {
                Err(Error::Locked { pid: None, .. }) if waited < LOCK_GRACE => {
                    std::thread::sleep(LOCK_POLL);
                    waited += LOCK_POLL;
                }
                other => break other?,
            }
        };
        check_format(dir, kv.as_ref())?;
        let indexed = backend == Backend::Redb;
        if indexed {
            build_roots_index(dir, kv.as_ref(), false)?;
            build_done_index(kv.as_ref(), false)?;
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
        // redb counts a table's keys in O(1); sled would walk the tree, so it reads one key.
        let failures_possible = if indexed {
            kv.len(Tree::Failures)? > 0
        } else {
            kv.scan(Tree::Failures, b"").next().transpose()?.is_some()
        };
        // Both trees: a crash between an items batch and its id index batch can leave items
        // without ids (then ids are looked up, as they always were).
        let mut no_items = true;
        for tree in [Tree::ItemIds, Tree::Items] {
            no_items &= kv.scan(tree, b"").next().transpose()?.is_none();
        }
        tracing::debug!(dir = %dir.display(), backend = backend.name(), "store opened");
        Ok(Self {
            dir: dir.to_path_buf(),
            kv,
            indexed,
            pid_file,
            added: Default::default(),
            failures_possible: failures_possible.into(),
            known_ids: std::sync::Mutex::new(no_items.then(KnownIds::default)),
        })
    }

    /// Writes a chunk of items: the `items` writes first, then the id index, not as one
    /// transaction (sled transactions made seeding ~2.7x slower than bare batches). A crash
    /// between the two (before `put_items` returned) leaves items whose index entry is
    /// missing or stale; the next seeding finds the index differs and rewrites both,
    /// removing the item's old key, so the store converges.
    async fn put_item_chunk(&self, chunk: Vec<PendingItem>) -> Result<(), Error> {
        let mut ops = Vec::with_capacity(chunk.len() * 2);
        let mut ids = Vec::with_capacity(chunk.len());
        let new = chunk.iter().filter(|p| p.old_key.is_none()).count() as u64;
        for pending in chunk {
            if let Some(old) = pending.old_key
                && old != pending.key
            {
                if self.indexed {
                    ops.push(Op::Remove(Tree::Roots, old.clone()));
                }
                ops.push(Op::Remove(Tree::Items, old));
            }
            if self.indexed {
                ops.push(if pending.root {
                    Op::Put(Tree::Roots, pending.key.clone(), Vec::new())
                } else {
                    Op::Remove(Tree::Roots, pending.key.clone())
                });
            }
            ids.push(Op::Put(
                Tree::ItemIds,
                pending.id.into_bytes(),
                pending.key.clone(),
            ));
            ops.push(Op::Put(Tree::Items, pending.key, pending.bytes));
        }
        ops.extend(ids);
        self.kv.write(ops, false, false).await?;
        self.count_ids(new, 0);
        Ok(())
    }

    /// Writes items (see [`Store::put_items`]); waits for the disk only when `durable`.
    async fn write_items(&self, items: Vec<ItemRecord>, durable: bool) -> Result<(), Error> {
        let mut chunk: Vec<PendingItem> = Vec::with_capacity(ITEMS_PER_BATCH.min(items.len()));
        let mut in_chunk = std::collections::HashSet::new();
        let mut written = 0_usize;
        for item in items {
            if in_chunk.contains(&item.id) {
                // The same id twice in one call: write the first before reading its key back.
                self.put_item_chunk(std::mem::take(&mut chunk)).await?;
                in_chunk.clear();
            }
            let key = item_key(&item.order, &item.id);
            let old_key = match self.may_hold_item(&item.id) {
                true => self.kv.get(Tree::ItemIds, item.id.as_bytes())?,
                false => None,
            };
            let id = item.id.clone();
            let root = item.parent.is_none();
            let bytes = encode(item);
            // A resumed run re-seeds the same chunks: reads are far cheaper than writes.
            if old_key.as_deref() == Some(key.as_slice())
                && self.kv.get(Tree::Items, &key)?.as_deref() == Some(bytes.as_slice())
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
                root,
            });
            if chunk.len() == ITEMS_PER_BATCH {
                self.put_item_chunk(std::mem::take(&mut chunk)).await?;
                in_chunk.clear();
                // Seeding can be large: let other tasks on this worker run between chunks.
                tokio::task::yield_now().await;
            }
        }
        if !chunk.is_empty() {
            self.put_item_chunk(chunk).await?;
        }
        if written == 0 || !durable {
            // Nothing changed (re-seeding a resumed run), or the caller flushes later.
            return Ok(());
        }
        self.kv.write(Vec::new(), false, true).await
    }

    /// Iterates a step's records in `tree`, decoding each value.
    fn step_records<T: crate::codec::Versioned + Send + 'static>(
        &self,
        tree: Tree,
        step: &str,
    ) -> Records<'_, (String, T)> {
        let prefix = match step_prefix(step) {
            Ok(prefix) => prefix,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let prefix_len = prefix.len();
        Box::new(self.kv.scan(tree, &prefix).map(move |entry| {
            let (key, value) = entry?;
            let id = item_id_of(prefix_len, &key)?;
            let record = decode(
                &self.dir,
                || format!("{}:{}", tree.name(), display(&key)),
                &value,
            )?;
            Ok((id, record))
        }))
    }

    /// Counts the keys of a step's records in `tree` without decoding values.
    fn count_step(&self, tree: Tree, step: &str) -> Result<u64, Error> {
        self.kv
            .scan(tree, &step_prefix(step)?)
            .try_fold(0, |n, entry| entry.map(|_| n + 1))
    }

    /// The tree whose keys say which results exist: the key-only index where kept.
    fn done(&self) -> Tree {
        if self.indexed {
            Tree::Done
        } else {
            Tree::Results
        }
    }

    /// Without the roots index: each root's key, id and bytes from one scan of `items`, roots
    /// told from the start of each record's bytes.
    fn scanned_roots(
        &self,
    ) -> impl Iterator<Item = Result<(Vec<u8>, String, Vec<u8>), Error>> + Send + '_ {
        self.kv
            .scan(Tree::Items, b"")
            .map(move |entry| {
                let (key, value) = entry?;
                let id = item_key_id(&key)?;
                Ok(is_root(&self.dir, &id, &key, &value)?.then_some((key, id, value)))
            })
            .filter_map(Result::transpose)
    }

    /// Decodes an item stored under `key`.
    fn decode_item(&self, key: &[u8], bytes: &[u8]) -> Result<ItemRecord, Error> {
        decode(&self.dir, || format!("items:{}", display_item(key)), bytes)
    }
}

/// An item on its way into the store.
struct PendingItem {
    /// Its key in `items`.
    key: Vec<u8>,
    /// Its id.
    id: String,
    /// The encoded record.
    bytes: Vec<u8>,
    /// Its key in `items` before this write, from the id index.
    old_key: Option<Vec<u8>>,
    /// Whether it is a root item (no parent).
    root: bool,
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        if let Some(path) = &self.pid_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::debug!(dir = %self.dir.display(), commits = self.kv.commits(), "store closed");
    }
}

#[async_trait]
impl Store for DiskStore {
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        self.write_items(items, true).await
    }

    async fn put_items_unsynced(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        self.write_items(items, false).await
    }

    fn item(&self, id: &str) -> Result<Option<ItemRecord>, Error> {
        let Some(key) = self.kv.get(Tree::ItemIds, id.as_bytes())? else {
            return Ok(None);
        };
        match self.kv.get(Tree::Items, &key)? {
            Some(bytes) => self.decode_item(&key, &bytes).map(Some),
            None => Err(Error::Corrupt {
                key: format!("item_ids:{id}"),
                message: "the id index points at a missing item".to_owned(),
            }),
        }
    }

    fn items(&self) -> Records<'_, ItemRecord> {
        Box::new(self.kv.scan(Tree::Items, b"").map(move |entry| {
            let (key, value) = entry?;
            self.decode_item(&key, &value)
        }))
    }

    fn item_ids(&self) -> Records<'_, String> {
        Box::new(
            self.kv
                .scan(Tree::Items, b"")
                .map(move |entry| item_key_id(&entry?.0)),
        )
    }

    fn root_ids(&self) -> Records<'_, String> {
        if self.indexed {
            return Box::new(
                self.kv
                    .scan(Tree::Roots, b"")
                    .map(move |entry| item_key_id(&entry?.0)),
            );
        }
        Box::new(self.scanned_roots().map(|r| r.map(|(_, id, _)| id)))
    }

    fn root_items(&self) -> Records<'_, ItemRecord> {
        if self.indexed {
            // The roots index holds each root's key in `items`: one read, no id lookup.
            return Box::new(self.kv.scan(Tree::Roots, b"").filter_map(move |entry| {
                let key = match entry {
                    Ok((key, _)) => key,
                    Err(e) => return Some(Err(e)),
                };
                match self.kv.get(Tree::Items, &key) {
                    Ok(Some(bytes)) => Some(self.decode_item(&key, &bytes)),
                    // Removed since the scan began: not an item any more.
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            }));
        }
        Box::new(
            self.scanned_roots()
                .map(|r| r.and_then(|(key, _, value)| self.decode_item(&key, &value))),
        )
    }

    async fn remove_items(&self, ids: Vec<String>) -> Result<(), Error> {
        let mut removed = 0_usize;
        for chunk in ids.chunks(ITEMS_PER_BATCH) {
            let mut ops = Vec::new();
            for id in chunk {
                if let Some(key) = self.kv.get(Tree::ItemIds, id.as_bytes())? {
                    ops.push(Op::Remove(Tree::ItemIds, id.as_bytes().to_vec()));
                    if self.indexed {
                        ops.push(Op::Remove(Tree::Roots, key.clone()));
                    }
                    ops.push(Op::Remove(Tree::Items, key));
                    removed += 1;
                }
            }
            // Rare (inputs removed between runs), so atomic: a crash never leaves an index
            // entry pointing at a removed item, or an item without its entry.
            self.kv.write(ops, true, false).await?;
        }
        self.count_ids(0, removed as u64);
        if removed == 0 {
            return Ok(());
        }
        self.kv.write(Vec::new(), false, true).await
    }

    async fn put_result(
        &self,
        step: &str,
        item_id: &str,
        record: ResultRecord,
    ) -> Result<(), Error> {
        let key = step_key(step, item_id)?;
        let clears_failure = self
            .failures_possible
            .load(std::sync::atomic::Ordering::Acquire)
            && self.kv.contains(Tree::Failures, &key)?;
        let replaced = if self.indexed || clears_failure {
            let replaced = self.kv.contains(self.done(), &key)?;
            let mut ops = Vec::with_capacity(3);
            ops.push(Op::Put(Tree::Results, key.clone(), encode(record)));
            if self.indexed {
                ops.push(Op::Put(Tree::Done, key.clone(), Vec::new()));
            }
            if clears_failure {
                ops.push(Op::Remove(Tree::Failures, key));
            }
            // Atomic where a failure is cleared: a crash never leaves a result beside a stale
            // failure. redb commits every write of a call in one transaction, `done` key
            // included.
            self.kv.write(ops, clears_failure, true).await?;
            replaced
        } else {
            // One plain insert on sled (its transactions cost ~2.7x), made by its commit
            // thread right before the flush that answers this call, which reports whether it
            // replaced a result: no lookup first. Durable before this returns.
            self.kv
                .put_durable(Tree::Results, key, encode(record))
                .await?
        };
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
        match self.kv.get(Tree::Results, &key)? {
            Some(bytes) => {
                decode(&self.dir, || format!("results:{}", display(&key)), &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, Error> {
        self.kv.contains(self.done(), &step_key(step, item_id)?)
    }

    fn results(&self, step: &str) -> Records<'_, (String, ResultRecord)> {
        self.step_records(Tree::Results, step)
    }

    async fn put_failure(
        &self,
        step: &str,
        item_id: &str,
        record: FailureRecord,
    ) -> Result<(), Error> {
        let key = step_key(step, item_id)?;
        // Before the write: a result put racing with it looks for the failure to clear.
        self.failures_possible
            .store(true, std::sync::atomic::Ordering::Release);
        self.kv
            .write(
                vec![Op::Put(Tree::Failures, key, encode(record))],
                false,
                true,
            )
            .await
    }

    fn failures(&self, step: &str) -> Records<'_, (String, FailureRecord)> {
        self.step_records(Tree::Failures, step)
    }

    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, Error> {
        match self.kv.get(Tree::Meta, key.as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    key: format!("meta:{key}"),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    fn stage_meta(&self, key: &str, value: &serde_json::Value) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Io {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        self.kv
            .stage(vec![Op::Put(Tree::Meta, key.as_bytes().to_vec(), bytes)])
    }

    fn stage_meta_from(
        &self,
        key: &str,
        source: &std::sync::Arc<dyn crate::MetaSource>,
    ) -> Result<(), Error> {
        self.kv.staged().source(Tree::Meta, key.as_bytes(), source);
        Ok(())
    }

    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::Io {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        self.kv
            .write(
                vec![Op::Put(Tree::Meta, key.as_bytes().to_vec(), bytes)],
                false,
                true,
            )
            .await
    }

    async fn flush(&self) -> Result<(), Error> {
        self.kv.write(Vec::new(), false, true).await
    }

    fn has_any_result(&self, step: &str) -> Result<bool, Error> {
        Ok(self
            .kv
            .scan(self.done(), &step_prefix(step)?)
            .next()
            .transpose()?
            .is_some())
    }

    fn count_results(&self, step: &str) -> Result<u64, Error> {
        self.count_step(self.done(), step)
    }

    fn count_failures(&self, step: &str) -> Result<u64, Error> {
        self.count_step(Tree::Failures, step)
    }
}

mod layout;
mod maintenance;
#[cfg(test)]
mod tests;
