//! Anthropic's Messages API as the server speaks it: its reply bodies (one `message` or the
//! `message_start` … `message_stop` event stream, shaped by the fault drawn), its rate-limit
//! headers (`anthropic-ratelimit-*`, resets as RFC 3339 times), its 429 and 529 answers, and
//! prompt caching (of what a request marks `cache_control`; on the chat route, OpenAI's
//! automatic caching when `prompt_cache` is on).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::{ReplyShape, Step, streamed};
use super::{Kind, Shared, error_response};
use crate::config::{Fault, Faults, ServerConfig};
use crate::reply::{content_text, count_words, hash16};

/// One named SSE event, as the Messages API sends them.
fn event(name: &str, data: &Value) -> Step {
    Step::Data(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
}

/// The Messages `stop_reason` for the server's finish reason (`stop`, `length`); a whole
/// reply to a forced tool ends `tool_use`.
fn stop_reason(finish: Option<&str>, tool: bool) -> Option<&'static str> {
    match finish? {
        "length" => Some("max_tokens"),
        _ if tool => Some("tool_use"),
        _ => Some("end_turn"),
    }
}

/// The `tool_use` block of a forced tool, its input `text` (as JSON; text that does not parse
/// goes as a JSON string, so the client sees input that does not match its schema).
fn tool_block(reply: &ReplyShape, name: &str, text: Option<&str>) -> Value {
    let input = match text {
        None => json!({}),
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
    };
    json!({"type": "tool_use", "id": format!("toolu_{}", reply.id), "name": name, "input": input})
}

fn usage(reply: &ReplyShape, output_tokens: u64) -> Value {
    json!({
        "input_tokens": reply.prompt_tokens - reply.cached_tokens - reply.cache_written,
        "cache_creation_input_tokens": reply.cache_written,
        "cache_read_input_tokens": reply.cached_tokens,
        "output_tokens": output_tokens,
    })
}

/// The whole `message` object; `text` and `finish` may differ from the real ones.
pub(super) fn message(
    reply: &ReplyShape,
    text: Option<&str>,
    finish: Option<&str>,
    output: u64,
) -> Value {
    let content = match (&reply.tool, text) {
        (Some(name), Some(_)) => vec![tool_block(reply, name, text)],
        (None, Some(t)) => vec![json!({"type": "text", "text": t})],
        (_, None) => Vec::new(),
    };
    let stop = stop_reason(finish, reply.tool.is_some());
    json!({"id": reply.id, "type": "message", "role": "assistant", "model": reply.model,
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": usage(reply, output)})
}

fn overloaded_body() -> Value {
    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
}

/// The event stream for `fault` (None, Stall, ResetMidStream, MalformedSse, CutBeforeDone,
/// ErrorMidStream, NoFinishReason).
pub(super) fn sse_steps(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let pieces = crate::reply::split_pieces(&reply.text, cfg.stream_chunks);
    let half = pieces.len() / 2;
    let mut steps = VecDeque::new();
    steps.push_back(event(
        "message_start",
        &json!({"type": "message_start", "message": message(reply, None, None, 1)}),
    ));
    let block = match &reply.tool {
        Some(name) => tool_block(reply, name, None),
        None => json!({"type": "text", "text": ""}),
    };
    steps.push_back(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    steps.push_back(event("ping", &json!({"type": "ping"})));
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
                    let line = format!(
                        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"text\":\"{}\n\n",
                        piece.len()
                    );
                    steps.push_back(Step::Data(Bytes::from(line)));
                    continue;
                }
                // A clean end of body before message_stop: the text so far looks plausible.
                Fault::CutBeforeDone => return steps,
                Fault::ErrorMidStream => {
                    steps.push_back(event("error", &overloaded_body()));
                    return steps;
                }
                _ => {}
            }
        }
        let delta = match reply.tool {
            Some(_) => json!({"type": "input_json_delta", "partial_json": piece}),
            None => json!({"type": "text_delta", "text": piece}),
        };
        steps.push_back(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    steps.push_back(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    let finish = (fault != Fault::NoFinishReason)
        .then_some(reply.finish)
        .flatten();
    steps.push_back(event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish, reply.tool.is_some()), "stop_sequence": null},
                "usage": {"output_tokens": reply.completion_tokens}}),
    ));
    if fault == Fault::None || fault == Fault::Stall {
        steps.push_back(Step::Completed);
    }
    steps.push_back(event("message_stop", &json!({"type": "message_stop"})));
    steps
}

