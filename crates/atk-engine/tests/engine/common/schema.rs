//! Structured-output helpers: a schema, a request carrying it, and a server whose reply is a
//! verdict only when the request asked for the schema in some form.

use atk_engine::{Message, OutputSchema, Request};
use atk_testkit::{ReplyMode, SchemaSupport, ServerConfig};
use serde_json::{Value, json};

use super::KEY;

pub const VERDICT: &str = r#"{"verdict": "yes", "reason": "stated plainly"}"#;

pub fn schema() -> OutputSchema {
    OutputSchema::new(
        "check",
        json!({"type": "object",
               "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]},
                              "reason": {"type": "string"}},
               "required": ["verdict", "reason"], "additionalProperties": false}),
    )
}

pub fn ask(n: usize) -> Request {
    Request::chat(vec![
        Message::new("system", "You check answers."),
        Message::new("user", format!("Is answer {n} right?")),
    ])
    .with_param("max_tokens", 100)
    .with_schema(schema())
}

/// The server's reply: the verdict when the request carried a schema in any form, the
/// prompt's stated schema included; otherwise text that is not JSON.
pub fn judge(body: &Value) -> String {
    let text = body.to_string();
    if text.contains("response_format")
        || text.contains("json_schema")
        || text.contains("tool_choice")
        || text.contains("matches this JSON Schema")
    {
        VERDICT.to_string()
    } else {
        "no schema was asked for".to_string()
    }
}

pub fn server_with(support: SchemaSupport) -> ServerConfig {
    ServerConfig::default()
        .with_api_key(KEY)
        .with_schema(support)
        .with_reply(ReplyMode::func(judge))
}

/// Calls `n` requests at once and checks every reply is the verdict.
pub async fn all_answered(engine: &dyn atk_engine::Engine, n: usize) {
    let calls = (0..n).map(|i| engine.call(ask(i)));
    for reply in futures_util::future::join_all(calls).await {
        assert_eq!(reply.unwrap().text, VERDICT);
    }
}
