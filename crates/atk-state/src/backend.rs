//! The byte layer under [`DiskStore`](crate::DiskStore): eight named trees of byte keys and
//! values, batches of writes, and durability. Two implementations: sled 0.34 (the default,
//! `backend/sled.rs`) and redb (`backend/redb.rs`), whose memory stays within its cache
//! however large the store grows (see docs/performance.md).

pub(crate) mod redb;
pub(crate) mod sled;

use std::path::Path;

use async_trait::async_trait;

use crate::{Error, MetaSource};

/// Runs `f`, turning a panic inside the database into [`Error::Damaged`]: redb trusts the
/// pages it reads (checksums are verified only when repairing after a crash), and sled 0.34
/// can panic while recovering a log damaged on disk. The database's own panic message (and
/// backtrace) is kept off stderr: the caller reports the damage in its own words.
pub(crate) fn guarded<T>(dir: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let outcome = quiet::catch(f);
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a page could not be read");
        tracing::debug!(store = %dir.display(), %message, "the database panicked");
        Err(Error::Damaged {
            path: dir.to_path_buf(),
            message: format!("the database failed reading its files ({message})"),
        })
    })
}

/// `catch_unwind` without the panic hook's output for the panics it catches.
///
/// The panic hook is process-wide and runs before unwinding starts, so swapping it around a
/// call would silence other threads' real panics too. Instead one hook is installed once: it
/// stays silent only on a thread that is inside [`catch`], and hands every other panic to the
/// hook that was there before (the default one, or a test harness's).
mod quiet {
    use std::cell::Cell;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Once;

    thread_local! {
        /// How many [`catch`] calls this thread is inside.
        static DEPTH: Cell<u32> = const { Cell::new(0) };
    }

    /// Installs the filtering hook (once per process).
    fn install() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if DEPTH.with(Cell::get) == 0 {
                    previous(info);
                }
            }));
        });
    }

    /// Resets the depth when the call ends, by return or by unwinding.
    struct Inside;

    impl Drop for Inside {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }

    /// Runs `f`, catching a panic in it without printing it.
    pub(super) fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
        install();
        DEPTH.with(|d| d.set(d.get() + 1));
        let _inside = Inside;
        panic::catch_unwind(AssertUnwindSafe(f))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_caught_panic_returns_its_message_and_the_depth_is_restored() {
            let caught = catch(|| -> u32 { panic!("page 7 unreadable") });
            let payload = caught.expect_err("the panic is caught");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"page 7 unreadable"));
            assert_eq!(DEPTH.with(Cell::get), 0);
            assert_eq!(catch(|| 5).ok(), Some(5));
        }
    }
}

/// Which database keeps a [`DiskStore`](crate::DiskStore)'s bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// sled 0.34 (the default): fast writes; its memory grows with the store (about 1.2 GB
    /// at a million items).
    #[default]
    Sled,
    /// redb: one file, memory bounded by its cache whatever the store's size.
    Redb,
}

impl Backend {
    /// The name used in configs and messages (`sled`, `redb`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Redb => "redb",
        }
    }

    /// The backend of the store already in `dir`, if there is one.
    pub fn detect(dir: &Path) -> Option<Backend> {
        if dir.join(sled::DATA_FILE).is_file() {
            Some(Backend::Sled)
        } else if dir.join(redb::DATA_FILE).is_file() {
            Some(Backend::Redb)
        } else {
            None
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sled" => Ok(Backend::Sled),
            "redb" => Ok(Backend::Redb),
            other => Err(format!(
                "unknown store backend {other:?} (use sled or redb)"
            )),
        }
    }
}

/// The store's trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tree {
    /// The format version (sled's default tree).
    Root,
    /// Items keyed by order then id.
    Items,
    /// Item id -> key in `Items`.
    ItemIds,
    /// Results keyed by step and item id.
    Results,
    /// Failures keyed by step and item id.
    Failures,
    /// Named metadata values.
    Meta,
    /// The `Items` keys of root items (no value): a rerun walks the roots without reading
    /// a single item record.
    Roots,
    /// The keys of `Results` (no value): whether a step has a result, and how many, from
    /// small pages instead of the records.
    Done,
}

impl Tree {
    /// Every tree.
    pub(crate) const ALL: [Tree; 8] = [
        Tree::Root,
        Tree::Items,
        Tree::ItemIds,
        Tree::Results,
        Tree::Failures,
        Tree::Meta,
        Tree::Roots,
        Tree::Done,
    ];

    /// Its name on disk.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::Root => "root",
            Tree::Items => "items",
            Tree::ItemIds => "item_ids",
            Tree::Results => "results",
            Tree::Failures => "failures",
            Tree::Meta => "meta",
            Tree::Roots => "roots",
            Tree::Done => "done",
        }
    }
}

/// One write.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Insert or replace.
    Put(Tree, Vec<u8>, Vec<u8>),
    /// Remove (absent keys are fine).
    Remove(Tree, Vec<u8>),
}

