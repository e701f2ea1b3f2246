//! Anthropic's Messages API, natively: the request body (`system` apart from the messages, the
//! shared prefix marked `cache_control` when prompt caching is on), the reply as content blocks
//! (one JSON body or the stream of `message_start` … `message_stop` events), `stop_reason`
//! mapped onto OpenAI's finish reasons, usage with cache reads and writes, and the
//! `anthropic-ratelimit-*` headers read into the same [`LimitHeaders`] the pacer takes from
//! OpenAI's `x-ratelimit-*`.
//!
//! A request's output schema goes as a forced tool (`tools: [{name, description,
//! input_schema}]`, `tool_choice: {type: tool, name}`); the reply's `tool_use` block's `input`
//! (streamed as `input_json_delta` pieces) becomes the reply text, as JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};

use super::message::{error_text, quote};
use super::wire::Parsed;
use super::{DRAIN_GRACE, Http};
use crate::pace::{Bucket, LimitHeaders};
use crate::timeout::BodyError;
use crate::{Error, Message, Request, TransientKind, Usage};

/// The `anthropic-version` header sent with every request.
pub(super) const VERSION: &str = "2023-06-01";

/// `max_tokens` when the step sets none: the Messages API requires one.
pub(super) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Params of OpenAI's API that the Messages API does not know (it refuses unknown keys), or
/// that atk renders itself. Dropped from the body.
const NOT_SENT: [&str; 17] = [
    "model",
    "messages",
    "prompt",
    "system",
    "stream",
    "use_stop",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "stream_options",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "n",
    "seed",
    "logit_bias",
];

/// The request body of one Messages call.
pub(super) struct Body<'a> {
    pub(super) model: &'a str,
    pub(super) messages: &'a [Message],
    pub(super) request: &'a Request,
    pub(super) stream: bool,
    /// Mark the request's shared prefix `cache_control: {type: ephemeral}`.
    pub(super) cache: bool,
    /// Send the request's output schema as a forced tool.
    pub(super) tool: bool,
}

impl Body<'_> {
    /// The index of the message that closes the shared prefix, when it is to be marked.
    fn cache_mark(&self) -> Option<usize> {
        let n = self.request.shared_prefix.min(self.messages.len());
        (self.cache && n > 0).then(|| n - 1)
    }
}

fn text_block(text: &str, mark: bool) -> Value {
    if mark {
        json!({"type": "text", "text": text, "cache_control": {"type": "ephemeral"}})
    } else {
        json!({"type": "text", "text": text})
    }
}

