//! The batch journal over the store: which request went into which provider batch (store meta
//! `layout::batch_meta_key`) and where each batch stands (`layout::batch_state_meta_key`), so a
//! killed run resumes by polling the same batch, `atk status` lists the batches, and
//! `--cancel-batches` knows what to cancel. Batches whose results are stored are compacted at
//! the end of a run (their request lists dropped; only the last few kept listed), so the
//! journal does not grow with every batch a run ever sent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use atk_engine::{BatchJournal, BatchProgress, Dialect, JournalEntry, Mode};
use atk_state::Store;

use crate::error::RunError;
use crate::layout::{
    BatchMeta, BatchState, batch_index_meta_key, batch_meta_key, batch_state_meta_key,
};
use crate::settings::Settings;
use crate::status::BatchStatus;

/// Collected batches an engine's journal keeps listing (for `atk status`); older ones are
/// forgotten.
const KEEP_COLLECTED: usize = 20;

/// One engine's journal: the batches of earlier runs, loaded once, and every write made
/// durable in the store before it returns.
pub(super) struct StoreJournal {
    engine: String,
    provider: &'static str,
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Batch keys, oldest first.
    index: Vec<String>,
    batches: HashMap<String, Batch>,
    /// Custom id -> key of the latest batch it went into.
    by_request: HashMap<String, String>,
    /// Per batch, the lines handed to their callers in this run.
    handed: HashMap<String, HashSet<String>>,
    /// Batches this run is polling and waiting for.
    watching: HashSet<String>,
    /// Batches this run found still running at least once (with `--no-wait`, each such poll
    /// sent its callers away), whether or not they ended later in the run.
    seen_running: HashSet<String>,
}

impl State {
    /// Whether this run handed every line of batch `key` (`b`) to its caller.
    fn handed_all(&self, key: &str, b: &Batch) -> bool {
        let handed = self.handed.get(key);
        b.requests
            .iter()
            .all(|r| handed.is_some_and(|h| h.contains(r)))
    }
}

#[derive(Default, Clone)]
struct Batch {
    requests: Vec<String>,
    st: BatchState,
}

fn provider_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "openai",
        Dialect::Anthropic => "anthropic",
    }
}

fn read<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, RunError> {
    Ok(store
        .meta(key)?
        .and_then(|v| serde_json::from_value::<T>(v).ok()))
}

