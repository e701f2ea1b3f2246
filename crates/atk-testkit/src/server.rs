//! The server: routes, the per-request decisions, and the bodies each fault produces.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Fault, Faults, ReplyMode, ServerConfig};
use crate::reply::{count_words, hash16, prompt_hash, prompt_words, reply_text, split_pieces};
use crate::stats::{Counters, InFlight, Stats};

/// A running OpenAI-compatible server on 127.0.0.1. Dropping it (or [`TestServer::shutdown`])
/// stops it: queued requests, latency waits and stalled bodies end at once.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// State every request handler sees.
struct Shared {
    config: RwLock<ServerConfig>,
    counters: Counters,
    serial: Arc<Semaphore>,
    /// Cancelled when the server stops (or goes away); replaced when it comes back.
    cancel: RwLock<CancellationToken>,
    /// The running stream's cut signal (`cut_on_arrival`).
    running: Mutex<Option<CancellationToken>>,
    /// Token-bucket levels (`rate_limit`), created on first use.
    buckets: Mutex<Option<Buckets>>,
}

impl Shared {
    fn cancel(&self) -> CancellationToken {
        self.cancel
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    fn config(&self) -> ServerConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    fn update(&self, f: impl FnOnce(&mut ServerConfig)) {
        f(&mut self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

impl TestServer {
    /// Starts a server on a free loopback port.
    pub async fn start(config: ServerConfig) -> io::Result<TestServer> {
        Self::start_on(0, config).await
    }

    /// Starts a server on `127.0.0.1:port` (0 picks a free port).
    pub async fn start_on(port: u16, config: ServerConfig) -> io::Result<TestServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: RwLock::new(config),
            counters: Counters::default(),
            serial: Arc::new(Semaphore::new(1)),
            cancel: RwLock::new(CancellationToken::new()),
            running: Mutex::new(None),
            buckets: Mutex::new(None),
        });
        let task = serve_on(listener, shared.clone());
        tracing::debug!(%addr, "test server listening");
        Ok(TestServer {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// Stops listening, as a restarting replica does: open bodies end, queued requests get
    /// 503, and new connections are refused until [`TestServer::come_back`]. Counters stay.
    pub async fn go_away(&mut self) {
        self.shared.cancel().cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Listens again on the same port after [`TestServer::go_away`] (a no-op while serving).
    pub async fn come_back(&mut self) -> io::Result<()> {
        if self.task.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        *self
            .shared
            .cancel
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = CancellationToken::new();
        self.task = Some(serve_on(listener, self.shared.clone()));
        Ok(())
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Waits until `pred` holds for the stats (checked after every change), at most `timeout`;
    /// returns the stats that satisfied it, or `None` on timeout. Lets a test act at a given
    /// point of a run (say, kill a client after 5 completed replies) without sleeping.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Stats) -> bool,
    ) -> Option<Stats> {
        let mut changes = self.shared.counters.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let stats = self.stats();
                if pred(&stats) {
                    return Some(stats);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Zeroes the counters and restarts the fault script (requests in flight stay counted).
    pub fn reset_stats(&self) {
        {
            let mut t = self.shared.counters.lock();
            let in_flight = t.stats.in_flight;
            t.stats = Stats {
                in_flight,
                max_in_flight: in_flight,
                ..Stats::default()
            };
            t.script_pos = 0;
        }
        self.shared.counters.changed();
    }

    /// Replaces the fault injection for the next requests.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.update(|c| c.faults = faults);
    }

    /// Replaces the latency for the next requests.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.update(|c| c.latency = latency);
    }

    /// Replaces the reply for the next requests.
    pub fn set_reply(&self, reply: ReplyMode) {
        self.shared.update(|c| c.reply = reply);
    }

    /// Stops the server and waits (at most 5 s) for it to close its connections.
    pub async fn shutdown(mut self) {
        self.shared.cancel().cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.cancel().cancel();
    }
}

/// Serves `listener` until the shared cancel token fires.
fn serve_on(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let cancel = shared.cancel();
    let app = router(shared);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "test server stopped with an error");
        }
    })
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Chat or text completion.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/completions", post(completion))
        .route("/v1/models", get(models))
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn chat(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(sh, Kind::Chat, &headers, &body).await
}

async fn completion(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(sh, Kind::Completion, &headers, &body).await
}

async fn stats(State(sh): State<Arc<Shared>>) -> Response {
    axum::Json(sh.counters.snapshot()).into_response()
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let cfg = sh.config();
    if !key_ok(&cfg, &headers) {
        return unauthorized();
    }
    axum::Json(json!({"object": "list", "data": [
        {"id": "atk-testkit", "object": "model", "created": 0, "owned_by": "atk-testkit"}
    ]}))
    .into_response()
}

/// True when no key is required or the bearer token is the key.
fn key_ok(cfg: &ServerConfig, headers: &HeaderMap) -> bool {
    let Some(key) = &cfg.api_key else { return true };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    sent.and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == key)
}

/// An OpenAI-style error body.
fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    // Never echo the key that was sent.
    json_response(
        StatusCode::UNAUTHORIZED,
        &error_body(
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
    )
}

/// One request, from arrival to the response head; the body (with the in-flight guard and the
/// serial permit) outlives this function.
async fn handle(sh: Arc<Shared>, kind: Kind, headers: &HeaderMap, raw: &[u8]) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(raw).ok();
    let hash = match &parsed {
        Some(body) => prompt_hash(body),
        None => hash16(&String::from_utf8_lossy(raw)),
    };
    let (guard, nth) = sh.counters.arrive(&hash);
    let cfg = sh.config();
    let response = decide(&sh, &cfg, kind, headers, parsed, &hash, nth, guard).await;
    sh.counters.status(response.status().as_u16());
    response
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    sh: &Arc<Shared>,
    cfg: &ServerConfig,
    kind: Kind,
    headers: &HeaderMap,
    parsed: Option<Value>,
    hash: &str,
    nth: u64,
    guard: InFlight,
) -> Response {
    if !key_ok(cfg, headers) {
        sh.counters.update(|s| s.rejected_auth += 1);
        return unauthorized();
    }
    let Some(body) = parsed.filter(Value::is_object) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &error_body(
                "The request body is not a JSON object.",
                "invalid_request_error",
                None,
            ),
        );
    };
    let (limit_headers, refused) = take_rate_limit(sh, cfg, &body);
    if refused {
        sh.counters.update(|s| s.rate_limited += 1);
        let mut resp = rate_limit_refusal(&limit_headers);
        resp.headers_mut().extend(limit_headers);
        return resp;
    }
    let mut resp = serve(sh, cfg, kind, body, hash, nth, guard).await;
    resp.headers_mut().extend(limit_headers);
    resp
}

