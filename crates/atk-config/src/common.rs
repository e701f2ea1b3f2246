//! `CommonConfig`: the keys every pipeline shares, defined once.
//!
//! The struct is the definition: its serde field names are the keys ([`CommonConfig::keys`]),
//! its [`Default`] holds every default, and each value rule sits on its field as a
//! `deserialize_with` from [`rules`](super::rules). What depends on several keys (an engine's
//! model and endpoint in `api` mode, the required folders) is checked once, in
//! [`CommonConfig::check`]. `docs/config.md` documents every key; `tests/docs.rs` holds the
//! two together (the keys, and every default the page gives as a literal).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use atk_engine::{Dialect, Endpoint, Mode, Secret};
use atk_tokens::Tokenizer;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_yaml::Value;

use super::rules;
use crate::describe::schema;

/// The keys every pipeline shares, typed, with defaults applied, paths made absolute and API
/// keys resolved. Built by [`load`](super::load); a pipeline's own keys go in its own struct.
///
/// In the file, these keys may sit in any section (`api`, `path`, `system`, `cost`,
/// `meta_datagen` are usual) or at the top level: sections are flattened. Each can be
/// overridden with `--set KEY=VALUE` or `--override-json`. Every key, its default and what it
/// does: `docs/config.md`. Deserialising it directly applies each key's own rule only; `load`
/// also makes paths absolute, reads the API keys and checks what spans several keys.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default)]
#[non_exhaustive]
pub struct CommonConfig {
    /// Model name sent to the small engine.
    ///
    /// Model name of the small engine (`mock` in mock mode when not given).
    pub small_model: String,
    /// API key of the small engine.
    ///
    /// API key of the small engine (may be empty: mock mode, or a local server that needs none).
    /// Read apart from the other keys, so it never passes through serde's messages.
    #[serde(skip)]
    pub small_api_key: Secret,
    /// Endpoint of the small engine (empty in mock mode when not given; the first of several).
    /// Set when loading, from the key `small_base_url`.
    #[serde(skip)]
    pub small_base_url: String,
    /// Endpoint of the small engine, up to `/v1`.
    ///
    /// Several endpoints of the small engine, when `small_base_url` is a list of two or more.
    /// The key `small_base_url` is read here (one URL or a list) and split by `check`.
    #[serde(rename = "small_base_url", deserialize_with = "rules::endpoints")]
    #[schemars(with = "schema::UrlOrList")]
    pub small_endpoints: Vec<Endpoint>,
    /// `api` sends HTTP requests; `batch` sends them through the provider's batch API, at the batch price (see [cost](#cost-cost-section) and [batch mode](#batch-mode)); `mock` answers offline (no key, no cost).
    ///
    /// `api`, `batch` or `mock`.
    #[serde(deserialize_with = "rules::mode")]
    #[schemars(with = "schema::ModeName")]
    pub small_mode: Mode,
    /// The API the small engine speaks: `openai` (OpenAI and every compatible server) or `anthropic` (Anthropic's Messages API, natively: `x-api-key` and `anthropic-version` headers, the system prompt apart, its stream events, stop reasons and rate-limit headers; chat only, so not with `completion_mode`).
    ///
    /// The small engine's API dialect: `openai` or `anthropic`.
    #[serde(deserialize_with = "rules::dialect")]
    #[schemars(with = "schema::DialectName")]
    pub small_api: Dialect,
    /// Mark each prompt's shared prefix (the messages before the first one with an item's own text: the system prompt and few-shot examples) cacheable.
    ///
    /// Mark the small engine's shared prompt prefixes cacheable.
    pub small_prompt_cache: bool,
    /// Model name sent to the large engine.
    ///
    /// Model name of the large engine.
    pub large_model: String,
    /// As `small_api_key`.
    ///
    /// API key of the large engine.
    #[serde(skip)]
    pub large_api_key: Secret,
    /// Endpoint of the large engine.
    #[serde(skip)]
    pub large_base_url: String,
    /// Endpoint of the large engine; a list as for `small_base_url`.
    ///
    /// Several endpoints of the large engine, when `large_base_url` is a list of two or more.
    #[serde(rename = "large_base_url", deserialize_with = "rules::endpoints")]
    #[schemars(with = "schema::UrlOrList")]
    pub large_endpoints: Vec<Endpoint>,
    /// As `small_mode`, for the large engine.
    ///
    /// `api`, `batch` or `mock`.
    #[serde(deserialize_with = "rules::mode")]
    #[schemars(with = "schema::ModeName")]
    pub large_mode: Mode,
    /// As `small_api`, for the large engine.
    ///
    /// The large engine's API dialect: `openai` or `anthropic`.
    #[serde(deserialize_with = "rules::dialect")]
    #[schemars(with = "schema::DialectName")]
    pub large_api: Dialect,
    /// As `small_prompt_cache`, for the large engine.
    ///
    /// Mark the large engine's shared prompt prefixes cacheable.
    pub large_prompt_cache: bool,
    /// A reply counts as complete only when it carries a finish_reason; one that ends with `[DONE]` alone was cut (llama-cpp-python cuts a running stream when another request arrives) and is retried.
    ///
    /// Small engine: a reply without finish_reason is a cut one (retried).
    pub small_require_finish_reason: bool,
    /// As `small_require_finish_reason`, for the large engine.
    ///
    /// Large engine: a reply without finish_reason is a cut one (retried).
    pub large_require_finish_reason: bool,
    /// Ask the server to enforce a schema step's JSON Schema (see [structured output](structured-output.md))
    ///
    /// Small engine: ask the server to enforce schema steps' JSON Schemas.
    pub small_structured_output: bool,
    /// As `small_structured_output`, for the large engine.
    ///
    /// Large engine: ask the server to enforce schema steps' JSON Schemas.
    pub large_structured_output: bool,
    /// Folder of input documents, read recursively.
    ///
    /// Folder of input documents (absolute).
    pub input_dir: PathBuf,
    /// Where everything a run produces goes: the store, datasets, cost summary, `debug_outputs/`, `meta_datagen/`.
    ///
    /// Output folder (absolute).
    pub output_dir: PathBuf,
    /// Folder of prompt files that override the pipeline's built-in prompts, file by file.
    ///
    /// Prompt override folder (absolute), if any.
    pub prompts: Option<PathBuf>,
    /// Folder that replaces the built-in prompts as the base layer.
    ///
    /// Replacement for the compiled-in default prompts (absolute), if any.
    pub default_prompts: Option<PathBuf>,
    /// Send completion prompts (the pipeline's `.txt` prompt files) instead of chat messages.
    ///
    /// Completion prompts instead of chat.
    pub completion_mode: bool,
    /// Send the prompts' stop sequences (turn off for endpoints that reject them).
    ///
    /// Send stop sequences.
    pub use_stop: bool,
    /// Most requests in flight at once, across both engines.
    ///
    /// Most requests in flight at once (at least 1).
    #[serde(deserialize_with = "rules::count")]
    pub concurrency_limit: usize,
    /// Most tokens in one chunk of input text.
    ///
    /// Most tokens per chunk (at least 1).
    #[serde(deserialize_with = "rules::count")]
    pub chunk_size: usize,
    /// Process only a seeded random subset of the chunks (for trial runs).
    ///
    /// Process a seeded subset only.
    pub use_subset: bool,
    /// How many chunks the subset keeps.
    ///
    /// Size of that subset (at least 1).
    #[serde(deserialize_with = "rules::count")]
    pub subset_size: usize,
    /// Seed for the subset and any other randomness, so reruns pick the same items.
    ///
    /// Seed for randomness.
    pub seed: u64,
    /// Keep each step's exact prompt and raw reply, and write meta-datasets to `<output_dir>/meta_datagen/` at the end of the run.
    ///
    /// Write meta-datasets.
    pub do_meta_datagen: bool,
    /// Which steps' recorded exchanges become datasets, by their details key.
    ///
    /// Step detail keys for meta-datasets.
    pub meta_datagen_keys: Vec<String>,
    /// Template files rendered over each finished item to make extra examples (format: [writing a pipeline](writing-a-pipeline.md#7-meta-datagen)).
    ///
    /// Extra templates for meta-datasets (absolute paths).
    pub meta_datagen_extras: Vec<PathBuf>,
    /// Off: a step's recorded exchanges go into its meta-datasets only for results that were
    /// kept (not dropped by a filter, a vote or a function) and whose item reached the end of
    /// the chain, so a rejected reply never becomes training data.
    ///
    /// Meta-datasets from every recorded exchange when on (default off).
    pub meta_datagen_include_all: bool,
    /// USD per million prompt tokens, small engine.
    ///
    /// USD per million prompt tokens, small engine.
    #[serde(deserialize_with = "rules::price")]
    pub cost_per_million_small_input: f64,
    /// USD per million completion tokens, small engine.
    ///
    /// USD per million completion tokens, small engine.
    #[serde(deserialize_with = "rules::price")]
    pub cost_per_million_small_output: f64,
    /// USD per million prompt tokens, large engine.
    ///
    /// USD per million prompt tokens, large engine.
    #[serde(deserialize_with = "rules::price")]
    pub cost_per_million_large_input: f64,
    /// USD per million completion tokens, large engine.
    ///
    /// USD per million completion tokens, large engine.
    #[serde(deserialize_with = "rules::price")]
    pub cost_per_million_large_output: f64,
    /// USD per million prompt tokens read from the provider's prompt cache, small engine (OpenAI's `cached_tokens`, Anthropic's `cache_read_input_tokens`).
    ///
    /// USD per million prompt tokens read from the prompt cache, small engine (none: the input
    /// price).
    #[serde(deserialize_with = "rules::optional_price")]
    pub cost_per_million_small_cached_input: Option<f64>,
    /// As `cost_per_million_small_cached_input`, for the large engine.
    ///
    /// USD per million prompt tokens read from the prompt cache, large engine.
    #[serde(deserialize_with = "rules::optional_price")]
    pub cost_per_million_large_cached_input: Option<f64>,
    /// The share of these prices an engine in `batch` mode pays (above 0, at most 1).
    ///
    /// The share of the online price a batch engine pays (0 < x <= 1).
    #[serde(deserialize_with = "rules::discount")]
    pub batch_discount: f64,
    /// Most requests in one batch (the providers' own limits, OpenAI 50 000 requests or 200 MB and Anthropic 100 000 or 256 MB, split larger ones).
    ///
    /// Most requests per batch (at least 1).
    #[serde(deserialize_with = "rules::count")]
    pub batch_size: usize,
    /// Seconds the first request of a batch waits for more before the batch is submitted: a step's batch goes as soon as its inputs are ready, later steps' batches as results arrive.
    ///
    /// Seconds the first request of a batch waits for more before the batch is submitted.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub batch_max_wait: Duration,
    /// Most USD the runs on this output dir may spend, both engines together (earlier runs' spending counts).
    ///
    /// Most USD the output dir's runs may spend, all engines together (none: no cap).
    #[serde(deserialize_with = "rules::optional_cost")]
    pub max_cost: Option<f64>,
    /// Where the chunk cache is kept (share it between runs over the same inputs).
    ///
    /// Chunk cache folder (absolute), if set.
    pub chunking_output_dir: Option<PathBuf>,
    /// Tokenizer for chunk sizes and token estimates (`cl100k_base` or `o200k_base`).
    ///
    /// Tokenizer for chunking and estimates.
    #[serde(deserialize_with = "rules::tokenizer")]
    #[schemars(with = "schema::TokenizerName")]
    pub tokenizer: Tokenizer,
    /// Stream replies; a stream cut before its end is retried, never saved.
    ///
    /// Stream replies.
    pub stream: bool,
    /// Write every request and reply to `<output_dir>/debug_outputs/` (API keys never included).
    ///
    /// Write `debug_outputs/`.
    pub debug_outputs: bool,
    /// Seconds one attempt may take in total before it is retried.
    ///
    /// Total time allowed for one attempt.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub request_timeout: Duration,
    /// Seconds of silence inside a streamed reply before the attempt is retried.
    ///
    /// Longest gap inside a streamed reply.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub idle_timeout: Duration,
    /// Seconds to wait for the first byte of a reply before the attempt is retried.
    ///
    /// Longest wait for a reply's first byte.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub first_byte_timeout: Duration,
    /// How much of `requests_per_minute` / `tokens_per_minute` may go out at once, in seconds' worth; the rest is spread evenly, never a minute's worth at once (`requests_per_minute: 60` sends 3 at once, then 1 per second).
    ///
    /// Seconds' worth of the RPM/TPM caps that may go out at once.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub burst: Duration,
    /// Transport attempts per request (429, 5xx, resets, stalls), first try included.
    ///
    /// Transport attempts per request (at least 1).
    #[serde(deserialize_with = "rules::count")]
    pub max_attempts: u32,
    /// Seconds an endpoint that had answered may stop answering (no connection, or only 502/503 — a replica restarting, a model loading) before the run stops with exit 1, leaving unsent items pending for the next run.
    ///
    /// Longest outage of an endpoint waited out.
    #[serde(deserialize_with = "rules::seconds")]
    #[schemars(with = "f64")]
    pub outage_limit: Duration,
    /// Cap on requests per minute, per engine, as a smooth rate (see `burst`).
    ///
    /// Requests-per-minute cap, per engine.
    #[serde(deserialize_with = "rules::optional_count")]
    pub requests_per_minute: Option<u32>,
    /// Cap on tokens per minute, per engine (prompt estimate + `max_tokens` reserved, corrected by the reply's usage).
    ///
    /// Tokens-per-minute cap, per engine.
    #[serde(deserialize_with = "rules::optional_count")]
    pub tokens_per_minute: Option<u32>,
    /// What `mock` engines answer for steps that set no mock reply of their own (a step's own wins: the example's `write_poem` sets one, so this key does not change its replies); `{hash}`, `{words}`, `{lines}`, `{excerpt}` are filled in from the prompt.
    ///
    /// Mock reply template.
    pub mock_reply: Option<String>,
    /// Simulated latency of each `mock` reply.
    ///
    /// Mock latency (the key `mock_latency_ms`).
    #[serde(rename = "mock_latency_ms", deserialize_with = "rules::millis")]
    #[schemars(with = "u64")]
    pub mock_latency: Duration,
    /// The runner reads and chunks `input_dir`; `false` lets a pipeline supply its own texts.
    ///
    /// The runner reads `input_dir` itself.
    pub read_files_manually: bool,
    /// Licence of the dataset, as a Hugging Face Hub licence id, named in the dataset card (`README.md` written beside the datasets).
    ///
    /// Licence named in the dataset card (a Hub licence id, or `other`).
    pub dataset_license: String,
    /// With `dataset_license: other`: the licence's name (the card's `license_name`).
    ///
    /// The licence's name in the card when `dataset_license` is `other`.
    pub dataset_license_name: String,
    /// With `dataset_license: other`: where the licence's text is (the card's `license_link`).
    ///
    /// A link to the licence's text when `dataset_license` is `other`.
    pub dataset_license_link: String,
    /// Language code(s) of the data (ISO 639-1, comma-separated), the card's `language`.
    ///
    /// Language code(s) of the data in the dataset card (comma-separated ISO 639-1).
    pub dataset_language: String,
    /// The licence of the source documents, stated in the card's "Source documents" section.
    ///
    /// The licence of the source documents, named in the dataset card.
    pub source_license: String,
    /// Database of a new store in `<output_dir>/store`: `sled`, or `redb`, whose memory stays within its cache however many items the store holds (use it past ~50 000 items; figures in `docs/performance.md`).
    ///
    /// Database of a new store (`sled` or `redb`); an existing store keeps its own.
    #[serde(deserialize_with = "rules::store_backend")]
    #[schemars(with = "schema::BackendName")]
    pub store_backend: atk_state::Backend,
}

