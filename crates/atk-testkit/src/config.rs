//! What the server does: latency, key, faults, reply, stream shape.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A function from the request body (JSON) to the reply text.
pub type ReplyFn = Arc<dyn Fn(&serde_json::Value) -> String + Send + Sync>;

/// How the test server behaves. `Default` gives a fast, fault-free, keyless server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Wait per request before the first byte (response headers) is sent; 401, 429 and 400
    /// answers come at once.
    pub latency: Duration,
    /// When `Some`, requests must carry `Authorization: Bearer <key>`; others get 401.
    pub api_key: Option<String>,
    /// Seeded fault injection.
    pub faults: Faults,
    /// What the model "says".
    pub reply: ReplyMode,
    /// Send a final stream chunk with empty `choices` and `usage` (OpenAI style);
    /// `false` sends none (llama.cpp style).
    pub usage_in_stream: bool,
    /// Process one request at a time (like llama.cpp); queued requests get no byte until
    /// their turn.
    pub serial: bool,
    /// Prompt words plus `max_tokens` above this get 400 `context_length_exceeded`.
    pub context_limit: Option<u64>,
    /// How many SSE content deltas a streamed reply is cut into.
    pub stream_chunks: usize,
    /// Seed of the fault draws.
    pub seed: u64,
    /// Cut replies longer than the request's `max_tokens` (in words) and say
    /// `finish_reason: "length"`, as a real server does.
    pub honor_max_tokens: bool,
    /// Like llama-cpp-python 0.3: one request at a time, and a request that arrives while a
    /// stream runs *cuts* that stream (`data: [DONE]` with no finish_reason on any chunk).
    /// The latency is then spent between the deltas, so a stream is running while others
    /// arrive. Implies `serial`.
    pub cut_on_arrival: bool,
    /// A real token-bucket rate limit (requests and/or tokens), with OpenAI-style headers
    /// (`anthropic-ratelimit-*` ones on the Messages route).
    pub rate_limit: Option<RateLimit>,
    /// Simulate OpenAI's automatic prompt caching on the chat route: a request whose messages
    /// but the last were all sent before reports their words as
    /// `prompt_tokens_details.cached_tokens`. (The Messages route caches what a request marks
    /// `cache_control`, whatever this says.)
    pub prompt_cache: bool,
    /// How the batch APIs (OpenAI Files + Batches, Anthropic Message Batches) behave.
    pub batch: BatchBehaviour,
    /// Which structured-output forms the server takes (the form each request carried is
    /// counted in `Stats::schema_forms`). A Messages request with a forced tool is answered
    /// with a `tool_use` block whose input is the reply text (parsed as JSON).
    pub schema: SchemaSupport,
    /// The first N replies (in arrival order, restarted by `reset_stats`) are cut at half
    /// their text: broken JSON when the reply is JSON.
    pub broken_first: u32,
}

/// Which structured-output forms a server takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaSupport {
    /// Every form: `response_format` `json_schema` and `json_object` + `schema`, the
    /// completion `json_schema` field, a forced tool.
    #[default]
    All,
    /// Like llama-cpp-python 0.3: `response_format: {type: json_schema}` is answered with HTTP
    /// 500 and a validation error naming `response_format` (only `text` or `json_object`);
    /// `{type: json_object, schema}` is taken.
    LlamaCppPython,
    /// None: every schema form is refused with a 400 naming it.
    Refused,
}