impl serde::Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let params = &self.request.params;
        let mark = self.cache_mark();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        let max_tokens = params
            .get("max_tokens")
            .or_else(|| params.get("max_completion_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        map.serialize_entry("max_tokens", &max_tokens)?;
        // Every system message goes into `system`, one text block each, in order.
        let system: Vec<Value> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == "system")
            .map(|(i, m)| text_block(&m.content, mark == Some(i)))
            .collect();
        if !system.is_empty() {
            map.serialize_entry("system", &system)?;
        }
        let messages: Vec<Value> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role != "system")
            .map(|(i, m)| {
                if mark == Some(i) {
                    json!({"role": m.role, "content": [text_block(&m.content, true)]})
                } else {
                    json!({"role": m.role, "content": m.content})
                }
            })
            .collect();
        map.serialize_entry("messages", &messages)?;
        map.serialize_entry("stream", &self.stream)?;
        let use_stop = params
            .get("use_stop")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if use_stop && let Some(stop) = params.get("stop") {
            match stop {
                Value::String(s) => map.serialize_entry("stop_sequences", &[s])?,
                Value::Array(_) => map.serialize_entry("stop_sequences", stop)?,
                _ => {}
            }
        }
        let tool = self.request.schema.as_ref().filter(|_| self.tool);
        if let Some(schema) = tool {
            let description = "Records the reply. Its input is the whole reply.";
            map.serialize_entry(
                "tools",
                &[json!({"name": schema.name, "description": description,
                         "input_schema": schema.schema})],
            )?;
            map.serialize_entry("tool_choice", &json!({"type": "tool", "name": schema.name}))?;
        }
        for (key, value) in params {
            let rendered = tool.is_some() && matches!(key.as_str(), "tools" | "tool_choice");
            if !NOT_SENT.contains(&key.as_str()) && !rendered {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// OpenAI's finish reason for an Anthropic `stop_reason`: `end_turn` and `stop_sequence` are a
/// whole reply (`stop`), `max_tokens` is `length`; `pause_turn` is not an end (`None`: the
/// reply is incomplete and retried); others pass through.
pub(super) fn finish_reason(stop_reason: &str) -> Option<String> {
    match stop_reason {
        "end_turn" | "stop_sequence" => Some("stop".to_string()),
        "max_tokens" => Some("length".to_string()),
        "tool_use" => Some("tool_calls".to_string()),
        "refusal" => Some("content_filter".to_string()),
        "pause_turn" | "" => None,
        other => Some(other.to_string()),
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Later figures win field by field (`message_delta` repeats some cumulatively).
    fn merge(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// atk's usage: `input_tokens` counts only what follows the last cache mark, so the
    /// prompt is all three.
    fn usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + read + written,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_prompt_tokens: read,
            cache_write_tokens: written,
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// A `tool_use` block's input (the reply of a forced-tool request).
    #[serde(default)]
    input: Option<Value>,
}

/// A whole (non-streamed) reply, or the `message` of `message_start`.
#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// An `input_json_delta`'s piece of a tool's input.
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// One stream event's data.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

impl Http {
    /// Reads a Messages stream. Whole only once `message_stop` arrived: a stream that ends
    /// before it is an incomplete reply, whatever text it carried.
    pub(super) async fn read_anthropic_sse(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<Parsed, Error> {
        let body = std::pin::pin!(body);
        let mut events = super::sse::Events::new(body);
        let mut acc = Parsed::default();
        let mut usage = WireUsage::default();
        let mut seen_usage = false;
        let mut events_seen = 0usize;
        let mut stopped = false;
        // A `tool_use` block's input, pieced together: the reply when a tool was forced.
        let mut tool_input: Option<String> = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(super::sse::SseError::Transport(e)) => {
                    return Err(self.body_error(e, events_seen));
                }
                Err(e) => {
                    return Err(self.transient(
                        TransientKind::Malformed,
                        format!("unreadable SSE stream: {e}"),
                    ));
                }
            };
            events_seen += 1;
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            let parsed: WireEvent = serde_json::from_str(data).map_err(|_| {
                self.transient(
                    TransientKind::Malformed,
                    format!("SSE data line is not a Messages event: {}", quote(data)),
                )
            })?;
            match parsed.kind.as_str() {
                "message_start" => {
                    if let Some(m) = parsed.message {
                        acc.model = m.model.filter(|m| !m.is_empty());
                        if let Some(u) = m.usage {
                            usage.merge(u);
                            seen_usage = true;
                        }
                    }
                }
                "content_block_start" => match parsed.content_block {
                    Some(block) if block.kind == "text" => {
                        if let Some(text) = block.text {
                            acc.text.push_str(&text);
                        }
                    }
                    Some(block) if block.kind == "tool_use" => {
                        tool_input.get_or_insert_default();
                    }
                    _ => {}
                },
                "content_block_delta" => match parsed.delta {
                    Some(delta) if delta.kind == "text_delta" => {
                        if let Some(text) = delta.text {
                            acc.text.push_str(&text);
                        }
                    }
                    Some(delta) if delta.kind == "input_json_delta" => {
                        if let Some(piece) = delta.partial_json {
                            tool_input.get_or_insert_default().push_str(&piece);
                        }
                    }
                    _ => {}
                },
                "message_delta" => {
                    if let Some(reason) = parsed.delta.and_then(|d| d.stop_reason) {
                        acc.finish_reason = finish_reason(&reason);
                    }
                    if let Some(u) = parsed.usage {
                        usage.merge(u);
                        seen_usage = true;
                    }
                }
                "message_stop" => {
                    stopped = true;
                    let drain = async { while let Some(Ok(_)) = events.next().await {} };
                    let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
                    break;
                }
                "error" => {
                    let error = parsed.error.unwrap_or(Value::Null);
                    return Err(self.transient(
                        TransientKind::ServerError,
                        format!(
                            "error event mid-stream: {}",
                            self.key.scrub(&error_text(&error))
                        ),
                    ));
                }
                // `ping`, `content_block_stop` and event types added later.
                _ => {}
            }
        }
        if events_seen == 0 {
            return Err(self.transient(TransientKind::Malformed, "empty reply body (no SSE event)"));
        }
        if !stopped {
            return Err(self.transient(
                TransientKind::Incomplete,
                format!("stream ended after {events_seen} events without message_stop"),
            ));
        }
        if seen_usage {
            acc.usage = Some(usage.usage());
        }
        if let Some(input) = tool_input {
            // A tool called with no input streams no piece: its input is `{}`.
            acc.text = if input.trim().is_empty() {
                "{}".to_string()
            } else {
                input
            };
        }
        Ok(acc)
    }

    /// Reads one Messages JSON body (`"type": "message"`).
    pub(super) fn parse_anthropic_json(&self, text: &str) -> Result<Parsed, Error> {
        let value: Value = serde_json::from_str(text).map_err(|_| {
            self.transient(
                TransientKind::Malformed,
                format!("reply is not JSON: {}", quote(text)),
            )
        })?;
        if let Some(error) = value.get("error") {
            return Err(self.transient(
                TransientKind::Malformed,
                format!(
                    "error object in reply: {}",
                    self.key.scrub(&error_text(error))
                ),
            ));
        }
        if value.get("content").is_none() {
            return Err(self.transient(
                TransientKind::Malformed,
                format!("reply has no content: {}", quote(text)),
            ));
        }
        let message: WireMessage = serde_json::from_value(value).map_err(|e| {
            self.transient(
                TransientKind::Malformed,
                format!("reply is not a message ({e}): {}", quote(text)),
            )
        })?;
        // A forced tool's input is the reply; otherwise the text blocks are.
        let tool = message
            .content
            .iter()
            .find(|b| b.kind == "tool_use")
            .map(|b| b.input.clone().unwrap_or_else(|| json!({})).to_string());
        Ok(Parsed {
            text: tool.unwrap_or_else(|| {
                message
                    .content
                    .into_iter()
                    .filter(|b| b.kind == "text")
                    .filter_map(|b| b.text)
                    .collect()
            }),
            finish_reason: message.stop_reason.as_deref().and_then(finish_reason),
            usage: message.usage.map(WireUsage::usage),
            model: message.model.filter(|m| !m.is_empty()),
        })
    }
}

/// The `anthropic-ratelimit-*` headers as the pacer's buckets: `requests`, and `tokens` (or,
/// without it, `input-tokens`). Each `reset` is an RFC 3339 time, measured from `now` on the
/// local clock.
pub(super) fn limit_headers(headers: &HeaderMap, now: SystemTime) -> LimitHeaders {
    let bucket = |name: &str| {
        let get = |what: &str| {
            headers
                .get(format!("anthropic-ratelimit-{name}-{what}"))?
                .to_str()
                .ok()
                .map(str::trim)
        };
        let reset_at = parse_rfc3339(get("reset")?)?;
        Some(Bucket {
            limit: get("limit")?.parse().ok().filter(|v: &f64| *v > 0.0)?,
            remaining: get("remaining")?.parse().ok().filter(|v: &f64| *v >= 0.0)?,
            reset: reset_at
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(86_400)),
        })
    };
    LimitHeaders {
        requests: bucket("requests"),
        tokens: bucket("tokens").or_else(|| bucket("input-tokens")),
    }
}

/// An RFC 3339 time (`2026-12-06T10:32:05Z`, `…05.250Z`, `…05+01:00`). Hand-written: the one
/// format Anthropic's reset headers use does not warrant a date crate in the engine.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(b.get(range)?).ok()?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i]).ok()?;
        if digits.is_empty() {
            return None;
        }
        let padded: String = digits.chars().chain("000000000".chars()).take(9).collect();
        nanos = padded.parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (the usual era arithmetic).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset * 60;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn body(request: &Request, cache: bool) -> Value {
        let crate::Prompt::Chat(messages) = &request.prompt else {
            panic!("chat only")
        };
        let b = Body {
            model: "claude",
            messages,
            request,
            stream: true,
            cache,
            tool: false,
        };
        serde_json::to_value(&b).unwrap()
    }

    fn few_shot() -> Request {
        Request::chat(vec![
            Message::new("system", "You write poems."),
            Message::new("user", "Example: the sea"),
            Message::new("assistant", "Waves."),
            Message::new("user", "Now: the moon"),
        ])
    }

    #[test]
    fn system_goes_apart_and_params_are_translated() {
        let req = few_shot()
            .with_param("temperature", 0.5)
            .with_param("stop", "###")
            .with_param("min_p", 0.1)
            .with_param("max_tokens", 300);
        let b = body(&req, false);
        assert_eq!(b["model"], "claude");
        assert_eq!(b["system"][0]["text"], "You write poems.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 3);
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["messages"][2]["content"], "Now: the moon");
        assert_eq!(b["stop_sequences"][0], "###");
        assert_eq!(b["max_tokens"], 300);
        assert_eq!(b["temperature"], 0.5);
        assert!(b.get("min_p").is_none() && b.get("stop").is_none());
        assert!(!b.to_string().contains("cache_control"));
        // max_tokens is required by the API: a default is sent.
        let b = body(&few_shot().with_param("use_stop", false), false);
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(b.get("use_stop").is_none());
    }

    #[test]
    fn the_shared_prefix_is_marked_once_when_caching() {
        // System + one example pair shared: the mark goes on the example's answer.
        let req = few_shot().with_shared_prefix(3);
        let b = body(&req, true);
        assert_eq!(b.to_string().matches("cache_control").count(), 1);
        assert_eq!(
            b["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(b["messages"][1]["content"][0]["text"], "Waves.");
        // Only the system prompt shared: the mark goes on its block.
        let b = body(&few_shot().with_shared_prefix(1), true);
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(b.to_string().matches("cache_control").count(), 1);
        // Caching off, or no shared prefix: no mark.
        assert!(!body(&req, false).to_string().contains("cache_control"));
        assert!(
            !body(&few_shot(), true)
                .to_string()
                .contains("cache_control")
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason("end_turn").as_deref(), Some("stop"));
        assert_eq!(finish_reason("stop_sequence").as_deref(), Some("stop"));
        assert_eq!(finish_reason("max_tokens").as_deref(), Some("length"));
        assert_eq!(finish_reason("pause_turn"), None);
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_in_the_prompt() {
        let u: WireUsage = serde_json::from_str(
            r#"{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":90}"#,
        )
        .unwrap();
        let u = u.usage();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_prompt_tokens,
                u.cache_write_tokens,
                u.completion_tokens
            ),
            (1820, 1800, 0, 90)
        );
    }

    #[test]
    fn rfc3339_times() {
        let at = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(at("2015-10-21T07:28:00Z"), Some(1_445_412_480.0));
        assert_eq!(at("2015-10-21T07:28:00.250Z"), Some(1_445_412_480.25));
        assert_eq!(at("2015-10-21T09:28:00+02:00"), Some(1_445_412_480.0));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        for bad in [
            "",
            "2015-10-21",
            "2015-13-01T00:00:00Z",
            "2015-10-21T07:28:00",
            "soon",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn rate_limit_headers_become_buckets() {
        let mut h = HeaderMap::new();
        let reset = httpdate_free_rfc3339(SystemTime::now() + Duration::from_secs(30));
        for (k, v) in [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        h.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_str(&reset).unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-input-tokens-reset",
            HeaderValue::from_str(&reset).unwrap(),
        );
        let l = limit_headers(&h, SystemTime::now());
        let r = l.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (50.0, 0.0));
        assert!(r.reset > Duration::from_secs(28) && r.reset <= Duration::from_secs(30));
        assert_eq!(l.tokens.unwrap().limit, 40_000.0);
        assert!(l.used_up(1.0), "no request left: the limit is used up");
        assert_eq!(
            limit_headers(&HeaderMap::new(), SystemTime::now()),
            LimitHeaders::default()
        );
    }

    /// `t` as RFC 3339 in UTC (test only; whole seconds).
    fn httpdate_free_rfc3339(t: SystemTime) -> String {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since the epoch (inverse of the parser's arithmetic).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}
