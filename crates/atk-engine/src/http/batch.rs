//! The batch transport: concurrent calls are collected into a provider batch (up to
//! `BatchConfig::size`, or whatever arrived within `max_wait` of the first), which is recorded
//! in the journal, submitted (OpenAI: a JSONL file and `/batches`; Anthropic:
//! `/messages/batches`), polled with a growing interval and read; each caller gets its own
//! line's reply. A line without a complete reply, an errored or expired one, or a batch that
//! failed or whose results vanished is a retryable error: the retry layer calls again and the
//! request goes into a later batch (the attempt budget is the online one).
//!
//! With `BatchConfig::no_wait` each batch is polled once and, not ended, left running: its
//! callers get `Error::Cancelled` (their items stay pending for a later run, which finds the
//! batch in the journal). Every poll and read is reported to the journal (`polled`), and each
//! line handed to its caller (`handed_out`), so the runner can list and compact batches.
//!
//! Each request's custom id is a hash of its body (plus its rank among identical requests in
//! flight, so a vote's identical calls stay apart): a resumed run finds the batch its request
//! is already in and polls that batch instead of paying again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::message::{quote, server_message};
use super::retry_after::retry_after;
use super::wire::Parsed;
use super::{Dialect, Http, schema};
use crate::batch::{BatchConfig, BatchJournal, BatchProgress};
use crate::cancel::Cancel;
use crate::{Engine, EngineConfig, Error, Reply, Request, TransientKind};

/// Most requests per batch the provider takes.
fn max_requests(dialect: Dialect) -> usize {
    match dialect {
        Dialect::OpenAi => 50_000,
        Dialect::Anthropic => 100_000,
    }
}

/// Most bytes per batch the provider takes (with room for the JSONL framing).
fn max_bytes(dialect: Dialect) -> usize {
    match dialect {
        Dialect::OpenAi => 190_000_000,
        Dialect::Anthropic => 250_000_000,
    }
}

/// Polls that failed in a row (connection, 5xx) before the batch's callers get the error.
const MAX_POLL_FAILURES: u32 = 30;
/// Pages of the provider's batch list searched for a tagged batch.
const LIST_PAGES: usize = 10;

/// One line of an ended batch: the reply, or why not; for an error answer also its status and
/// raw body, to tell a refused schema form (as the online path does, by what the body names).
#[derive(Clone)]
struct Line {
    result: Result<Parsed, Error>,
    answer: Option<(u16, String)>,
}

impl Line {
    fn of(result: Result<Parsed, Error>) -> Self {
        Self {
            result,
            answer: None,
        }
    }
}

/// An ended batch's lines by custom id.
type Lines = HashMap<String, Line>;

/// What polling a batch gave: its lines, or `None` when it was left running (`no_wait`).
type Read = Option<Lines>;

/// A finished batch as its callers see it.
struct Finished {
    key: String,
    outcome: Result<Lines, Error>,
    /// The batch exists and was polled: its failures are final for it (a request is asked
    /// again in a new batch). Otherwise creating it failed, and it may exist all the same.
    polled: bool,
}

type Slot = watch::Receiver<Option<Arc<Finished>>>;

/// A call waiting for the collector to put it in a batch.
struct Pending {
    custom_id: String,
    body: Value,
    bytes: usize,
    tx: oneshot::Sender<Slot>,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    pending_bytes: usize,
    first_at: Option<Instant>,
    collector: bool,
    /// Ranks in use per body hash (identical requests in flight).
    live: HashMap<String, BTreeSet<u32>>,
    /// Batches submitted or being polled by this process, by key.
    batches: HashMap<String, Slot>,
    /// (custom id, batch key) pairs whose line this process already handed out, a reply or a
    /// failure: the next identical call (a failed line's retry, a vote's next sample) goes
    /// into a new batch instead of getting that line again.
    spent: HashSet<(String, String)>,
    /// The provider's tagged batches (metadata key -> id), listed once.
    tagged: Option<HashMap<String, String>>,
}