/// A request past the key and rate checks: context, faults, queueing, latency, the reply.
#[allow(clippy::too_many_arguments)]
async fn serve(
    sh: &Arc<Shared>,
    cfg: &ServerConfig,
    kind: Kind,
    body: Value,
    hash: &str,
    nth: u64,
    guard: InFlight,
) -> Response {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if let Some(limit) = cfg.context_limit {
        let prompt = prompt_words(&body);
        let max_tokens = max_tokens(&body).unwrap_or(0);
        if prompt + max_tokens > limit {
            // Like llama-cpp-python: streamed, a 200 with no event at all; else a 400.
            if stream {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    "",
                )
                    .into_response();
            }
            let msg = format!(
                "This model's maximum context length is {limit} tokens. However, you requested \
                 {} tokens ({prompt} in the messages, {max_tokens} in the completion). Please \
                 reduce the length of the messages or completion.",
                prompt + max_tokens
            );
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_body(
                    &msg,
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                ),
            );
        }
    }
    let fault = choose_fault(sh, cfg, hash, nth);
    match fault {
        Fault::Unauthorized => return unauthorized(),
        Fault::RateLimit => return rate_limited(&cfg.faults),
        _ => {}
    }
    let cancel = sh.cancel();
    if cfg.cut_on_arrival {
        let running = sh
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            running.cancel();
        }
    }
    let permit = if cfg.serial || cfg.cut_on_arrival {
        tokio::select! {
            p = sh.serial.clone().acquire_owned() => p.ok(),
            () = cancel.cancelled() => return shutting_down(),
        }
    } else {
        None
    };
    // A cuttable stream spends its latency between the deltas, so it is running (and can be
    // cut) while others arrive.
    let cut = (cfg.cut_on_arrival && stream).then(|| {
        let token = CancellationToken::new();
        *sh.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        token
    });
    if !cfg.latency.is_zero() && cut.is_none() {
        tokio::select! {
            () = tokio::time::sleep(cfg.latency) => {}
            () = cancel.cancelled() => return shutting_down(),
        }
    }
    let mut text = reply_text(&cfg.reply, &body);
    let mut finish = (fault != Fault::NoFinishReason).then_some("stop");
    if cfg.honor_max_tokens
        && let Some(max) = max_tokens(&body)
        && count_words(&text) > max
    {
        text = cut_words(&text, max);
        finish = Some("length");
    }
    let reply = ReplyShape {
        finish,
        kind,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("atk-testkit")
            .to_owned(),
        id: format!(
            "{}-{hash}-{nth}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            }
        ),
        prompt_tokens: prompt_words(&body),
        completion_tokens: count_words(&text),
        text,
    };
    let tail = Tail {
        counters: sh.counters.clone(),
        cancel,
        cut,
        _guard: guard,
        _permit: permit,
    };
    match fault {
        Fault::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_body(
                "The server had an error while processing your request.",
                "server_error",
                None,
            ),
        ),
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1>upstream sent nonsense</body></html>",
        )
            .into_response(),
        _ if stream => {
            let mut resp = streamed(body_steps_sse(&reply, cfg, fault), tail).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        _ => {
            let mut resp = streamed(body_steps_json(&reply, cfg, fault), tail).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

/// The request's `max_tokens` (or `max_completion_tokens`).
fn max_tokens(body: &Value) -> Option<u64> {
    body.get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
}

/// The first `n` whitespace-separated words of `text`, with the spacing between them kept.
fn cut_words(text: &str, n: u64) -> String {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word && seen == n {
                return text[..i].to_owned();
            }
            in_word = false;
        } else if !in_word {
            in_word = true;
            seen += 1;
        }
    }
    text.to_owned()
}

