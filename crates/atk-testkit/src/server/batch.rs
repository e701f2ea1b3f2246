//! The batch APIs: OpenAI's Files + Batches (`/v1/files`, `/v1/batches`) and Anthropic's
//! Message Batches (`/v1/messages/batches`). A batch ends `latency` after it was created; its
//! lines are answered as the online routes would answer them, with the failure modes of
//! [`BatchBehaviour`]: errored lines, expired batches with part done, batches failed at
//! validation, results files that vanish, creations whose answer is lost.
//!
//! [`BatchBehaviour`]: crate::BatchBehaviour

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::body::ReplyShape;
use super::decide::{cut_words, max_tokens};
use super::{Kind, Shared, error_response, json_response, key_ok, unauthorized};
use crate::config::ServerConfig;
use crate::reply::{count_words, prompt_hash, prompt_words, reply_text};

/// Files and batches the server holds.
#[derive(Default)]
pub(super) struct Batches {
    files: HashMap<String, Vec<u8>>,
    batches: HashMap<String, Batch>,
    /// Creation order (the list route answers newest first).
    order: Vec<String>,
    next: u64,
    created: u32,
    vanished: u32,
    lost: u32,
    held_uploads: u32,
    held_created: u32,
}

struct Batch {
    id: String,
    kind: Kind,
    input_file_id: Option<String>,
    metadata: Value,
    lines: Vec<(String, Value)>,
    created: Instant,
    /// The first batches fail at validation (`fail_first`).
    fails: bool,
    /// A cancel was asked before it ended.
    cancelled: bool,
    ended: Option<Ended>,
}

struct Ended {
    state: &'static str,
    output: Option<String>,
    errors: Option<String>,
    succeeded: u64,
    errored: u64,
    expired: u64,
    canceled: u64,
}

/// What a line meets.
#[derive(PartialEq, Eq, Clone, Copy)]
enum LineFate {
    Done,
    Errored,
    Expired,
    Canceled,
}

/// Holds a batch API request unanswered until the server stops (`hold_uploads`,
/// `hold_created`), then answers 503.
async fn held(sh: &Shared, kind: Kind) -> Response {
    sh.counters.update(|s| s.batch_held += 1);
    sh.cancel().cancelled().await;
    error_response(
        kind,
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is going away.",
        ("server_error", None),
        "overloaded_error",
    )
}

/// True when this upload is one of the first `hold_uploads` (counted).
fn hold_upload(sh: &Shared, cfg: &ServerConfig) -> bool {
    let mut b = lock(sh);
    let hold = b.held_uploads < cfg.batch.hold_uploads;
    if hold {
        b.held_uploads += 1;
    }
    hold
}

fn lock(sh: &Shared) -> std::sync::MutexGuard<'_, Batches> {
    sh.batch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Key check and, on the Anthropic routes, the version header.
fn refused(cfg: &ServerConfig, kind: Kind, headers: &HeaderMap) -> Option<Response> {
    if !key_ok(cfg, kind, headers) {
        return Some(unauthorized(kind));
    }
    if kind == Kind::Messages && !headers.contains_key("anthropic-version") {
        return Some(bad_request(kind, "anthropic-version: header is required"));
    }
    None
}

fn bad_request(kind: Kind, message: &str) -> Response {
    error_response(
        kind,
        StatusCode::BAD_REQUEST,
        message,
        ("invalid_request_error", None),
        "invalid_request_error",
    )
}

fn not_found(kind: Kind, what: &str) -> Response {
    error_response(
        kind,
        StatusCode::NOT_FOUND,
        &format!("No such {what}"),
        ("invalid_request_error", None),
        "not_found_error",
    )
}

/// `POST /v1/files`: a multipart form with `purpose` and `file`.
pub(super) async fn upload(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Chat, &headers) {
        return r;
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_string());
    let Some(boundary) = boundary else {
        return bad_request(Kind::Chat, "expected a multipart/form-data upload");
    };
    if hold_upload(&sh, &cfg) {
        return held(&sh, Kind::Chat).await;
    }
    let Some(file) = form_part(&body, &boundary, "file") else {
        return bad_request(Kind::Chat, "the form has no `file` part");
    };
    if form_part(&body, &boundary, "purpose").as_deref() != Some(b"batch".as_slice()) {
        return bad_request(Kind::Chat, "purpose must be `batch`");
    }
    let mut b = lock(&sh);
    b.next += 1;
    let id = format!("file-{}", b.next);
    let bytes = file.len();
    b.files.insert(id.clone(), file);
    json_response(
        StatusCode::OK,
        &json!({"id": id, "object": "file", "purpose": "batch", "bytes": bytes}),
    )
}

