//! The innermost layer: one attempt against an HTTP endpoint over reqwest, in the engine's
//! dialect (OpenAI-compatible or Anthropic's Messages API). Returns a complete reply or a
//! classified error; it never retries on its own, except to resend once without
//! `stream_options` when a server rejects that key.
//!
//! Split along its seams: the OpenAI wire shapes (`wire.rs`) and reading their SSE or JSON
//! body (`read.rs`), Anthropic's shapes, stream and headers (`anthropic.rs`), Retry-After
//! (`retry_after.rs`), quoting what the server said (`message.rs`). What differs by dialect is
//! chosen in four places here: the URL and headers (`new`), the body (`body`, with the output
//! schema in the form `schema.rs` keeps per endpoint), the rate-limit headers (`limit_headers`)
//! and the reader (`read_body`). A server that refuses a schema form is asked again at once in
//! the next one (`attempt`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::config::{Dialect, EngineConfig, Timeouts};
use crate::pace::{LimitHeaders, Pacer};
use crate::secret::Secret;
use crate::timeout::{BodyError, Deadlines, TransportError, timed};
use crate::{Engine, Error, Prompt, Reply, Request, Timing, TransientKind, Usage};

mod anthropic;
mod batch;
mod inline;
mod message;
mod read;
pub(crate) mod retry_after;
mod schema;
mod sse;
mod wire;

pub(crate) use batch::BatchTransport;
pub(crate) use inline::InlineError;
use message::{error_chain, quote, rejects_stream_options, server_message};
use retry_after::retry_after;
use wire::{Body, Parsed, PrefixCache};

const USER_AGENT: &str = concat!("atk-engine/", env!("CARGO_PKG_VERSION"));

/// How long to wait for the end of the body after `[DONE]` before dropping the connection.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// The HTTP engine (one attempt per `call`).
pub(crate) struct Http {
    label: String,
    model: String,
    /// reqwest, for https, proxies, redirects and batch calls: built when first needed where
    /// the inline transport carries the requests (loading the system's root certificates costs
    /// ~5 ms of CPU per engine, ~2 µs per item of a 3 000-item run).
    client: LazyClient,
    dialect: Dialect,
    /// Mark shared prefixes cacheable (Anthropic; OpenAI caches on its own).
    prompt_cache: bool,
    chat_url: Url,
    completion_url: Url,
    headers: HeaderMap,
    key: Secret,
    stream: bool,
    /// Cleared for good when the server rejects `stream_options`.
    stream_usage: AtomicBool,
    require_finish_reason: bool,
    timeouts: Timeouts,
    /// Mirror of the server's rate-limit buckets (shared with nothing else: one per engine).
    pacer: Pacer,
    cancel: Cancel,
    /// The output-schema form this endpoint takes (moved on when it refuses one).
    forms: schema::Forms,
    /// The JSON of the requests' shared prefixes (OpenAI bodies).
    prefix: PrefixCache,
    /// Caller-polled connections, for a plain-http endpoint without a proxy (else reqwest).
    inline: Option<std::sync::Arc<inline::Inline>>,
}

/// A response from reqwest or from an inline connection.
enum Sent {
    Reqwest(reqwest::Response),
    /// Boxed: a connection's state machine travels with its body.
    Inline(Box<http::Response<inline::InlineBody>>),
}

impl Sent {
    fn status(&self) -> StatusCode {
        match self {
            Self::Reqwest(r) => r.status(),
            Self::Inline(r) => r.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Self::Reqwest(r) => r.headers(),
            Self::Inline(r) => r.headers(),
        }
    }

    /// The whole body.
    async fn bytes(self) -> Result<bytes::Bytes, TransportError> {
        match self {
            Self::Reqwest(r) => r.bytes().await.map_err(TransportError::Reqwest),
            Self::Inline(r) => r.into_body().bytes().await.map_err(TransportError::Inline),
        }
    }

    /// The body as it arrives.
    fn into_stream(
        self,
    ) -> futures_util::future::Either<
        impl futures_util::Stream<Item = Result<bytes::Bytes, TransportError>> + Send + 'static,
        impl futures_util::Stream<Item = Result<bytes::Bytes, TransportError>> + Send + 'static,
    > {
        use futures_util::StreamExt;
        match self {
            Self::Reqwest(r) => futures_util::future::Either::Left(
                r.bytes_stream().map(|c| c.map_err(TransportError::Reqwest)),
            ),
            Self::Inline(r) => futures_util::future::Either::Right(
                r.into_body().map(|c| c.map_err(TransportError::Inline)),
            ),
        }
    }
}

