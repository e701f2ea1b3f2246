//! `CommonConfig`: the keys every pipeline shares, typed and resolved.

use std::path::PathBuf;
use std::time::Duration;

use atk_engine::{Mode, Secret};
use atk_tokens::Tokenizer;
use serde::Deserialize;

use super::rules::AtLeastOne;

/// The keys every pipeline shares, typed, with defaults applied, paths made absolute and API
/// keys resolved. Built by [`load`](super::load); a pipeline's own keys go in its own struct.
///
/// In the file, these keys may sit in any section (`api`, `path`, `system`, `cost`,
/// `meta_datagen` are usual) or at the top level: sections are flattened. Each can be
/// overridden with `--set KEY=VALUE` (the value read as YAML) or `--override-json`.
///
/// | Key | Type | Default | Meaning |
/// |---|---|---|---|
/// | `small_model` | string | required when `small_mode` is `api`; `mock` otherwise | Model name sent to the small (cheap, high-volume) engine. |
/// | `small_api_key` | string, secret | `$ATK_SMALL_API_KEY`, then `$OPENAI_API_KEY`, then none | API key of the small engine. Empty or absent falls back to the environment; `${VAR}` works. Never printed, logged or stored. Not needed in `mock` mode. |
/// | `small_base_url` | string | required when `small_mode` is `api` | OpenAI-compatible endpoint of the small engine, e.g. `https://api.openai.com/v1`. |
/// | `small_mode` | `api` or `mock` | `api` | `api` sends HTTP requests; `mock` answers offline with deterministic text (no key, no cost). |
/// | `large_model` | string | required when `large_mode` is `api`; `mock` otherwise | Model name sent to the large (capable) engine. |
/// | `large_api_key` | string, secret | `$ATK_LARGE_API_KEY`, then `$OPENAI_API_KEY`, then none | API key of the large engine; as `small_api_key`. |
/// | `large_base_url` | string | required when `large_mode` is `api` | OpenAI-compatible endpoint of the large engine. |
/// | `large_mode` | `api` or `mock` | `api` | As `small_mode`, for the large engine. |
/// | `input_dir` | path | required | Folder of input documents, read recursively. |
/// | `output_dir` | path | required | Folder for the store, datasets, run summary, `debug_outputs/` and `meta_datagen/`; created if missing. |
/// | `prompts` | path | none | Folder of prompt files that override the pipeline's prompts file by file. |
/// | `default_prompts` | path | none (compiled into the pipeline) | Folder that replaces the pipeline's built-in prompts as the base layer. |
/// | `completion_mode` | bool | `false` | Send completion prompts (`.txt` files) instead of chat messages. |
/// | `use_stop` | bool | `true` | Send the prompts' stop sequences to the endpoint (some endpoints reject them). |
/// | `concurrency_limit` | integer ≥ 1 | `50` | Most requests in flight at once, across both engines. |
/// | `chunk_size` | integer ≥ 1 | `3000` | Most tokens in one chunk of input text. |
/// | `use_subset` | bool | `false` | Process only a seeded random subset of the chunks (for trial runs). |
/// | `subset_size` | integer ≥ 1 | `100` | How many chunks the subset keeps. |
/// | `seed` | integer | `11037` | Seed for the subset and any other randomness, so reruns pick the same items. |
/// | `do_meta_datagen` | bool | `false` | Also write meta-datasets (`<output_dir>/meta_datagen/`) from recorded step details. |
/// | `meta_datagen_keys` | list of strings | `[]` | The step detail keys the meta-datasets are made from. |
/// | `meta_datagen_extras` | list of paths | `[]` | Template files rendered over each final item to make extra examples. |
/// | `cost_per_million_small_input` | number | `0` | USD per million prompt tokens on the small engine (cost estimates and totals). |
/// | `cost_per_million_small_output` | number | `0` | USD per million completion tokens on the small engine. |
/// | `cost_per_million_large_input` | number | `0` | USD per million prompt tokens on the large engine. |
/// | `cost_per_million_large_output` | number | `0` | USD per million completion tokens on the large engine. |
/// | `chunking_output_dir` | path | none (a folder inside `output_dir`) | Where the chunk cache is kept, to share it between runs. |
/// | `tokenizer` | `cl100k_base` or `o200k_base` | `cl100k_base` | Tokenizer for chunk sizes and token estimates. |
/// | `stream` | bool | `true` | Stream replies (server-sent events); a cut stream is retried, never saved. |
/// | `debug_outputs` | bool | `false` | Write every request and reply to `<output_dir>/debug_outputs/` (keys never included). |
/// | `request_timeout` | seconds (number) | `1800` | Longest one attempt may take in total before it is retried. |
/// | `idle_timeout` | seconds (number) | `120` | Longest silence inside a streamed reply before the attempt is retried. |
/// | `max_attempts` | integer ≥ 1 | `8` | Transport attempts per request (first try included): 429, 5xx, resets, stalls. |
/// | `requests_per_minute` | integer | none (no cap) | Cap on requests per minute, per engine. |
/// | `tokens_per_minute` | integer | none (no cap) | Cap on tokens per minute, per engine. |
/// | `mock_reply` | string | none (a built-in paragraph) | Reply template of `mock` engines; `{hash}`, `{words}`, `{lines}`, `{excerpt}` are filled in. |
/// | `mock_latency_ms` | integer | `0` | Simulated latency of each `mock` reply, in milliseconds. |
/// | `read_files_manually` | bool | `true` | The runner reads and chunks `input_dir`; `false` lets the pipeline supply its own texts. |
/// | `dataset_license` | string | `other` | Licence named in the dataset card (`README.md` in `output_dir`), e.g. `cc-by-4.0`. |
///
/// Top-level key `no_flatten` (list of section names) keeps those sections as maps, reached by
/// the pipeline as one key (`example_heading`) and overridden as `--set example_heading.key=..`.
///
/// Paths written in the file are relative to the config file's folder; paths given with
/// `--set`/`--override-json` are relative to the working directory. Strings may use `${VAR}`
/// (`$${` for a literal `${`). A value `!!PLACEHOLDER!!` (or containing it) must be filled in
/// before a run starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommonConfig {
    /// Model name of the small engine.
    pub small_model: String,
    /// API key of the small engine (may be empty: mock mode, or a local server that needs none).
    pub small_api_key: Secret,
    /// Endpoint of the small engine (empty in mock mode when not given).
    pub small_base_url: String,
    /// `api` or `mock`.
    pub small_mode: Mode,
    /// Model name of the large engine.
    pub large_model: String,
    /// API key of the large engine.
    pub large_api_key: Secret,
    /// Endpoint of the large engine.
    pub large_base_url: String,
    /// `api` or `mock`.
    pub large_mode: Mode,
    /// Folder of input documents (absolute).
    pub input_dir: PathBuf,
    /// Output folder (absolute).
    pub output_dir: PathBuf,
    /// Prompt override folder (absolute), if any.
    pub prompts: Option<PathBuf>,
    /// Replacement for the compiled-in default prompts (absolute), if any.
    pub default_prompts: Option<PathBuf>,
    /// Completion prompts instead of chat.
    pub completion_mode: bool,
    /// Send stop sequences.
    pub use_stop: bool,
    /// Most requests in flight at once.
    pub concurrency_limit: usize,
    /// Most tokens per chunk.
    pub chunk_size: usize,
    /// Process a seeded subset only.
    pub use_subset: bool,
    /// Size of that subset.
    pub subset_size: usize,
    /// Seed for randomness.
    pub seed: u64,
    /// Write meta-datasets.
    pub do_meta_datagen: bool,
    /// Step detail keys for meta-datasets.
    pub meta_datagen_keys: Vec<String>,
    /// Extra templates for meta-datasets (absolute paths).
    pub meta_datagen_extras: Vec<PathBuf>,
    /// USD per million prompt tokens, small engine.
    pub cost_per_million_small_input: f64,
    /// USD per million completion tokens, small engine.
    pub cost_per_million_small_output: f64,
    /// USD per million prompt tokens, large engine.
    pub cost_per_million_large_input: f64,
    /// USD per million completion tokens, large engine.
    pub cost_per_million_large_output: f64,
    /// Chunk cache folder (absolute), if set.
    pub chunking_output_dir: Option<PathBuf>,
    /// Tokenizer for chunking and estimates.
    pub tokenizer: Tokenizer,
    /// Stream replies.
    pub stream: bool,
    /// Write `debug_outputs/`.
    pub debug_outputs: bool,
    /// Total time allowed for one attempt.
    pub request_timeout: Duration,
    /// Longest gap inside a streamed reply.
    pub idle_timeout: Duration,
    /// Transport attempts per request.
    pub max_attempts: u32,
    /// Requests-per-minute cap, per engine.
    pub requests_per_minute: Option<u32>,
    /// Tokens-per-minute cap, per engine.
    pub tokens_per_minute: Option<u32>,
    /// Mock reply template.
    pub mock_reply: Option<String>,
    /// Mock latency.
    pub mock_latency: Duration,
    /// The runner reads `input_dir` itself.
    pub read_files_manually: bool,
    /// Licence named in the dataset card.
    pub dataset_license: String,
}

