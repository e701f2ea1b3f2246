//! A store that reads through to a real store and keeps every write in memory: what a dry run
//! of `--redo` / `--reprocess` runs the chain over, so it sees the stored results (and decides
//! exactly what would be sent) while writing nothing to the output dir.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{Error, FailureRecord, ItemRecord, Records, ResultRecord, Store};

use atk_state::MemStore;

/// Reads `top` first, then `base`; writes go to `top` only.
pub(crate) struct OverlayStore {
    base: Arc<dyn Store>,
    top: MemStore,
}

impl std::fmt::Debug for OverlayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayStore").finish_non_exhaustive()
    }
}

impl OverlayStore {
    /// An overlay over `base` with nothing written yet.
    pub(crate) fn new(base: Arc<dyn Store>) -> Self {
        Self {
            base,
            top: MemStore::default(),
        }
    }
}

#[async_trait]
impl Store for OverlayStore {
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), Error> {
        self.top.put_items(items).await
    }
    fn item(&self, id: &str) -> Result<Option<ItemRecord>, Error> {
        match self.top.item(id)? {
            Some(item) => Ok(Some(item)),
            None => self.base.item(id),
        }
    }
    fn items(&self) -> Records<'_, ItemRecord> {
        let base = self.base.items().map(|r| {
            let item = r?;
            Ok(self.top.item(&item.id)?.unwrap_or(item))
        });
        let new = self.top.items().filter(|r| match r {
            Ok(item) => !matches!(self.base.item(&item.id), Ok(Some(_))),
            Err(_) => true,
        });
        Box::new(base.chain(new))
    }
    fn root_ids(&self) -> Records<'_, String> {
        let new = self.top.root_ids().filter(|r| match r {
            Ok(id) => !matches!(self.base.item(id), Ok(Some(_))),
            Err(_) => true,
        });
        Box::new(self.base.root_ids().chain(new))
    }
    async fn put_result(
        &self,
        step: &str,
        item_id: &str,
        record: ResultRecord,
    ) -> Result<(), Error> {
        self.top.put_result(step, item_id, record).await
    }
    fn result(&self, step: &str, item_id: &str) -> Result<Option<ResultRecord>, Error> {
        match self.top.result(step, item_id)? {
            Some(r) => Ok(Some(r)),
            None => self.base.result(step, item_id),
        }
    }
    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, Error> {
        Ok(self.top.has_result(step, item_id)? || self.base.has_result(step, item_id)?)
    }
    fn results(&self, step: &str) -> Records<'_, (String, ResultRecord)> {
        let step_name = step.to_string();
        let base = self.base.results(step).map(move |r| {
            let (id, record) = r?;
            Ok(match self.top.result(&step_name, &id)? {
                Some(newer) => (id, newer),
                None => (id, record),
            })
        });
        let step_name = step.to_string();
        let new = self.top.results(step).filter(move |r| match r {
            Ok((id, _)) => !matches!(self.base.has_result(&step_name, id), Ok(true)),
            Err(_) => true,
        });
        Box::new(base.chain(new))
    }
    async fn put_failure(
        &self,
        step: &str,
        item_id: &str,
        record: FailureRecord,
    ) -> Result<(), Error> {
        self.top.put_failure(step, item_id, record).await
    }
    fn failures(&self, step: &str) -> Records<'_, (String, FailureRecord)> {
        Box::new(self.base.failures(step).chain(self.top.failures(step)))
    }
    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, Error> {
        match self.top.meta(key)? {
            Some(v) => Ok(Some(v)),
            None => self.base.meta(key),
        }
    }
    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), Error> {
        self.top.put_meta(key, value).await
    }
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, n: u64) -> ItemRecord {
        ItemRecord {
            v: atk_state::RECORD_VERSION,
            id: id.into(),
            parent: None,
            order: vec![n],
            fields: Default::default(),
        }
    }

    #[tokio::test]
    async fn reads_through_and_writes_only_on_top() {
        let base = Arc::new(MemStore::default());
        base.put_items(vec![item("a", 0), item("b", 1)])
            .await
            .unwrap();
        base.put_result("s", "a", ResultRecord::new("old".into()))
            .await
            .unwrap();
        let o = OverlayStore::new(base.clone());
        o.put_result("s", "a", ResultRecord::new("new".into()))
            .await
            .unwrap();
        o.put_result("s", "b", ResultRecord::new("b".into()))
            .await
            .unwrap();
        o.put_items(vec![item("c", 2)]).await.unwrap();
        let outputs: Vec<_> = o
            .results("s")
            .map(|r| r.unwrap().1.output.as_str().unwrap().to_string())
            .collect();
        assert_eq!(outputs, ["new", "b"]);
        let roots: Vec<_> = o.root_ids().map(Result::unwrap).collect();
        assert_eq!(roots, ["a", "b", "c"]);
        assert_eq!(
            base.result("s", "a").unwrap().unwrap().output,
            serde_json::json!("old"),
            "the base is never written"
        );
        assert!(!base.has_result("s", "b").unwrap());
    }
}