/// A reqwest client built on first use, once.
struct LazyClient {
    /// The engine's label (for the error).
    label: String,
    /// The connect timeout the client is built with.
    connect_timeout: Duration,
    /// The client, or why it could not be built.
    built: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    fn new(label: &str, connect_timeout: Duration) -> Self {
        Self {
            label: label.to_owned(),
            connect_timeout,
            built: std::sync::OnceLock::new(),
        }
    }

    /// The client, built now if it was not yet.
    fn get(&self) -> Result<&reqwest::Client, Error> {
        let built = self.built.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .user_agent(USER_AGENT)
                .build()
                .map_err(|e| e.to_string())
        });
        built.as_ref().map_err(|e| {
            Error::Config(format!("{}: cannot build the HTTP client: {e}", self.label))
        })
    }
}

impl Http {
    pub(crate) fn new(cfg: &EngineConfig, cancel: Cancel) -> Result<Self, Error> {
        crate::install_crypto_provider();
        let base = cfg.base_url.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(Error::Config(format!("{}: base_url is empty", cfg.label)));
        }
        let url = |path: &str| {
            Url::parse(&format!("{base}{path}"))
                .map_err(|e| Error::Config(format!("{}: bad base_url `{base}`: {e}", cfg.label)))
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if cfg.stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if !cfg.api_key.is_empty() {
            let value = match cfg.dialect {
                Dialect::OpenAi => format!("Bearer {}", cfg.api_key.expose()),
                Dialect::Anthropic => cfg.api_key.expose().to_string(),
            };
            let mut auth = HeaderValue::from_str(&value).map_err(|_| {
                Error::Config(format!(
                    "{}: the API key contains characters not allowed in a header",
                    cfg.label
                ))
            })?;
            auth.set_sensitive(true);
            match cfg.dialect {
                Dialect::OpenAi => headers.insert(AUTHORIZATION, auth),
                Dialect::Anthropic => headers.insert("x-api-key", auth),
            };
        }
        if cfg.dialect == Dialect::Anthropic {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(anthropic::VERSION),
            );
        }
        let (chat_path, completion_path) = match cfg.dialect {
            Dialect::OpenAi => ("/chat/completions", "/completions"),
            // No completion endpoint: a completion prompt is refused before it is sent.
            Dialect::Anthropic => ("/messages", "/messages"),
        };
        let chat_url = url(chat_path)?;
        let inline = inline::Inline::for_url(&chat_url, &headers, USER_AGENT, cfg.timeouts.connect)
            .map(std::sync::Arc::new);
        let client = LazyClient::new(&cfg.label, cfg.timeouts.connect);
        if inline.is_none() {
            // reqwest carries every request: a client that cannot be built is a start-up error.
            client.get()?;
        }
        Ok(Self {
            inline,
            label: cfg.label.clone(),
            model: cfg.model.clone(),
            client,
            dialect: cfg.dialect,
            prompt_cache: cfg.prompt_cache,
            chat_url,
            completion_url: url(completion_path)?,
            headers,
            key: cfg.api_key.clone(),
            stream: cfg.stream,
            stream_usage: AtomicBool::new(cfg.stream_usage),
            require_finish_reason: cfg.require_finish_reason,
            timeouts: cfg.timeouts,
            pacer: Pacer::default(),
            cancel,
            forms: schema::Forms::new(cfg.dialect, cfg.structured_output),
            prefix: PrefixCache::default(),
        })
    }

    fn transient(&self, kind: TransientKind, message: impl Into<String>) -> Error {
        Error::Transient {
            engine: self.label.clone(),
            kind,
            message: message.into(),
            retry_after: None,
            limit_used_up: false,
            limit_interval: None,
        }
    }

    /// One attempt (resent at once when the server refuses `stream_options` or a schema
    /// form), under `timer`: armed at `deadlines.head()`, it is the attempt's only timer.
    async fn attempt(
        &self,
        request: &Request,
        started: Instant,
        tokens: f64,
        mut sent_at: Instant,
        deadlines: &Deadlines,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<Reply, Error> {
        let url = match request.prompt {
            Prompt::Chat(_) => &self.chat_url,
            Prompt::Completion(_) => &self.completion_url,
        };
        // A request's own `stream` param wins: the retry layer sets `stream: false` after a
        // streamed attempt came back empty or unreadable, so the server can say why.
        let stream = request
            .params
            .get("stream")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(self.stream);
        loop {
            let with_usage = self.dialect == Dialect::OpenAi
                && stream
                && self.stream_usage.load(Ordering::Relaxed);
            let form = self.forms.current(request);
            let body = self.body_in(request, stream, with_usage, form)?;
            if timer.deadline() != deadlines.head() {
                timer.as_mut().reset(deadlines.head());
            }
            let body = bytes::Bytes::from(body);
            let by_reqwest = |body: bytes::Bytes| async move {
                self.client
                    .get()?
                    .post(url.clone())
                    .headers(self.headers.clone())
                    .body(body)
                    .send()
                    .await
                    .map(Sent::Reqwest)
                    .map_err(|e| self.classify_send_error(&e))
            };
            let send = async {
                let Some(inline) = &self.inline else {
                    return by_reqwest(body).await;
                };
                let path = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                match inline.post(&path, body.clone()).await {
                    // A redirect: reqwest follows it as before (the inline path does not).
                    Ok(r) if r.status().is_redirection() => by_reqwest(body).await,
                    Ok(r) => Ok(Sent::Inline(Box::new(r))),
                    Err(e) => Err(self.classify_inline_error(&e)),
                }
            };
            let response = tokio::select! {
                biased;
                r = send => r?,
                () = timer.as_mut() => {
                    let message = match deadlines.expired(timer.deadline()) {
                        BodyError::FirstByte(d) => format!("no reply within {d:?} (first-byte timeout)"),
                        e => e.to_string(),
                    };
                    return Err(self.transient(TransientKind::Timeout, message));
                }
            };
            let first_byte = started.elapsed();
            let status = response.status();
            let limits = self.limit_headers(response.headers(), sent_at);
            self.pacer.observe(&limits, sent_at);
            if !status.is_success() {
                let retry_after = retry_after(response.headers());
                let text = self
                    .read_error_body(response, deadlines, timer.as_mut())
                    .await?;
                let message = self.key.scrub(&server_message(&text));
                if with_usage && rejects_stream_options(status, &text) {
                    tracing::warn!(engine = %self.label, %message, "server rejects stream_options: asking again without it; usage will be estimated");
                    self.stream_usage.store(false, Ordering::Relaxed);
                    sent_at = Instant::now();
                    continue;
                }
                if let Some(form) = form
                    && schema::refuses(form, status, &text)
                    && let Some(next) = self.forms.refused(request, form)
                {
                    if let schema::Next::MovedTo(next) = next {
                        self.warn_form(form, next, &message);
                    }
                    sent_at = Instant::now();
                    continue;
                }
                let used_up = limits.used_up(tokens);
                return Err(self.classify_status(
                    status,
                    url,
                    message,
                    retry_after,
                    (used_up, limits.interval()),
                ));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with("text/html") {
                let page = self
                    .read_error_body(response, deadlines, timer.as_mut())
                    .await?;
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!("HTML page instead of a reply: {}", quote(page.trim())),
                ));
            }
            // A server that ignores `stream: true` answers with one JSON body: read it as such.
            let is_sse = stream && !content_type.starts_with("application/json");
            let body = timed(response.into_stream(), timer.as_mut(), deadlines);
            let parsed = self.read_body(body, is_sse).await?;
            // Over time, even if the body's end was already read (a total timeout around the
            // whole attempt failed such a late reply too).
            if Instant::now() >= deadlines.total_at {
                return Err(self.total_timeout());
            }
            // Complete means a finish_reason: `[DONE]` alone ends a cut stream too, and a JSON
            // body without one (a proxy that buffered one stream chunk, say) may be cut short.
            // An Anthropic reply always needs its stop_reason (mapped to a finish_reason).
            let required = self.require_finish_reason || self.dialect == Dialect::Anthropic;
            if required && parsed.finish_reason.is_none() {
                return Err(self.transient(
                    TransientKind::CutStream,
                    if is_sse {
                        "the stream ended with [DONE] but no finish_reason (cut by the server)"
                    } else {
                        "the reply has no finish_reason (cut by the server)"
                    },
                ));
            }
            return Ok(self.finish(request, parsed, first_byte, started));
        }
    }

    /// Says once per endpoint that it refused `form` and what goes out from now on.
    fn warn_form(&self, form: schema::Form, next: schema::Form, message: &str) {
        let endpoint = self.chat_url.as_str();
        if next == schema::Form::Prompt {
            tracing::warn!(engine = %self.label, %endpoint, %message, "the endpoint refuses {}, the last form of output schema it could take: the schema is stated in the prompt from now on and replies are parsed without the server enforcing it", form.describe());
        } else {
            tracing::warn!(engine = %self.label, %endpoint, %message, "the endpoint refuses {}: asking with {} from now on", form.describe(), next.describe());
        }
    }

    /// The request body with the output schema in `form`.
    fn body_in(
        &self,
        request: &Request,
        stream: bool,
        stream_usage: bool,
        form: Option<schema::Form>,
    ) -> Result<Vec<u8>, Error> {
        let request = &*schema::in_form(request, form);
        // Sized once for the prompt and the keys around it (growing by doubling from
        // serde_json's default copied the body several times).
        let mut out = Vec::with_capacity(body_capacity(request));
        let serialized = match (self.dialect, &request.prompt) {
            (Dialect::OpenAi, _) => Body {
                model: &self.model,
                request,
                stream,
                stream_usage,
                form,
            }
            .write(&mut out, Some(&self.prefix)),
            (Dialect::Anthropic, Prompt::Chat(messages)) => serde_json::to_writer(
                &mut out,
                &anthropic::Body {
                    model: &self.model,
                    messages,
                    request,
                    stream,
                    cache: self.prompt_cache,
                    tool: form == Some(schema::Form::Tool),
                },
            ),
            (Dialect::Anthropic, Prompt::Completion(_)) => {
                return Err(Error::Config(format!(
                    "{}: the anthropic API has no completion mode (turn completion_mode off)",
                    self.label
                )));
            }
        };
        serialized
            .map(|()| out)
            .map_err(|e| Error::Config(format!("{}: params do not serialize: {e}", self.label)))
    }

    /// The server's rate-limit headers in the engine's dialect, for the pacer. Anthropic's
    /// resets are times: measured from when the request was sent (`sent_at`), as the pacer
    /// takes OpenAI's durations (a server counts a request when it arrives, not when it
    /// answers).
    fn limit_headers(&self, headers: &HeaderMap, sent_at: Instant) -> LimitHeaders {
        match self.dialect {
            Dialect::OpenAi => LimitHeaders::parse(headers),
            Dialect::Anthropic => {
                let now = std::time::SystemTime::now();
                let sent = now.checked_sub(sent_at.elapsed()).unwrap_or(now);
                anthropic::limit_headers(headers, sent)
            }
        }
    }

    /// Reads a 2xx body (SSE or one JSON body) in the engine's dialect.
    async fn read_body(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, crate::timeout::BodyError>> + Send,
        is_sse: bool,
    ) -> Result<Parsed, Error> {
        match (self.dialect, is_sse) {
            (Dialect::OpenAi, true) => self.read_sse(body).await,
            (Dialect::OpenAi, false) => self.read_json(body).await,
            (Dialect::Anthropic, true) => self.read_anthropic_sse(body).await,
            (Dialect::Anthropic, false) => {
                let text = self.read_whole(body).await?;
                self.parse_anthropic_json(&text)
            }
        }
    }

    fn finish(
        &self,
        request: &Request,
        parsed: Parsed,
        first_byte: Duration,
        started: Instant,
    ) -> Reply {
        let usage = parsed.usage.unwrap_or_else(|| Usage {
            prompt_tokens: estimate_prompt_tokens(&request.prompt),
            completion_tokens: atk_tokens::count(&parsed.text) as u64,
            estimated: true,
            ..Usage::default()
        });
        Reply {
            text: parsed.text,
            finish_reason: parsed.finish_reason,
            usage,
            model: parsed.model.unwrap_or_else(|| self.model.clone()),
            timing: Timing {
                queued: Duration::ZERO,
                first_byte,
                total: started.elapsed(),
                attempts: 1,
            },
        }
    }

    /// An error reply's body (at most 64 KiB of it), within the idle gap and the attempt's
    /// total time; what did not arrive in the gap is left out, the total ends the attempt.
    async fn read_error_body(
        &self,
        response: Sent,
        deadlines: &Deadlines,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<String, Error> {
        timer
            .as_mut()
            .reset((Instant::now() + deadlines.idle).min(deadlines.total_at));
        tokio::select! {
            biased;
            bytes = response.bytes() => Ok(bytes.map_or_else(
                |_| String::new(),
                |bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).into_owned(),
            )),
            () = timer.as_mut() => {
                if timer.deadline() >= deadlines.total_at {
                    Err(self.total_timeout())
                } else {
                    Ok(String::new())
                }
            }
        }
    }

    fn total_timeout(&self) -> Error {
        self.transient(
            TransientKind::Timeout,
            BodyError::Total(self.timeouts.total).to_string(),
        )
    }

    /// An inline exchange's failure, classified as reqwest's are.
    fn classify_inline_error(&self, e: &inline::InlineError) -> Error {
        let kind = match e {
            inline::InlineError::Connect(_) => TransientKind::Unavailable,
            inline::InlineError::Hyper(e) if e.is_timeout() => TransientKind::Timeout,
            inline::InlineError::Hyper(_) => TransientKind::Connection,
        };
        self.transient(kind, self.key.scrub(&error_chain(e)))
    }

    fn classify_send_error(&self, e: &reqwest::Error) -> Error {
        let kind = if e.is_connect() {
            TransientKind::Unavailable
        } else if e.is_timeout() {
            TransientKind::Timeout
        } else {
            TransientKind::Connection
        };
        self.transient(kind, self.key.scrub(&error_chain(e)))
    }

    fn classify_status(
        &self,
        status: StatusCode,
        url: &Url,
        message: String,
        retry_after: Option<Duration>,
        (limit_used_up, limit_interval): (bool, Option<Duration>),
    ) -> Error {
        let engine = self.label.clone();
        let code = status.as_u16();
        match code {
            401 | 403 => Error::AuthRefused {
                engine,
                status: code,
                message,
            },
            404 => Error::NotFound {
                engine,
                url: url.to_string(),
                message,
            },
            429 => Error::Transient {
                engine,
                kind: TransientKind::RateLimited,
                message: format!("HTTP 429: {message}"),
                retry_after,
                limit_used_up,
                limit_interval,
            },
            // 529: Anthropic's `overloaded_error`, the same "not now" as a 503.
            502 | 503 | 529 => Error::Transient {
                engine,
                kind: TransientKind::Unavailable,
                message: format!("HTTP {code}: {message}"),
                retry_after,
                limit_used_up: false,
                limit_interval: None,
            },
            408 | 409 | 500..=599 => Error::Transient {
                engine,
                kind: TransientKind::ServerError,
                message: format!("HTTP {code}: {message}"),
                retry_after,
                limit_used_up: false,
                limit_interval: None,
            },
            _ => Error::Rejected {
                engine,
                status: code,
                message,
            },
        }
    }
}