impl Op {
    /// The tree written.
    pub(crate) fn tree(&self) -> Tree {
        match self {
            Op::Put(tree, ..) | Op::Remove(tree, _) => *tree,
        }
    }

    /// The key written.
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Op::Put(_, key, _) | Op::Remove(_, key) => key,
        }
    }
}

/// Writes waiting for the next commit (`Kv::stage`): plain values and sources read at commit
/// time ([`MetaSource`]), one per key (a later staging of a key replaces the earlier one).
/// The commit path takes them (`take`) into its transaction (redb) or applies them before its
/// flush (sled), so staging wakes no commit of its own.
#[derive(Default)]
pub(crate) struct Staged {
    /// Set by every staging, cleared by `take`: nothing to read while it is false.
    dirty: std::sync::atomic::AtomicBool,
    /// What is staged.
    inner: std::sync::Mutex<StagedInner>,
}

/// [`Staged`]'s contents.
#[derive(Default)]
struct StagedInner {
    /// Values staged as they were (put or removed).
    ops: Vec<Op>,
    /// Sources, read at each commit after a staging; they stay registered.
    sources: Vec<(Tree, Vec<u8>, std::sync::Arc<dyn MetaSource>)>,
}

impl Staged {
    /// Locks the contents (a panic cannot leave them half-written).
    fn lock(&self) -> std::sync::MutexGuard<'_, StagedInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stages `ops` as they are, each replacing anything staged under its key.
    pub(crate) fn ops(&self, ops: Vec<Op>) {
        let mut inner = self.lock();
        for op in ops {
            let key = op.key().to_vec();
            inner
                .sources
                .retain(|(tree, k, _)| *tree != op.tree() || *k != key);
            inner
                .ops
                .retain(|staged| staged.tree() != op.tree() || staged.key() != key);
            inner.ops.push(op);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stages `key` in `tree` to be read from `source` at the next commit.
    pub(crate) fn source(&self, tree: Tree, key: &[u8], source: &std::sync::Arc<dyn MetaSource>) {
        let mut inner = self.lock();
        inner
            .ops
            .retain(|staged| staged.tree() != tree || staged.key() != key);
        match inner
            .sources
            .iter_mut()
            .find(|(t, k, _)| *t == tree && k.as_slice() == key)
        {
            Some(slot) if std::sync::Arc::ptr_eq(&slot.2, source) => {}
            Some(slot) => slot.2 = std::sync::Arc::clone(source),
            None => inner
                .sources
                .push((tree, key.to_vec(), std::sync::Arc::clone(source))),
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// What was staged since the last call, sources read now; empty when nothing was.
    pub(crate) fn take(&self) -> Vec<Op> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Vec::new();
        }
        let mut inner = self.lock();
        let mut ops = std::mem::take(&mut inner.ops);
        for (tree, key, source) in &inner.sources {
            // A value that cannot be written as JSON is left out (it never was before either).
            if let Ok(bytes) = serde_json::to_vec(&source.current()) {
                ops.push(Op::Put(*tree, key.clone(), bytes));
            }
        }
        ops
    }
}

/// Key-value pairs streamed from a tree.
pub(crate) type Pairs<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>> + Send + 'a>;

/// What [`DiskStore`](crate::DiskStore) needs of a database.
#[async_trait]
pub(crate) trait Kv: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// A value.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Whether a key is present.
    fn contains(&self, tree: Tree, key: &[u8]) -> Result<bool, Error> {
        self.get(tree, key).map(|v| v.is_some())
    }
    /// The pairs whose key starts with `prefix`, in key order.
    fn scan(&self, tree: Tree, prefix: &[u8]) -> Pairs<'_>;
    /// How many keys a tree holds.
    fn len(&self, tree: Tree) -> Result<u64, Error>;
    /// Applies `ops` (all or none when `atomic`; the sled backend otherwise applies one batch
    /// per tree), visible to reads when it returns; on disk too when `durable`.
    async fn write(&self, ops: Vec<Op>, atomic: bool, durable: bool) -> Result<(), Error>;
    /// Puts one value durably (on disk when it returns, by a commit that started after the
    /// call) and says whether the key held a value before.
    async fn put_durable(&self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<bool, Error>;
    /// Applies `ops` durably from synchronous code, while opening (before any other writer).
    fn init(&self, ops: Vec<Op>) -> Result<(), Error>;
    /// Queues `ops` without waiting for them (each replacing what was staged under its key):
    /// they reach the disk with the next durable write that comes after (sled: applied before
    /// its flush; redb: taken into its transaction). Staging wakes no commit of its own.
    fn stage(&self, ops: Vec<Op>) -> Result<(), Error> {
        self.staged().ops(ops);
        Ok(())
    }
    /// What is staged for the next commit.
    fn staged(&self) -> &Staged;
    /// Commits that reached the disk since open.
    fn commits(&self) -> u64;
    /// Bytes on disk.
    fn size_on_disk(&self) -> Result<u64, Error>;
}
