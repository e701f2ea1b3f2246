//! The innermost layer: one attempt against an OpenAI-compatible endpoint over reqwest.
//! Returns a complete reply or a classified error; it never retries on its own, except to
//! resend once without `stream_options` when a server rejects that key.
//!
//! SSE framing is parsed by `eventsource-stream`; chunks are deserialized with borrowed strings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use eventsource_stream::{EventStreamError, Eventsource};

use crate::cancel::Cancel;
use crate::config::{EngineConfig, Timeouts};
use crate::pace::{LimitHeaders, Pacer};
use crate::secret::Secret;
use crate::timeout::{BodyError, timed};
use crate::{Engine, Error, Prompt, Reply, Request, Timing, TransientKind, Usage};

pub(crate) mod retry_after;
mod wire;

use retry_after::*;
use wire::*;

/// How much of an error body or malformed line is quoted in an error message.
const QUOTE_CHARS: usize = 300;

/// How long to wait for the end of the body after `[DONE]` before dropping the connection.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// The HTTP engine (one attempt per `call`).
pub(crate) struct Http {
    label: String,
    model: String,
    client: reqwest::Client,
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
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.api_key.expose()))
                .map_err(|_| {
                    Error::Config(format!(
                        "{}: the API key contains characters not allowed in a header",
                        cfg.label
                    ))
                })?;
            auth.set_sensitive(true);
            headers.insert(AUTHORIZATION, auth);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("atk-engine/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::Config(format!("{}: cannot build the HTTP client: {e}", cfg.label))
            })?;
        Ok(Self {
            label: cfg.label.clone(),
            model: cfg.model.clone(),
            client,
            chat_url: url("/chat/completions")?,
            completion_url: url("/completions")?,
            headers,
            key: cfg.api_key.clone(),
            stream: cfg.stream,
            stream_usage: AtomicBool::new(cfg.stream_usage),
            require_finish_reason: cfg.require_finish_reason,
            timeouts: cfg.timeouts,
            pacer: Pacer::default(),
            cancel,
        })
    }

    fn transient(&self, kind: TransientKind, message: impl Into<String>) -> Error {
        Error::Transient {
            engine: self.label.clone(),
            kind,
            message: message.into(),
            retry_after: None,
            limit_used_up: false,
        }
    }

    async fn attempt(
        &self,
        request: &Request,
        started: Instant,
        tokens: f64,
        mut sent_at: Instant,
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
            let with_usage = stream && self.stream_usage.load(Ordering::Relaxed);
            let body = Body {
                model: &self.model,
                request,
                stream,
                stream_usage: with_usage,
            };
            let body = serde_json::to_vec(&body).map_err(|e| {
                Error::Config(format!("{}: params do not serialize: {e}", self.label))
            })?;
            let deadline = started + self.timeouts.first_byte;
            let send = self
                .client
                .post(url.clone())
                .headers(self.headers.clone())
                .body(body)
                .send();
            let response = match tokio::time::timeout_at(deadline, send).await {
                Err(_) => {
                    return Err(self.transient(
                        TransientKind::Timeout,
                        format!(
                            "no reply within {:?} (first-byte timeout)",
                            self.timeouts.first_byte
                        ),
                    ));
                }
                Ok(Err(e)) => return Err(self.classify_send_error(&e)),
                Ok(Ok(r)) => r,
            };
            let first_byte = started.elapsed();
            let status = response.status();
            let limits = LimitHeaders::parse(response.headers());
            self.pacer.observe(&limits, sent_at);
            if !status.is_success() {
                let retry_after = retry_after(response.headers());
                let text = self.read_error_body(response).await;
                let message = self.key.scrub(&server_message(&text));
                if with_usage && rejects_stream_options(status, &text) {
                    tracing::warn!(engine = %self.label, %message, "server rejects stream_options: asking again without it; usage will be estimated");
                    self.stream_usage.store(false, Ordering::Relaxed);
                    sent_at = Instant::now();
                    continue;
                }
                let used_up = limits.used_up(tokens);
                return Err(self.classify_status(status, url, message, retry_after, used_up));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with("text/html") {
                let page = self.read_error_body(response).await;
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!("HTML page instead of a reply: {}", quote(page.trim())),
                ));
            }
            // A server that ignores `stream: true` answers with one JSON body: read it as such.
            let is_sse = stream && !content_type.starts_with("application/json");
            let body = timed(
                response.bytes_stream(),
                deadline,
                self.timeouts.first_byte,
                self.timeouts.idle,
            );
            let parsed = if is_sse {
                self.read_sse(body).await?
            } else {
                self.read_json(body).await?
            };
            // Complete means a finish_reason: `[DONE]` alone ends a cut stream too, and a JSON
            // body without one (a proxy that buffered one stream chunk, say) may be cut short.
            if self.require_finish_reason && parsed.finish_reason.is_none() {
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

    fn finish(
        &self,
        request: &Request,
        parsed: Parsed,
        first_byte: Duration,
        started: Instant,
    ) -> Reply {
        let usage = match parsed.usage {
            Some(u) => Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                estimated: false,
            },
            None => Usage {
                prompt_tokens: estimate_prompt_tokens(&request.prompt),
                completion_tokens: atk_tokens::count(&parsed.text) as u64,
                estimated: true,
            },
        };
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

    async fn read_sse(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<Parsed, Error> {
        let mut events = std::pin::pin!(body.eventsource());
        let mut acc = Parsed::default();
        let mut events_seen = 0usize;
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // Once finish_reason arrived the text is whole; a cut before the usage chunk or
                // [DONE] only costs the usage figures (then estimated).
                Err(_) if acc.finish_reason.is_some() => break,
                Err(EventStreamError::Transport(e)) => return Err(self.body_error(e, events_seen)),
                Err(e) => {
                    return Err(self.transient(
                        TransientKind::Malformed,
                        format!("unreadable SSE stream: {e}"),
                    ));
                }
            };
            events_seen += 1;
            let data = event.data.trim();
            if data == "[DONE]" {
                done = true;
                // Read to the end of the body (normally already buffered) so the connection goes
                // back to the pool; a server that keeps the body open gets a short grace only.
                let drain = async { while let Some(Ok(_)) = events.next().await {} };
                let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: WireReply<'_> = match serde_json::from_str(data) {
                Ok(chunk) => chunk,
                Err(_) if acc.finish_reason.is_some() => break,
                Err(_) => {
                    return Err(self.transient(
                        TransientKind::Malformed,
                        format!("SSE data line is not JSON: {}", quote(data)),
                    ));
                }
            };
            if let Some(error) = &chunk.error {
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!(
                        "error object mid-stream: {}",
                        self.key.scrub(&error_text(error))
                    ),
                ));
            }
            if event.event == "error" {
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!("error event mid-stream: {}", quote(data)),
                ));
            }
            acc.absorb(chunk, true);
        }
        if events_seen == 0 {
            return Err(self.transient(TransientKind::Malformed, "empty reply body (no SSE event)"));
        }
        if !done && acc.finish_reason.is_none() {
            return Err(self.transient(
                TransientKind::Incomplete,
                format!("stream ended after {events_seen} events without finish_reason or [DONE]"),
            ));
        }
        Ok(acc)
    }

    async fn read_json(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<Parsed, Error> {
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(e) => return Err(self.body_error(e, usize::from(!bytes.is_empty()))),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() {
            return Err(self.transient(TransientKind::Malformed, "empty reply body"));
        }
        let reply: WireReply<'_> = serde_json::from_str(&text).map_err(|_| {
            self.transient(
                TransientKind::Malformed,
                format!("reply is not JSON: {}", quote(&text)),
            )
        })?;
        if let Some(error) = &reply.error {
            return Err(self.transient(
                TransientKind::Malformed,
                format!(
                    "error object in reply: {}",
                    self.key.scrub(&error_text(error))
                ),
            ));
        }
        if reply.choices.is_empty() {
            return Err(self.transient(
                TransientKind::Malformed,
                format!("reply has no choices: {}", quote(&text)),
            ));
        }
        let mut acc = Parsed::default();
        acc.absorb(reply, false);
        Ok(acc)
    }

    fn body_error(&self, e: BodyError, progress: usize) -> Error {
        match e {
            BodyError::Transport(e) if progress == 0 => self.transient(
                TransientKind::Connection,
                format!("connection lost before the reply: {e}"),
            ),
            BodyError::Transport(e) => self.transient(
                TransientKind::Incomplete,
                format!("connection lost mid-reply: {}", error_chain(&e)),
            ),
            e @ (BodyError::FirstByte(_) | BodyError::Idle(_)) => {
                self.transient(TransientKind::Timeout, e.to_string())
            }
        }
    }

    async fn read_error_body(&self, response: reqwest::Response) -> String {
        match tokio::time::timeout(self.timeouts.idle, response.bytes()).await {
            Ok(Ok(bytes)) => {
                String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).into_owned()
            }
            _ => String::new(),
        }
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
        limit_used_up: bool,
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
            },
            502 | 503 => Error::Transient {
                engine,
                kind: TransientKind::Unavailable,
                message: format!("HTTP {code}: {message}"),
                retry_after,
                limit_used_up: false,
            },
            408 | 409 | 500..=599 => Error::Transient {
                engine,
                kind: TransientKind::ServerError,
                message: format!("HTTP {code}: {message}"),
                retry_after,
                limit_used_up: false,
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
        // Paced from the server's own rate-limit headers: sent only when its bucket has room.
        let tokens = crate::pace::request_tokens(&request);
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
        let attempt = self.attempt(&request, started, tokens, sent_at);
        match tokio::time::timeout(self.timeouts.total, attempt).await {
            Ok(result) => result,
            Err(_) => Err(self.transient(
                TransientKind::Timeout,
                format!(
                    "no complete reply within {:?} (total timeout)",
                    self.timeouts.total
                ),
            )),
        }
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn model(&self) -> &str {
        &self.model
    }
}