/// The content of the form part named `name`.
fn form_part(body: &[u8], boundary: &str, name: &str) -> Option<Vec<u8>> {
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut parts = split_on(text, delimiter.as_bytes());
    parts.find_map(|part| {
        let head_end = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..head_end]);
        if !head.contains(&format!("name=\"{name}\"")) {
            return None;
        }
        let content = &part[head_end + 4..];
        Some(content.strip_suffix(b"\r\n").unwrap_or(content).to_vec())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_on<'a>(mut hay: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    std::iter::from_fn(move || {
        if hay.is_empty() {
            return None;
        }
        match find(hay, sep) {
            Some(i) => {
                let part = &hay[..i];
                hay = &hay[i + sep.len()..];
                Some(part)
            }
            None => {
                let part = hay;
                hay = &[];
                Some(part)
            }
        }
    })
}

/// `POST /v1/batches`.
pub(super) async fn create_openai(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Chat, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(Kind::Chat, "The request body is not JSON.");
    };
    let Some(file_id) = req.get("input_file_id").and_then(Value::as_str) else {
        return bad_request(Kind::Chat, "input_file_id is required");
    };
    let Some(file) = lock(&sh).files.get(file_id).cloned() else {
        return not_found(Kind::Chat, "file");
    };
    let mut lines = Vec::new();
    for line in String::from_utf8_lossy(&file).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return bad_request(Kind::Chat, "a line of the input file is not JSON");
        };
        let (Some(id), Some(body)) = (v.get("custom_id").and_then(Value::as_str), v.get("body"))
        else {
            return bad_request(Kind::Chat, "a line has no custom_id or body");
        };
        lines.push((id.to_string(), body.clone()));
    }
    let metadata = req.get("metadata").cloned().unwrap_or(Value::Null);
    create(
        &sh,
        &cfg,
        Kind::Chat,
        lines,
        Some(file_id.to_string()),
        metadata,
    )
    .await
}

/// `POST /v1/messages/batches`.
pub(super) async fn create_anthropic(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Messages, &headers) {
        return r;
    }
    let Some(requests) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("requests").and_then(Value::as_array).cloned())
    else {
        return bad_request(Kind::Messages, "requests: Field required");
    };
    // Anthropic's requests travel in the creation itself: holding it is holding the upload.
    if hold_upload(&sh, &cfg) {
        return held(&sh, Kind::Messages).await;
    }
    let mut lines = Vec::new();
    for r in requests {
        let (Some(id), Some(params)) =
            (r.get("custom_id").and_then(Value::as_str), r.get("params"))
        else {
            return bad_request(Kind::Messages, "each request needs custom_id and params");
        };
        if max_tokens(params).is_none() {
            return bad_request(Kind::Messages, "params.max_tokens: Field required");
        }
        lines.push((id.to_string(), params.clone()));
    }
    create(&sh, &cfg, Kind::Messages, lines, None, Value::Null).await
}

async fn create(
    sh: &Shared,
    cfg: &ServerConfig,
    kind: Kind,
    lines: Vec<(String, Value)>,
    input_file_id: Option<String>,
    metadata: Value,
) -> Response {
    let mut seen = std::collections::HashSet::new();
    if let Some((dup, _)) = lines.iter().find(|(id, _)| !seen.insert(id.clone())) {
        return bad_request(kind, &format!("duplicate custom_id `{dup}`"));
    }
    if lines.is_empty() {
        return bad_request(kind, "the batch has no requests");
    }
    let (response, lose, hold) = {
        let mut b = lock(sh);
        b.next += 1;
        let id = match kind {
            Kind::Messages => format!("msgbatch_{:06}", b.next),
            _ => format!("batch_{:06}", b.next),
        };
        b.created += 1;
        let fails = b.created <= cfg.batch.fail_first;
        let lose = b.lost < cfg.batch.lose_create_first;
        if lose {
            b.lost += 1;
        }
        let hold = !lose && b.held_created < cfg.batch.hold_created;
        if hold {
            b.held_created += 1;
        }
        sh.counters.update(|s| {
            s.batches_created += 1;
            s.batch_lines += lines.len() as u64;
            for (_, body) in &lines {
                *s.batch_per_prompt.entry(prompt_hash(body)).or_insert(0) += 1;
            }
        });
        let batch = Batch {
            id: id.clone(),
            kind,
            input_file_id,
            metadata,
            lines,
            created: Instant::now(),
            fails,
            cancelled: false,
            ended: None,
        };
        let response = object(&batch, sh, "");
        b.order.push(id.clone());
        b.batches.insert(id, batch);
        (response, lose, hold)
    };
    if hold {
        // Applied, but the answer does not come while the server runs.
        return held(sh, kind).await;
    }
    if lose {
        // Applied, but the answer never arrives: the connection is cut.
        return lost_answer();
    }
    json_response(StatusCode::OK, &response)
}