/// How the batch APIs behave: how long a batch takes, and its failure modes. Line faults are
/// drawn per (prompt, how many times it was in a batch), seeded, so a request asked again in a
/// later batch meets a fresh draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchBehaviour {
    /// From creation to the end of a batch (the first third `validating`, then `in_progress`).
    pub latency: Duration,
    /// Share of lines that end errored (a 500 line, or Anthropic `errored`).
    pub errored: f64,
    /// Share of lines not done when the batch expires; with any, the batch ends `expired`
    /// (OpenAI) and those lines are `batch_expired` (Anthropic: `expired` results).
    pub expired: f64,
    /// The first N batches fail at validation (OpenAI `failed`; Anthropic: every line errored).
    pub fail_first: u32,
    /// The first N downloads of a results file answer 404 (the file vanished).
    pub vanish_first: u32,
    /// The first N batch creations are applied but their answer is lost (the connection is
    /// reset): the client does not learn the id.
    pub lose_create_first: u32,
    /// Answer 404 to the batch list (a server that cannot be searched).
    pub no_list: bool,
    /// The first N uploads of a batch's requests (OpenAI `POST /v1/files`, Anthropic
    /// `POST /v1/messages/batches`) are held unanswered and never applied, until the server
    /// stops: a client killed meanwhile was killed while uploading.
    pub hold_uploads: u32,
    /// The first N batch creations are applied but their answer is held until the server
    /// stops: a client killed meanwhile never learnt the batch's id.
    pub hold_created: u32,
    /// Share of a batch's lines (the first ones) done when a cancel takes effect; the rest are
    /// cancelled (OpenAI: no line; Anthropic: `canceled` results).
    pub cancel_done: f64,
}

/// A token-bucket rate limit like a provider's: each bucket starts full, refills continuously
/// over `period`, and a request that finds it short gets 429 with `Retry-After` (whole
/// seconds, rounded up) and `retry-after-ms` (the exact wait). With `headers`, every response
/// carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (`reset`: time until the
/// bucket is full again, Go-style: `20ms`, `0.36s`, `6m0s`).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Size of the request bucket (0: no request limit).
    pub requests: u64,
    /// Size of the token bucket, tokens = prompt words + `max_tokens` (0: no token limit).
    pub tokens: u64,
    /// Time an empty bucket takes to refill.
    pub period: Duration,
    /// Send the `x-ratelimit-*` headers.
    pub headers: bool,
    /// Headers that state a longer-period request limit than the one enforced, as OpenAI's do
    /// (its rate-limit guide notes that a per-minute limit may be enforced per second): `None`
    /// describes the bucket itself.
    pub stated: Option<StatedLimit>,
}

/// A request limit the headers state instead of the enforced bucket: `limit` per `window`.
/// `remaining` is what is left of it over the last `window` (requests admitted in that time
/// subtracted), `reset` the time the stated rate takes to refill what was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatedLimit {
    /// Requests per window, as `x-ratelimit-limit-requests` says.
    pub limit: u64,
    /// The window the limit is stated over (a minute for OpenAI's RPM).
    pub window: Duration,
}

impl RateLimit {
    /// `n` requests per `period`, with headers.
    pub fn requests(n: u64, period: Duration) -> Self {
        Self {
            requests: n,
            tokens: 0,
            period,
            headers: true,
            stated: None,
        }
    }
    /// Adds a token bucket of `n` tokens per period.
    #[must_use]
    pub fn with_tokens(mut self, n: u64) -> Self {
        self.tokens = n;
        self
    }
    /// Sends (or not) the `x-ratelimit-*` headers.
    #[must_use]
    pub fn with_headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }
    /// Headers state `limit` requests per `window` (what is left of it over the last window)
    /// while the bucket enforces its own, shorter period: a quantized limit such as 6000/min
    /// enforced as 100/s.
    #[must_use]
    pub fn with_stated(mut self, limit: u64, window: Duration) -> Self {
        self.stated = Some(StatedLimit { limit, window });
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is redacted like every secret in atk.
        f.debug_struct("ServerConfig")
            .field("latency", &self.latency)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("faults", &self.faults)
            .field("reply", &self.reply)
            .field("usage_in_stream", &self.usage_in_stream)
            .field("serial", &self.serial)
            .field("context_limit", &self.context_limit)
            .field("stream_chunks", &self.stream_chunks)
            .field("seed", &self.seed)
            .field("honor_max_tokens", &self.honor_max_tokens)
            .field("cut_on_arrival", &self.cut_on_arrival)
            .field("rate_limit", &self.rate_limit)
            .field("prompt_cache", &self.prompt_cache)
            .field("batch", &self.batch)
            .field("schema", &self.schema)
            .field("broken_first", &self.broken_first)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            api_key: None,
            faults: Faults::default(),
            reply: ReplyMode::default(),
            usage_in_stream: true,
            serial: false,
            context_limit: None,
            stream_chunks: 4,
            seed: 0,
            honor_max_tokens: false,
            cut_on_arrival: false,
            rate_limit: None,
            prompt_cache: false,
            batch: BatchBehaviour::default(),
            schema: SchemaSupport::All,
            broken_first: 0,
        }
    }
}

