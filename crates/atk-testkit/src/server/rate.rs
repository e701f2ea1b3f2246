//! Rate limits as a provider enforces them: injected 429s, and a token bucket with
//! OpenAI-style `x-ratelimit-*` headers.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::decide::max_tokens;
use super::{Shared, error_body, json_response};
use crate::config::{Faults, ServerConfig};
use crate::reply::prompt_words;

/// A 429 from the fault injection, with the Retry-After it is set to send.
pub(super) fn rate_limited(faults: &Faults) -> Response {
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
pub(super) struct Buckets {
    requests: f64,
    tokens: f64,
    last: tokio::time::Instant,
    /// When each request admitted within the stated window was admitted (only when the
    /// headers state a limit other than the bucket).
    admitted: VecDeque<tokio::time::Instant>,
}

/// Takes one request (and its tokens) from the rate limit's buckets: the `x-ratelimit-*`
/// headers to send (empty without a limit or with headers off) and whether it was refused
/// (then `retry-after-ms` is among the headers and nothing was taken).
pub(super) fn take_rate_limit(sh: &Shared, cfg: &ServerConfig, body: &Value) -> (HeaderMap, bool) {
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
        admitted: VecDeque::new(),
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
    // A stated limit: what is left of it over its window, and the time its stated rate takes
    // to refill what was used (OpenAI's `reset`), whatever the bucket enforces.
    let stated = rl.stated.map(|st| {
        let window = st.window.max(Duration::from_millis(1));
        while b
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            b.admitted.pop_front();
        }
        if !refused {
            b.admitted.push_back(now);
        }
        let level = st.limit.saturating_sub(b.admitted.len() as u64) as f64;
        (st.limit, level, window.as_secs_f64())
    });
    if rl.headers {
        let (req_size, req_level, req_period) = stated.unwrap_or((rl.requests, b.requests, period));
        for (name, size, level, period) in [
            ("requests", req_size, req_level, req_period),
            ("tokens", rl.tokens, b.tokens, period),
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
pub(super) fn rate_limit_refusal(_headers: &HeaderMap) -> Response {
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
pub(super) fn go_duration(d: Duration) -> String {
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