/// Script first, then fail-first-per-prompt, then the seeded draw for (prompt, attempt).
fn choose_fault(sh: &Shared, cfg: &ServerConfig, hash: &str, nth: u64) -> Fault {
    let faults = &cfg.faults;
    let mut t = sh.counters.lock();
    let fault = if t.script_pos < faults.script.len() {
        t.script_pos += 1;
        faults.script[t.script_pos - 1]
    } else if nth <= u64::from(faults.fail_first_per_prompt) {
        faults.fail_first_kind
    } else {
        let seed = cfg.seed
            ^ u64::from_str_radix(hash, 16).unwrap_or(0)
            ^ nth.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        faults.pick(StdRng::seed_from_u64(seed).random::<f64>())
    };
    if fault != Fault::None {
        t.stats.faults_injected += 1;
        drop(t);
        sh.counters.changed();
        tracing::debug!(
            fault = fault.as_str(),
            prompt = hash,
            nth,
            "injecting fault"
        );
    }
    fault
}

fn rate_limited(faults: &Faults) -> Response {
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &error_body(
            "Rate limit reached for requests.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
    );
    if let Some(wait) = faults.retry_after {
        insert_retry_after(resp.headers_mut(), wait, faults.retry_after_ms);
    }
    resp
}

/// `Retry-After` in whole seconds (rounded up), and `retry-after-ms` when `ms`.
fn insert_retry_after(headers: &mut HeaderMap, wait: Duration, ms: bool) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if ms {
        headers.insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
    }
}