impl ServerConfig {
    /// Sets the latency before the first byte.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    /// Requires this API key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    /// Sets the fault injection.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
    /// Sets what the model replies.
    #[must_use]
    pub fn with_reply(mut self, reply: ReplyMode) -> Self {
        self.reply = reply;
        self
    }
    /// Sends (or not) a final usage chunk in streams.
    #[must_use]
    pub fn with_usage_in_stream(mut self, on: bool) -> Self {
        self.usage_in_stream = on;
        self
    }
    /// Serves one request at a time.
    #[must_use]
    pub fn with_serial(mut self, on: bool) -> Self {
        self.serial = on;
        self
    }
    /// Sets the context length (prompt words + `max_tokens`).
    #[must_use]
    pub fn with_context_limit(mut self, limit: u64) -> Self {
        self.context_limit = Some(limit);
        self
    }
    /// Sets how many content deltas a streamed reply has (at least 1).
    #[must_use]
    pub fn with_stream_chunks(mut self, n: usize) -> Self {
        self.stream_chunks = n.max(1);
        self
    }
    /// Sets the seed of the fault draws.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Cuts replies at the request's `max_tokens` words with `finish_reason: "length"`.
    #[must_use]
    pub fn with_honor_max_tokens(mut self, on: bool) -> Self {
        self.honor_max_tokens = on;
        self
    }
    /// Serves one request at a time and cuts the running stream when another arrives.
    #[must_use]
    pub fn with_cut_on_arrival(mut self, on: bool) -> Self {
        self.cut_on_arrival = on;
        self
    }
    /// Enforces a token-bucket rate limit.
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
    /// Sets how the batch APIs behave.
    #[must_use]
    pub fn with_batch(mut self, batch: BatchBehaviour) -> Self {
        self.batch = batch;
        self
    }
    /// Sets which structured-output forms the server takes.
    #[must_use]
    pub fn with_schema(mut self, schema: SchemaSupport) -> Self {
        self.schema = schema;
        self
    }
    /// Cuts the first `n` replies at half their text (broken JSON).
    #[must_use]
    pub fn with_broken_first(mut self, n: u32) -> Self {
        self.broken_first = n;
        self
    }
    /// Simulates OpenAI's automatic prompt caching on the chat route.
    #[must_use]
    pub fn with_prompt_cache(mut self, on: bool) -> Self {
        self.prompt_cache = on;
        self
    }
}

/// One kind of injected misbehaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fault {
    /// No fault: a complete, well-formed reply.
    #[default]
    None,
    /// 429 with `Retry-After` (or `retry-after-ms`) when configured, sent at once.
    RateLimit,
    /// 500 with an OpenAI-style error body.
    ServerError,
    /// Half the body, then the connection is aborted (the client sees an incomplete body).
    ResetMidStream,
    /// Half the body, then nothing for `stall_for`, then the rest.
    Stall,
    /// A `data:` line that is not JSON in place of one delta (non-streaming: cut JSON).
    MalformedSse,
    /// 200 with an HTML page instead of JSON or SSE.
    Garbage,
    /// Half the deltas, then a clean end of body: no `finish_reason`, no `[DONE]`.
    CutBeforeDone,
    /// Half the deltas, then an `{"error": ...}` event and the end of the body.
    ErrorMidStream,
    /// 401 `invalid_api_key`, whatever key was sent.
    Unauthorized,
    /// The whole text but no finish_reason anywhere: a stream still ends with `[DONE]`, a
    /// JSON body has `finish_reason: null` (what a cut looks like to a client). On the
    /// Messages route: `message_delta` with `stop_reason: null`, then `message_stop`.
    NoFinishReason,
    /// The provider is overloaded: 529 `overloaded_error` on the Messages route, 503 on the
    /// OpenAI routes, with `Retry-After` when configured, sent at once.
    Overloaded,
}

