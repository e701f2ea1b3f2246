//! Stored records: atk's serialization boundary. Each carries a version field so a store
//! written by one atk survives a refactor, and a store from an incompatible one is refused
//! with a message instead of a panic.

use serde::{Deserialize, Serialize};

/// Version of the record layout written by this build.
pub const RECORD_VERSION: u32 = 1;

/// Arbitrary named fields of an item (`text`, `metadata`, results of earlier steps, ...).
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// One unit of work: a chunk, or a child item derived from a parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Record layout version.
    pub v: u32,
    /// Stable id (a chunk's content hash, or derived from the parent's id).
    pub id: String,
    /// Parent item id for items made by a one-to-many step.
    pub parent: Option<String>,
    /// Sort key giving the dataset its stable order (source order, then child index).
    pub order: Vec<u64>,
    /// The item's fields.
    pub fields: Fields,
}

/// The raw exchange behind a result, kept when details are on (for debugging and meta datagen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// The messages sent (chat), each `{role, content}`.
    pub messages: Vec<serde_json::Value>,
    /// The prompt text sent (completion mode).
    pub prompt: Option<String>,
    /// The raw reply text.
    pub reply: String,
    /// Finish reason reported by the server.
    pub finish_reason: Option<String>,
    /// Model that answered.
    pub model: String,
}

/// A step's accepted result for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Record layout version.
    pub v: u32,
    /// The processed output (what the output processor returned).
    pub output: serde_json::Value,
    /// The raw exchange, when details are kept.
    pub details: Option<Details>,
    /// Validation attempts it took (1 = first try).
    pub attempts: u32,
    /// Prompt tokens spent on all attempts.
    pub prompt_tokens: u64,
    /// Completion tokens spent on all attempts.
    pub completion_tokens: u64,
    /// Milliseconds from first attempt to acceptance.
    pub elapsed_ms: u64,
    /// Unix time (ms) when stored.
    pub stored_at_ms: u64,
}

/// An item that failed all attempts of a step in some run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Record layout version.
    pub v: u32,
    /// Short class of the failure, used to group the summary (`validation`, `rejected`, `transport`, ...).
    pub kind: String,
    /// The last reason, readable.
    pub reason: String,
    /// The last raw output, when there was one.
    pub last_output: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Unix time (ms) when stored.
    pub stored_at_ms: u64,
}

/// Facts about the run that wrote the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Record layout version.
    pub v: u32,
    /// atk version that wrote the store.
    pub atk_version: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Hash of the config that matters for results (models, prompts, chunking).
    pub config_fingerprint: String,
    /// Unix time (ms) the run started.
    pub started_at_ms: u64,
}
