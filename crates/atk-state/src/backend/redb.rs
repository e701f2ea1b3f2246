//! The redb backend: one file, one table per [`Tree`], every write committed by one thread.
//!
//! redb allows one write transaction at a time and an `Immediate` commit waits for fsync, so
//! writers do not open transactions themselves (a tokio worker would block behind someone
//! else's fsync): they queue their writes here and await the answer. The commit thread takes
//! every queued write into one transaction, commits it (`Immediate` when any of them asked
//! for durability, `None` otherwise) and answers them all: a group commit, as with sled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;

use super::{Backend, Kv, Op, Pairs, Staged, Tree, guarded};
use crate::Error;

/// The database file inside the store directory: its presence marks a redb store.
pub(crate) const DATA_FILE: &str = "store.redb";
/// Written beside the database when this process closed it cleanly: the file's length and
/// modification time then. An open that finds it missing or not matching the file (a killed
/// run, or a file changed by something else) checks every page before anything is read.
pub(crate) const CLEAN_CLOSE_FILE: &str = "closed-cleanly";
/// Pairs a scan reads per read transaction.
const SCAN_PAGE: usize = 512;
/// Most writes taken into one transaction.
const JOBS_PER_COMMIT: usize = 4096;

/// The redb table of a tree.
fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// Writes waiting for the commit thread.
struct Job {
    /// The writes.
    ops: Vec<Op>,
    /// Whether the caller waits for the disk.
    durable: bool,
    /// Answered after the commit.
    done: oneshot::Sender<Result<(), Error>>,
}

/// A redb database and its commit thread.
pub(crate) struct RedbKv {
    /// Store directory (for messages).
    dir: PathBuf,
    /// The database (taken on drop, so it is closed before the clean-close mark is written).
    db: Option<Arc<Database>>,
    /// Queue to the commit thread (taken on drop to stop it).
    jobs: Option<mpsc::Sender<Job>>,
    /// The commit thread.
    thread: Option<JoinHandle<()>>,
    /// Commits made (also the generation of the data: a snapshot older than it is stale).
    commits: Arc<AtomicU64>,
    /// The last read snapshot's tables and the commit count it was opened at: reads share it
    /// until the next commit (a rerun over finished work makes no commit, so its hundreds of
    /// thousands of lookups open one read transaction instead of one each).
    snapshot: std::sync::Mutex<Snapshot>,
    /// Writes staged for the commit thread's next transaction.
    staged: Arc<Staged>,
}

/// A read transaction and the tables opened from it so far, by [`Tree`].
#[derive(Default)]
struct Snapshot {
    /// Commit count when begun.
    at: u64,
    /// The transaction every table of this snapshot is opened from.
    txn: Option<redb::ReadTransaction>,
    /// Tables opened so far (only those asked for: a commit makes a new snapshot, and most
    /// reads between two commits touch one or two trees).
    tables: Vec<Option<Arc<ReadTable>>>,
}