impl Fault {
    /// Every fault kind, `None` first.
    pub const ALL: [Fault; 12] = [
        Fault::None,
        Fault::RateLimit,
        Fault::ServerError,
        Fault::ResetMidStream,
        Fault::Stall,
        Fault::MalformedSse,
        Fault::Garbage,
        Fault::CutBeforeDone,
        Fault::ErrorMidStream,
        Fault::Unauthorized,
        Fault::NoFinishReason,
        Fault::Overloaded,
    ];

    /// A short snake_case name (`rate_limit`, `reset_mid_stream`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::RateLimit => "rate_limit",
            Fault::ServerError => "server_error",
            Fault::ResetMidStream => "reset_mid_stream",
            Fault::Stall => "stall",
            Fault::MalformedSse => "malformed_sse",
            Fault::Garbage => "garbage",
            Fault::CutBeforeDone => "cut_before_done",
            Fault::ErrorMidStream => "error_mid_stream",
            Fault::Unauthorized => "unauthorized",
            Fault::NoFinishReason => "no_finish_reason",
            Fault::Overloaded => "overloaded",
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str() == norm)
            .ok_or_else(|| format!("unknown fault `{s}`"))
    }
}

/// Fault injection. Probabilities are per request in `0..=1`, tried in field order over one
/// seeded draw per (prompt, attempt), so a given prompt's n-th request always meets the same
/// fault whatever the arrival order.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance of a 429.
    pub rate_limit: f64,
    /// `Retry-After` sent with a 429 or an overloaded answer (none when `None`).
    pub retry_after: Option<Duration>,
    /// Also send the wait as `retry-after-ms` (milliseconds), as OpenAI does; `Retry-After`
    /// then carries whole seconds rounded up.
    pub retry_after_ms: bool,
    /// Chance of a 500.
    pub server_error: f64,
    /// Chance of a connection reset half-way through the body.
    pub reset_mid_stream: f64,
    /// Chance of a stall half-way through the body.
    pub stall: f64,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Chance of a malformed SSE line.
    pub malformed_sse: f64,
    /// Chance of a non-JSON body.
    pub garbage: f64,
    /// Chance of a stream cut before `finish_reason` and `[DONE]`.
    pub cut_before_done: f64,
    /// Chance of an error object mid-stream.
    pub error_mid_stream: f64,
    /// Chance of an overloaded answer (529 on the Messages route, 503 on OpenAI's).
    pub overloaded: f64,
    /// Applied in order to the first requests (that passed the key check), before the
    /// probabilities.
    pub script: Vec<Fault>,
    /// Each distinct prompt fails its first N requests with `fail_first_kind`.
    pub fail_first_per_prompt: u32,
    /// The fault used by `fail_first_per_prompt`.
    pub fail_first_kind: Fault,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit: 0.0,
            retry_after: None,
            retry_after_ms: false,
            server_error: 0.0,
            reset_mid_stream: 0.0,
            stall: 0.0,
            stall_for: Duration::from_secs(60),
            malformed_sse: 0.0,
            garbage: 0.0,
            cut_before_done: 0.0,
            error_mid_stream: 0.0,
            overloaded: 0.0,
            script: Vec::new(),
            fail_first_per_prompt: 0,
            fail_first_kind: Fault::ServerError,
        }
    }
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }
    /// Only the scripted faults, for the first requests in arrival order.
    pub fn scripted(script: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            script: script.into_iter().collect(),
            ..Self::default()
        }
    }
    /// Every distinct prompt fails its first `n` requests with `kind`.
    pub fn fail_first(n: u32, kind: Fault) -> Self {
        Self {
            fail_first_per_prompt: n,
            fail_first_kind: kind,
            ..Self::default()
        }
    }
    /// Sets the chance of `fault` (ignored for `None` and `Unauthorized`).
    #[must_use]
    pub fn with_rate(mut self, fault: Fault, p: f64) -> Self {
        let p = p.clamp(0.0, 1.0);
        match fault {
            Fault::RateLimit => self.rate_limit = p,
            Fault::ServerError => self.server_error = p,
            Fault::ResetMidStream => self.reset_mid_stream = p,
            Fault::Stall => self.stall = p,
            Fault::MalformedSse => self.malformed_sse = p,
            Fault::Garbage => self.garbage = p,
            Fault::CutBeforeDone => self.cut_before_done = p,
            Fault::ErrorMidStream => self.error_mid_stream = p,
            Fault::Overloaded => self.overloaded = p,
            Fault::None | Fault::Unauthorized | Fault::NoFinishReason => {}
        }
        self
    }
    /// Sets the `Retry-After` sent with 429s.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    /// Also sends the wait as `retry-after-ms`.
    #[must_use]
    pub fn with_retry_after_ms(mut self, on: bool) -> Self {
        self.retry_after_ms = on;
        self
    }
    /// Sets how long a stall lasts.
    #[must_use]
    pub fn with_stall_for(mut self, d: Duration) -> Self {
        self.stall_for = d;
        self
    }

    /// The fault for a draw `u` in `0..1`: the probabilities laid end to end in field order.
    pub(crate) fn pick(&self, u: f64) -> Fault {
        let table = [
            (self.rate_limit, Fault::RateLimit),
            (self.server_error, Fault::ServerError),
            (self.reset_mid_stream, Fault::ResetMidStream),
            (self.stall, Fault::Stall),
            (self.malformed_sse, Fault::MalformedSse),
            (self.garbage, Fault::Garbage),
            (self.cut_before_done, Fault::CutBeforeDone),
            (self.error_mid_stream, Fault::ErrorMidStream),
            (self.overloaded, Fault::Overloaded),
        ];
        let mut edge = 0.0;
        for (p, fault) in table {
            edge += p;
            if u < edge {
                return fault;
            }
        }
        Fault::None
    }
}