/// A response whose body fails mid-way (the client sees a transport error).
fn lost_answer() -> Response {
    let stream = futures_util::stream::iter([Err::<Bytes, std::io::Error>(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "answer lost",
    ))]);
    (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
}

/// `GET /v1/batches/{id}`.
pub(super) async fn get_openai(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get(&sh, Kind::Chat, &headers, &id, "")
}

/// `GET /v1/messages/batches/{id}`.
pub(super) async fn get_anthropic(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get(&sh, Kind::Messages, &headers, &id, "")
}

fn get(sh: &Shared, kind: Kind, headers: &HeaderMap, id: &str, _: &str) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, kind, headers) {
        return r;
    }
    sh.counters.update(|s| s.batch_polls += 1);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut b = lock(sh);
    let Some(mut batch) = b.batches.remove(id).filter(|x| x.kind == kind) else {
        return not_found(kind, "batch");
    };
    if batch.ended.is_none() && (batch.cancelled || batch.created.elapsed() >= cfg.batch.latency) {
        batch.ended = Some(finish(sh, &cfg, &mut b, &batch));
    }
    let v = object(&batch, sh, &host);
    b.batches.insert(id.to_string(), batch);
    json_response(StatusCode::OK, &v)
}

/// `POST /v1/batches/{id}/cancel`.
pub(super) async fn cancel_openai(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    cancel(&sh, Kind::Chat, &headers, &id)
}

/// `POST /v1/messages/batches/{id}/cancel`.
pub(super) async fn cancel_anthropic(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    cancel(&sh, Kind::Messages, &headers, &id)
}

/// Marks a batch that has not ended cancelled: its next poll finds it ended with
/// `cancel_done` of its lines done. An ended batch is answered as it is.
fn cancel(sh: &Shared, kind: Kind, headers: &HeaderMap, id: &str) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, kind, headers) {
        return r;
    }
    let mut b = lock(sh);
    let Some(batch) = b.batches.get_mut(id).filter(|x| x.kind == kind) else {
        return not_found(kind, "batch");
    };
    if batch.ended.is_none() && !batch.cancelled {
        batch.cancelled = true;
        sh.counters.update(|s| s.batches_cancelled += 1);
    }
    json_response(StatusCode::OK, &object(batch, sh, ""))
}

/// `GET /v1/batches`: every batch, newest first (404 with `no_list`).
pub(super) async fn list_openai(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Chat, &headers) {
        return r;
    }
    if cfg.batch.no_list {
        return not_found(Kind::Chat, "route");
    }
    let b = lock(&sh);
    let data: Vec<Value> = b
        .order
        .iter()
        .rev()
        .filter_map(|id| b.batches.get(id))
        .filter(|x| x.kind == Kind::Chat)
        .map(|x| object(x, &sh, ""))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": false}),
    )
}

/// `GET /v1/files/{id}/content`.
pub(super) async fn file_content(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Chat, &headers) {
        return r;
    }
    content(&sh, &cfg, Kind::Chat, &id)
}

/// `GET /v1/messages/batches/{id}/results`.
pub(super) async fn results_anthropic(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let cfg = sh.config();
    if let Some(r) = refused(&cfg, Kind::Messages, &headers) {
        return r;
    }
    content(&sh, &cfg, Kind::Messages, &format!("results-{id}"))
}

fn content(sh: &Shared, cfg: &ServerConfig, kind: Kind, file: &str) -> Response {
    let mut b = lock(sh);
    let Some(bytes) = b.files.get(file).cloned() else {
        return not_found(kind, "file");
    };
    if b.vanished < cfg.batch.vanish_first {
        b.vanished += 1;
        return not_found(kind, "file");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jsonl")],
        bytes,
    )
        .into_response()
}

