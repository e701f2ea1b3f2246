//! What a server said, as atk quotes it: the human part of an error body, shortened, and
//! the error chain of a transport failure.

use reqwest::StatusCode;

/// How much of an error body or malformed line is quoted in an error message.
const QUOTE_CHARS: usize = 300;

/// True when a 400/422 body names `stream_options` (e.g. pydantic's `extra_forbidden` with
/// `"loc": ["body", "stream_options"]`): the server does not know the key.
pub(super) fn rejects_stream_options(status: StatusCode, body: &str) -> bool {
    matches!(status.as_u16(), 400 | 422) && body.contains("stream_options")
}

/// The human part of an error body: `error.message`, `error` as text, `message`, `detail`, or the
/// body itself, shortened.
pub(super) fn server_message(body: &str) -> String {
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

pub(super) fn error_text(error: &serde_json::Value) -> String {
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

pub(super) fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(QUOTE_CHARS).collect();
    format!("{cut}…")
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
