#![doc = include_str!("../README.md")]

mod backend;
mod codec;
mod commit;
mod corpus;
mod disk_store;
mod error;
mod key;
mod mem_store;
mod record;
mod retire;
mod status;

use async_trait::async_trait;

pub use backend::Backend;
pub use corpus::{
    Corpus, CorpusChunk, CorpusError, CorpusIndex, CorpusIndexBuilder, IndexInPlace, ItemRng,
    MemCorpus,
};
pub use disk_store::{Collected, DiskStore, Merged, STORE_FORMAT_VERSION, SledStore, StoreOptions};
pub use error::Error;
pub use mem_store::MemStore;
pub use record::{
    Details, FailureRecord, FieldError, Fields, ItemRecord, MAX_FAILURE_PROMPT_CHARS, Outcome,
    RECORD_VERSION, ResultRecord, RunMeta, now_ms,
};
pub use retire::{Retired, retire_stale_items};
pub use status::{status_snapshot_path, write_status_snapshot};

/// A metadata value staged by [`Store::stage_meta_from`]: read when the store commits.
pub trait MetaSource: Send + Sync {
    /// The value as it is now.
    fn current(&self) -> serde_json::Value;
}

/// A boxed iterator over stored records, streamed from disk.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<T, Error>> + Send + 'a>;

/// Where a run keeps everything it has done. Object safe; the on-disk implementation is [`DiskStore`] (sled or redb).
///
/// Durability contract: when `put_result` / `put_failure` return `Ok`, the record survives a
/// SIGKILL of the process (it has been flushed, possibly as part of a group commit).
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts or replaces an item (seeding from chunks, or children of a one-to-many step).
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), Error>;
    /// [`put_items`](Self::put_items) without waiting for the disk: the items can be read when
    /// it returns and are durable once a durable write made after it has returned
    /// ([`flush`](Self::flush), [`put_meta`](Self::put_meta), a result). For seeding, which
    /// waits for the disk once, at its end, instead of once per call. The default waits.
    async fn put_items_unsynced(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        self.put_items(items).await
    }
    /// One item by id.
    fn item(&self, id: &str) -> Result<Option<ItemRecord>, Error>;
    /// All items, in `order` order.
    fn items(&self) -> Records<'_, ItemRecord>;
    /// Stores a step's result for an item, durably, and clears any failure recorded for it.
    async fn put_result(
        &self,
        step: &str,
        item_id: &str,
        record: ResultRecord,
    ) -> Result<(), Error>;
    /// A step's result for an item.
    fn result(&self, step: &str, item_id: &str) -> Result<Option<ResultRecord>, Error>;
    /// True when the step has a stored result for the item (cheap: no decode).
    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, Error>;
    /// All results of a step as `(item_id, record)`, in item-id order.
    fn results(&self, step: &str) -> Records<'_, (String, ResultRecord)>;
    /// Records that an item failed a step, durably.
    async fn put_failure(
        &self,
        step: &str,
        item_id: &str,
        record: FailureRecord,
    ) -> Result<(), Error>;
    /// All failures of a step as `(item_id, record)`.
    fn failures(&self, step: &str) -> Records<'_, (String, FailureRecord)>;
    /// Reads a named metadata value (run meta, cost totals, ...).
    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, Error>;
    /// Writes a named metadata value durably.
    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), Error>;
    /// Flushes everything and waits for it to be on disk.
    async fn flush(&self) -> Result<(), Error>;
    /// Writes a named metadata value without waiting for the disk: it is durable once any
    /// durable write made after it returns (a `put_result` included), and values staged one
    /// after another land in that order. For figures that must be on disk whenever a result
    /// is (the cost of the replies those results came from). The default refuses with
    /// [`Error::Unsupported`].
    fn stage_meta(&self, key: &str, value: &serde_json::Value) -> Result<(), Error> {
        let _ = (key, value);
        Err(Error::Unsupported {
            operation: "stage meta",
        })
    }
    /// [`stage_meta`](Self::stage_meta) with the value read from `source` only when the store
    /// next commits (once per commit, however often it is staged in between): the same
    /// guarantee, without building the value on every call. A call after a commit stages it
    /// again. The default reads the source at once and stages what it gives.
    fn stage_meta_from(
        &self,
        key: &str,
        source: &std::sync::Arc<dyn MetaSource>,
    ) -> Result<(), Error> {
        self.stage_meta(key, &source.current())
    }
    /// Every item id (roots and children), in `order` order. The sled store reads keys only,
    /// decoding no record: for passes that need ids or counts, not fields.
    fn item_ids(&self) -> Records<'_, String> {
        Box::new(self.items().map(|r| r.map(|item| item.id)))
    }
    /// The ids of root items (`parent == None`), in `order` order. The sled store decodes no
    /// record it wrote itself (it reads the parent from the start of the stored bytes).
    fn root_ids(&self) -> Records<'_, String> {
        Box::new(self.items().filter_map(|r| match r {
            Ok(item) if item.parent.is_some() => None,
            Ok(item) => Some(Ok(item.id)),
            Err(e) => Some(Err(e)),
        }))
    }
    /// The root items themselves, decoded, in `order` order: for a pass that reads every root
    /// anyway (a first run). The disk store reads each from its own scan, with no lookup by id.
    fn root_items(&self) -> Records<'_, ItemRecord> {
        Box::new(
            self.items()
                .filter(|r| !matches!(r, Ok(item) if item.parent.is_some())),
        )
    }
    /// Removes items (their records and id index entries) durably; unknown ids are ignored.
    /// Results and failures are kept, so an item seeded again later reuses them. The default
    /// body refuses with [`Error::Unsupported`].
    async fn remove_items(&self, ids: Vec<String>) -> Result<(), Error> {
        let _ = ids;
        Err(Error::Unsupported {
            operation: "remove items",
        })
    }
    /// How many results a step has (the sled store counts keys without decoding).
    fn count_results(&self, step: &str) -> Result<u64, Error> {
        self.results(step).try_fold(0, |n, r| r.map(|_| n + 1))
    }
    /// Whether a step has any stored result (the disk store reads one key).
    fn has_any_result(&self, step: &str) -> Result<bool, Error> {
        self.results(step).next().transpose().map(|r| r.is_some())
    }
    /// How many failures a step has (the sled store counts keys without decoding).
    fn count_failures(&self, step: &str) -> Result<u64, Error> {
        self.failures(step).try_fold(0, |n, r| r.map(|_| n + 1))
    }
}
