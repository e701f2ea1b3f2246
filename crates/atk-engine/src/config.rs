//! Plain option structs for an engine, with `Default` and `with_*` setters (no file format here:
//! `atk-cli` owns the YAML shape and converts into these).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::limit::ConcurrencyLimit;
use crate::secret::Secret;

/// Which engine to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// An OpenAI-compatible HTTP endpoint.
    #[default]
    Api,
    /// The offline, deterministic mock engine.
    Mock,
    /// The provider's batch API: requests are collected into batches, submitted, polled and
    /// their results read (at the provider's batch price).
    Batch,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "api" => Ok(Self::Api),
            "mock" => Ok(Self::Mock),
            "batch" => Ok(Self::Batch),
            other => Err(Error::Config(format!(
                "unknown engine mode `{other}` (expected `api`, `batch` or `mock`)"
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Api => "api",
            Self::Mock => "mock",
            Self::Batch => "batch",
        })
    }
}

/// The wire dialect an HTTP engine speaks (`small_api` / `large_api` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// OpenAI's Chat Completions / Completions API, and every server compatible with it.
    #[default]
    OpenAi,
    /// Anthropic's Messages API, natively (`x-api-key`, content blocks, its stream events,
    /// stop reasons, rate-limit headers and prompt caching). Chat only.
    Anthropic,
}

impl std::str::FromStr for Dialect {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            other => Err(Error::Config(format!(
                "unknown API dialect `{other}` (expected `openai` or `anthropic`)"
            ))),
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        })
    }
}

/// Per-attempt timeouts.
///
/// `first_byte` runs from sending the request to the first byte of the reply body. A local
/// server that serves one request at a time (llama.cpp, a single-slot vLLM) queues the others
/// before sending any byte, so that queueing counts as first-byte wait: the default (10 min) is
/// generous on purpose, so a busy-but-alive server is not mistaken for a dead one. A stalled
/// stream is caught by `idle` instead, the gap between two body chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (+TLS) connect.
    pub connect: Duration,
    /// From sending to the first body byte (includes queueing inside a serial server);
    /// `first_byte_timeout` in the config. Bounds a stall before any byte, which `idle` does
    /// not see.
    pub first_byte: Duration,
    /// Largest gap between two chunks of a reply.
    pub idle: Duration,
    /// Whole attempt, from sending to the last byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(1800),
        }
    }
}

/// Bounds on transport retries (separate from a step's validation retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per call, the first included (1 = never retry).
    pub max_attempts: u32,
    /// No new attempt starts once this much time has passed since the call began.
    pub max_elapsed: Duration,
    /// Backoff before the first retry (doubles per attempt, with jitter). Short by default:
    /// 429s wait for their Retry-After, and an endpoint that stops answering is probed by the
    /// outage guard instead of being hammered, so what is left is a glitch of one response.
    pub base_delay: Duration,
    /// Ceiling of the computed backoff (a server's Retry-After may ask for longer).
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_elapsed: Duration::from_secs(600),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Options of the mock engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockConfig {
    /// Reply template (`{hash}`, `{words}`, `{lines}`, `{excerpt}`); `None` = a short paragraph.
    pub reply_template: Option<String>,
    /// Simulated latency per call (tokio time, so paused-clock tests stay instant).
    pub latency: Duration,
    /// Tokenizer that counts the mock's prompt and reply tokens (the run's, so the demo's
    /// counts and cost match what `--dry-run` says).
    pub tokenizer: atk_tokens::Tokenizer,
}

/// One of several endpoints serving an engine's model (see `EngineConfig::endpoints`).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Base URL ending before `/chat/completions`.
    pub base_url: String,
    /// This endpoint's key (`None`: the engine's `api_key`).
    pub api_key: Option<Secret>,
    /// Its concurrency: its share of the load (`None`: 1). At least 1.
    pub concurrency: Option<usize>,
}

impl Endpoint {
    /// An endpoint at `base_url` with the engine's key and a share of 1.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            concurrency: None,
        }
    }
}

