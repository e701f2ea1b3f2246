//! The sled 0.34 backend: one tree per [`Tree`], made SIGKILL-safe by group commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Backend, Kv, Op, Pairs, Staged, Tree};
use crate::Error;
use crate::commit::{Committer, FlushResult, GroupCommit};

/// sled's main file: its presence marks a sled store.
pub(crate) const DATA_FILE: &str = "db";

/// A sled database and its trees.
pub(crate) struct SledKv {
    /// Store directory (for messages).
    dir: PathBuf,
    /// The database.
    db: sled::Db,
    /// Trees in [`Tree::ALL`] order (`Root` is the default tree); the index trees, which
    /// sled stores do not keep, are opened only if asked for, so a sled store's files stay
    /// as they were before the indexes existed.
    trees: Vec<std::sync::OnceLock<sled::Tree>>,
    /// The commit thread; writes handed to it are one put each.
    commit: GroupCommit<HandedPut>,
    /// Writes staged for the next flush (applied by the commit thread before it flushes).
    staged: std::sync::Arc<Staged>,
}

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path, cache_capacity: u64, interval: Duration) -> Result<Self, Error> {
        let db = super::guarded(dir, || {
            sled::Config::new()
                .path(dir)
                .cache_capacity(cache_capacity)
                // The commit thread flushes whenever a writer waits; sled's timer would only
                // add flushes competing with it.
                .flush_every_ms(None)
                .open()
                .map_err(|e| open_error(dir, e))
        })?;
        let mut trees = Vec::with_capacity(Tree::ALL.len());
        for tree in Tree::ALL {
            let slot = std::sync::OnceLock::new();
            match tree {
                Tree::Roots | Tree::Done => {}
                Tree::Root => drop(slot.set((*db).clone())),
                other => drop(slot.set(db.open_tree(other.name()).map_err(|e| io(dir, e))?)),
            }
            trees.push(slot);
        }
        let staged = std::sync::Arc::new(Staged::default());
        let commit = GroupCommit::start(
            SledCommitter {
                db: db.clone(),
                staged: std::sync::Arc::clone(&staged),
            },
            interval,
        )
        .map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            message: format!("starting the commit thread: {e}"),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            trees,
            commit,
            staged,
        })
    }

    /// The sled tree behind `tree`, opened on first use.
    fn tree(&self, tree: Tree) -> Result<&sled::Tree, Error> {
        let slot = &self.trees[tree as usize];
        if let Some(open) = slot.get() {
            return Ok(open);
        }
        let open = self.db.open_tree(tree.name()).map_err(|e| self.io(e))?;
        Ok(slot.get_or_init(|| open))
    }

    /// Maps a sled error for this store.
    fn io(&self, e: impl std::fmt::Display) -> Error {
        io(&self.dir, e)
    }
}

impl Drop for SledKv {
    fn drop(&mut self) {
        self.commit.shutdown();
        // What is still staged goes to disk with the close.
        let rest = self.staged.take();
        if !rest.is_empty()
            && let Err(error) = apply(&self.db, rest).and_then(|()| self.db.flush().map(drop))
        {
            tracing::error!(%error, "the store's last staged writes could not be written");
        }
    }
}

/// A put handed to the commit thread: the tree, the key, the value.
pub(crate) type HandedPut = (sled::Tree, Vec<u8>, Vec<u8>);

/// What sled's commit thread does before and in each flush.
struct SledCommitter {
    /// The database.
    db: sled::Db,
    /// Writes staged for the next flush.
    staged: std::sync::Arc<Staged>,
}

impl Committer for SledCommitter {
    type Write = HandedPut;

    fn apply(&self, (tree, key, value): HandedPut) -> Result<bool, String> {
        // sled's insert returns the value it replaced: no lookup before the write.
        tree.insert(key, value)
            .map(|old| old.is_some())
            .map_err(|e| e.to_string())
    }

    fn flush(&self) -> FlushResult {
        // Staged before the waiters this flush answers registered: applied first.
        apply(&self.db, self.staged.take()).map_err(|e| e.to_string())?;
        self.db.flush().map(drop).map_err(|e| e.to_string())
    }
}

/// Applies staged writes to their trees (not flushed).
fn apply(db: &sled::Db, ops: Vec<Op>) -> sled::Result<()> {
    for op in ops {
        let tree = match op.tree() {
            Tree::Root => (**db).clone(),
            other => db.open_tree(other.name())?,
        };
        match op {
            Op::Put(_, k, v) => tree.insert(k, v).map(drop)?,
            Op::Remove(_, k) => tree.remove(k).map(drop)?,
        }
    }
    Ok(())
}