/// The non-streamed `message` body for `fault`.
pub(super) fn json_steps(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let finish = (fault != Fault::NoFinishReason)
        .then_some(reply.finish)
        .flatten();
    let whole =
        Bytes::from(message(reply, Some(&reply.text), finish, reply.completion_tokens).to_string());
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
            steps.push_back(Step::Data(whole.slice(..half)));
        }
        Fault::ErrorMidStream => {
            steps.push_back(Step::Data(Bytes::from(overloaded_body().to_string())));
        }
        Fault::NoFinishReason => steps.push_back(Step::Data(whole)),
        _ => {
            steps.push_back(Step::Completed);
            steps.push_back(Step::Data(whole));
        }
    }
    steps
}

/// A Messages reply body played step by step (see `body::streamed`).
pub(super) fn body(
    reply: &ReplyShape,
    cfg: &ServerConfig,
    fault: Fault,
    stream: bool,
    tail: super::body::Tail,
) -> axum::body::Body {
    if stream {
        streamed(sse_steps(reply, cfg, fault), tail)
    } else {
        streamed(json_steps(reply, cfg, fault), tail)
    }
}

/// `Retry-After` in whole seconds, rounded up (and `retry-after-ms` when `ms`).
fn insert_retry_after(headers: &mut HeaderMap, wait: Duration, ms: bool) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if ms {
        headers.insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
    }
}

/// An injected 429 in the route's shape, with the configured Retry-After.
pub(super) fn rate_limited(faults: &Faults) -> Response {
    let mut resp = error_response(
        Kind::Messages,
        StatusCode::TOO_MANY_REQUESTS,
        "Number of request tokens has exceeded your per-minute rate limit.",
        ("requests", Some("rate_limit_exceeded")),
        "rate_limit_error",
    );
    if let Some(wait) = faults.retry_after {
        insert_retry_after(resp.headers_mut(), wait, false);
    }
    resp
}

/// A 429 from the token-bucket limit (its headers are added by the caller).
pub(super) fn bucket_refusal() -> Response {
    error_response(
        Kind::Messages,
        StatusCode::TOO_MANY_REQUESTS,
        "This request would exceed your organization's rate limit. Please try again later.",
        ("requests", Some("rate_limit_exceeded")),
        "rate_limit_error",
    )
}

