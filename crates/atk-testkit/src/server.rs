//! The server: its lifecycle, state and routes. The per-request decisions are in
//! `server/decide.rs`, rate limits in `server/rate.rs`, the bodies each fault produces in
//! `server/body.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Faults, ReplyMode, ServerConfig};
use crate::stats::{Counters, Stats};

/// A running OpenAI-compatible (and Anthropic Messages) server on 127.0.0.1. Dropping it (or [`TestServer::shutdown`])
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
    buckets: Mutex<Option<rate::Buckets>>,
    /// Hashes of the prompt prefixes cached so far (prompt caching on either route).
    cached: Mutex<std::collections::HashSet<String>>,
    /// Files and batches of the batch APIs.
    batch: Mutex<batch::Batches>,
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
            cached: Mutex::new(std::collections::HashSet::new()),
            batch: Mutex::new(batch::Batches::default()),
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

    /// The base URL of both APIs, `http://127.0.0.1:PORT/v1` (OpenAI's `/chat/completions` and
    /// `/completions`, Anthropic's `/messages` below it).
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
            t.broken_pos = 0;
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

    /// Replaces how the batch APIs behave from now on (batches already created keep their
    /// creation time; a shorter latency ends them sooner).
    pub fn set_batch(&self, batch: crate::BatchBehaviour) {
        self.shared.update(|c| c.batch = batch);
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

/// Chat or text completion (OpenAI), or Anthropic's Messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
    Messages,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/completions", post(completion))
        .route("/v1/messages", post(messages))
        .route("/messages", post(messages))
        .route("/v1/files", post(batch::upload))
        .route("/v1/files/{id}/content", get(batch::file_content))
        .route(
            "/v1/batches",
            post(batch::create_openai).get(batch::list_openai),
        )
        .route("/v1/batches/{id}", get(batch::get_openai))
        .route("/v1/batches/{id}/cancel", post(batch::cancel_openai))
        .route("/v1/messages/batches", post(batch::create_anthropic))
        .route("/v1/messages/batches/{id}", get(batch::get_anthropic))
        .route(
            "/v1/messages/batches/{id}/cancel",
            post(batch::cancel_anthropic),
        )
        .route(
            "/v1/messages/batches/{id}/results",
            get(batch::results_anthropic),
        )
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

async fn messages(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(sh, Kind::Messages, &headers, &body).await
}

async fn stats(State(sh): State<Arc<Shared>>) -> Response {
    axum::Json(sh.counters.snapshot()).into_response()
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let cfg = sh.config();
    if !key_ok(&cfg, Kind::Chat, &headers) {
        return unauthorized(Kind::Chat);
    }
    axum::Json(json!({"object": "list", "data": [
        {"id": "atk-testkit", "object": "model", "created": 0, "owned_by": "atk-testkit"}
    ]}))
    .into_response()
}

/// True when no key is required or the one sent is the key: the bearer token (OpenAI), or
/// `x-api-key` (Anthropic's Messages).
fn key_ok(cfg: &ServerConfig, kind: Kind, headers: &HeaderMap) -> bool {
    let Some(key) = &cfg.api_key else { return true };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match kind {
        Kind::Messages => header("x-api-key").is_some_and(|t| t.trim() == key),
        Kind::Chat | Kind::Completion => header(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == key),
    }
}

/// An OpenAI-style error body.
fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An error answer in the route's own shape: OpenAI's `{error: {message, type, code}}` with
/// `openai` as `(type, code)`, or Anthropic's `{type: "error", error: {type, message}}` with
/// `anthropic` as its type.
fn error_response(
    kind: Kind,
    status: StatusCode,
    message: &str,
    openai: (&str, Option<&str>),
    anthropic: &str,
) -> Response {
    json_response(status, &error_json(kind, message, openai, anthropic))
}

/// The body of [`error_response`] (also what a batch's errored line carries).
fn error_json(kind: Kind, message: &str, openai: (&str, Option<&str>), anthropic: &str) -> Value {
    match kind {
        Kind::Messages => {
            json!({"type": "error", "error": {"type": anthropic, "message": message}})
        }
        Kind::Chat | Kind::Completion => error_body(message, openai.0, openai.1),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized(kind: Kind) -> Response {
    // Never echo the key that was sent.
    error_response(
        kind,
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided.",
        ("invalid_request_error", Some("invalid_api_key")),
        "authentication_error",
    )
}

mod anthropic;
mod batch;
mod body;
mod decide;
mod rate;
mod schema;

use decide::handle;
#[cfg(test)]
use rate::go_duration;

#[cfg(test)]
mod tests;