/// What the model "says".
#[derive(Clone)]
pub enum ReplyMode {
    /// A template with `{hash}`, `{words}`, `{lines}`, `{excerpt}` (see the crate doc).
    Template(String),
    /// The same text for every request.
    Fixed(String),
    /// Computed from the request body.
    Func(ReplyFn),
}

impl ReplyMode {
    /// A reply computed from the request body.
    pub fn func(f: impl Fn(&serde_json::Value) -> String + Send + Sync + 'static) -> Self {
        ReplyMode::Func(Arc::new(f))
    }
}

impl Default for ReplyMode {
    fn default() -> Self {
        ReplyMode::Template(crate::reply::DEFAULT_TEMPLATE.to_owned())
    }
}

impl fmt::Debug for ReplyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyMode::Template(t) => f.debug_tuple("Template").field(t).finish(),
            ReplyMode::Fixed(t) => f.debug_tuple("Fixed").field(t).finish(),
            ReplyMode::Func(_) => f.write_str("Func(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_lays_probabilities_end_to_end() {
        let f = Faults::none()
            .with_rate(Fault::RateLimit, 0.25)
            .with_rate(Fault::Garbage, 0.25);
        assert_eq!(f.pick(0.1), Fault::RateLimit);
        assert_eq!(f.pick(0.3), Fault::Garbage);
        assert_eq!(f.pick(0.6), Fault::None);
        assert_eq!(Faults::none().pick(0.0), Fault::None);
    }

    #[test]
    fn debug_redacts_the_key() {
        let text = format!("{:?}", ServerConfig::default().with_api_key("sk-secret-1"));
        assert!(!text.contains("sk-secret-1") && text.contains("[redacted]"));
    }

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.as_str().parse::<Fault>(), Ok(f));
        }
        assert_eq!(
            "reset-mid-stream".parse::<Fault>(),
            Ok(Fault::ResetMidStream)
        );
        assert!("nope".parse::<Fault>().is_err());
    }
}
