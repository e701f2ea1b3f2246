//! `MemStore`: an in-memory [`Store`] for dry runs and tests. Same contract as the sled
//! store except durability: nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::{Error, FailureRecord, ItemRecord, Records, ResultRecord, Store};

#[derive(Default)]
struct Inner {
    items: BTreeMap<(Vec<u64>, String), ItemRecord>,
    orders: HashMap<String, Vec<u64>>,
    results: BTreeMap<(String, String), ResultRecord>,
    failures: BTreeMap<(String, String), FailureRecord>,
    meta: BTreeMap<String, serde_json::Value>,
}

/// An in-memory store behind a mutex (reads return snapshots).
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
    /// Item records handed out by `item` and `items` (what a disk store would decode).
    records_read: AtomicU64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Item records read so far through `item` and `items` (ids from `item_ids` and
    /// `root_ids` are not counted: a disk store reads them without decoding records).
    pub fn records_read(&self) -> u64 {
        self.records_read.load(Ordering::SeqCst)
    }

    /// Results stored for a step.
    pub fn result_count(&self, step: &str) -> usize {
        self.lock()
            .results
            .keys()
            .filter(|(s, _)| s == step)
            .count()
    }
}

#[async_trait]
impl Store for MemStore {
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        let mut inner = self.lock();
        for item in items {
            if let Some(old) = inner.orders.insert(item.id.clone(), item.order.clone()) {
                inner.items.remove(&(old, item.id.clone()));
            }
            inner
                .items
                .insert((item.order.clone(), item.id.clone()), item);
        }
        Ok(())
    }

    fn item(&self, id: &str) -> Result<Option<ItemRecord>, Error> {
        let inner = self.lock();
        let found = inner
            .orders
            .get(id)
            .and_then(|o| inner.items.get(&(o.clone(), id.to_string())).cloned());
        self.records_read
            .fetch_add(u64::from(found.is_some()), Ordering::SeqCst);
        Ok(found)
    }

    fn items(&self) -> Records<'_, ItemRecord> {
        let items: Vec<_> = self.lock().items.values().cloned().collect();
        Box::new(items.into_iter().map(|item| {
            self.records_read.fetch_add(1, Ordering::SeqCst);
            Ok(item)
        }))
    }

    fn item_ids(&self) -> Records<'_, String> {
        let ids: Vec<_> = self.lock().items.keys().map(|(_, id)| id.clone()).collect();
        Box::new(ids.into_iter().map(Ok))
    }

    fn root_ids(&self) -> Records<'_, String> {
        let ids: Vec<_> = self
            .lock()
            .items
            .values()
            .filter(|i| i.parent.is_none())
            .map(|i| i.id.clone())
            .collect();
        Box::new(ids.into_iter().map(Ok))
    }

    async fn remove_items(&self, ids: Vec<String>) -> Result<(), Error> {
        let mut inner = self.lock();
        for id in ids {
            if let Some(order) = inner.orders.remove(&id) {
                inner.items.remove(&(order, id));
            }
        }
        Ok(())
    }

    async fn put_result(
        &self,
        step: &str,
        item_id: &str,
        record: ResultRecord,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        inner
            .failures
            .remove(&(step.to_string(), item_id.to_string()));
        inner
            .results
            .insert((step.to_string(), item_id.to_string()), record);
        Ok(())
    }

    fn result(&self, step: &str, item_id: &str) -> Result<Option<ResultRecord>, Error> {
        Ok(self
            .lock()
            .results
            .get(&(step.to_string(), item_id.to_string()))
            .cloned())
    }

    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, Error> {
        Ok(self
            .lock()
            .results
            .contains_key(&(step.to_string(), item_id.to_string())))
    }

    fn results(&self, step: &str) -> Records<'_, (String, ResultRecord)> {
        let rows: Vec<_> = self
            .lock()
            .results
            .iter()
            .filter(|((s, _), _)| s == step)
            .map(|((_, id), r)| (id.clone(), r.clone()))
            .collect();
        Box::new(rows.into_iter().map(Ok))
    }

    async fn put_failure(
        &self,
        step: &str,
        item_id: &str,
        record: FailureRecord,
    ) -> Result<(), Error> {
        self.lock()
            .failures
            .insert((step.to_string(), item_id.to_string()), record);
        Ok(())
    }

    fn failures(&self, step: &str) -> Records<'_, (String, FailureRecord)> {
        let rows: Vec<_> = self
            .lock()
            .failures
            .iter()
            .filter(|((s, _), _)| s == step)
            .map(|((_, id), r)| (id.clone(), r.clone()))
            .collect();
        Box::new(rows.into_iter().map(Ok))
    }

    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, Error> {
        Ok(self.lock().meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), Error> {
        self.lock().meta.insert(key.to_string(), value);
        Ok(())
    }

    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn stage_meta(&self, key: &str, value: &serde_json::Value) -> Result<(), Error> {
        self.lock().meta.insert(key.to_string(), value.clone());
        Ok(())
    }
}
