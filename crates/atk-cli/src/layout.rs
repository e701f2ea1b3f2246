//! The output dir's layout, owned here and nowhere else: where the store lives, the files the
//! runner writes beside it, the store meta keys of the run's records, and what the last seeding
//! read. The runner writes these; `atk status`, `atk merge`, `atk gc` and the interface read
//! them.

use std::path::{Path, PathBuf};

use crate::flags::Shard;

/// `<output_dir>/store`: where a run's store lives.
pub fn store_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("store")
}

/// `<output_dir>/corpus.redb`: the corpus index (every chunk an unsharded run seeds, by id,
/// by document and by position), rebuilt by seeding when the inputs change.
pub fn corpus_path(output_dir: &Path) -> PathBuf {
    output_dir.join("corpus.redb")
}

/// `<output_dir>/.atk-staging`: where a run writes its datasets until it has completed; they
/// are moved into place then, or removed when the run fails, so a failed run leaves the
/// previous datasets as they were.
pub fn staging_dir(output_dir: &Path) -> PathBuf {
    output_dir.join(".atk-staging")
}

/// The hidden sidecar beside a dataset file naming each row's source document (one JSON line
/// per row: the path relative to `input_dir`, or `null`): `.<name>.sources`.
pub fn row_sources_path(dataset: &Path) -> PathBuf {
    let name = dataset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dataset.with_file_name(format!(".{name}.sources"))
}

/// The hidden sidecar beside a dataset file naming the item each row was made from (one JSON
/// line per row: the final item's id, or `null`): `.<name>.items`. The interface keys review
/// marks by it, so a mark follows its item across reruns.
pub fn row_items_path(dataset: &Path) -> PathBuf {
    let name = dataset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dataset.with_file_name(format!(".{name}.items"))
}

/// File name of the status snapshot inside the output dir (rewritten about once a second).
pub const STATUS_FILE: &str = "status.json";
/// File name of the JSON run summary in the output dir.
pub const SUMMARY_FILE: &str = "run_summary.json";

/// Store meta key holding the last status snapshot of a run (read when no run holds the store).
pub const STATUS_META_KEY: &str = "atk_status";
/// Store meta key of the per-engine cost totals (restored on resume).
pub const COST_META_KEY: &str = "cost_totals";
/// Store meta key of the run's [`atk_state::RunMeta`].
pub const RUN_META_KEY: &str = "run";
/// Store meta key of what the last seeding read ([`InputsMeta`]).
pub const INPUTS_META_KEY: &str = "inputs";
/// Store meta key of the per-step fingerprints (step name → what its results were made with).
pub const FINGERPRINT_META_KEY: &str = "step_fingerprints";
/// Store meta key of an unfinished rework (`--redo` / `--reprocess` in progress).
pub const REWORK_META_KEY: &str = "rework";

/// Store meta key of an engine's batch list (the keys of its batches, oldest first).
pub fn batch_index_meta_key(engine: &str) -> String {
    format!("batches/{engine}")
}

/// Store meta key of one batch of an engine ([`BatchMeta`]).
pub fn batch_meta_key(engine: &str, key: &str) -> String {
    format!("batches/{engine}/{key}")
}

/// Store meta key of where one batch of an engine stands ([`BatchState`]; batches recorded
/// before it existed have none).
pub fn batch_state_meta_key(engine: &str, key: &str) -> String {
    format!("batches/{engine}/{key}/state")
}

/// Where a provider batch stands, kept apart from its (long) request list so `atk status`
/// lists batches without reading which requests are in them. Written when the batch is
/// planned, created, polled (when its counts change), cancelled and collected.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchState {
    /// The provider's batch id, once known.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// `openai` or `anthropic`.
    #[serde(default)]
    pub provider: String,
    /// When the batch was planned (Unix ms), just before it was created.
    #[serde(default)]
    pub created_at_ms: u64,
    /// The provider's state as last polled; `planned` before it was created.
    #[serde(default)]
    pub state: String,
    /// The batch has ended (its results can be read).
    #[serde(default)]
    pub ended: bool,
    /// Requests answered with a reply.
    #[serde(default)]
    pub done: u64,
    /// Requests that errored.
    #[serde(default)]
    pub errored: u64,
    /// Requests not answered before the batch expired or was cancelled.
    #[serde(default)]
    pub expired: u64,
    /// Requests in the batch.
    #[serde(default)]
    pub total: u64,
    /// `--cancel-batches` cancelled it.
    #[serde(default)]
    pub cancelled: bool,
    /// Its results were read and stored: its request list is dropped from the journal.
    #[serde(default)]
    pub collected: bool,
}

/// One provider batch as the store keeps it: which requests went in (recorded before it is
/// created), and its id once the provider gave it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchMeta {
    /// The custom ids (request hashes) of its requests.
    pub requests: Vec<String>,
    /// The provider's batch id.
    #[serde(default)]
    pub batch_id: Option<String>,
}

impl BatchMeta {
    /// The state of a batch recorded before states were kept apart (`batches/…/state`):
    /// `submitted` once it has an id, its total from its request list.
    pub fn legacy_state(&self) -> BatchState {
        BatchState {
            total: self.requests.len() as u64,
            state: if self.batch_id.is_some() {
                "submitted".into()
            } else {
                String::new()
            },
            batch_id: self.batch_id.clone(),
            ..BatchState::default()
        }
    }
}

/// What the last complete seeding of a store read, to skip the next one when nothing changed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputsMeta {
    /// [`atk_chunk::InputsFingerprint::fingerprint`] of the inputs, with the shard.
    pub fingerprint: String,
    /// [`atk_chunk::InputsFingerprint::shape`]: the same on every machine holding the inputs.
    pub shape: String,
    /// Root items seeded.
    pub chunks: u64,
    /// The read's summary line, shown again when reading is skipped.
    pub summary: String,
    /// Items in the store (children included) when the last run ended; `None` until one has.
    #[serde(default)]
    pub items_at_end: Option<u64>,
    /// The shard this store holds (`--shard`), `None` for all items.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// The chunk-cache pack the inputs were read through (for `atk gc`), when the cache is on.
    #[serde(default)]
    pub chunk_pack: Option<PathBuf>,
    /// The config's fingerprint without its paths and concurrency (see
    /// [`settings_fingerprint`]): equal in the shards of one run on any machine.
    #[serde(default)]
    pub settings_fingerprint: String,
}

/// Config keys that may differ between the shards of one run: where things are, how fast.
const MACHINE_KEYS: &[&str] = &[
    "input_dir",
    "output_dir",
    "chunking_output_dir",
    "concurrency_limit",
];

/// SHA-256 (hex) of a loaded config's `redacted` form without [`MACHINE_KEYS`]: what must be
/// equal for two shards' results to belong to one run (secrets are masked in it, so keys may
/// differ too).
pub fn settings_fingerprint(redacted: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut map = redacted.as_object().cloned().unwrap_or_default();
    for key in MACHINE_KEYS {
        map.remove(*key);
    }
    let canonical = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default();
    hex::encode(
        Sha256::new_with_prefix(b"atk-settings-v1\n")
            .chain_update(&canonical)
            .finalize(),
    )
}