/// The provider's view of a batch.
fn object(batch: &Batch, sh: &Shared, host: &str) -> Value {
    let latency = sh.config().batch.latency;
    let elapsed = batch.created.elapsed();
    let total = batch.lines.len() as u64;
    match batch.kind {
        Kind::Messages => {
            let (status, counts, url) = match &batch.ended {
                Some(e) => (
                    "ended",
                    json!({"processing": 0, "succeeded": e.succeeded, "errored": e.errored,
                           "canceled": e.canceled, "expired": e.expired}),
                    json!(format!(
                        "http://{host}/v1/messages/batches/{}/results",
                        batch.id
                    )),
                ),
                None => (
                    if batch.cancelled {
                        "canceling"
                    } else {
                        "in_progress"
                    },
                    json!({"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}),
                    Value::Null,
                ),
            };
            json!({"id": batch.id, "type": "message_batch", "processing_status": status,
                   "request_counts": counts, "results_url": url})
        }
        _ => {
            let (status, output, errors, completed, failed) = match &batch.ended {
                Some(e) => (
                    e.state,
                    e.output.clone(),
                    e.errors.clone(),
                    e.succeeded,
                    e.errored + e.expired,
                ),
                None if batch.cancelled => ("cancelling", None, None, 0, 0),
                None if elapsed < latency / 3 => ("validating", None, None, 0, 0),
                None => ("in_progress", None, None, 0, 0),
            };
            let mut v = json!({"id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
                   "input_file_id": batch.input_file_id, "completion_window": "24h",
                   "status": status, "output_file_id": output, "error_file_id": errors,
                   "metadata": batch.metadata,
                   "request_counts": {"total": total, "completed": completed, "failed": failed}});
            if status == "failed" {
                v["errors"] = json!({"object": "list", "data": [
                    {"code": "invalid_request", "message": "The batch failed validation (injected).", "line": null}]});
            }
            v
        }
    }
}

/// Answers every line of an ended batch and stores its results files.
fn finish(sh: &Shared, cfg: &ServerConfig, b: &mut Batches, batch: &Batch) -> Ended {
    if batch.fails && batch.kind != Kind::Messages {
        return Ended {
            state: "failed",
            output: None,
            errors: None,
            succeeded: 0,
            errored: 0,
            expired: 0,
            canceled: 0,
        };
    }
    // A cancelled batch did its first `cancel_done` share of lines.
    let done_before_cancel = if batch.cancelled {
        (batch.lines.len() as f64 * cfg.batch.cancel_done.clamp(0.0, 1.0)).floor() as usize
    } else {
        batch.lines.len()
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (mut succeeded, mut errored, mut expired, mut canceled) = (0, 0, 0, 0);
    for (i, (custom_id, body)) in batch.lines.iter().enumerate() {
        let hash = prompt_hash(body);
        let nth = sh
            .counters
            .snapshot()
            .batch_per_prompt
            .get(&hash)
            .copied()
            .unwrap_or(1);
        let fate = if i >= done_before_cancel {
            LineFate::Canceled
        } else if batch.fails {
            LineFate::Errored
        } else {
            let seed = cfg.seed
                ^ u64::from_str_radix(&hash, 16).unwrap_or(0)
                ^ nth.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let u = StdRng::seed_from_u64(seed).random::<f64>();
            if u < cfg.batch.errored {
                LineFate::Errored
            } else if u < cfg.batch.errored + cfg.batch.expired {
                LineFate::Expired
            } else {
                LineFate::Done
            }
        };
        // A line whose schema form the server does not take errors as the online route
        // answers it (counted with the forms online requests carry).
        let line_kind = match batch.kind {
            Kind::Messages => Kind::Messages,
            _ if body.get("prompt").is_some() => Kind::Completion,
            _ => Kind::Chat,
        };
        let refused = super::schema::form_of(line_kind, body).and_then(|form| {
            sh.counters
                .update(|s| *s.schema_forms.entry(form.to_owned()).or_insert(0) += 1);
            super::schema::refused_answer(cfg, line_kind, form)
        });
        if let (Some((status, answer)), LineFate::Done) = (refused, fate) {
            sh.counters.update(|s| s.schema_refused += 1);
            errored += 1;
            err.push(match batch.kind {
                Kind::Messages => json!({"custom_id": custom_id, "result": {"type": "errored", "error": answer}}),
                _ => json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
                            "response": {"status_code": status.as_u16(), "request_id": custom_id, "body": answer},
                            "error": null}),
            });
            continue;
        }
        let line = match (batch.kind, fate) {
            (Kind::Messages, LineFate::Done) => {
                let reply = reply_for(cfg, Kind::Messages, body, custom_id);
                json!({"custom_id": custom_id, "result": {"type": "succeeded",
                       "message": super::anthropic::message(&reply, Some(&reply.text), reply.finish, reply.completion_tokens)}})
            }
            (Kind::Messages, LineFate::Errored) => {
                json!({"custom_id": custom_id, "result": {"type": "errored",
                       "error": {"type": "error", "error": {"type": "api_error", "message": "Internal server error (injected)."}}}})
            }
            (Kind::Messages, LineFate::Expired) => {
                json!({"custom_id": custom_id, "result": {"type": "expired"}})
            }
            (Kind::Messages, LineFate::Canceled) => {
                json!({"custom_id": custom_id, "result": {"type": "canceled"}})
            }
            // OpenAI writes no line for a request a cancelled batch never ran.
            (_, LineFate::Canceled) => Value::Null,
            (_, LineFate::Done) => {
                let reply = reply_for(cfg, Kind::Chat, body, custom_id);
                json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
                       "response": {"status_code": 200, "request_id": custom_id,
                                    "body": reply.whole(&reply.text, reply.finish)},
                       "error": null})
            }
            (_, LineFate::Errored) => {
                json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id,
                       "response": {"status_code": 500, "request_id": custom_id,
                                    "body": super::error_body("The server had an error (injected).", "server_error", None)},
                       "error": null})
            }
            (_, LineFate::Expired) => {
                json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": null,
                       "error": {"code": "batch_expired",
                                 "message": "This request could not be executed before the completion window expired."}})
            }
        };
        match fate {
            LineFate::Done => {
                succeeded += 1;
                out.push(line);
            }
            LineFate::Errored => {
                errored += 1;
                err.push(line);
            }
            LineFate::Expired => {
                expired += 1;
                err.push(line);
            }
            LineFate::Canceled => {
                canceled += 1;
                if !line.is_null() {
                    err.push(line);
                }
            }
        }
    }
    sh.counters.update(|s| s.batch_completed += succeeded);
    // Results come in any order: the done lines are stored last first.
    out.reverse();
    let jsonl = |lines: &[Value]| {
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let state = if batch.cancelled {
        "cancelled"
    } else if expired > 0 {
        "expired"
    } else {
        "completed"
    };
    if batch.kind == Kind::Messages {
        out.extend(err);
        b.files.insert(format!("results-{}", batch.id), jsonl(&out));
        return Ended {
            state: "ended",
            output: None,
            errors: None,
            succeeded,
            errored,
            expired,
            canceled,
        };
    }
    b.next += 1;
    let output = (!out.is_empty()).then(|| format!("file-{}", b.next));
    if let Some(id) = &output {
        b.files.insert(id.clone(), jsonl(&out));
    }
    b.next += 1;
    let errors = (!err.is_empty()).then(|| format!("file-{}", b.next));
    if let Some(id) = &errors {
        b.files.insert(id.clone(), jsonl(&err));
    }
    Ended {
        state,
        output,
        errors,
        succeeded,
        errored,
        expired,
        canceled,
    }
}

/// The reply the online route would give this body.
fn reply_for(cfg: &ServerConfig, kind: Kind, body: &Value, custom_id: &str) -> ReplyShape {
    let mut text = reply_text(&cfg.reply, body);
    let mut finish = Some("stop");
    if cfg.honor_max_tokens
        && let Some(max) = max_tokens(body)
        && count_words(&text) > max
    {
        text = cut_words(&text, max);
        finish = Some("length");
    }
    ReplyShape {
        finish,
        kind,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("atk-testkit")
            .to_owned(),
        id: format!("batchreply-{custom_id}"),
        prompt_tokens: prompt_words(body),
        completion_tokens: count_words(&text),
        cached_tokens: 0,
        cache_written: 0,
        tool: super::schema::forced_tool(kind, body),
        text,
    }
}