impl CommonConfig {
    /// Every common key's name, as written in a config (for docs, tools and did-you-mean).
    pub const KEYS: &'static [&'static str] = &[
        "small_model",
        "small_api_key",
        "small_base_url",
        "small_mode",
        "large_model",
        "large_api_key",
        "large_base_url",
        "large_mode",
        "input_dir",
        "output_dir",
        "prompts",
        "default_prompts",
        "completion_mode",
        "use_stop",
        "concurrency_limit",
        "chunk_size",
        "use_subset",
        "subset_size",
        "seed",
        "do_meta_datagen",
        "meta_datagen_keys",
        "meta_datagen_extras",
        "cost_per_million_small_input",
        "cost_per_million_small_output",
        "cost_per_million_large_input",
        "cost_per_million_large_output",
        "chunking_output_dir",
        "tokenizer",
        "stream",
        "debug_outputs",
        "request_timeout",
        "idle_timeout",
        "max_attempts",
        "requests_per_minute",
        "tokens_per_minute",
        "mock_reply",
        "mock_latency_ms",
        "read_files_manually",
        "dataset_license",
    ];

    /// Keys holding paths (resolved against the config file's folder).
    pub(crate) const PATH_KEYS: &'static [&'static str] = &[
        "input_dir",
        "output_dir",
        "prompts",
        "default_prompts",
        "chunking_output_dir",
        "meta_datagen_extras",
    ];
}