struct Inner {
    http: Http,
    cfg: BatchConfig,
    cancel: Cancel,
    state: Mutex<State>,
    wake: Arc<Notify>,
}

/// The engine transport of `batch` mode.
pub(crate) struct BatchTransport {
    inner: Arc<Inner>,
}

impl BatchTransport {
    pub(crate) fn new(cfg: &EngineConfig, cancel: Cancel) -> Result<Self, Error> {
        let mut http_cfg = cfg.clone();
        http_cfg.stream = false;
        let http = Http::new(&http_cfg, cancel.clone())?;
        if cfg.batch.size == 0 {
            return Err(Error::Config(format!(
                "{}: batch_size must be at least 1",
                cfg.label
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                cfg: cfg.batch.clone(),
                cancel,
                state: Mutex::new(State::default()),
                wake: Arc::new(Notify::new()),
            }),
        })
    }
}

impl BatchTransport {
    /// Cancels batch `id` at the provider (`--cancel-batches`); where it stands after.
    pub(crate) async fn cancel_batch(&self, id: &str) -> Result<BatchProgress, Error> {
        self.inner.cancel_batch(id).await
    }

    /// The id of the batch tagged `key` in the provider's list, where it can be searched.
    pub(crate) async fn find_batch(&self, key: &str) -> Option<String> {
        self.inner.find_tagged(key).await
    }
}

/// Releases a request's rank among identical requests when its call ends.
struct Rank<'a> {
    inner: &'a Inner,
    hash: String,
    rank: u32,
}

impl Drop for Rank<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(set) = st.live.get_mut(&self.hash) {
            set.remove(&self.rank);
            if set.is_empty() {
                st.live.remove(&self.hash);
            }
        }
    }
}

#[async_trait]
impl Engine for BatchTransport {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut form = inner.http.forms.current(&request);
        loop {
            let (result, answer) = self.inner.once(&request, form).await?;
            // A line refusing the schema form it carried (what its body names, as online):
            // the endpoint moves to its next form (one warning) and the request goes again
            // in it, in a later batch.
            if let (Err(_), Some(sent), Some((status, text))) = (&result, form, &answer)
                && let Ok(status) = reqwest::StatusCode::from_u16(*status)
                && schema::refuses(sent, status, text)
                && let Some(next) = inner.http.forms.refused(&request, sent)
            {
                if let schema::Next::MovedTo(next) = next {
                    let message = inner.http.key.scrub(&server_message(text));
                    inner.http.warn_form(sent, next, &message);
                }
                form = inner.http.forms.current(&request);
                continue;
            }
            return result.map(|parsed| {
                inner
                    .http
                    .finish(&request, parsed, started.elapsed(), started)
            });
        }
    }
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn model(&self) -> &str {
        &self.inner.http.model
    }
}

/// Waits until the batch behind `slot` has finished.
async fn wait(mut slot: Slot) -> Result<Arc<Finished>, Error> {
    loop {
        if let Some(done) = slot.borrow_and_update().clone() {
            return Ok(done);
        }
        if slot.changed().await.is_err() {
            return Err(Error::Config(
                "the batch transport stopped before the batch finished".into(),
            ));
        }
    }
}

impl Inner {
    fn label(&self) -> &str {
        &self.http.label
    }

