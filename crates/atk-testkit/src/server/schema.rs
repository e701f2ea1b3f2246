//! Structured output as servers differ on it: which schema form a request carries (counted in
//! `Stats::schema_forms`), the refusals of a server that does not take a form (llama-cpp-python's
//! HTTP 500 naming `response_format`, or a 400 for every form; online, and as a batch's errored
//! line), and broken JSON first.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Kind, error_json, json_response};
use crate::config::{SchemaSupport, ServerConfig};

/// The schema form a request body carries: `json_schema` / `json_object` (OpenAI
/// `response_format` with a schema), `completion_json_schema` (llama.cpp's completion field),
/// `tool` (Anthropic, a forced tool), or `None`.
pub(super) fn form_of(kind: Kind, body: &Value) -> Option<&'static str> {
    match kind {
        Kind::Messages => {
            let forced = body
                .pointer("/tool_choice/type")
                .and_then(Value::as_str)
                .is_some_and(|t| t == "tool");
            (forced && body.get("tools").is_some()).then_some("tool")
        }
        Kind::Chat | Kind::Completion => {
            if let Some(format) = body.get("response_format") {
                return match format.get("type").and_then(Value::as_str) {
                    Some("json_schema") => Some("json_schema"),
                    Some("json_object") if format.get("schema").is_some() => Some("json_object"),
                    _ => None,
                };
            }
            (kind == Kind::Completion && body.get("json_schema").is_some())
                .then_some("completion_json_schema")
        }
    }
}

/// The refusal `cfg` answers a request carrying `form` with, if it refuses it.
pub(super) fn refusal(cfg: &ServerConfig, kind: Kind, form: &str) -> Option<Response> {
    refused_answer(cfg, kind, form).map(|(status, body)| json_response(status, &body))
}

/// The status and body of [`refusal`]: what a batch line refusing `form` carries too.
pub(super) fn refused_answer(
    cfg: &ServerConfig,
    kind: Kind,
    form: &str,
) -> Option<(StatusCode, Value)> {
    match (cfg.schema, form) {
        (SchemaSupport::All, _) => None,
        // llama-cpp-python 0.3: pydantic refuses the type inside the handler, answered as a 500.
        (SchemaSupport::LlamaCppPython, "json_schema") => Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {
                "message": "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be 'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]",
                "type": "internal_server_error", "param": null, "code": null}}),
        )),
        (SchemaSupport::LlamaCppPython, _) => None,
        (SchemaSupport::Refused, _) => {
            let what = match form {
                "tool" => "tools: tool use is not supported by this model",
                "completion_json_schema" => "json_schema: not supported by this server",
                _ => "response_format: only `text` is supported by this server",
            };
            Some((
                StatusCode::BAD_REQUEST,
                error_json(
                    kind,
                    what,
                    ("invalid_request_error", None),
                    "invalid_request_error",
                ),
            ))
        }
    }
}

/// The name of the forced tool of a Messages request, when one is forced.
pub(super) fn forced_tool(kind: Kind, body: &Value) -> Option<String> {
    if form_of(kind, body) != Some("tool") {
        return None;
    }
    body.pointer("/tool_choice/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `text` cut at half its characters: what a model that loses the thread sends (for JSON, a
/// reply that does not parse).
pub(super) fn broken(text: &str) -> String {
    let n = text.chars().count() / 2;
    text.chars().take(n).collect()
}
