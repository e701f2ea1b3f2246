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
    /// Progress of a batch being polled (`done` of `total` requests answered), for display.
    fn progress(&self, key: &str, batch_id: &str, state: &str, done: u64, total: u64) {
        let _ = (key, batch_id, state, done, total);
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
            .finish()
    }
}