impl StoreJournal {
    /// The journal of engine `engine` (speaking `dialect`), with what earlier runs recorded.
    pub(super) fn load(
        engine: &str,
        dialect: Dialect,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, RunError> {
        let mut state = State::default();
        let index: Vec<String> =
            read(store.as_ref(), &batch_index_meta_key(engine))?.unwrap_or_default();
        for key in index {
            let meta: Option<BatchMeta> = read(store.as_ref(), &batch_meta_key(engine, &key))?;
            let st: Option<BatchState> = read(store.as_ref(), &batch_state_meta_key(engine, &key))?;
            // A record written before states were kept apart: its state from the record.
            let (requests, st) = match (meta, st) {
                (Some(meta), Some(st)) => (meta.requests, st),
                (Some(meta), None) => {
                    let st = meta.legacy_state();
                    (meta.requests, st)
                }
                (None, Some(st)) => (Vec::new(), st),
                (None, None) => continue,
            };
            for id in &requests {
                state.by_request.insert(id.clone(), key.clone());
            }
            state.index.push(key.clone());
            state.batches.insert(key, Batch { requests, st });
        }
        Ok(Arc::new(Self {
            engine: engine.to_string(),
            provider: provider_name(dialect),
            store,
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn put<T: serde::Serialize>(&self, key: String, value: &T) -> Result<(), String> {
        let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
        self.store
            .put_meta(&key, value)
            .await
            .map_err(|e| e.to_string())
    }

    async fn put_state(&self, key: &str) -> Result<(), String> {
        let st = self.lock().batches.get(key).map(|b| b.st.clone());
        match st {
            Some(st) => self.put(batch_state_meta_key(&self.engine, key), &st).await,
            None => Ok(()),
        }
    }

    /// The engine's label.
    pub(super) fn engine(&self) -> &str {
        &self.engine
    }

    /// Every batch recorded, oldest first, as `atk status` lists them.
    pub(super) fn statuses(&self) -> Vec<BatchStatus> {
        let st = self.lock();
        st.index
            .iter()
            .filter_map(|k| {
                st.batches
                    .get(k)
                    .map(|b| BatchStatus::of(&self.engine, k, &b.st))
            })
            .collect()
    }

    /// The batches this run polled and left before they ended (`--no-wait`, or a stop).
    pub(super) fn left_running(&self) -> Vec<BatchStatus> {
        let st = self.lock();
        st.index
            .iter()
            .filter(|k| st.watching.contains(*k))
            .filter_map(|k| {
                st.batches
                    .get(k)
                    .map(|b| BatchStatus::of(&self.engine, k, &b.st))
            })
            .filter(BatchStatus::in_progress)
            .collect()
    }

    /// With `--no-wait`: the batches whose callers this run sent away, that is those it found
    /// running and has not handed every line of. A batch that ended later in the same run (its
    /// results read for another caller) is among them: the callers sent away before that come
    /// back for their lines in a later run, so the batch must stay in the journal.
    pub(super) fn left_callers(&self) -> Vec<BatchStatus> {
        let st = self.lock();
        st.index
            .iter()
            .filter(|k| st.seen_running.contains(*k))
            .filter_map(|k| {
                let b = st.batches.get(k)?;
                (!st.handed_all(k, b)).then(|| BatchStatus::of(&self.engine, k, &b.st))
            })
            .collect()
    }

    /// `(answered, total, batches)` of the batches this run is polling, when there are any.
    pub(super) fn waiting_counts(&self) -> Option<(u64, u64, usize)> {
        let st = self.lock();
        let mut out = (0, 0, 0);
        for k in &st.watching {
            if let Some(b) = st.batches.get(k) {
                out.0 += b.st.done + b.st.errored + b.st.expired;
                out.1 += b.st.total;
                out.2 += 1;
            }
        }
        (out.2 > 0).then_some(out)
    }

    /// Records that `--cancel-batches` cancelled batch `key` (`progress`: what the provider
    /// said, when it answered).
    pub(super) async fn cancelled(
        &self,
        key: &str,
        batch_id: Option<&str>,
        progress: Option<&BatchProgress>,
    ) -> Result<(), RunError> {
        {
            let mut st = self.lock();
            let Some(b) = st.batches.get_mut(key) else {
                return Ok(());
            };
            b.st.cancelled = true;
            if let Some(id) = batch_id {
                b.st.batch_id = Some(id.to_string());
            }
            if let Some(p) = progress {
                apply(&mut b.st, p);
            }
        }
        self.put_state(key).await.map_err(RunError::fatal)?;
        if let Some(id) = batch_id {
            // The batch's record names it too, so the next run polls it for what it did.
            let meta = {
                let st = self.lock();
                st.batches.get(key).map(|b| BatchMeta {
                    requests: b.requests.clone(),
                    batch_id: Some(id.to_string()),
                })
            };
            if let Some(meta) = meta {
                self.put(batch_meta_key(&self.engine, key), &meta)
                    .await
                    .map_err(RunError::fatal)?;
            }
        }
        Ok(())
    }

    /// Compacts the batches whose results are stored: ended ones whose every line this run
    /// handed out, and, when the chain went through every item (`completed`), every ended one
    /// and those never created whose requests all went into later batches. A compacted batch
    /// keeps its state (listed as collected) without its request list; beyond the last
    /// [`KEEP_COLLECTED`] it is forgotten. Returns how many were compacted.
    pub(super) async fn prune(&self, completed: bool) -> Result<usize, RunError> {
        let (compact, forget, index) = {
            let mut st = self.lock();
            let mut compact = Vec::new();
            for key in &st.index {
                let Some(b) = st.batches.get(key) else {
                    continue;
                };
                if b.st.collected {
                    continue;
                }
                let all_handed = !b.requests.is_empty() && st.handed_all(key, b);
                let superseded = b.st.batch_id.is_none()
                    && b.requests
                        .iter()
                        .all(|r| st.by_request.get(r).is_some_and(|k| k != key));
                if (b.st.ended && (all_handed || completed)) || (completed && superseded) {
                    compact.push(key.clone());
                }
            }
            for key in &compact {
                if let Some(b) = st.batches.get_mut(key) {
                    for r in std::mem::take(&mut b.requests) {
                        if st.by_request.get(&r) == Some(key) {
                            st.by_request.remove(&r);
                        }
                    }
                }
                if let Some(b) = st.batches.get_mut(key) {
                    b.st.collected = true;
                }
            }
            // Keep the last few collected ones listed.
            let collected: Vec<String> = st
                .index
                .iter()
                .filter(|k| st.batches.get(*k).is_some_and(|b| b.st.collected))
                .cloned()
                .collect();
            let forget: Vec<String> = collected
                .iter()
                .take(collected.len().saturating_sub(KEEP_COLLECTED))
                .cloned()
                .collect();
            st.index.retain(|k| !forget.contains(k));
            for k in &forget {
                st.batches.remove(k);
            }
            (compact, forget, st.index.clone())
        };
        if compact.is_empty() && forget.is_empty() {
            return Ok(0);
        }
        for key in &compact {
            // The state first: a record without requests is harmless, a collected state
            // over a full record only wastes space until the next prune.
            self.put_state(key).await.map_err(RunError::fatal)?;
            let batch_id = self
                .lock()
                .batches
                .get(key)
                .and_then(|b| b.st.batch_id.clone());
            self.put(
                batch_meta_key(&self.engine, key),
                &BatchMeta {
                    requests: Vec::new(),
                    batch_id,
                },
            )
            .await
            .map_err(RunError::fatal)?;
        }
        // The index before the forgotten records: an index entry always has its record.
        self.put(batch_index_meta_key(&self.engine), &index)
            .await
            .map_err(RunError::fatal)?;
        for key in &forget {
            for k in [
                batch_meta_key(&self.engine, key),
                batch_state_meta_key(&self.engine, key),
            ] {
                self.store
                    .put_meta(&k, serde_json::Value::Null)
                    .await
                    .map_err(RunError::from)?;
            }
        }
        tracing::debug!(engine = %self.engine, compacted = compact.len(), forgotten = forget.len(), "batch journal pruned");
        Ok(compact.len())
    }

    /// How many batches are recorded.
    #[cfg(test)]
    fn batches(&self) -> usize {
        self.lock().index.len()
    }
}

/// Copies a poll into a batch's state.
fn apply(st: &mut BatchState, p: &BatchProgress) {
    st.state.clone_from(&p.state);
    st.ended = p.ended;
    st.done = p.done;
    st.errored = p.errored;
    st.expired = p.expired;
    st.total = st.total.max(p.total);
}

#[async_trait]
impl BatchJournal for StoreJournal {
    fn find(&self, custom_id: &str) -> Option<JournalEntry> {
        let st = self.lock();
        let key = st.by_request.get(custom_id)?;
        Some(JournalEntry {
            key: key.clone(),
            batch_id: st.batches.get(key).and_then(|b| b.st.batch_id.clone()),
        })
    }

    async fn planned(&self, key: &str, custom_ids: &[String]) -> Result<(), String> {
        let meta = BatchMeta {
            requests: custom_ids.to_vec(),
            batch_id: None,
        };
        let st = BatchState {
            provider: self.provider.to_string(),
            created_at_ms: atk_state::now_ms(),
            total: custom_ids.len() as u64,
            ..BatchState::default()
        };
        // The batch's records first, then the index naming it: an index entry always has its
        // record.
        self.put(batch_meta_key(&self.engine, key), &meta).await?;
        self.put(batch_state_meta_key(&self.engine, key), &st)
            .await?;
        let index = {
            let mut s = self.lock();
            s.index.push(key.to_string());
            s.batches.insert(
                key.to_string(),
                Batch {
                    requests: custom_ids.to_vec(),
                    st,
                },
            );
            for id in custom_ids {
                s.by_request.insert(id.clone(), key.to_string());
            }
            s.index.clone()
        };
        self.put(batch_index_meta_key(&self.engine), &index).await
    }

    async fn created(&self, key: &str, batch_id: &str) -> Result<(), String> {
        let meta = {
            let mut st = self.lock();
            let b = st.batches.entry(key.to_string()).or_default();
            b.st.batch_id = Some(batch_id.to_string());
            if b.st.state.is_empty() {
                "submitted".clone_into(&mut b.st.state);
            }
            BatchMeta {
                requests: b.requests.clone(),
                batch_id: Some(batch_id.to_string()),
            }
        };
        self.put(batch_meta_key(&self.engine, key), &meta).await?;
        self.put_state(key).await
    }

    async fn polled(&self, key: &str, batch_id: &str, progress: &BatchProgress) {
        {
            let mut st = self.lock();
            if let Some(b) = st.batches.get_mut(key) {
                b.st.batch_id.get_or_insert_with(|| batch_id.to_string());
                apply(&mut b.st, progress);
            }
            if progress.ended {
                st.watching.remove(key);
            } else {
                st.watching.insert(key.to_string());
                st.seen_running.insert(key.to_string());
            }
        }
        if progress.ended {
            tracing::info!(engine = %self.engine, batch = batch_id, state = %progress.state, "batch ended: {} done, {} errored, {} expired of {}", progress.done, progress.errored, progress.expired, progress.total);
        } else {
            tracing::info!(engine = %self.engine, batch = batch_id, state = %progress.state, "waiting for batch ({} of {} done)", progress.answered(), progress.total);
        }
        if let Err(e) = self.put_state(key).await {
            tracing::warn!(engine = %self.engine, batch = batch_id, error = %e, "could not record the batch's state");
        }
    }

    fn handed_out(&self, key: &str, custom_id: &str) {
        self.lock()
            .handed
            .entry(key.to_string())
            .or_default()
            .insert(custom_id.to_string());
    }
}

/// The batch journals of a run: one per engine in `batch` mode that the chain calls (or, for
/// `--cancel-batches`, per engine whatever its mode).
pub(super) struct RunBatches {
    journals: Vec<Arc<StoreJournal>>,
    /// `--no-wait`: batches are left running, not waited for.
    no_wait: bool,
}

impl RunBatches {
    /// The journals of the engines that send batches in this run.
    pub(super) fn for_run(
        settings: &Settings,
        store: &Arc<dyn Store>,
        no_wait: bool,
    ) -> Result<Arc<Self>, RunError> {
        let mut journals = Vec::new();
        for e in settings
            .engines
            .iter()
            .filter(|e| e.used && e.mode == Mode::Batch)
        {
            journals.push(StoreJournal::load(&e.label, e.dialect, store.clone())?);
        }
        Ok(Arc::new(Self { journals, no_wait }))
    }

    /// The journals of every engine, whatever its mode (what `--cancel-batches` looks at).
    pub(super) fn all(settings: &Settings, store: &Arc<dyn Store>) -> Result<Self, RunError> {
        let journals = settings
            .engines
            .iter()
            .map(|e| StoreJournal::load(&e.label, e.dialect, store.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            journals,
            no_wait: false,
        })
    }

    /// True with `--no-wait`.
    pub(super) fn no_wait(&self) -> bool {
        self.no_wait
    }

    /// Engine `label`'s journal.
    pub(super) fn journal(&self, label: &str) -> Option<Arc<StoreJournal>> {
        self.journals.iter().find(|j| j.engine == label).cloned()
    }

    /// The journals.
    pub(super) fn journals(&self) -> &[Arc<StoreJournal>] {
        &self.journals
    }

    /// Every batch recorded, per engine.
    pub(super) fn statuses(&self) -> Vec<BatchStatus> {
        self.journals.iter().flat_map(|j| j.statuses()).collect()
    }

    /// The batches this run submitted or resumed and left running at the provider (polled,
    /// not ended): what a later run collects. Batches of earlier runs that this run did not
    /// need are not among them (`atk status` lists them). With `--no-wait`, also those that
    /// ended after this run sent some of their callers away (see
    /// [`StoreJournal::left_callers`]): a run that counted only the batches still running
    /// ended as if nothing were pending, judged the chain done with no item through it (exit
    /// 1), and compacted the batch whose results those callers still needed.
    pub(super) fn left_running(&self) -> Vec<BatchStatus> {
        self.journals
            .iter()
            .flat_map(|j| {
                if self.no_wait {
                    j.left_callers()
                } else {
                    j.left_running()
                }
            })
            .collect()
    }

    /// "waiting for batch (n of m done)" while this run polls batches (not with `--no-wait`).
    pub(super) fn wait_message(&self) -> Option<String> {
        if self.no_wait {
            return None;
        }
        let (mut answered, mut total, mut batches) = (0, 0, 0);
        for (a, t, b) in self.journals.iter().filter_map(|j| j.waiting_counts()) {
            answered += a;
            total += t;
            batches += b;
        }
        match batches {
            0 => None,
            1 => Some(format!("waiting for batch ({answered} of {total} done)")),
            n => Some(format!(
                "waiting for {n} batches ({answered} of {total} done)"
            )),
        }
    }

    /// Compacts every journal (see [`StoreJournal::prune`]).
    pub(super) async fn prune(&self, completed: bool) {
        for j in &self.journals {
            if let Err(e) = j.prune(completed).await {
                tracing::warn!(engine = %j.engine, error = %e, "could not prune the batch journal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_state::MemStore;

    #[tokio::test]
    async fn a_reloaded_journal_finds_requests_in_their_batch() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let j = StoreJournal::load("small", Dialect::OpenAi, store.clone()).unwrap();
        j.planned("k1", &["a".into(), "b".into()]).await.unwrap();
        j.created("k1", "batch_1").await.unwrap();
        j.planned("k2", &["b".into(), "c".into()]).await.unwrap();
        let again = StoreJournal::load("small", Dialect::OpenAi, store.clone()).unwrap();
        assert_eq!(again.batches(), 2);
        let entry = |id| again.find(id).map(|e| (e.key, e.batch_id));
        assert_eq!(entry("a"), Some(("k1".into(), Some("batch_1".into()))));
        // `b` went into a later batch (its line failed in the first): that one is its own.
        assert_eq!(entry("b"), Some(("k2".into(), None)));
        assert_eq!(entry("z"), None);
        // Another engine's journal is its own.
        assert_eq!(
            StoreJournal::load("large", Dialect::OpenAi, store)
                .unwrap()
                .batches(),
            0
        );
    }

    #[tokio::test]
    async fn a_journal_written_before_states_were_kept_still_reads() {
        // An output dir of the release before: the index and the batch records only.
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        store
            .put_meta("batches/small", serde_json::json!(["k1"]))
            .await
            .unwrap();
        store
            .put_meta(
                "batches/small/k1",
                serde_json::json!({"requests": ["a", "b"], "batch_id": "batch_9"}),
            )
            .await
            .unwrap();
        let j = StoreJournal::load("small", Dialect::OpenAi, store.clone()).unwrap();
        assert_eq!(j.find("a").unwrap().batch_id.as_deref(), Some("batch_9"));
        let listed = crate::status::read_batches(store.as_ref(), &["small"]).unwrap();
        assert_eq!(
            (
                listed[0].id.as_deref(),
                listed[0].state.as_str(),
                listed[0].total
            ),
            (Some("batch_9"), "submitted", 2)
        );
    }

    fn ended(total: u64) -> BatchProgress {
        BatchProgress {
            state: "completed".into(),
            ended: true,
            done: total,
            total,
            ..BatchProgress::default()
        }
    }

    #[tokio::test]
    async fn a_no_wait_run_keeps_a_batch_that_ended_after_it_sent_callers_away() {
        // Caller `a` polls batch k1 and is sent away (still running); caller `b` polls it
        // again later in the same run, finds it ended and takes its line. `a`'s line is still
        // to hand out: the run is waiting, and the batch must not be compacted.
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let j = StoreJournal::load("small", Dialect::OpenAi, store.clone()).unwrap();
        j.planned("k1", &["a".into(), "b".into()]).await.unwrap();
        j.created("k1", "batch_1").await.unwrap();
        let running = BatchProgress {
            state: "in_progress".into(),
            total: 2,
            ..BatchProgress::default()
        };
        j.polled("k1", "batch_1", &running).await;
        j.polled("k1", "batch_1", &ended(2)).await;
        j.handed_out("k1", "b");
        let batches = |no_wait| RunBatches {
            journals: vec![j.clone()],
            no_wait,
        };
        assert!(
            j.left_running().is_empty(),
            "no longer running at the provider"
        );
        let left = batches(true).left_running();
        assert_eq!(
            left.iter().map(|b| b.id.as_deref()).collect::<Vec<_>>(),
            [Some("batch_1")],
            "a --no-wait run waits for the caller it sent away"
        );
        // Without --no-wait no caller was sent away: an ended batch is not left running.
        assert!(batches(false).left_running().is_empty());
        // What a waiting run prunes (`completed` false) keeps the batch and its request list.
        assert_eq!(j.prune(false).await.unwrap(), 0);
        let again = StoreJournal::load("small", Dialect::OpenAi, store.clone()).unwrap();
        assert_eq!(
            again.find("a").unwrap().batch_id.as_deref(),
            Some("batch_1")
        );
        // Once `a` takes its line too, nothing is left.
        j.handed_out("k1", "a");
        assert!(batches(true).left_running().is_empty());
    }

    #[tokio::test]
    async fn collected_batches_are_compacted_and_old_ones_forgotten() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let j = StoreJournal::load("small", Dialect::Anthropic, store.clone()).unwrap();
        // One batch fully handed out, one still at the provider.
        j.planned("k1", &["a".into(), "b".into()]).await.unwrap();
        j.created("k1", "msgbatch_1").await.unwrap();
        j.polled("k1", "msgbatch_1", &ended(2)).await;
        j.handed_out("k1", "a");
        j.handed_out("k1", "b");
        j.planned("k2", &["c".into()]).await.unwrap();
        j.created("k2", "msgbatch_2").await.unwrap();
        // Not all handed out yet: nothing to compact.
        assert_eq!(j.prune(false).await.unwrap(), 1);
        let again = StoreJournal::load("small", Dialect::Anthropic, store.clone()).unwrap();
        assert_eq!(again.find("a"), None, "a collected batch is no one's");
        assert_eq!(
            again.find("c").unwrap().batch_id.as_deref(),
            Some("msgbatch_2")
        );
        let meta = store.meta("batches/small/k1").unwrap().unwrap();
        assert_eq!(meta["requests"], serde_json::json!([]));
        let listed = crate::status::read_batches(store.as_ref(), &["small"]).unwrap();
        let states: Vec<&str> = listed.iter().map(|b| b.state.as_str()).collect();
        assert_eq!(states, ["collected", "submitted"]);
        assert_eq!(listed[0].provider, "anthropic");
        // Many more collected batches: only the last KEEP_COLLECTED stay listed.
        for i in 0..KEEP_COLLECTED + 5 {
            let key = format!("m{i}");
            j.planned(&key, &[format!("r{i}")]).await.unwrap();
            j.created(&key, &format!("id{i}")).await.unwrap();
            j.polled(&key, &format!("id{i}"), &ended(1)).await;
        }
        // The chain went through: every ended batch is collected.
        j.prune(true).await.unwrap();
        let again = StoreJournal::load("small", Dialect::Anthropic, store.clone()).unwrap();
        assert_eq!(
            again.batches(),
            KEEP_COLLECTED + 1,
            "k2 stays, at the provider"
        );
        assert_eq!(
            store.meta("batches/small/k1").unwrap(),
            Some(serde_json::Value::Null)
        );
    }
}