/// Everything needed to build one engine. Build with `Default` and the `with_*` setters.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Name used in logs, errors and counters (`small`, `large`).
    pub label: String,
    /// HTTP endpoint or offline mock.
    pub mode: Mode,
    /// Base URL ending before `/chat/completions` (OpenAI) or `/messages` (Anthropic), e.g.
    /// `http://127.0.0.1:8080/v1` or `https://api.anthropic.com/v1`.
    pub base_url: String,
    /// The API dialect spoken over HTTP (ignored by the mock).
    pub dialect: Dialect,
    /// Mark each request's shared prefix (`Request::shared_prefix`: system prompt and few-shot
    /// examples) cacheable. Anthropic caches only marked prefixes (`cache_control`); OpenAI
    /// caches long prefixes on its own, so nothing is sent for it.
    pub prompt_cache: bool,
    /// API key (empty: no Authorization header).
    pub api_key: Secret,
    /// Two or more endpoints serving the model, in place of `base_url`: each call goes to the
    /// least-loaded healthy one, and one failing with a lost connection or a 5xx is taken out
    /// for a back-off period while its calls go elsewhere. Set `concurrency_limit` to the sum
    /// of their concurrencies.
    pub endpoints: Vec<Endpoint>,
    /// Model name sent with every request.
    pub model: String,
    /// Most requests in flight at once (ignored when `shared_limit` is set).
    pub concurrency_limit: usize,
    /// Stream replies over SSE (default) or ask for one JSON body.
    pub stream: bool,
    /// When streaming, ask for a final usage chunk (`stream_options.include_usage`).
    ///
    /// OpenAI sends usage in a stream only when asked; vLLM, Ollama and llama.cpp accept the key.
    /// A server that rejects it (400/422 naming `stream_options`) is asked again without it, and
    /// the engine stops sending it; tokens are then counted locally and marked estimated.
    pub stream_usage: bool,
    /// Accept a reply only when a choice carried a finish_reason (default). `[DONE]` alone is
    /// not proof: llama-cpp-python ends a stream it cuts with `[DONE]`. Turn off only for a
    /// server that never sends a finish_reason; a stream must then still end with `[DONE]`.
    pub require_finish_reason: bool,
    /// Ask the server to enforce a request's output schema (default): OpenAI `response_format`,
    /// llama.cpp's `json_schema`, Anthropic a forced tool, each form tried until one is taken.
    /// Off: the schema is only stated in the prompt and the reply parsed.
    pub structured_output: bool,
    /// Per-attempt timeouts.
    pub timeouts: Timeouts,
    /// Transport retry bounds.
    pub retry: RetryConfig,
    /// How long the endpoint may stop answering (no connection, or only 502/503) before the
    /// engine gives up with a fatal error. Meanwhile calls wait and one probe at a time goes
    /// out, so no item spends its attempts on the outage. Applies once the endpoint has
    /// answered; an endpoint never reached fails by the bounded retries.
    pub outage_limit: Duration,
    /// Optional requests-per-minute limit.
    pub requests_per_minute: Option<u32>,
    /// Optional tokens-per-minute limit (prompt estimate + `max_tokens` reserved, corrected by usage).
    pub tokens_per_minute: Option<u32>,
    /// How much of `requests_per_minute` / `tokens_per_minute` may go out at once: the rate's
    /// worth over this long (default 3 s). The rest is spread smoothly, never a minute at once.
    pub rate_burst: Duration,
    /// Mock engine options.
    pub mock: MockConfig,
    /// Batch mode options (`mode: Batch`).
    pub batch: crate::BatchConfig,
    /// One concurrency bound shared by several engines (wins over `concurrency_limit`); each
    /// engine keeps its own adaptive window inside it.
    pub shared_limit: Option<Arc<ConcurrencyLimit>>,
    /// Stops calls that have not been sent yet: once cancelled, a call waiting for a slot, an
    /// RPM/TPM budget or a retry backoff ends with `Error::Cancelled` instead of being sent.
    /// Requests already on the wire are left to finish. Share one token between engines.
    pub cancel: Option<CancellationToken>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            label: "default".to_string(),
            mode: Mode::Api,
            base_url: String::new(),
            dialect: Dialect::OpenAi,
            prompt_cache: false,
            api_key: Secret::default(),
            endpoints: Vec::new(),
            model: String::new(),
            concurrency_limit: 50,
            stream: true,
            stream_usage: true,
            require_finish_reason: true,
            structured_output: true,
            timeouts: Timeouts::default(),
            retry: RetryConfig::default(),
            outage_limit: Duration::from_secs(600),
            requests_per_minute: None,
            tokens_per_minute: None,
            rate_burst: Duration::from_secs(3),
            mock: MockConfig::default(),
            batch: crate::BatchConfig::default(),
            shared_limit: None,
            cancel: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl EngineConfig {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                    self.$field = value.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets `label`.
    with_label: label: String;
    /// Sets `mode`.
    with_mode: mode: Mode;
    /// Sets `base_url`.
    with_base_url: base_url: String;
    /// Sets `dialect`.
    with_dialect: dialect: Dialect;
    /// Sets `prompt_cache`.
    with_prompt_cache: prompt_cache: bool;
    /// Sets `api_key`.
    with_api_key: api_key: Secret;
    /// Sets `endpoints`.
    with_endpoints: endpoints: Vec<Endpoint>;
    /// Sets `model`.
    with_model: model: String;
    /// Sets `concurrency_limit`.
    with_concurrency_limit: concurrency_limit: usize;
    /// Sets `stream`.
    with_stream: stream: bool;
    /// Sets `stream_usage`.
    with_stream_usage: stream_usage: bool;
    /// Sets `require_finish_reason`.
    with_require_finish_reason: require_finish_reason: bool;
    /// Sets `structured_output`.
    with_structured_output: structured_output: bool;
    /// Sets `timeouts`.
    with_timeouts: timeouts: Timeouts;
    /// Sets `retry`.
    with_retry: retry: RetryConfig;
    /// Sets `outage_limit`.
    with_outage_limit: outage_limit: Duration;
    /// Sets `requests_per_minute`.
    with_requests_per_minute: requests_per_minute: Option<u32>;
    /// Sets `tokens_per_minute`.
    with_tokens_per_minute: tokens_per_minute: Option<u32>;
    /// Sets `rate_burst`.
    with_rate_burst: rate_burst: Duration;
    /// Sets `mock`.
    with_mock: mock: MockConfig;
    /// Sets `batch`.
    with_batch: batch: crate::BatchConfig;
    /// Sets `shared_limit`.
    with_shared_limit: shared_limit: Option<Arc<ConcurrencyLimit>>;
    /// Sets `cancel` (takes a `CancellationToken` or an `Option` of one).
    with_cancel: cancel: Option<CancellationToken>;
}