/// The levels of a [`RateLimit`]'s buckets.
struct Buckets {
    requests: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

/// Takes one request (and its tokens) from the rate limit's buckets: the `x-ratelimit-*`
/// headers to send (empty without a limit or with headers off) and whether it was refused
/// (then `retry-after-ms` is among the headers and nothing was taken).
fn take_rate_limit(sh: &Shared, cfg: &ServerConfig, body: &Value) -> (HeaderMap, bool) {
    let mut headers = HeaderMap::new();
    let Some(rl) = &cfg.rate_limit else {
        return (headers, false);
    };
    let now = tokio::time::Instant::now();
    let mut guard = sh
        .buckets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let b = guard.get_or_insert(Buckets {
        requests: rl.requests as f64,
        tokens: rl.tokens as f64,
        last: now,
    });
    let period = rl.period.as_secs_f64().max(1e-9);
    let elapsed = now.duration_since(b.last).as_secs_f64();
    b.last = now;
    b.requests = (b.requests + elapsed * rl.requests as f64 / period).min(rl.requests as f64);
    b.tokens = (b.tokens + elapsed * rl.tokens as f64 / period).min(rl.tokens as f64);
    let cost = (prompt_words(body) + max_tokens(body).unwrap_or(0)).min(rl.tokens) as f64;
    // Time until a bucket holds `need`, at `size` per period.
    let wait_for = |level: f64, need: f64, size: u64| {
        if size == 0 || level >= need {
            0.0
        } else {
            (need - level) * period / size as f64
        }
    };
    let wait = wait_for(b.requests, 1.0, rl.requests).max(wait_for(b.tokens, cost, rl.tokens));
    let refused = wait > 0.0;
    if !refused {
        if rl.requests > 0 {
            b.requests -= 1.0;
        }
        if rl.tokens > 0 {
            b.tokens -= cost;
        }
    }
    if rl.headers {
        for (name, size, level) in [
            ("requests", rl.requests, b.requests),
            ("tokens", rl.tokens, b.tokens),
        ] {
            if size == 0 {
                continue;
            }
            let reset = (size as f64 - level).max(0.0) * period / size as f64;
            let pairs = [
                (format!("x-ratelimit-limit-{name}"), size.to_string()),
                (
                    format!("x-ratelimit-remaining-{name}"),
                    (level.max(0.0).floor() as u64).to_string(),
                ),
                (
                    format!("x-ratelimit-reset-{name}"),
                    go_duration(Duration::from_secs_f64(reset)),
                ),
            ];
            for (k, v) in pairs {
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    headers.insert(k, v);
                }
            }
        }
    }
    if refused {
        insert_retry_after(&mut headers, Duration::from_secs_f64(wait), true);
    }
    (headers, refused)
}

/// A 429 from the token-bucket limit (its headers are added by the caller).
fn rate_limit_refusal(_headers: &HeaderMap) -> Response {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &error_body(
            "Rate limit reached for requests. Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
    )
}

/// A duration as Go prints it, as OpenAI's `x-ratelimit-reset-*` headers do: `20ms`,
/// `0.36s`, `1s`, `6m0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let text = format!("{secs:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    let whole = d.as_secs();
    if whole < 3600 {
        format!("{}m{}s", whole / 60, whole % 60)
    } else {
        format!("{}h{}m{}s", whole / 3600, (whole % 3600) / 60, whole % 60)
    }
}

fn shutting_down() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &error_body("The test server is shutting down.", "server_error", None),
    )
}

/// What a complete reply is made of.
struct ReplyShape {
    finish: Option<&'static str>,
    kind: Kind,
    model: String,
    id: String,
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl ReplyShape {
    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// A stream chunk carrying `piece` (or only a finish reason).
    fn chunk(&self, piece: Option<&str>, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = piece.map_or_else(|| json!({}), |p| json!({"content": p}));
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": 1_700_000_000, "model": self.model, "choices": [choice]})
    }

    /// The whole non-streamed reply; `text` and `finish` may differ from the real ones.
    fn whole(&self, text: &str, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": 1_700_000_000, "model": self.model,
               "choices": [choice], "usage": self.usage()})
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }
}

/// One step of a response body.
enum Step {
    Data(Bytes),
    Pause(Duration),
    /// Abort the connection (the client sees a reset / incomplete body).
    Abort,
    /// Count the request as completed (placed just before the last bytes).
    Completed,
    /// Wait this long, unless a newer request cuts the stream: then `data: [DONE]` and the end.
    Gap(Duration),
}

fn sse(v: &Value) -> Step {
    Step::Data(Bytes::from(format!("data: {v}\n\n")))
}