#[async_trait]
impl Engine for Http {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        self.call_ref(&request).await
    }
    async fn call_ref(&self, request: &Request) -> Result<Reply, Error> {
        // Paced from the server's own rate-limit headers: sent only when its bucket has room.
        let tokens = crate::pace::request_tokens(request);
        let sent_at = loop {
            match self.pacer.reserve(tokens) {
                Ok(at) => break at,
                Err(wait) => {
                    let sleep = async {
                        tokio::time::sleep(wait).await;
                        Ok(())
                    };
                    self.cancel.guard(sleep).await?;
                }
            }
        };
        let started = Instant::now();
        let deadlines = Deadlines {
            first_byte_at: started + self.timeouts.first_byte,
            total_at: started + self.timeouts.total,
            first_byte: self.timeouts.first_byte,
            idle: self.timeouts.idle,
            total: self.timeouts.total,
        };
        let timer = std::pin::pin!(tokio::time::sleep_until(deadlines.head()));
        self.attempt(request, started, tokens, sent_at, &deadlines, timer)
            .await
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn model(&self) -> &str {
        &self.model
    }
}

/// About the size of a request's JSON body: the prompt's text plus room for keys, params and
/// escapes (a schema is larger: the vector grows once for it).
fn body_capacity(request: &Request) -> usize {
    let text = match &request.prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| m.content.len() + m.role.len() + 32)
            .sum(),
        Prompt::Completion(text) => text.len(),
    };
    text + text / 16 + 512
}

/// Local prompt count when the server sends no usage: tiktoken cl100k per message plus the
/// usual ~4 tokens of chat framing.
fn estimate_prompt_tokens(prompt: &Prompt) -> u64 {
    match prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| atk_tokens::count(&m.content) as u64 + 4)
            .sum(),
        Prompt::Completion(text) => atk_tokens::count(text) as u64,
    }
}