/// Maps a sled error to [`Error::Io`], or [`Error::Damaged`] for a bad checksum.
fn io(dir: &Path, e: impl std::fmt::Display) -> Error {
    let message = e.to_string();
    // sled's `Error::Corruption` (a bad checksum met while reading a page) reads so.
    if message.starts_with("Read corrupted data") {
        return Error::Damaged {
            path: dir.to_path_buf(),
            message,
        };
    }
    Error::Io {
        path: dir.to_path_buf(),
        message,
    }
}

/// Maps an open failure: sled's lock error becomes [`Error::Locked`] naming the holder.
fn open_error(dir: &Path, error: sled::Error) -> Error {
    match error {
        // sled 0.34 reports a held lock only as this Io message (config.rs, `try_lock`).
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            crate::disk_store::locked(dir)
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
impl Kv for SledKv {
    fn backend(&self) -> Backend {
        Backend::Sled
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.tree(tree)?
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.io(e))
    }

    fn contains(&self, tree: Tree, key: &[u8]) -> Result<bool, Error> {
        self.tree(tree)?.contains_key(key).map_err(|e| self.io(e))
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Pairs<'_> {
        let tree = match self.tree(tree) {
            Ok(tree) => tree,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(tree.scan_prefix(prefix).map(move |entry| {
            entry
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.io(e))
        }))
    }

    fn len(&self, tree: Tree) -> Result<u64, Error> {
        Ok(self.tree(tree)?.len() as u64)
    }

    async fn write(&self, ops: Vec<Op>, atomic: bool, durable: bool) -> Result<(), Error> {
        let mut touched: Vec<Tree> = Vec::new();
        for op in &ops {
            if !touched.contains(&op.tree()) {
                touched.push(op.tree());
            }
        }
        if atomic && touched.len() > 1 {
            // A transaction only where asked: sled transactions made seeding ~2.7x slower
            // than bare batches.
            let trees = touched
                .iter()
                .map(|t| self.tree(*t).cloned())
                .collect::<Result<Vec<sled::Tree>, Error>>()?;
            trees
                .as_slice()
                .transaction(|views| {
                    for op in &ops {
                        let at = touched.iter().position(|t| *t == op.tree()).unwrap_or(0);
                        match op {
                            Op::Put(_, k, v) => {
                                views[at].insert(k.as_slice(), v.as_slice())?;
                            }
                            Op::Remove(_, k) => {
                                views[at].remove(k.as_slice())?;
                            }
                        }
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e: TransactionError<()>| self.io(format!("transaction: {e:?}")))?;
        } else {
            for tree in touched {
                let mut ops_here = ops.iter().filter(|op| op.tree() == tree).peekable();
                let first = ops_here.next();
                if ops_here.peek().is_none() {
                    // One write: a plain insert. sled's `apply_batch` takes a lock that
                    // excludes every other writer: a batch per result, from hundreds of tasks,
                    // made a 10 k run 2x slower with 3 s of system time.
                    match first {
                        Some(Op::Put(_, k, v)) => self
                            .tree(tree)?
                            .insert(k.as_slice(), v.as_slice())
                            .map(drop),
                        Some(Op::Remove(_, k)) => self.tree(tree)?.remove(k.as_slice()).map(drop),
                        None => Ok(()),
                    }
                    .map_err(|e| self.io(e))?;
                    continue;
                }
                let mut batch = sled::Batch::default();
                for op in first.into_iter().chain(ops_here) {
                    match op {
                        Op::Put(_, k, v) => batch.insert(k.as_slice(), v.as_slice()),
                        Op::Remove(_, k) => batch.remove(k.as_slice()),
                    }
                }
                self.tree(tree)?
                    .apply_batch(batch)
                    .map_err(|e| self.io(e))?;
            }
        }
        if durable {
            self.commit
                .durable()
                .await
                .map_err(|message| self.io(format!("flush failed: {message}")))?;
        }
        Ok(())
    }

    async fn put_durable(&self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<bool, Error> {
        // Handed to the commit thread, which inserts it right before its next flush: this
        // task does no tree work, and the run's puts are applied one after another by one
        // thread instead of contending on sled's page cache.
        self.commit
            .write_durable((self.tree(tree)?.clone(), key, value))
            .await
            .map_err(|message| self.io(format!("flush failed: {message}")))
    }

    fn staged(&self) -> &Staged {
        &self.staged
    }

    fn init(&self, ops: Vec<Op>) -> Result<(), Error> {
        for op in ops {
            match op {
                Op::Put(tree, k, v) => self.tree(tree)?.insert(k, v).map(drop),
                Op::Remove(tree, k) => self.tree(tree)?.remove(k).map(drop),
            }
            .map_err(|e| self.io(e))?;
        }
        self.db.flush().map(drop).map_err(|e| self.io(e))
    }

    fn commits(&self) -> u64 {
        self.commit.flushes()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.db.size_on_disk().map_err(|e| self.io(e))
    }
}