impl Default for CommonConfig {
    /// Every default from the table; both engines in `mock` mode, empty paths.
    fn default() -> Self {
        Self {
            small_model: "mock".into(),
            small_api_key: Secret::default(),
            small_base_url: String::new(),
            small_mode: Mode::Mock,
            large_model: "mock".into(),
            large_api_key: Secret::default(),
            large_base_url: String::new(),
            large_mode: Mode::Mock,
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
            cost_per_million_small_input: 0.0,
            cost_per_million_small_output: 0.0,
            cost_per_million_large_input: 0.0,
            cost_per_million_large_output: 0.0,
            chunking_output_dir: None,
            tokenizer: Tokenizer::Cl100k,
            stream: true,
            debug_outputs: false,
            request_timeout: Duration::from_secs(1800),
            idle_timeout: Duration::from_secs(120),
            max_attempts: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            mock_reply: None,
            mock_latency: Duration::ZERO,
            read_files_manually: true,
            dataset_license: "other".to_string(),
        }
    }
}

/// The common keys as written (every one optional); the typed layer's input. API keys are not
/// here: they are taken out before, so they never pass through serde's error messages.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawCommon {
    pub small_model: Option<String>,
    pub small_base_url: Option<String>,
    pub small_mode: Option<String>,
    pub large_model: Option<String>,
    pub large_base_url: Option<String>,
    pub large_mode: Option<String>,
    pub input_dir: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub prompts: Option<PathBuf>,
    pub default_prompts: Option<PathBuf>,
    pub completion_mode: Option<bool>,
    pub use_stop: Option<bool>,
    pub concurrency_limit: Option<AtLeastOne>,
    pub chunk_size: Option<AtLeastOne>,
    pub use_subset: Option<bool>,
    pub subset_size: Option<AtLeastOne>,
    pub seed: Option<u64>,
    pub do_meta_datagen: Option<bool>,
    pub meta_datagen_keys: Option<Vec<String>>,
    pub meta_datagen_extras: Option<Vec<PathBuf>>,
    pub cost_per_million_small_input: Option<f64>,
    pub cost_per_million_small_output: Option<f64>,
    pub cost_per_million_large_input: Option<f64>,
    pub cost_per_million_large_output: Option<f64>,
    pub chunking_output_dir: Option<PathBuf>,
    pub tokenizer: Option<String>,
    pub stream: Option<bool>,
    pub debug_outputs: Option<bool>,
    pub request_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_attempts: Option<AtLeastOne>,
    pub requests_per_minute: Option<AtLeastOne>,
    pub tokens_per_minute: Option<AtLeastOne>,
    pub mock_reply: Option<String>,
    pub mock_latency_ms: Option<u64>,
    pub read_files_manually: Option<bool>,
    pub dataset_license: Option<String>,
}

/// A problem found while resolving: which key, and what is wrong.
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

/// Which engines a pipeline calls ([`crate::Pipeline::engines_used`]): the model and endpoint of
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

