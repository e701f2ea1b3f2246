//! Counters of what the server saw, exact under concurrency (one mutex).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What the server saw since start (or the last `reset_stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Completion requests received (every POST to a completion route, refused ones too).
    pub requests: u64,
    /// Requests whose complete, well-formed reply was sent.
    pub completed: u64,
    /// Requests that met an injected fault (scripted, fail-first or drawn).
    pub faults_injected: u64,
    /// Most requests in flight at once (from arrival, queued ones included, to the end of the
    /// body).
    pub max_in_flight: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Requests per prompt, keyed by [`crate::prompt_hash`].
    pub per_prompt: BTreeMap<String, u64>,
    /// Responses per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests refused for a missing or wrong API key.
    pub rejected_auth: u64,
    /// Streams cut by a newer request (`cut_on_arrival`).
    #[serde(default)]
    pub cut_streams: u64,
    /// Requests refused by the token-bucket rate limit (429).
    #[serde(default)]
    pub rate_limited: u64,
    /// Batches created (either API).
    #[serde(default)]
    pub batches_created: u64,
    /// Requests submitted in batches (lines of created batches).
    #[serde(default)]
    pub batch_lines: u64,
    /// Requests in batches per prompt, keyed by [`crate::prompt_hash`].
    #[serde(default)]
    pub batch_per_prompt: BTreeMap<String, u64>,
    /// Polls of a batch's state.
    #[serde(default)]
    pub batch_polls: u64,
    /// Batch lines answered with a whole reply.
    #[serde(default)]
    pub batch_completed: u64,
    /// Requests per structured-output form they carried (`json_schema`, `json_object`,
    /// `completion_json_schema`, `tool`); requests with none are not counted.
    #[serde(default)]
    pub schema_forms: BTreeMap<String, u64>,
    /// Requests refused for the schema form they carried.
    #[serde(default)]
    pub schema_refused: u64,
    /// Replies sent cut at half their text (`broken_first`).
    #[serde(default)]
    pub broken_replies: u64,
    /// Batch API requests held unanswered (`hold_uploads`, `hold_created`).
    #[serde(default)]
    pub batch_held: u64,
    /// Batches cancelled (a cancel of a batch that had not ended).
    #[serde(default)]
    pub batches_cancelled: u64,
}

impl Stats {
    /// Requests for the prompt with this hash.
    pub fn prompt_count(&self, hash: &str) -> u64 {
        self.per_prompt.get(hash).copied().unwrap_or(0)
    }
    /// Responses sent with this status.
    pub fn status_count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
    /// Requests that carried the structured-output form `form`.
    pub fn schema_form_count(&self, form: &str) -> u64 {
        self.schema_forms.get(form).copied().unwrap_or(0)
    }
    /// Requests beyond the first for each prompt: what a client re-sent.
    pub fn repeats(&self) -> u64 {
        self.per_prompt.values().map(|n| n.saturating_sub(1)).sum()
    }
}

/// The stats plus the server's own position in the fault script.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) stats: Stats,
    pub(crate) script_pos: usize,
    /// Replies cut so far for `broken_first`.
    pub(crate) broken_pos: u32,
}

/// Shared counters, plus a signal that fires after every change (for `wait_until`).
#[derive(Clone)]
pub(crate) struct Counters(Arc<(Mutex<Tally>, watch::Sender<()>)>);

impl Default for Counters {
    fn default() -> Self {
        Counters(Arc::new((
            Mutex::new(Tally::default()),
            watch::Sender::new(()),
        )))
    }
}

impl Counters {
    /// Locks the tally (a poisoned lock is still counted: tests must see the numbers).
    /// Changes made through it must be followed by [`Counters::changed`].
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tally> {
        self.0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes everyone waiting for a change.
    pub(crate) fn changed(&self) {
        self.0.1.send_replace(());
    }

    /// A receiver woken after every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.0.1.subscribe()
    }

    /// Counts a request as arrived and in flight until the returned guard drops; returns the
    /// guard and how many requests this prompt has had, this one included.
    pub(crate) fn arrive(&self, prompt_hash: &str) -> (InFlight, u64) {
        let nth = self.update(|s| {
            s.requests += 1;
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let n = s.per_prompt.entry(prompt_hash.to_owned()).or_insert(0);
            *n += 1;
            *n
        });
        (InFlight(self.clone()), nth)
    }

    /// Records a response status.
    pub(crate) fn status(&self, status: u16) {
        self.update(|s| *s.statuses.entry(status).or_insert(0) += 1);
    }

    /// Changes the stats and wakes the waiters.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        let r = f(&mut self.lock().stats);
        self.changed();
        r
    }

    /// A copy of the stats.
    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().stats.clone()
    }
}

/// A request in flight; dropping it (end of body, client gone) counts it out.
pub(crate) struct InFlight(Counters);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .update(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}