/// The SSE body for `fault` (None, Stall, ResetMidStream, MalformedSse, CutBeforeDone,
/// ErrorMidStream).
fn body_steps_sse(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let pieces = split_pieces(&reply.text, cfg.stream_chunks);
    // The fault strikes before this delta: after half the content (before any, for one delta).
    let half = pieces.len() / 2;
    let mut steps = VecDeque::new();
    if reply.kind == Kind::Chat {
        let mut first = reply.chunk(Some(""), None);
        first["choices"][0]["delta"]["role"] = json!("assistant");
        steps.push_back(sse(&first));
    }
    let gap = cfg.latency / u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    for (i, piece) in pieces.iter().enumerate() {
        if cfg.cut_on_arrival {
            steps.push_back(Step::Gap(gap));
        }
        if i == half {
            match fault {
                Fault::Stall => steps.push_back(Step::Pause(cfg.faults.stall_for)),
                Fault::ResetMidStream => {
                    steps.push_back(Step::Abort);
                    return steps;
                }
                Fault::MalformedSse => {
                    // This delta is lost: a client that skips bad lines keeps a damaged reply.
                    let line = format!(
                        "data: {{\"id\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\n\n",
                        reply.id,
                        piece.len()
                    );
                    steps.push_back(Step::Data(Bytes::from(line)));
                    continue;
                }
                Fault::CutBeforeDone => return steps,
                Fault::ErrorMidStream => {
                    let err = error_body(
                        "The server had an error while streaming.",
                        "server_error",
                        Some("internal_error"),
                    );
                    steps.push_back(sse(&err));
                    return steps;
                }
                _ => {}
            }
        }
        steps.push_back(sse(&reply.chunk(Some(piece), None)));
    }
    steps.push_back(sse(&reply.chunk(None, reply.finish)));
    if cfg.usage_in_stream {
        let usage = json!({"id": reply.id, "object": reply.object(true), "created": 1_700_000_000,
                           "model": reply.model, "choices": [], "usage": reply.usage()});
        steps.push_back(sse(&usage));
    }
    if fault == Fault::None || fault == Fault::Stall {
        steps.push_back(Step::Completed);
    }
    steps.push_back(Step::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    steps
}

/// The non-streamed JSON body for `fault`.
fn body_steps_json(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let whole = Bytes::from(reply.whole(&reply.text, reply.finish).to_string());
    let half = whole.len() / 2;
    let mut steps = VecDeque::new();
    match fault {
        Fault::Stall => {
            steps.push_back(Step::Data(whole.slice(..half)));
            steps.push_back(Step::Pause(cfg.faults.stall_for));
            steps.push_back(Step::Completed);
            steps.push_back(Step::Data(whole.slice(half..)));
        }
        Fault::ResetMidStream => {
            steps.push_back(Step::Data(whole.slice(..half)));
            steps.push_back(Step::Abort);
        }
        Fault::MalformedSse | Fault::CutBeforeDone => {
            steps.push_back(Step::Data(whole.slice(..half)))
        }
        Fault::ErrorMidStream => {
            let err = error_body(
                "The server had an error while processing your request.",
                "server_error",
                Some("internal_error"),
            );
            steps.push_back(Step::Data(Bytes::from(err.to_string())));
        }
        Fault::NoFinishReason => steps.push_back(Step::Data(whole)),
        _ => {
            steps.push_back(Step::Completed);
            steps.push_back(Step::Data(whole));
        }
    }
    steps
}

/// What a body holds until it ends: the in-flight guard and the serial permit.
struct Tail {
    counters: Counters,
    cancel: CancellationToken,
    /// Fires when a newer request cuts this stream (`cut_on_arrival`).
    cut: Option<CancellationToken>,
    _guard: InFlight,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A body that plays `steps`; an `Abort` (or the server shutting down) ends it with an error.
fn streamed(steps: VecDeque<Step>, tail: Tail) -> Body {
    let stream = futures_util::stream::unfold((steps, tail), |(mut steps, tail)| async move {
        loop {
            match steps.pop_front()? {
                Step::Data(bytes) => return Some((Ok(bytes), (steps, tail))),
                Step::Pause(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = tail.cancel.cancelled() => {
                            steps.clear();
                            return Some((Err(io::Error::other("test server shut down")), (steps, tail)));
                        }
                    }
                }
                Step::Abort => {
                    // Return Pending once first so hyper writes out what it buffered: the
                    // client must get the head and half the body before the reset.
                    tokio::task::yield_now().await;
                    steps.clear();
                    let err =
                        io::Error::new(io::ErrorKind::ConnectionReset, "injected connection reset");
                    return Some((Err(err), (steps, tail)));
                }
                Step::Completed => tail.counters.update(|s| s.completed += 1),
                Step::Gap(d) => {
                    let cut = tail.cut.clone().unwrap_or_default();
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = cut.cancelled() => {
                            steps.clear();
                            tail.counters.update(|s| s.cut_streams += 1);
                            let done = Bytes::from_static(b"data: [DONE]\n\n");
                            return Some((Ok(done), (steps, tail)));
                        }
                        () = tail.cancel.cancelled() => {
                            steps.clear();
                            return Some((Err(io::Error::other("test server shut down")), (steps, tail)));
                        }
                    }
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests;