/// A table open for reading.
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl RedbKv {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`; a database
    /// not closed cleanly by atk since it last changed has every page's checksum verified
    /// first ([`Error::Damaged`] when it cannot be read back whole).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let file = dir.join(DATA_FILE);
        let existed = file.is_file();
        let closed_cleanly = existed && CleanClose::read(dir) == CleanClose::of(&file);
        // redb repairs a database left open by a killed process on its own, verifying the
        // checksums as it goes: then the check below would read the whole file a second time.
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut db = guarded(dir, || {
            let seen = Arc::clone(&repaired);
            Database::builder()
                .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
                .set_repair_callback(move |_| seen.store(true, Ordering::Relaxed))
                .create(&file)
                .map_err(|e| match e {
                    DatabaseError::DatabaseAlreadyOpen => crate::disk_store::locked(dir),
                    other => map_error(dir, redb::Error::from(other)),
                })
        })?;
        // Open from here on: a kill before the next clean close leaves no mark.
        CleanClose::remove(dir);
        if repaired.load(Ordering::Relaxed) {
            tracing::info!(store = %dir.display(), "the store was not closed cleanly: repaired on open");
        } else if existed && !closed_cleanly {
            verify(dir, &mut db)?;
        }
        let create = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            for tree in Tree::ALL {
                txn.open_table(table(tree))?;
            }
            txn.commit()?;
            Ok(())
        };
        guarded(dir, || create().map_err(|e| map_error(dir, e)))?;
        let db = Arc::new(db);
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Job>();
        let staged = Arc::new(Staged::default());
        let thread = {
            let (db, commits, at) = (Arc::clone(&db), Arc::clone(&commits), dir.to_path_buf());
            let staged = Arc::clone(&staged);
            std::thread::Builder::new()
                .name("atk-state-redb".to_owned())
                .spawn(move || run(&db, &rx, &staged, &commits, &at))
                .map_err(|e| Error::Io {
                    path: dir.to_path_buf(),
                    message: format!("starting the commit thread: {e}"),
                })?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            db: Some(db),
            jobs: Some(tx),
            thread: Some(thread),
            commits,
            snapshot: Default::default(),
            staged,
        })
    }

    /// A read-only view of a tree as of the last commit (or a later one).
    fn read(&self, tree: Tree) -> Result<Arc<ReadTable>, Error> {
        // Read before opening: a commit in between only makes the snapshot newer than `at`.
        let now = self.commits.load(Ordering::Acquire);
        let mut snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.at != now || snapshot.txn.is_none() {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            *snapshot = Snapshot {
                at: now,
                txn: Some(txn),
                tables: Tree::ALL.iter().map(|_| None).collect(),
            };
        }
        if let Some(open) = &snapshot.tables[tree as usize] {
            return Ok(Arc::clone(open));
        }
        let open = match &snapshot.txn {
            Some(txn) => Arc::new(txn.open_table(table(tree)).map_err(|e| self.err(e))?),
            None => unreachable!("a snapshot was begun above"),
        };
        snapshot.tables[tree as usize] = Some(Arc::clone(&open));
        Ok(open)
    }

    /// The open database.
    fn db(&self) -> Result<&Database, Error> {
        self.db.as_deref().ok_or_else(|| Error::Io {
            path: self.dir.clone(),
            message: "the database is closed".to_owned(),
        })
    }

    /// Runs a read, turning a panic inside redb into [`Error::Damaged`]: redb trusts the
    /// pages it reads (checksums are verified only when repairing after a crash), so a file
    /// damaged on disk makes it panic where sled reports a bad checksum.
    fn guard<T>(&self, read: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        guarded(&self.dir, read)
    }

    /// Maps a redb error for this store.
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        map_error(&self.dir, e.into())
    }
}

/// Maps a redb error: corruption becomes [`Error::Damaged`], the rest [`Error::Io`].
fn map_error(dir: &Path, e: redb::Error) -> Error {
    match e {
        redb::Error::Corrupted(message) => Error::Damaged {
            path: dir.to_path_buf(),
            message: format!("redb: {message}"),
        },
        other => Error::Io {
            path: dir.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// The commit loop: wait for writes, take all queued and everything staged, commit once,
/// answer them. When the queue closes, what is still staged is committed durably.
fn run(
    db: &Database,
    jobs: &mpsc::Receiver<Job>,
    staged: &Staged,
    commits: &AtomicU64,
    dir: &Path,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|job| job.durable);
        // Staged before these jobs were sent: applied first, so a job's own write of the same
        // key (sent later) wins.
        let early = staged.take();
        let result = guarded(dir, || {
            commit(
                db,
                early.iter().chain(batch.iter().flat_map(|job| &job.ops)),
                durable,
            )
            .map_err(|e| map_error(dir, e))
        });
        // Before answering: a read after a write's answer never uses an older snapshot.
        commits.fetch_add(1, Ordering::Release);
        if let Err(error) = &result {
            tracing::error!(%error, "store commit failed");
        }
        for job in batch {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(clone_error(dir, e)),
            };
            // A writer whose future was dropped no longer listens; nothing to do.
            let _ = job.done.send(answer);
        }
    }
    let rest = staged.take();
    if !rest.is_empty() {
        let closing = guarded(dir, || {
            commit(db, rest.iter(), true).map_err(|e| map_error(dir, e))
        });
        commits.fetch_add(1, Ordering::Release);
        if let Err(error) = closing {
            tracing::error!(%error, "the store's last staged writes could not be committed");
        }
    }
}

/// Every writer of a failed commit gets the same error.
fn clone_error(dir: &Path, e: &Error) -> Error {
    match e {
        Error::Damaged { message, .. } => Error::Damaged {
            path: dir.to_path_buf(),
            message: message.clone(),
        },
        other => Error::Io {
            path: dir.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// One transaction holding every write of `ops`.
fn commit<'a>(
    db: &Database,
    ops: impl Iterator<Item = &'a Op>,
    durable: bool,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    {
        let mut tables: Vec<Option<redb::Table<'_, &'static [u8], &'static [u8]>>> =
            Tree::ALL.iter().map(|_| None).collect();
        for op in ops {
            let slot = &mut tables[op.tree() as usize];
            if slot.is_none() {
                *slot = Some(txn.open_table(table(op.tree()))?);
            }
            let Some(open) = slot.as_mut() else {
                continue;
            };
            match op {
                Op::Put(_, k, v) => {
                    open.insert(k.as_slice(), v.as_slice())?;
                }
                Op::Remove(_, k) => {
                    open.remove(k.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl Drop for RedbKv {
    fn drop(&mut self) {
        // Closing the queue ends the loop after the writes already queued.
        self.jobs.take();
        let mut clean = true;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's commit thread panicked");
            clean = false;
        }
        // Read transactions end before the database closes (its close writes the file).
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Snapshot::default();
        let Some(db) = self.db.take() else {
            return;
        };
        match Arc::try_unwrap(db) {
            Ok(db) => {
                let closed = guarded(&self.dir, || {
                    drop(db);
                    Ok(())
                });
                if clean && closed.is_ok() {
                    CleanClose::write(&self.dir);
                }
            }
            // Still shared (cannot happen once the commit thread ended): no mark, so the next
            // open checks the file.
            Err(_) => tracing::debug!("the database is still shared at close"),
        }
    }
}

/// What a clean close recorded of the database file: its length and modification time.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CleanClose {
    /// File length in bytes.
    len: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    modified_ns: u128,
}

impl CleanClose {
    /// The file's length and modification time now.
    fn of(file: &Path) -> Option<Self> {
        let meta = std::fs::metadata(file).ok()?;
        let modified_ns = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(Self {
            len: meta.len(),
            modified_ns,
        })
    }

    /// The mark left by the last clean close, if any.
    fn read(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join(CLEAN_CLOSE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes the mark (the database is open).
    fn remove(dir: &Path) {
        match std::fs::remove_file(dir.join(CLEAN_CLOSE_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, "could not remove the store's clean-close mark"),
        }
    }

    /// Records the closed database file (best effort: without it the next open checks).
    fn write(dir: &Path) {
        let Some(mark) = Self::of(&dir.join(DATA_FILE)) else {
            return;
        };
        let written = serde_json::to_vec(&mark)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(dir.join(CLEAN_CLOSE_FILE), bytes));
        if let Err(error) = written {
            tracing::debug!(%error, "could not write the store's clean-close mark");
        }
    }
}

/// Verifies every page of a database not closed cleanly (redb otherwise trusts what it reads
/// and panics deep inside a later read). A repair that kept the data is logged; one that could
/// not be made is [`Error::Damaged`]. Costs a read of the whole file (docs/performance.md).
fn verify(dir: &Path, db: &mut Database) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let intact = guarded(dir, || {
        db.check_integrity()
            .map_err(|e| map_error(dir, redb::Error::from(e)))
    })?;
    let ms = started.elapsed().as_millis() as u64;
    if intact {
        tracing::debug!(store = %dir.display(), ms, "store not closed cleanly: every page checked, intact");
    } else {
        tracing::warn!(store = %dir.display(), ms, "the store was not closed cleanly and had to be repaired; results written since its last good commit may be missing (the run counts them)");
    }
    Ok(())
}

#[async_trait]
impl Kv for RedbKv {
    fn backend(&self) -> Backend {
        Backend::Redb
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.guard(|| {
            let table = self.read(tree)?;
            let value = table.get(key).map_err(|e| self.err(e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Pairs<'_> {
        // Read a page of pairs at a time from the latest snapshot, then let it go: a scan
        // that held one read transaction for a whole run (the executor walks every root)
        // kept redb from reusing any page written after it began, and the file grew with
        // every commit's copies (1.7 GB for 100 k small items).
        let prefix = prefix.to_vec();
        let mut after: Option<Vec<u8>> = None;
        let mut page: std::collections::VecDeque<(Vec<u8>, Vec<u8>)> = Default::default();
        let mut finished = false;
        Box::new(std::iter::from_fn(move || {
            if page.is_empty() && !finished {
                let read = self.guard(|| {
                    let table = self.read(tree)?;
                    let range = match &after {
                        None => table.range::<&[u8]>(prefix.as_slice()..),
                        Some(last) => table.range::<&[u8]>((
                            std::ops::Bound::Excluded(last.as_slice()),
                            std::ops::Bound::Unbounded,
                        )),
                    }
                    .map_err(|e| self.err(e))?;
                    let mut got = Vec::with_capacity(SCAN_PAGE);
                    for entry in range {
                        let (k, v) = entry.map_err(|e| self.err(e))?;
                        let k = k.value();
                        if !k.starts_with(&prefix) || got.len() == SCAN_PAGE {
                            break;
                        }
                        got.push((k.to_vec(), v.value().to_vec()));
                    }
                    Ok(got)
                });
                match read {
                    Ok(got) => {
                        finished = got.len() < SCAN_PAGE;
                        after = got.last().map(|(k, _)| k.clone());
                        page.extend(got);
                    }
                    Err(e) => {
                        finished = true;
                        return Some(Err(e));
                    }
                }
            }
            page.pop_front().map(Ok)
        }))
    }

    fn len(&self, tree: Tree) -> Result<u64, Error> {
        self.guard(|| self.read(tree)?.len().map_err(|e| self.err(e)))
    }

    async fn write(&self, ops: Vec<Op>, _atomic: bool, durable: bool) -> Result<(), Error> {
        if ops.is_empty() && !durable {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let job = Job { ops, durable, done };
        let stopped = || Error::Io {
            path: self.dir.clone(),
            message: "the store's commit thread stopped".to_owned(),
        };
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn put_durable(&self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<bool, Error> {
        // The commit thread applies queued writes without saying what they replaced: a
        // lookup, then the write.
        let had = self.contains(tree, &key)?;
        self.write(vec![Op::Put(tree, key, value)], false, true)
            .await?;
        Ok(had)
    }

    fn staged(&self) -> &Staged {
        &self.staged
    }

    fn init(&self, ops: Vec<Op>) -> Result<(), Error> {
        let done = self.guard(|| commit(self.db()?, ops.iter(), true).map_err(|e| self.err(e)));
        self.commits.fetch_add(1, Ordering::Release);
        done
    }

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        std::fs::metadata(self.dir.join(DATA_FILE))
            .map(|m| m.len())
            .map_err(|e| Error::Io {
                path: self.dir.clone(),
                message: e.to_string(),
            })
    }
}