impl RawCommon {
    /// Applies defaults and checks values; `small_api_key`/`large_api_key` come resolved.
    pub(crate) fn resolve(
        self,
        small_api_key: Secret,
        large_api_key: Secret,
        used: EnginesUsed,
    ) -> Result<CommonConfig, Invalid> {
        let d = CommonConfig::default();
        let small_mode = mode("small_mode", self.small_mode)?;
        let large_mode = mode("large_mode", self.large_mode)?;
        let small = engine(
            "small",
            small_mode,
            used.small,
            self.small_model,
            self.small_base_url,
        );
        let large = engine(
            "large",
            large_mode,
            used.large,
            self.large_model,
            self.large_base_url,
        );
        let input_dir = required_path(
            "input_dir",
            self.input_dir,
            "the folder of documents to read, e.g. `input_dir: ./inputs`",
        );
        let output_dir = required_path(
            "output_dir",
            self.output_dir,
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
        let tokenizer = match self.tokenizer {
            None => d.tokenizer,
            Some(name) => Tokenizer::from_name(&name).map_err(|e| Invalid::Value {
                key: "tokenizer",
                message: e.to_string(),
            })?,
        };
        Ok(CommonConfig {
            small_model,
            small_api_key,
            small_base_url,
            small_mode,
            large_model,
            large_api_key,
            large_base_url,
            large_mode,
            input_dir,
            output_dir,
            prompts: self.prompts,
            default_prompts: self.default_prompts,
            completion_mode: self.completion_mode.unwrap_or(d.completion_mode),
            use_stop: self.use_stop.unwrap_or(d.use_stop),
            // At least 1 by type (`AtLeastOne`): one message for -5, 0 and 2.5 alike.
            concurrency_limit: self
                .concurrency_limit
                .map_or(d.concurrency_limit, AtLeastOne::usize),
            chunk_size: self.chunk_size.map_or(d.chunk_size, AtLeastOne::usize),
            use_subset: self.use_subset.unwrap_or(d.use_subset),
            subset_size: self.subset_size.map_or(d.subset_size, AtLeastOne::usize),
            seed: self.seed.unwrap_or(d.seed),
            do_meta_datagen: self.do_meta_datagen.unwrap_or(d.do_meta_datagen),
            meta_datagen_keys: self.meta_datagen_keys.unwrap_or_default(),
            meta_datagen_extras: self.meta_datagen_extras.unwrap_or_default(),
            cost_per_million_small_input: price(
                "cost_per_million_small_input",
                self.cost_per_million_small_input,
            )?,
            cost_per_million_small_output: price(
                "cost_per_million_small_output",
                self.cost_per_million_small_output,
            )?,
            cost_per_million_large_input: price(
                "cost_per_million_large_input",
                self.cost_per_million_large_input,
            )?,
            cost_per_million_large_output: price(
                "cost_per_million_large_output",
                self.cost_per_million_large_output,
            )?,
            chunking_output_dir: self.chunking_output_dir,
            tokenizer,
            stream: self.stream.unwrap_or(d.stream),
            debug_outputs: self.debug_outputs.unwrap_or(d.debug_outputs),
            request_timeout: seconds("request_timeout", self.request_timeout, d.request_timeout)?,
            idle_timeout: seconds("idle_timeout", self.idle_timeout, d.idle_timeout)?,
            max_attempts: self.max_attempts.map_or(d.max_attempts, AtLeastOne::u32),
            requests_per_minute: self.requests_per_minute.map(AtLeastOne::u32),
            tokens_per_minute: self.tokens_per_minute.map(AtLeastOne::u32),
            mock_reply: self.mock_reply,
            mock_latency: Duration::from_millis(self.mock_latency_ms.unwrap_or(0)),
            read_files_manually: self.read_files_manually.unwrap_or(d.read_files_manually),
            dataset_license: self.dataset_license.unwrap_or(d.dataset_license),
        })
    }
}

fn mode(key: &'static str, value: Option<String>) -> Result<Mode, Invalid> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(Mode::Api),
        Some(text) => text.parse().map_err(|_| Invalid::Value {
            key,
            message: format!("unknown mode `{text}`; expected `api` or `mock`"),
        }),
    }
}

/// Model and base URL of one engine: required in `api` mode when the pipeline uses the engine
/// (both named at once when both are missing), defaulted in `mock` mode.
fn engine(
    prefix: &'static str,
    mode: Mode,
    used: bool,
    model: Option<String>,
    base_url: Option<String>,
) -> Result<(String, String), Invalid> {
    let model = model.filter(|s| !s.trim().is_empty());
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

fn required_path(
    key: &'static str,
    value: Option<PathBuf>,
    hint: &str,
) -> Result<PathBuf, Invalid> {
    value
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Invalid::Missing(vec![(key, format!("set {hint}"))]))
}

fn price(key: &'static str, value: Option<f64>) -> Result<f64, Invalid> {
    let v = value.unwrap_or(0.0);
    if !v.is_finite() || v < 0.0 {
        return Err(Invalid::Value {
            key,
            message: format!("must be a price of 0 or more (USD per million tokens), found {v}"),
        });
    }
    Ok(v)
}

fn seconds(key: &'static str, value: Option<f64>, default: Duration) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(Invalid::Value {
            key,
            message: format!("must be a number of seconds above 0, found {s}"),
        }),
    }
}
