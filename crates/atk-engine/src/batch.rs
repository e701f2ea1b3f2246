//! Batch mode's options and its durable journal, as the engine sees them. The transport that
//! collects calls into provider batches is `http/batch.rs`.
//!
//! The engine knows no store: whoever builds it (the runner) implements [`BatchJournal`] over
//! its own durable state, so a run killed at any point resumes by polling the batch its
//! requests are already in instead of paying for them again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a request was put: its batch's key (atk's name for it, chosen before it is created)
/// and, once the provider accepted it, the provider's batch id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// atk's key of the batch (also sent as the batch's metadata tag where a provider has one).
    pub key: String,
    /// The provider's batch id, once known.
    pub batch_id: Option<String>,
}

/// Durable record of which request went into which batch. Each write returns only once it is
/// durable; requests are named by their custom id (a hash of the request body).
#[async_trait]
pub trait BatchJournal: Send + Sync {
    /// The batch a request was put in by this run or an earlier one, if any.
    fn find(&self, custom_id: &str) -> Option<JournalEntry>;
    /// Before a batch is created: it will hold these requests.
    async fn planned(&self, key: &str, custom_ids: &[String]) -> Result<(), String>;
    /// Once the provider accepted the batch: its id.
    async fn created(&self, key: &str, batch_id: &str) -> Result<(), String>;
    /// Where a batch stands, each time it is polled, once more when its results were read
    /// (counted from its lines), and when it is left running (`--no-wait`) or cancelled.
    /// Recording it is best effort: a failure is the journal's to log.
    async fn polled(&self, key: &str, batch_id: &str, progress: &BatchProgress) {
        let _ = (key, batch_id, progress);
    }
    /// A line of batch `key` was handed to its caller (a reply or a failure): once every line
    /// of a batch was, and the results are stored, the journal may forget the batch.
    fn handed_out(&self, key: &str, custom_id: &str) {
        let _ = (key, custom_id);
    }
}

/// Where a provider batch stands, as polled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProgress {
    /// The provider's state (`validating`, `in_progress`, `finalizing`, `completed`,
    /// `expired`, `failed`, `cancelling`, `cancelled`; Anthropic `in_progress`, `canceling`,
    /// `ended`).
    pub state: String,
    /// The batch has ended: its results can be read, nothing more will be answered.
    pub ended: bool,
    /// Requests answered with a reply.
    pub done: u64,
    /// Requests that errored.
    pub errored: u64,
    /// Requests not answered before the batch expired or was cancelled.
    pub expired: u64,
    /// Requests in the batch.
    pub total: u64,
}

impl BatchProgress {
    /// Requests the provider is through with (answered, errored or expired).
    pub fn answered(&self) -> u64 {
        self.done + self.errored + self.expired
    }
}

/// Options of an engine in `batch` mode.
#[derive(Clone)]
pub struct BatchConfig {
    /// Most requests per batch (also capped at the provider's limit: OpenAI 50 000,
    /// Anthropic 100 000; and by size, 200 MB and 256 MB).
    pub size: usize,
    /// How long the first request of a batch waits for more before the batch is submitted.
    pub max_wait: Duration,
    /// First wait between two polls of a batch; grows by half each poll up to `poll_max`.
    pub poll_first: Duration,
    /// Longest wait between two polls.
    pub poll_max: Duration,
    /// Names the run in each batch's metadata (OpenAI), so a batch whose id was never stored
    /// is found again in the provider's batch list.
    pub tag: String,
    /// Where the engine records which request went into which batch (`None`: kept in memory
    /// only, nothing survives the process).
    pub journal: Option<Arc<dyn BatchJournal>>,
    /// Submit and leave (`--no-wait`): each batch is polled once; one that has not ended then
    /// is left running at the provider and its calls end with `Error::Cancelled` (their items
    /// stay pending; a later run collects the batch).
    pub no_wait: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            size: 1000,
            max_wait: Duration::from_secs(5),
            poll_first: Duration::from_secs(2),
            poll_max: Duration::from_secs(300),
            tag: String::new(),
            journal: None,
            no_wait: false,
        }
    }
}

impl std::fmt::Debug for BatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConfig")
            .field("size", &self.size)
            .field("max_wait", &self.max_wait)
            .field("poll_first", &self.poll_first)
            .field("poll_max", &self.poll_max)
            .field("tag", &self.tag)
            .field("journal", &self.journal.is_some())
            .field("no_wait", &self.no_wait)
            .finish()
    }
}

/// Cancelling and finding provider batches outside a run's calls (`--cancel-batches`).
pub struct BatchControl {
    transport: crate::http::BatchTransport,
}

impl BatchControl {
    /// A control over the batch API `cfg` names (its base URL, key and dialect).
    pub fn new(cfg: &crate::EngineConfig) -> Result<Self, crate::Error> {
        let cancel = crate::cancel::Cancel::new(&cfg.label, None);
        Ok(Self {
            transport: crate::http::BatchTransport::new(cfg, cancel)?,
        })
    }

    /// Asks the provider to cancel batch `batch_id` (OpenAI `POST /batches/{id}/cancel`,
    /// Anthropic `POST /messages/batches/{id}/cancel`); returns where it stands after.
    pub async fn cancel(&self, batch_id: &str) -> Result<BatchProgress, crate::Error> {
        self.transport.cancel_batch(batch_id).await
    }

    /// The id of the batch created under `key` whose id was never stored, when the provider's
    /// batch list can be searched by tag (OpenAI's metadata); `None` otherwise.
    pub async fn find(&self, key: &str) -> Option<String> {
        self.transport.find_batch(key).await
    }
}
