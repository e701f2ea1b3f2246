//! One request, from arrival to the response head: the key, the rate limit, the context
//! limit, the fault drawn for it, queueing and latency, then the reply's body.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::anthropic;
use super::body::{ReplyShape, Tail, json_body, sse_body};
use super::rate::{rate_limit_refusal, rate_limited, take_rate_limit};
use super::schema;
use super::{Kind, Shared, error_body, error_response, json_response, key_ok, unauthorized};
use crate::config::{Fault, ServerConfig};
use crate::reply::{count_words, hash16, prompt_hash, prompt_words, reply_text};
use crate::stats::InFlight;

/// One request, from arrival to the response head; the body (with the in-flight guard and the
/// serial permit) outlives this function.
pub(super) async fn handle(
    sh: Arc<Shared>,
    kind: Kind,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
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
    if !key_ok(cfg, kind, headers) {
        sh.counters.update(|s| s.rejected_auth += 1);
        return unauthorized(kind);
    }
    let bad_request = |message: &str| {
        error_response(
            kind,
            StatusCode::BAD_REQUEST,
            message,
            ("invalid_request_error", None),
            "invalid_request_error",
        )
    };
    if kind == Kind::Messages && !headers.contains_key("anthropic-version") {
        return bad_request("anthropic-version: header is required");
    }
    let Some(body) = parsed.filter(Value::is_object) else {
        return bad_request("The request body is not a JSON object.");
    };
    if kind == Kind::Messages && max_tokens(&body).is_none() {
        return bad_request("max_tokens: Field required");
    }
    let (limit_headers, refused) = take_rate_limit(sh, cfg, &body);
    let limit_headers = match kind {
        Kind::Messages => anthropic::limit_headers(limit_headers),
        Kind::Chat | Kind::Completion => limit_headers,
    };
    if refused {
        sh.counters.update(|s| s.rate_limited += 1);
        let mut resp = match kind {
            Kind::Messages => anthropic::bucket_refusal(),
            Kind::Chat | Kind::Completion => rate_limit_refusal(&limit_headers),
        };
        resp.headers_mut().extend(limit_headers);
        return resp;
    }
    if let Some(form) = schema::form_of(kind, &body) {
        sh.counters
            .update(|s| *s.schema_forms.entry(form.to_owned()).or_insert(0) += 1);
        if let Some(refusal) = schema::refusal(cfg, kind, form) {
            sh.counters.update(|s| s.schema_refused += 1);
            return refusal;
        }
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
        if prompt + max_tokens > limit && kind == Kind::Messages {
            return error_response(
                kind,
                StatusCode::BAD_REQUEST,
                &format!(
                    "prompt is too long: {} tokens > {limit} maximum",
                    prompt + max_tokens
                ),
                ("invalid_request_error", None),
                "invalid_request_error",
            );
        }
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
        Fault::Unauthorized => return unauthorized(kind),
        Fault::RateLimit if kind == Kind::Messages => {
            return anthropic::rate_limited(&cfg.faults);
        }
        Fault::RateLimit => return rate_limited(&cfg.faults),
        Fault::Overloaded => return anthropic::overloaded(kind, &cfg.faults),
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
    if cfg.broken_first > 0 {
        let mut t = sh.counters.lock();
        if t.broken_pos < cfg.broken_first {
            t.broken_pos += 1;
            t.stats.broken_replies += 1;
            drop(t);
            sh.counters.changed();
            text = schema::broken(&text);
        }
    }
    let mut finish = (fault != Fault::NoFinishReason).then_some("stop");
    if cfg.honor_max_tokens
        && let Some(max) = max_tokens(&body)
        && count_words(&text) > max
    {
        text = cut_words(&text, max);
        finish = Some("length");
    }
    let (cached_tokens, cache_written) = anthropic::cache_usage(sh, cfg, kind, &body);
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
            match kind {
                Kind::Chat => "chatcmpl",
                Kind::Completion => "cmpl",
                Kind::Messages => "msg",
            }
        ),
        prompt_tokens: prompt_words(&body),
        completion_tokens: count_words(&text),
        cached_tokens,
        cache_written,
        tool: schema::forced_tool(kind, &body),
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
        Fault::ServerError => error_response(
            kind,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            ("server_error", None),
            "api_error",
        ),
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1>upstream sent nonsense</body></html>",
        )
            .into_response(),
        _ if kind == Kind::Messages => {
            let body = anthropic::body(&reply, cfg, fault, stream, tail);
            let content_type = if stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            let mut resp = body.into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        _ if stream => {
            let mut resp = sse_body(&reply, cfg, fault, tail).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        _ => {
            let mut resp = json_body(&reply, cfg, fault, tail).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

/// The request's `max_tokens` (or `max_completion_tokens`).
pub(super) fn max_tokens(body: &Value) -> Option<u64> {
    body.get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
}

/// The first `n` whitespace-separated words of `text`, with the spacing between them kept.
pub(super) fn cut_words(text: &str, n: u64) -> String {
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

pub(super) fn shutting_down() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &error_body("The test server is shutting down.", "server_error", None),
    )
}