impl Default for CommonConfig {
    /// Every key's default: what a key left out of the file (or written empty) gets.
    fn default() -> Self {
        Self {
            small_model: String::new(),
            small_api_key: Secret::default(),
            small_base_url: String::new(),
            small_endpoints: Vec::new(),
            small_mode: Mode::Api,
            small_api: Dialect::OpenAi,
            small_prompt_cache: false,
            large_model: String::new(),
            large_api_key: Secret::default(),
            large_base_url: String::new(),
            large_endpoints: Vec::new(),
            large_mode: Mode::Api,
            large_api: Dialect::OpenAi,
            large_prompt_cache: false,
            small_require_finish_reason: true,
            large_require_finish_reason: true,
            small_structured_output: true,
            large_structured_output: true,
            input_dir: PathBuf::new(),
            output_dir: PathBuf::new(),
            prompts: None,
            default_prompts: None,
            completion_mode: false,
            use_stop: true,
            concurrency_limit: 50,
            chunk_size: 3000,
            use_subset: false,
            subset_size: 100,
            seed: 11037,
            do_meta_datagen: false,
            meta_datagen_keys: Vec::new(),
            meta_datagen_extras: Vec::new(),
            meta_datagen_include_all: false,
            cost_per_million_small_input: 0.0,
            cost_per_million_small_output: 0.0,
            cost_per_million_large_input: 0.0,
            cost_per_million_large_output: 0.0,
            cost_per_million_small_cached_input: None,
            cost_per_million_large_cached_input: None,
            batch_discount: 0.5,
            batch_size: 1000,
            batch_max_wait: Duration::from_secs(5),
            max_cost: None,
            chunking_output_dir: None,
            tokenizer: Tokenizer::Cl100k,
            stream: true,
            debug_outputs: false,
            request_timeout: Duration::from_secs(1800),
            idle_timeout: Duration::from_secs(120),
            first_byte_timeout: Duration::from_secs(600),
            burst: Duration::from_secs(3),
            max_attempts: 8,
            outage_limit: Duration::from_secs(600),
            requests_per_minute: None,
            tokens_per_minute: None,
            mock_reply: None,
            mock_latency: Duration::ZERO,
            read_files_manually: true,
            dataset_license: "other".to_string(),
            dataset_license_name: String::new(),
            dataset_license_link: String::new(),
            dataset_language: "en".to_string(),
            source_license: String::new(),
            store_backend: atk_state::Backend::Sled,
        }
    }
}

