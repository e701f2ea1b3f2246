//! Stored records: atk's serialization boundary. Each carries a version field so a store
//! written by one atk survives a refactor, and a store from an incompatible one is refused
//! with a message instead of a panic.

use serde::{Deserialize, Serialize};

/// Version of the record layout written by this build. Version 2 moved a result's outcome
/// (kept, dropped, children) out of the user's `output` into [`Outcome`] and added the raw
/// reply, the step fingerprint and the fan-in input hash; version 1 records are migrated on
/// read (see `codec.rs`).
pub const RECORD_VERSION: u32 = 2;

/// The oldest record layout this build still reads (migrating it on read).
pub const OLDEST_READABLE_VERSION: u32 = 1;

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

/// What a step's stored result means for the item's way through the chain. Kept apart from
/// the user's `output`, so no output value can be mistaken for a drop or a fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The item goes on to the next step with `output` merged under the step's result key.
    #[default]
    Kept,
    /// The item stops here (a filter, a failed vote, a fan-in with no kept children).
    Dropped {
        /// Why, readable (grouped in the run summary).
        reason: String,
    },
    /// The item was split into these child items (in order), which go on instead of it.
    Children {
        /// Child item ids, in order.
        ids: Vec<String>,
    },
}

/// A step's accepted result for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Record layout version.
    pub v: u32,
    /// Kept, dropped or split into children.
    #[serde(default)]
    pub outcome: Outcome,
    /// The processed output (what the output processor returned).
    pub output: serde_json::Value,
    /// The raw exchange, when details are kept.
    pub details: Option<Details>,
    /// The accepted raw reply text, kept for every result made by a model call, so an output
    /// processor or validator can be rerun over it without paying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The step's fingerprint (prompt, params, model, version) when the result was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For a fan-in: the hash of the kept children (ids and results) it was made from; the
    /// result is redone when that set changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_hash: Option<String>,
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

impl ResultRecord {
    /// A kept result with `output`, no details, one attempt, no tokens, stamped now.
    pub fn new(output: serde_json::Value) -> Self {
        Self {
            v: RECORD_VERSION,
            outcome: Outcome::Kept,
            output,
            details: None,
            raw: None,
            fingerprint: None,
            input_hash: None,
            attempts: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
            elapsed_ms: 0,
            stored_at_ms: now_ms(),
        }
    }

    /// True when the item goes on with this result merged (not dropped, not split).
    pub fn is_kept(&self) -> bool {
        matches!(self.outcome, Outcome::Kept)
    }

    /// The drop reason, when the item was dropped here.
    pub fn drop_reason(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Dropped { reason } => Some(reason),
            _ => None,
        }
    }

    /// A version 1 record: the outcome lived inside `output` as `{"atk_dropped": reason}` or
    /// `{"atk_children": [ids], "output": value}`.
    pub(crate) fn migrate_v1(mut self) -> Self {
        use serde_json::Value;
        if let Value::Object(obj) = &mut self.output {
            if obj.len() == 1
                && let Some(reason) = obj.get("atk_dropped")
            {
                let reason = match reason {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.outcome = Outcome::Dropped { reason };
                self.output = Value::Null;
            } else if obj.len() == 2
                && let (Some(Value::Array(ids)), Some(_)) =
                    (obj.get("atk_children"), obj.get("output"))
            {
                let ids = ids
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                self.outcome = Outcome::Children { ids };
                self.output = obj.remove("output").unwrap_or(Value::Null);
            }
        }
        if let Some(details) = &self.details {
            self.raw.get_or_insert_with(|| details.reply.clone());
        }
        self.v = RECORD_VERSION;
        self
    }
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A field an item does not have, or has in another shape than asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {item}: {problem}")]
pub struct FieldError {
    /// The item's id.
    pub item: String,
    /// What is wrong, naming the key and the keys present.
    pub problem: String,
}

/// So `?` works on field reads inside processors, validators and gather functions, which
/// report rejections as `String`.
impl From<FieldError> for String {
    fn from(e: FieldError) -> Self {
        e.to_string()
    }
}

impl ItemRecord {
    /// The field `key` decoded as `T`; the error names the key, the item and the keys present
    /// (no silent default: a typo in a key is an error, not an empty string).
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, FieldError> {
        let value = self.fields.get(key).ok_or_else(|| self.missing(key))?;
        T::deserialize(value).map_err(|e| FieldError {
            item: self.id.clone(),
            problem: format!("field `{key}` is not the shape asked for: {e}"),
        })
    }

    /// The field `key` as text (a string as is, anything else as JSON); errors as [`get`](Self::get).
    pub fn text(&self, key: &str) -> Result<String, FieldError> {
        match self.fields.get(key) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(self.missing(key)),
        }
    }

    fn missing(&self, key: &str) -> FieldError {
        let mut present: Vec<&str> = self.fields.keys().map(String::as_str).collect();
        present.sort_unstable();
        FieldError {
            item: self.id.clone(),
            problem: format!("no field `{key}` (fields present: {})", present.join(", ")),
        }
    }
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
    /// The last prompt sent (chat messages as `[role]` blocks, or the completion text), cut
    /// to [`MAX_FAILURE_PROMPT_CHARS`]; absent in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prompt: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Unix time (ms) when stored.
    pub stored_at_ms: u64,
}

/// Longest prompt a failure record keeps (characters): enough to read what was asked, bounded
/// so that a store of failures stays small.
pub const MAX_FAILURE_PROMPT_CHARS: usize = 16_000;

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