/// An injected overload: 529 `overloaded_error` (Messages) or 503 (OpenAI), with the
/// configured Retry-After.
pub(super) fn overloaded(kind: Kind, faults: &Faults) -> Response {
    let status = match kind {
        Kind::Messages => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        Kind::Chat | Kind::Completion => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = error_response(
        kind,
        status,
        "The server is currently overloaded, please try again later.",
        ("server_error", None),
        "overloaded_error",
    );
    if let Some(wait) = faults.retry_after {
        insert_retry_after(resp.headers_mut(), wait, faults.retry_after_ms);
    }
    resp
}

/// The `x-ratelimit-*` headers of the token bucket as Anthropic sends them:
/// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, each reset the RFC 3339
/// time the bucket is full again; `Retry-After` kept, `retry-after-ms` dropped.
pub(super) fn limit_headers(openai: HeaderMap) -> HeaderMap {
    let now = SystemTime::now();
    let mut out = HeaderMap::new();
    for (name, value) in &openai {
        let name = name.as_str();
        let Some(rest) = name.strip_prefix("x-ratelimit-") else {
            if name == header::RETRY_AFTER.as_str() {
                out.insert(header::RETRY_AFTER, value.clone());
            }
            continue;
        };
        // `limit-requests` -> `requests-limit`.
        let Some((what, bucket)) = rest.split_once('-') else {
            continue;
        };
        let value = if what == "reset" {
            let Some(d) = value.to_str().ok().and_then(parse_go_duration) else {
                continue;
            };
            match HeaderValue::from_str(&rfc3339(now + d)) {
                Ok(v) => v,
                Err(_) => continue,
            }
        } else {
            value.clone()
        };
        if let Ok(name) =
            HeaderName::from_bytes(format!("anthropic-ratelimit-{bucket}-{what}").as_bytes())
        {
            out.insert(name, value);
        }
    }
    out
}

/// The durations `rate::go_duration` writes: `20ms`, `0.36s`, `6m0s`, `1h2m3s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(Duration::from_millis);
    }
    let mut secs = 0.0;
    let mut rest = text;
    for (unit, scale) in [('h', 3600.0), ('m', 60.0), ('s', 1.0)] {
        if let Some((n, tail)) = rest.split_once(unit) {
            secs += n.parse::<f64>().ok()? * scale;
            rest = tail;
        }
    }
    (rest.is_empty() && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

/// `t` as an RFC 3339 UTC time with milliseconds: `2026-12-06T10:32:05.250Z`.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The civil date of a day count (proleptic Gregorian, the usual era arithmetic).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The prompt words read from and written to the cache for this request: `(read, written)`.
///
/// Messages: the prefix up to the block marked `cache_control` is cached; the first request
/// with a prefix writes it, later ones read it. Chat (when `prompt_cache`): every message but
/// the last, read when sent before (OpenAI writes its cache for free).
pub(super) fn cache_usage(sh: &Shared, cfg: &ServerConfig, kind: Kind, body: &Value) -> (u64, u64) {
    let prefix = match kind {
        Kind::Messages => marked_prefix(body),
        Kind::Chat if cfg.prompt_cache => chat_prefix(body),
        _ => None,
    };
    let Some(prefix) = prefix else { return (0, 0) };
    let words = count_words(&prefix);
    let fresh = sh
        .cached
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(hash16(&prefix));
    match (fresh, kind) {
        (false, _) => (words, 0),
        (true, Kind::Messages) => (0, words),
        (true, _) => (0, 0),
    }
}

fn has_mark(content: &Value) -> bool {
    content
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("cache_control").is_some()))
}

/// The prompt text (as `prompt_text` writes it) up to and including the last marked block.
fn marked_prefix(body: &Value) -> Option<String> {
    let mut text = String::new();
    let mut upto = None;
    if let Some(system) = body.get("system") {
        text.push_str("system: ");
        text.push_str(&content_text(Some(system)));
        text.push('\n');
        if has_mark(system) {
            upto = Some(text.len());
        }
    }
    for m in body.get("messages")?.as_array()? {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        text.push_str(role);
        text.push_str(": ");
        text.push_str(&content_text(m.get("content")));
        text.push('\n');
        if m.get("content").is_some_and(has_mark) {
            upto = Some(text.len());
        }
    }
    upto.map(|n| text[..n].to_string())
}

/// The prompt text of every chat message but the last (none for a single message).
fn chat_prefix(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let (_, head) = messages.split_last()?;
    if head.is_empty() {
        return None;
    }
    let mut text = String::new();
    for m in head {
        text.push_str(m.get("role").and_then(Value::as_str).unwrap_or(""));
        text.push_str(": ");
        text.push_str(&content_text(m.get("content")));
        text.push('\n');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_445_412_480_250)),
            "2015-10-21T07:28:00.250Z"
        );
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("0.36s"), Some(Duration::from_millis(360)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn the_marked_prefix_ends_at_the_mark() {
        let body = json!({"system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
                          "messages": [{"role": "user", "content": "hello there"}]});
        assert_eq!(marked_prefix(&body).as_deref(), Some("system: be brief\n"));
        let body = json!({"system": "be brief", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "ex", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "item"}]});
        assert_eq!(
            marked_prefix(&body).as_deref(),
            Some("system: be brief\nuser: ex\n")
        );
        let unmarked =
            json!({"system": "be brief", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(marked_prefix(&unmarked), None);
    }
}
