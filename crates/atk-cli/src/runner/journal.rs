//! The batch journal over the store: which request went into which provider batch, kept in
//! store meta (`layout::batch_meta_key`) so a killed run resumes by polling the same batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use atk_engine::{BatchJournal, JournalEntry};
use atk_state::Store;

use crate::error::RunError;
use crate::layout::{BatchMeta, batch_index_meta_key, batch_meta_key};

/// One engine's journal: the batches of earlier runs, loaded once, and every write made
/// durable in the store before it returns.
pub(super) struct StoreJournal {
    engine: String,
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Batch keys, oldest first.
    index: Vec<String>,
    batches: HashMap<String, BatchMeta>,
    /// Custom id -> key of the latest batch it went into.
    by_request: HashMap<String, String>,
}

impl StoreJournal {
    /// The journal of engine `engine`, with what earlier runs recorded.
    pub(super) fn load(engine: &str, store: Arc<dyn Store>) -> Result<Arc<Self>, RunError> {
        let mut state = State::default();
        if let Some(index) = store.meta(&batch_index_meta_key(engine))? {
            state.index = serde_json::from_value(index).unwrap_or_default();
        }
        for key in state.index.clone() {
            let Some(v) = store.meta(&batch_meta_key(engine, &key))? else {
                continue;
            };
            let Ok(meta) = serde_json::from_value::<BatchMeta>(v) else {
                continue;
            };
            for id in &meta.requests {
                state.by_request.insert(id.clone(), key.clone());
            }
            state.batches.insert(key, meta);
        }
        Ok(Arc::new(Self {
            engine: engine.to_string(),
            store,
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn put(&self, key: &str, meta: &BatchMeta) -> Result<(), String> {
        let value = serde_json::to_value(meta).map_err(|e| e.to_string())?;
        self.store
            .put_meta(&batch_meta_key(&self.engine, key), value)
            .await
            .map_err(|e| e.to_string())
    }

    /// How many batches are recorded.
    #[cfg(test)]
    fn batches(&self) -> usize {
        self.lock().index.len()
    }
}

#[async_trait]
impl BatchJournal for StoreJournal {
    fn find(&self, custom_id: &str) -> Option<JournalEntry> {
        let st = self.lock();
        let key = st.by_request.get(custom_id)?;
        Some(JournalEntry {
            key: key.clone(),
            batch_id: st.batches.get(key).and_then(|b| b.batch_id.clone()),
        })
    }

    async fn planned(&self, key: &str, custom_ids: &[String]) -> Result<(), String> {
        let meta = BatchMeta {
            requests: custom_ids.to_vec(),
            batch_id: None,
        };
        // The batch's record first, then the index naming it: an index entry always has its
        // record.
        self.put(key, &meta).await?;
        let index = {
            let mut st = self.lock();
            st.index.push(key.to_string());
            st.batches.insert(key.to_string(), meta);
            for id in custom_ids {
                st.by_request.insert(id.clone(), key.to_string());
            }
            serde_json::to_value(&st.index).map_err(|e| e.to_string())?
        };
        self.store
            .put_meta(&batch_index_meta_key(&self.engine), index)
            .await
            .map_err(|e| e.to_string())
    }

    async fn created(&self, key: &str, batch_id: &str) -> Result<(), String> {
        let meta = {
            let mut st = self.lock();
            let meta = st.batches.entry(key.to_string()).or_default();
            meta.batch_id = Some(batch_id.to_string());
            meta.clone()
        };
        self.put(key, &meta).await
    }

    fn progress(&self, _key: &str, batch_id: &str, state: &str, done: u64, total: u64) {
        tracing::info!(engine = %self.engine, batch = batch_id, state, done, total, "waiting for batch ({done} of {total} done)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_state::MemStore;

    #[tokio::test]
    async fn a_reloaded_journal_finds_requests_in_their_batch() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let j = StoreJournal::load("small", store.clone()).unwrap();
        j.planned("k1", &["a".into(), "b".into()]).await.unwrap();
        j.created("k1", "batch_1").await.unwrap();
        j.planned("k2", &["b".into(), "c".into()]).await.unwrap();
        let again = StoreJournal::load("small", store.clone()).unwrap();
        assert_eq!(again.batches(), 2);
        let entry = |id| again.find(id).map(|e| (e.key, e.batch_id));
        assert_eq!(entry("a"), Some(("k1".into(), Some("batch_1".into()))));
        // `b` went into a later batch (its line failed in the first): that one is its own.
        assert_eq!(entry("b"), Some(("k2".into(), None)));
        assert_eq!(entry("z"), None);
        // Another engine's journal is its own.
        assert_eq!(StoreJournal::load("large", store).unwrap().batches(), 0);
    }
}