    /// Sends `request` (its schema in `form`) in a batch and waits for its line: the reply or
    /// why not, and an error line's status and raw body.
    async fn once(
        self: &Arc<Self>,
        request: &Request,
        form: Option<schema::Form>,
    ) -> Result<(Result<Parsed, Error>, Option<(u16, String)>), Error> {
        self.cancel.check()?;
        let mut body: Value = serde_json::from_slice(
            &self.http.body_in(request, false, false, form)?,
        )
        .map_err(|e| Error::Config(format!("{}: params do not serialize: {e}", self.label())))?;
        if self.http.dialect == Dialect::Anthropic
            && let Some(map) = body.as_object_mut()
        {
            map.remove("stream");
        }
        let text = body.to_string();
        let hash = hex::encode(&Sha256::digest(text.as_bytes())[..16]);
        let rank = {
            let mut st = self.lock();
            let used = st.live.entry(hash.clone()).or_default();
            let rank = (0..).find(|r| !used.contains(r)).unwrap_or(0);
            used.insert(rank);
            Rank {
                inner: self,
                hash: hash.clone(),
                rank,
            }
        };
        let custom_id = format!("{hash}-{}", rank.rank);
        let slot = self
            .cancel
            .guard(Inner::slot_for(self, &custom_id, body, text.len()))
            .await?;
        let finished = self.cancel.guard(wait(slot)).await?;
        drop(rank);
        let line = match &finished.outcome {
            Err(e) => Line::of(Err(e.clone())),
            Ok(lines) => match lines.get(&custom_id) {
                Some(line) => line.clone(),
                None => Line::of(Err(self.http.transient(
                    TransientKind::Incomplete,
                    "the batch ended without a result for this request",
                ))),
            },
        };
        if finished.polled {
            if let Some(j) = self.journal() {
                j.handed_out(&finished.key, &custom_id);
            }
            self.lock().spent.insert((custom_id, finished.key.clone()));
        }
        Ok((line.result, line.answer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self) -> Option<&Arc<dyn BatchJournal>> {
        self.cfg.journal.as_ref()
    }

    fn journal_error(&self, e: String) -> Error {
        Error::Config(format!("{}: cannot record the batch: {e}", self.label()))
    }

    /// The batch this request's reply will come from: the one an earlier run put it in (if
    /// it was created), else a new one.
    async fn slot_for(
        self: &Arc<Self>,
        custom_id: &str,
        body: Value,
        bytes: usize,
    ) -> Result<Slot, Error> {
        if let Some(entry) = self.journal().and_then(|j| j.find(custom_id)) {
            let spent = self
                .lock()
                .spent
                .contains(&(custom_id.to_string(), entry.key.clone()));
            if !spent {
                if let Some(slot) = self.lock().batches.get(&entry.key) {
                    return Ok(slot.clone());
                }
                let id = match entry.batch_id {
                    Some(id) => Some(id),
                    None => {
                        let found = self.find_tagged(&entry.key).await;
                        if let (Some(id), Some(j)) = (&found, self.journal()) {
                            j.created(&entry.key, id)
                                .await
                                .map_err(|e| self.journal_error(e))?;
                        }
                        found
                    }
                };
                if let Some(id) = id {
                    tracing::info!(engine = %self.label(), batch = %id, "resuming a stored batch");
                    return Ok(self.watch(entry.key, id));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            st.pending.push(Pending {
                custom_id: custom_id.to_string(),
                body,
                bytes,
                tx,
            });
            st.pending_bytes += bytes;
            st.first_at.get_or_insert_with(Instant::now);
            if !st.collector {
                st.collector = true;
                tokio::spawn(collect(Arc::downgrade(self), self.wake.clone()));
            }
        }
        self.wake.notify_one();
        rx.await.map_err(|_| self.cancel.error())
    }

    /// Polls an existing batch (once per process, whoever asks).
    fn watch(self: &Arc<Self>, key: String, id: String) -> Slot {
        let mut st = self.lock();
        if let Some(slot) = st.batches.get(&key) {
            return slot.clone();
        }
        let (tx, rx) = watch::channel(None);
        st.batches.insert(key.clone(), rx.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let (outcome, polled) = match me.poll_and_read(&key, &id).await {
                Ok(Some(lines)) => (Ok(lines), true),
                Ok(None) => (Err(me.cancel.error()), false),
                Err(e) => (Err(e), true),
            };
            if !polled {
                // Left running: a later call (another run) polls it afresh.
                me.lock().batches.remove(&key);
            }
            let _ = tx.send(Some(Arc::new(Finished {
                key,
                outcome,
                polled,
            })));
        });
        rx
    }

    /// Takes the requests of one batch off the queue, when it is full or its first request
    /// has waited `max_wait`; `Err(wait)` when nothing is due yet (`None`: nothing queued).
    fn take_due(&self) -> Result<Vec<Pending>, Option<Duration>> {
        let mut st = self.lock();
        let Some(first) = st.first_at else {
            return Err(None);
        };
        let size = self.cfg.size.min(max_requests(self.http.dialect));
        let full = st.pending.len() >= size || st.pending_bytes >= max_bytes(self.http.dialect);
        let due = first + self.cfg.max_wait;
        let now = Instant::now();
        if !full && now < due {
            return Err(Some(due - now));
        }
        let mut taken = Vec::new();
        let mut bytes = 0;
        let mut rest = Vec::new();
        for p in st.pending.drain(..) {
            if taken.len() < size
                && (taken.is_empty() || bytes + p.bytes <= max_bytes(self.http.dialect))
            {
                bytes += p.bytes;
                taken.push(p);
            } else {
                rest.push(p);
            }
        }
        st.pending_bytes = rest.iter().map(|p| p.bytes).sum();
        st.first_at = (!rest.is_empty()).then_some(now);
        st.pending = rest;
        Ok(taken)
    }

    /// Submits one batch and hands its callers the slot its result will come in.
    fn start(self: &Arc<Self>, taken: Vec<Pending>) {
        // Callers that went away (cancelled) are left out.
        let taken: Vec<Pending> = taken.into_iter().filter(|p| !p.tx.is_closed()).collect();
        if taken.is_empty() {
            return;
        }
        let seed = format!(
            "{} {} {:?}",
            self.cfg.tag,
            taken[0].custom_id,
            std::time::SystemTime::now()
        );
        let key = hex::encode(&Sha256::digest(seed.as_bytes())[..12]);
        let (tx, rx) = watch::channel(None);
        self.lock().batches.insert(key.clone(), rx.clone());
        let mut lines = Vec::with_capacity(taken.len());
        for p in taken {
            let _ = p.tx.send(rx.clone());
            lines.push((p.custom_id, p.body));
        }
        let me = self.clone();
        tokio::spawn(async move {
            let (outcome, polled) = me.submit(&key, &lines).await;
            if !polled {
                // Not created (or not known to be): a retry looks for it afresh.
                me.lock().batches.remove(&key);
            }
            let _ = tx.send(Some(Arc::new(Finished {
                key,
                outcome,
                polled,
            })));
        });
    }

    /// Records, creates and polls a batch; the flag says whether it got as far as polling.
    async fn submit(&self, key: &str, lines: &[(String, Value)]) -> (Result<Lines, Error>, bool) {
        let ids: Vec<String> = lines.iter().map(|(id, _)| id.clone()).collect();
        if let Some(j) = self.journal()
            && let Err(e) = j.planned(key, &ids).await
        {
            return (Err(self.journal_error(e)), false);
        }
        let id = match self.create(key, lines).await {
            Ok(id) => id,
            Err(e) => return (Err(e), false),
        };
        tracing::info!(engine = %self.label(), batch = %id, requests = lines.len(), "batch created");
        if let Some(j) = self.journal()
            && let Err(e) = j.created(key, &id).await
        {
            return (Err(self.journal_error(e)), false);
        }
        match self.poll_and_read(key, &id).await {
            Ok(Some(lines)) => (Ok(lines), true),
            // Left running (`no_wait`): its calls stop; the batch stays in the journal.
            Ok(None) => (Err(self.cancel.error()), false),
            Err(e) => (Err(e), true),
        }
    }

    /// Polls a batch until it ends and reads its results; with `no_wait`, one poll, and
    /// `None` when the batch has not ended then.
    async fn poll_and_read(&self, key: &str, id: &str) -> Result<Read, Error> {
        let mut delay = self.cfg.poll_first;
        let mut failures = 0;
        let mut last: Option<BatchProgress> = None;
        loop {
            match self.status(id).await {
                Ok(status) => {
                    failures = 0;
                    // An ended batch is recorded once its lines are counted, below.
                    if let Some(j) = self.journal()
                        && !status.progress.ended
                        && last.as_ref() != Some(&status.progress)
                    {
                        j.polled(key, id, &status.progress).await;
                    }
                    if status.progress.ended {
                        let read = self.results(id, &status).await;
                        if let Some(j) = self.journal() {
                            // A failed batch or vanished results: ended all the same.
                            let counts = match &read {
                                Ok(lines) => counted(&status.progress, lines),
                                Err(_) => status.progress.clone(),
                            };
                            j.polled(key, id, &counts).await;
                        }
                        return read.map(Some);
                    }
                    if self.cfg.no_wait {
                        tracing::info!(engine = %self.label(), batch = %id, state = %status.progress.state, "batch left running (--no-wait)");
                        return Ok(None);
                    }
                    last = Some(status.progress);
                }
                Err(e @ (Error::AuthRefused { .. } | Error::NotFound { .. })) => return Err(e),
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_POLL_FAILURES {
                        return Err(e);
                    }
                    tracing::warn!(engine = %self.label(), batch = %id, error = %e, "polling the batch failed; trying again");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return Err(self.cancel.error()),
            }
            delay = delay.mul_f64(1.5).min(self.cfg.poll_max);
        }
    }

    // ---- the provider's API ----

    fn url(&self, path: &str) -> Result<Url, Error> {
        let base = self
            .http
            .chat_url
            .as_str()
            .trim_end_matches('/')
            .trim_end_matches("/chat/completions")
            .trim_end_matches("/messages")
            .to_string();
        Url::parse(&format!("{base}{path}"))
            .map_err(|e| Error::Config(format!("{}: bad batch URL: {e}", self.label())))
    }

    /// One JSON exchange with the provider; a non-2xx answer is classified as online.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<String, Error> {
        let mut headers = self.http.headers.clone();
        headers.remove(ACCEPT);
        headers.remove(CONTENT_TYPE);
        let bytes = match body {
            Some((bytes, content_type)) => {
                let ct = HeaderValue::from_str(content_type)
                    .map_err(|e| Error::Config(format!("content type: {e}")))?;
                headers.insert(CONTENT_TYPE, ct);
                Some(bytes)
            }
            None => None,
        };
        let mut req = self
            .http
            .client
            .get()?
            .request(method, url.clone())
            .headers(headers);
        if let Some(bytes) = bytes {
            req = req.body(bytes);
        }
        let response = tokio::time::timeout(self.http.timeouts.total, req.send())
            .await
            .map_err(|_| {
                self.http
                    .transient(TransientKind::Timeout, format!("no answer from {url}"))
            })?
            .map_err(|e| self.http.classify_send_error(&e))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = tokio::time::timeout(self.http.timeouts.total, response.text())
            .await
            .map_err(|_| {
                self.http.transient(
                    TransientKind::Timeout,
                    format!("no whole answer from {url}"),
                )
            })?
            .map_err(|e| self.http.classify_send_error(&e))?;
        if !status.is_success() {
            let message = self.http.key.scrub(&server_message(&text));
            return Err(self
                .http
                .classify_status(status, &url, message, wait, (false, None)));
        }
        Ok(text)
    }

    async fn exchange_json(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
        let text = self.exchange(method, url, body).await?;
        serde_json::from_str(&text).map_err(|_| {
            self.http.transient(
                TransientKind::Malformed,
                format!("answer is not JSON: {}", quote(&text)),
            )
        })
    }

    /// Creates the batch; returns the provider's id.
    async fn create(&self, key: &str, lines: &[(String, Value)]) -> Result<String, Error> {
        let created = match self.http.dialect {
            Dialect::OpenAi => {
                let mut jsonl = String::new();
                for (id, body) in lines {
                    let line = json!({"custom_id": id, "method": "POST",
                                      "url": "/v1/chat/completions", "body": body});
                    jsonl.push_str(&line.to_string());
                    jsonl.push('\n');
                }
                let file = self.upload(jsonl.into_bytes()).await?;
                let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
                                  "completion_window": "24h",
                                  "metadata": {"atk_batch": key, "atk_run": self.cfg.tag}});
                self.exchange_json(Method::POST, self.url("/batches")?, Some(body))
                    .await?
            }
            Dialect::Anthropic => {
                let requests: Vec<Value> = lines
                    .iter()
                    .map(|(id, body)| json!({"custom_id": id, "params": body}))
                    .collect();
                self.exchange_json(
                    Method::POST,
                    self.url("/messages/batches")?,
                    Some(json!({"requests": requests})),
                )
                .await?
            }
        };
        created
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.http.transient(
                    TransientKind::Malformed,
                    format!(
                        "the created batch has no id: {}",
                        quote(&created.to_string())
                    ),
                )
            })
    }

    /// Uploads a JSONL file for a batch (OpenAI `/files`, `purpose=batch`); returns its id.
    async fn upload(&self, jsonl: Vec<u8>) -> Result<String, Error> {
        // The two-part form is written here rather than by enabling reqwest's `multipart`
        // feature (which adds mime detection the engine never needs).
        let boundary = format!("atk-{}", hex::encode(&Sha256::digest(&jsonl)[..12]));
        let mut form = Vec::with_capacity(jsonl.len() + 300);
        form.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"atk-batch.jsonl\"\r\n\
                 Content-Type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        form.extend_from_slice(&jsonl);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let text = self
            .exchange(
                Method::POST,
                self.url("/files")?,
                Some((form, &content_type)),
            )
            .await?;
        let file: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        file.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.http.transient(
                    TransientKind::Malformed,
                    format!("the uploaded file has no id: {}", quote(&text)),
                )
            })
    }

    /// The path of batch `id` (`suffix`: `""`, or `/cancel`).
    fn batch_path(&self, id: &str, suffix: &str) -> String {
        match self.http.dialect {
            Dialect::OpenAi => format!("/batches/{id}{suffix}"),
            Dialect::Anthropic => format!("/messages/batches/{id}{suffix}"),
        }
    }

    /// Where a batch is.
    async fn status(&self, id: &str) -> Result<Status, Error> {
        let v = self
            .exchange_json(Method::GET, self.url(&self.batch_path(id, ""))?, None)
            .await?;
        Ok(self.status_of(&v))
    }

    /// Cancels batch `id` at the provider; where it stands after.
    async fn cancel_batch(&self, id: &str) -> Result<BatchProgress, Error> {
        let v = self
            .exchange_json(
                Method::POST,
                self.url(&self.batch_path(id, "/cancel"))?,
                None,
            )
            .await?;
        Ok(self.status_of(&v).progress)
    }

    /// A batch object as the provider describes it.
    fn status_of(&self, v: &Value) -> Status {
        let str_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let count = |k: &str| {
            v.get("request_counts")
                .and_then(|c| c.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        match self.http.dialect {
            Dialect::OpenAi => {
                let state = str_of("status").unwrap_or_default();
                Status {
                    progress: BatchProgress {
                        ended: matches!(
                            state.as_str(),
                            "completed" | "failed" | "expired" | "cancelled"
                        ),
                        done: count("completed"),
                        errored: count("failed"),
                        expired: 0,
                        total: count("total"),
                        state,
                    },
                    output: str_of("output_file_id"),
                    errors: str_of("error_file_id"),
                    failure: v
                        .get("errors")
                        .and_then(|e| e.get("data"))
                        .and_then(Value::as_array)
                        .map(|d| {
                            d.iter()
                                .filter_map(|e| e.get("message").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join("; ")
                        }),
                }
            }
            Dialect::Anthropic => {
                let state = str_of("processing_status").unwrap_or_default();
                let total = ["processing", "succeeded", "errored", "canceled", "expired"]
                    .iter()
                    .map(|k| count(k))
                    .sum::<u64>();
                Status {
                    progress: BatchProgress {
                        ended: state == "ended",
                        done: count("succeeded"),
                        errored: count("errored"),
                        expired: count("expired") + count("canceled"),
                        total,
                        state,
                    },
                    output: str_of("results_url"),
                    errors: None,
                    failure: None,
                }
            }
        }
    }

    /// Reads an ended batch's results, line by line, by custom id.
    async fn results(&self, id: &str, status: &Status) -> Result<Lines, Error> {
        if status.progress.state == "failed" {
            return Err(self.http.transient(
                TransientKind::ServerError,
                format!(
                    "batch {id} failed: {}",
                    status.failure.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
        let mut out = HashMap::new();
        let sources = [status.output.as_deref(), status.errors.as_deref()];
        for source in sources.into_iter().flatten() {
            let url = match self.http.dialect {
                Dialect::OpenAi => self.url(&format!("/files/{source}/content"))?,
                Dialect::Anthropic => Url::parse(source).map_err(|e| {
                    self.http.transient(
                        TransientKind::Malformed,
                        format!("bad results_url `{source}`: {e}"),
                    )
                })?,
            };
            let text = match self.exchange(Method::GET, url, None).await {
                Ok(text) => text,
                // A results file that is gone: every request of the batch is asked again.
                Err(Error::NotFound { message, .. }) => {
                    return Err(self.http.transient(
                        TransientKind::ServerError,
                        format!("the results of batch {id} are gone (HTTP 404): {message}"),
                    ));
                }
                Err(e) => return Err(e),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    tracing::warn!(engine = %self.label(), batch = %id, line = %quote(line), "unreadable result line skipped");
                    continue;
                };
                let Some(custom_id) = v.get("custom_id").and_then(Value::as_str) else {
                    continue;
                };
                let result = match self.http.dialect {
                    Dialect::OpenAi => self.openai_line(&v),
                    Dialect::Anthropic => self.anthropic_line(&v),
                };
                out.insert(custom_id.to_string(), result);
            }
        }
        Ok(out)
    }

    /// A complete reply, or why not.
    fn complete(&self, parsed: Result<Parsed, Error>) -> Result<Parsed, Error> {
        let parsed = parsed?;
        if parsed.finish_reason.is_none() {
            // Incomplete, not CutStream: the limit layer reads a cut stream as an endpoint
            // serving fewer at once and would shrink the window a batch gathers in.
            return Err(self.http.transient(
                TransientKind::Incomplete,
                "the batch result has no finish_reason (not a whole reply)",
            ));
        }
        Ok(parsed)
    }

    fn line_error(&self, status: u16, message: String) -> Error {
        match status {
            400 | 413 | 422 => Error::Rejected {
                engine: self.label().to_string(),
                status,
                message,
            },
            _ => self.http.transient(
                TransientKind::ServerError,
                format!("HTTP {status}: {message}"),
            ),
        }
    }

    fn openai_line(&self, v: &Value) -> Line {
        if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").and_then(Value::as_str).unwrap_or("");
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            let kind = if code == "batch_expired" {
                TransientKind::Timeout
            } else {
                TransientKind::ServerError
            };
            return Line::of(Err(self
                .http
                .transient(kind, format!("batch line failed: {message} ({code})"))));
        }
        let response = v.get("response").unwrap_or(&Value::Null);
        let status = response
            .get("status_code")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u16;
        let body = response.get("body").unwrap_or(&Value::Null);
        if status != 200 {
            let text = body.to_string();
            return Line {
                result: Err(self.line_error(status, self.http.key.scrub(&server_message(&text)))),
                answer: Some((status, text)),
            };
        }
        Line::of(self.complete(self.http.parse_openai_json(&body.to_string())))
    }

    fn anthropic_line(&self, v: &Value) -> Line {
        let result = v.get("result").unwrap_or(&Value::Null);
        match result.get("type").and_then(Value::as_str).unwrap_or("") {
            "succeeded" => {
                let message = result.get("message").unwrap_or(&Value::Null);
                Line::of(self.complete(self.http.parse_anthropic_json(&message.to_string())))
            }
            "errored" => {
                let error = result.get("error").unwrap_or(&Value::Null);
                let inner = error.get("error").unwrap_or(error);
                let kind = inner.get("type").and_then(Value::as_str).unwrap_or("");
                let message = inner
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string();
                let status = if kind == "invalid_request_error" {
                    400
                } else {
                    500
                };
                Line {
                    result: Err(self.line_error(status, format!("{message} ({kind})"))),
                    answer: Some((status, error.to_string())),
                }
            }
            other => Line::of(Err(self.http.transient(
                TransientKind::Timeout,
                format!("batch request ended `{other}` before it was done"),
            ))),
        }
    }

    /// The id of a batch tagged with `key` in the provider's batch list (OpenAI metadata), if
    /// any. Anthropic's batches carry no tag, and a server without a list route has none.
    async fn find_tagged(&self, key: &str) -> Option<String> {
        if self.http.dialect != Dialect::OpenAi {
            return None;
        }
        // Listed again when the key is not among those seen: a batch may have been created
        // since.
        if let Some(id) = self
            .lock()
            .tagged
            .as_ref()
            .and_then(|t| t.get(key).cloned())
        {
            return Some(id);
        }
        let mut tagged = HashMap::new();
        let mut after: Option<String> = None;
        for _ in 0..LIST_PAGES {
            let mut path = "/batches?limit=100".to_string();
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let Ok(url) = self.url(&path) else { break };
            let page = match self.exchange_json(Method::GET, url, None).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(engine = %self.label(), error = %e, "cannot list the provider's batches; a batch whose id was not stored is created again");
                    break;
                }
            };
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for b in &data {
                if let (Some(id), Some(tag)) = (
                    b.get("id").and_then(Value::as_str),
                    b.get("metadata")
                        .and_then(|m| m.get("atk_batch"))
                        .and_then(Value::as_str),
                ) {
                    tagged.insert(tag.to_string(), id.to_string());
                }
            }
            let more = page
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            after = data
                .last()
                .and_then(|b| b.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if !more || after.is_none() {
                break;
            }
        }
        let found = tagged.get(key).cloned();
        self.lock().tagged = Some(tagged);
        found
    }
}

/// A batch's state as polled.
struct Status {
    progress: BatchProgress,
    /// OpenAI's output file id, or Anthropic's results URL.
    output: Option<String>,
    /// OpenAI's error file id.
    errors: Option<String>,
    /// Why a batch failed (OpenAI `errors.data[].message`).
    failure: Option<String>,
}

/// An ended batch's counts as its lines tell them (OpenAI counts expired lines as failed).
fn counted(polled: &BatchProgress, lines: &Lines) -> BatchProgress {
    let mut p = BatchProgress {
        done: 0,
        errored: 0,
        expired: 0,
        ..polled.clone()
    };
    for line in lines.values() {
        match &line.result {
            Ok(_) => p.done += 1,
            Err(Error::Transient {
                kind: TransientKind::Timeout,
                ..
            }) => p.expired += 1,
            Err(_) => p.errored += 1,
        }
    }
    p.total = p.total.max(p.answered());
    p
}

/// The collector: starts a batch whenever one is due; ends with the transport.
async fn collect(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = {
            let Some(inner) = inner.upgrade() else { return };
            loop {
                match inner.take_due() {
                    Ok(taken) => inner.start(taken),
                    Err(wait) => break wait,
                }
            }
        };
        match wait {
            Some(d) => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(d) => {}
                }
            }
            // Nothing queued: wait for a call, waking now and then to see whether the
            // transport is gone.
            None => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
    }
}
