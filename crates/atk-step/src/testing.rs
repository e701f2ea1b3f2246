//! Test doubles: a scripted [`Engine`] and an in-memory [`Store`]. Compiled for this crate's
//! tests and, with the `testing` feature, for other crates' tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use atk_engine::{Engine, Error, Prompt, Reply, Request, Timing, Usage};
use atk_state::{FailureRecord, ItemRecord, Records, ResultRecord, Store};

type Fallback = Box<dyn Fn(&Request) -> Result<Reply, Error> + Send + Sync>;

/// An engine that answers from a queue of scripted results, then from a fallback function.
pub struct ScriptedEngine {
    label: String,
    script: Mutex<VecDeque<Result<Reply, Error>>>,
    fallback: Fallback,
    requests: Mutex<Vec<Request>>,
    calls: AtomicU64,
    hang_after: Option<u64>,
}

/// A complete reply with `finish_reason: stop` and small token counts.
pub fn reply(text: impl Into<String>) -> Reply {
    Reply {
        text: text.into(),
        finish_reason: Some("stop".into()),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            estimated: false,
        },
        model: "scripted".into(),
        timing: Timing::default(),
    }
}

/// The text of a request's last message (chat) or the whole prompt (completion).
pub fn last_text(request: &Request) -> &str {
    match &request.prompt {
        Prompt::Chat(messages) => messages.last().map_or("", |m| m.content.as_str()),
        Prompt::Completion(text) => text,
    }
}

impl ScriptedEngine {
    /// An engine whose fallback replies `ok`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            script: Mutex::new(VecDeque::new()),
            fallback: Box::new(|_| Ok(reply("ok"))),
            requests: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            hang_after: None,
        }
    }

    /// Answers with `f(request)` once the script is used up.
    pub fn with_fallback(
        mut self,
        f: impl Fn(&Request) -> Result<Reply, Error> + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Box::new(f);
        self
    }

    /// Calls after the first `n` never return (a server that stalls; for crash tests).
    pub fn hang_after(mut self, n: u64) -> Self {
        self.hang_after = Some(n);
        self
    }

    /// Queues one result.
    pub fn push(&self, result: Result<Reply, Error>) -> &Self {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(result);
        self
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Engine for ScriptedEngine {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        if self.hang_after.is_some_and(|limit| n > limit) {
            std::future::pending::<()>().await;
        }
        tokio::task::yield_now().await;
        let scripted = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        scripted.unwrap_or_else(|| (self.fallback)(&request))
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn model(&self) -> &str {
        "scripted"
    }
}

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
    async fn put_items(&self, items: Vec<ItemRecord>) -> Result<(), atk_state::Error> {
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

    fn item(&self, id: &str) -> Result<Option<ItemRecord>, atk_state::Error> {
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

    async fn remove_items(&self, ids: Vec<String>) -> Result<(), atk_state::Error> {
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
    ) -> Result<(), atk_state::Error> {
        let mut inner = self.lock();
        inner
            .failures
            .remove(&(step.to_string(), item_id.to_string()));
        inner
            .results
            .insert((step.to_string(), item_id.to_string()), record);
        Ok(())
    }

    fn result(&self, step: &str, item_id: &str) -> Result<Option<ResultRecord>, atk_state::Error> {
        Ok(self
            .lock()
            .results
            .get(&(step.to_string(), item_id.to_string()))
            .cloned())
    }

    fn has_result(&self, step: &str, item_id: &str) -> Result<bool, atk_state::Error> {
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
    ) -> Result<(), atk_state::Error> {
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

    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, atk_state::Error> {
        Ok(self.lock().meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), atk_state::Error> {
        self.lock().meta.insert(key.to_string(), value);
        Ok(())
    }

    async fn flush(&self) -> Result<(), atk_state::Error> {
        Ok(())
    }
}