/// The API keys: common keys read apart from the struct (see `secrets::take_api_key`).
const API_KEYS: [&str; 2] = ["small_api_key", "large_api_key"];

impl CommonConfig {
    /// The API keys and their doc lines (`--describe-config`; they are read apart from the
    /// struct, so its schema does not list them).
    pub(crate) const API_KEY_DOCS: [(&'static str, &'static str); 2] = [
        ("small_api_key", "API key of the small engine."),
        ("large_api_key", "As `small_api_key`."),
    ];

    /// The keys a run always needs (`docs/config.md`: "required"); the engines' model and
    /// endpoint are needed only in `api` mode, which `check` decides.
    pub(crate) const REQUIRED: &'static [&'static str] = &["input_dir", "output_dir"];

    /// A key's default as a config would write it, for the keys whose value type has no
    /// plain serialised form (modes, names, durations); `None` for the others.
    pub(crate) fn shown_default(&self, key: &str) -> Option<serde_json::Value> {
        let seconds = |d: Duration| serde_json::json!(d.as_secs_f64());
        Some(match key {
            "small_mode" => self.small_mode.to_string().into(),
            "large_mode" => self.large_mode.to_string().into(),
            "small_api" => self.small_api.to_string().into(),
            "large_api" => self.large_api.to_string().into(),
            "tokenizer" => self.tokenizer.name().into(),
            "store_backend" => self.store_backend.name().into(),
            "request_timeout" => seconds(self.request_timeout),
            "idle_timeout" => seconds(self.idle_timeout),
            "first_byte_timeout" => seconds(self.first_byte_timeout),
            "burst" => seconds(self.burst),
            "outage_limit" => seconds(self.outage_limit),
            "batch_max_wait" => seconds(self.batch_max_wait),
            "mock_latency_ms" => serde_json::json!(self.mock_latency.as_millis() as u64),
            _ => return None,
        })
    }

    /// Every common key's name, as written in a config (for docs, tools and did-you-mean):
    /// the struct's serde field names and the two API keys.
    pub fn keys() -> &'static [&'static str] {
        static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
            let mut keys = super::typed::field_names::<CommonConfig>().to_vec();
            keys.extend(API_KEYS);
            keys
        });
        &KEYS
    }

    /// Keys holding paths (resolved against the config file's folder).
    pub(crate) const PATH_KEYS: &'static [&'static str] = &[
        "input_dir",
        "output_dir",
        "prompts",
        "default_prompts",
        "chunking_output_dir",
        "meta_datagen_extras",
    ];

    /// The flattened keys as the struct reads them: a common key written empty (`key:`) is
    /// left out, so it gets its default as if it were not there.
    pub(crate) fn input(mapping: Value) -> Value {
        match mapping {
            Value::Mapping(mut map) => {
                map.retain(|k, v| {
                    !(v.is_null() && k.as_str().is_some_and(|k| Self::keys().contains(&k)))
                });
                Value::Mapping(map)
            }
            other => other,
        }
    }

    /// The checks that span several keys, after each key's own rule: the model and endpoint
    /// of an engine the pipeline calls in `api` mode, the required folders (every missing key
    /// named at once), and an engine's endpoint split into the first URL and the list.
    pub(crate) fn check(mut self, used: EnginesUsed) -> Result<Self, Invalid> {
        self.check_completion_mode(used)?;
        let small = engine(
            "small",
            self.small_mode,
            used.small,
            std::mem::take(&mut self.small_model),
            &mut self.small_endpoints,
        );
        let large = engine(
            "large",
            self.large_mode,
            used.large,
            std::mem::take(&mut self.large_model),
            &mut self.large_endpoints,
        );
        let input_dir = required_path(
            "input_dir",
            std::mem::take(&mut self.input_dir),
            "the folder of documents to read, e.g. `input_dir: ./inputs`",
        );
        let output_dir = required_path(
            "output_dir",
            std::mem::take(&mut self.output_dir),
            "where results go, e.g. `output_dir: ./output`",
        );
        // Every missing key in one message, not one per attempt.
        let mut missing = Vec::new();
        let small = found(small, &mut missing)?;
        let large = found(large, &mut missing)?;
        let input_dir = found(input_dir, &mut missing)?;
        let output_dir = found(output_dir, &mut missing)?;
        let (
            Some((small_model, small_base_url)),
            Some((large_model, large_base_url)),
            Some(input_dir),
            Some(output_dir),
        ) = (small, large, input_dir, output_dir)
        else {
            return Err(Invalid::Missing(missing));
        };
        Ok(Self {
            small_model,
            small_base_url,
            large_model,
            large_base_url,
            input_dir,
            output_dir,
            ..self
        })
    }

    /// Completion prompts need an OpenAI engine online: Anthropic's API and the batch APIs
    /// (atk sends chat requests there) have no completion endpoint.
    fn check_completion_mode(&self, used: EnginesUsed) -> Result<(), Invalid> {
        if !self.completion_mode {
            return Ok(());
        }
        let engines = [
            (
                "small_api",
                "small_mode",
                self.small_api,
                self.small_mode,
                used.small,
            ),
            (
                "large_api",
                "large_mode",
                self.large_api,
                self.large_mode,
                used.large,
            ),
        ];
        for (api_key, mode_key, api, mode, used) in engines {
            if !used || mode == Mode::Mock {
                continue;
            }
            if api == Dialect::Anthropic {
                return Err(Invalid::Value {
                    key: api_key,
                    message: format!(
                        "the anthropic API has no completion mode: turn `completion_mode` off, or set `{api_key}: openai`"
                    ),
                });
            }
            if mode == Mode::Batch {
                return Err(Invalid::Value {
                    key: mode_key,
                    message: format!(
                        "batch mode sends chat requests only: turn `completion_mode` off, or set `{mode_key}: api`"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The check between the folders, made once the whole config (the pipeline's keys too)
    /// has loaded: an output folder inside the input folder would be read back as input.
    pub(crate) fn check_folders(&self) -> Result<(), Invalid> {
        if self.read_files_manually
            && !self.input_dir.as_os_str().is_empty()
            && self.output_dir.starts_with(&self.input_dir)
        {
            return Err(Invalid::Value {
                key: "output_dir",
                message: format!(
                    "output_dir ({}) is inside input_dir ({}): the next run would read its own outputs as inputs; \
                     choose an output_dir outside the input folder",
                    self.output_dir.display(),
                    self.input_dir.display()
                ),
            });
        }
        Ok(())
    }
}

/// A problem found while checking: which key, and what is wrong.
pub(crate) enum Invalid {
    /// The key's value is unusable.
    Value { key: &'static str, message: String },
    /// Required keys with no value (every one found): the key, when it is required and how
    /// to give it.
    Missing(Vec<(&'static str, String)>),
}

/// `Ok(Some(x))`, or `Ok(None)` with the missing keys added to `missing`; other problems stay errors.
fn found<X>(
    r: Result<X, Invalid>,
    missing: &mut Vec<(&'static str, String)>,
) -> Result<Option<X>, Invalid> {
    match r {
        Ok(x) => Ok(Some(x)),
        Err(Invalid::Missing(keys)) => {
            missing.extend(keys);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// Which engines a pipeline calls (derived from the pipeline's chain in atk-cli): the model and endpoint of
/// an engine it does not use are not required, and no API key is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnginesUsed {
    /// The small engine.
    pub small: bool,
    /// The large engine.
    pub large: bool,
}

impl EnginesUsed {
    /// Both engines (the default).
    pub const BOTH: Self = Self {
        small: true,
        large: true,
    };
    /// The small engine only.
    pub const SMALL: Self = Self {
        small: true,
        large: false,
    };
}

impl Default for EnginesUsed {
    fn default() -> Self {
        Self::BOTH
    }
}

/// Model and base URL of one engine: required in `api` mode when the pipeline uses the engine
/// (both named at once when both are missing), defaulted in `mock` mode. `endpoints` is the
/// key `<prefix>_base_url` as read (one URL, or each entry of a list): it keeps the list only
/// when it has two or more.
fn engine(
    prefix: &'static str,
    mode: Mode,
    used: bool,
    model: String,
    endpoints: &mut Vec<Endpoint>,
) -> Result<(String, String), Invalid> {
    let base_url = endpoints.first().map(|e| e.base_url.clone());
    if endpoints.len() < 2 {
        endpoints.clear();
    }
    let model = Some(model).filter(|s| !s.trim().is_empty());
    let base_url = base_url.filter(|s| !s.trim().is_empty());
    if mode == Mode::Mock {
        return Ok((
            model.unwrap_or_else(|| "mock".into()),
            base_url.unwrap_or_default(),
        ));
    }
    let (model_key, url_key) = match prefix {
        "small" => ("small_model", "small_base_url"),
        _ => ("large_model", "large_base_url"),
    };
    if !used {
        // Not required; checked only if given.
        let base_url = base_url.unwrap_or_default();
        if !(base_url.is_empty()
            || base_url.starts_with("http://")
            || base_url.starts_with("https://"))
        {
            return Err(Invalid::Value {
                key: url_key,
                message: format!("`{base_url}` is not an http(s) URL"),
            });
        }
        return Ok((model.unwrap_or_default(), base_url));
    }
    let mut missing = Vec::new();
    if model.is_none() {
        missing.push((
            model_key,
            format!("the model name is needed when `{prefix}_mode` is `api` (set it, or set `{prefix}_mode: mock` to run offline)"),
        ));
    }
    if base_url.is_none() {
        missing.push((
            url_key,
            format!(
                "the endpoint (e.g. https://api.openai.com/v1) is needed when `{prefix}_mode` is `api` (set it, or set `{prefix}_mode: mock`)"
            ),
        ));
    }
    let (Some(model), Some(base_url)) = (model, base_url) else {
        return Err(Invalid::Missing(missing));
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(Invalid::Value {
            key: url_key,
            message: format!("`{base_url}` is not an http(s) URL"),
        });
    }
    Ok((model, base_url))
}

fn required_path(key: &'static str, value: PathBuf, hint: &str) -> Result<PathBuf, Invalid> {
    Some(value)
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Invalid::Missing(vec![(key, format!("set {hint}"))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_are_keys() {
        for key in CommonConfig::PATH_KEYS {
            assert!(CommonConfig::keys().contains(key), "{key} is not a key");
        }
    }
}