/// True when a 400/422 body names `stream_options` (e.g. pydantic's `extra_forbidden` with
/// `"loc": ["body", "stream_options"]`): the server does not know the key.
fn rejects_stream_options(status: StatusCode, body: &str) -> bool {
    matches!(status.as_u16(), 400 | 422) && body.contains("stream_options")
}

/// The human part of an error body: `error.message`, `error` as text, `message`, `detail`, or the
/// body itself, shortened.
fn server_message(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(error) = value.get("error") {
            return error_text(error);
        }
        for key in ["message", "detail"] {
            if let Some(v) = value.get(key) {
                return quote(&v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
    }
    if body.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        quote(body.trim())
    }
}

fn error_text(error: &serde_json::Value) -> String {
    let text = match error {
        serde_json::Value::String(s) => s.clone(),
        other => match other.get("message").and_then(|m| m.as_str()) {
            Some(m) => match other.get("code").and_then(|c| c.as_str()) {
                Some(code) => format!("{m} ({code})"),
                None => m.to_string(),
            },
            None => other.to_string(),
        },
    };
    quote(&text)
}

fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(QUOTE_CHARS).collect();
    format!("{cut}…")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn body(request: &Request, stream: bool, usage: bool) -> serde_json::Value {
        let b = Body {
            model: "m",
            request,
            stream,
            stream_usage: usage,
        };
        serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap()
    }

    #[test]
    fn params_pass_verbatim_and_use_stop_false_drops_stop() {
        let req = Request::chat(vec![Message::new("user", "hi")])
            .with_param("temperature", 0.7)
            .with_param("min_p", 0.05)
            .with_param("stop", vec!["###"])
            .with_param("custom_key", serde_json::json!({"a": 1}))
            .with_param("model", "other");
        let b = body(&req, true, true);
        assert_eq!(b["model"], "m");
        assert_eq!(b["temperature"], 0.7);
        assert_eq!(b["min_p"], 0.05);
        assert_eq!(b["stop"][0], "###");
        assert_eq!(b["custom_key"]["a"], 1);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["messages"][0]["content"], "hi");
        let req = req.with_param("use_stop", false);
        let b = body(&req, false, false);
        assert!(
            b.get("stop").is_none()
                && b.get("use_stop").is_none()
                && b.get("stream_options").is_none()
        );
        let b = body(&Request::completion("once upon"), true, false);
        assert_eq!(b["prompt"], "once upon");
    }

    #[test]
    fn retry_after_values() {
        use std::time::UNIX_EPOCH;
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let s = Duration::from_secs;
        let table: [(&str, Option<Duration>); 14] = [
            ("3", Some(s(3))),
            (" 120 ", Some(s(120))),
            ("1.5", Some(Duration::from_millis(1500))),
            ("0", Some(s(0))),
            ("86400", Some(MAX_RETRY_AFTER)),
            ("1e300", Some(MAX_RETRY_AFTER)),
            ("-1", None),
            ("NaN", None),
            ("soon", None),
            ("", None),
            // HTTP dates (IMF-fixdate, and the obsolete RFC 850 / asctime forms RFC 9110 keeps).
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(s(30))),
            ("Wednesday, 21-Oct-15 07:29:00 GMT", Some(s(60))),
            ("Wed Oct 21 07:28:00 2015", Some(s(0))),
            // In the past: retry now; far future: capped.
            ("Tue, 20 Oct 2015 07:28:00 GMT", Some(s(0))),
        ];
        for (value, expected) in table {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", now),
            None
        );
    }

    #[test]
    fn retry_after_date_is_measured_from_the_server_date() {
        // The local clock is irrelevant when the response carries its own `Date`.
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:45 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(45)));
        // Without `Date`, a date long past is "now".
        h.remove("date");
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        // A relative date from the local clock: about 20 s (whole seconds, so 19..=20).
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(20));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            (Duration::from_secs(19)..=Duration::from_secs(20)).contains(&d),
            "{d:?}"
        );
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("99999999999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn stream_options_rejection_is_recognised() {
        let pydantic = r#"{"detail":[{"type":"extra_forbidden","loc":["body","stream_options"],"msg":"Extra inputs are not permitted"}]}"#;
        assert!(rejects_stream_options(
            StatusCode::UNPROCESSABLE_ENTITY,
            pydantic
        ));
        assert!(rejects_stream_options(
            StatusCode::BAD_REQUEST,
            "unknown field `stream_options`"
        ));
        assert!(!rejects_stream_options(
            StatusCode::BAD_REQUEST,
            "context_length_exceeded"
        ));
        assert!(!rejects_stream_options(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stream_options"
        ));
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#),
            "too long (context_length_exceeded)"
        );
        assert_eq!(server_message(r#"{"detail":"nope"}"#), "nope");
        assert_eq!(server_message("plain"), "plain");
    }
}