impl Timeouts {
    /// Sets `connect`.
    pub fn with_connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }
    /// Sets `first_byte`.
    pub fn with_first_byte(mut self, d: Duration) -> Self {
        self.first_byte = d;
        self
    }
    /// Sets `idle`.
    pub fn with_idle(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }
    /// Sets `total`.
    pub fn with_total(mut self, d: Duration) -> Self {
        self.total = d;
        self
    }
}

impl RetryConfig {
    /// Sets `max_attempts`.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets `max_elapsed`.
    pub fn with_max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }
    /// Sets `base_delay`.
    pub fn with_base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }
    /// Sets `max_delay`.
    pub fn with_max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
}

impl MockConfig {
    /// Sets `reply_template`.
    pub fn with_reply_template(mut self, t: impl Into<String>) -> Self {
        self.reply_template = Some(t.into());
        self
    }
    /// Sets `latency`.
    pub fn with_latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    /// Sets `tokenizer`.
    pub fn with_tokenizer(mut self, t: atk_tokens::Tokenizer) -> Self {
        self.tokenizer = t;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_config_hides_the_key() {
        let cfg = EngineConfig::default()
            .with_api_key("sk-live-abcdef")
            .with_model("m");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("sk-live-abcdef"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn mode_parses() {
        assert_eq!("mock".parse::<Mode>().unwrap(), Mode::Mock);
        assert_eq!(" API ".parse::<Mode>().unwrap(), Mode::Api);
        assert!("local".parse::<Mode>().is_err());
        assert_eq!(" Anthropic".parse::<Dialect>().unwrap(), Dialect::Anthropic);
        assert_eq!("openai".parse::<Dialect>().unwrap(), Dialect::OpenAi);
        assert!("claude".parse::<Dialect>().is_err());
    }
}
