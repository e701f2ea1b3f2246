//! Requests and replies: the engine's serialization-free vocabulary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What is sent: a chat conversation or a completion prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// `/chat/completions` with these messages.
    Chat(Vec<Message>),
    /// `/completions` with this prompt text.
    Completion(String),
}

/// One call to an engine: the prompt plus sampling params passed through verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling params (temperature, top_p, max_tokens, stop, min_p, any extra key), sent as
    /// given; a boolean `stream` here overrides the engine's streaming for this call.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Optional reply template used only by the mock engine (ignored by real endpoints).
    pub mock_reply: Option<String>,
    /// How many leading chat messages are the same for every item of the step (the system
    /// prompt and few-shot examples): what an engine with `prompt_cache` marks cacheable.
    /// 0 = none.
    #[serde(default)]
    pub shared_prefix: usize,
    /// The JSON Schema the reply must match, if any: the HTTP engine asks the server to enforce
    /// it in the form the endpoint takes (see [`OutputSchema`]); the mock ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<OutputSchema>,
}

/// A structured-output request: the reply must be one JSON value matching `schema`.
///
/// The HTTP engine renders it per dialect and remembers, per endpoint, the first form the
/// server accepts: OpenAI-compatible chat `response_format: {type: json_schema, json_schema:
/// {name, strict, schema}}`, then `{type: json_object, schema}` (llama-cpp-python), then none
/// (the schema stated in the prompt, with one warning); completion mode llama.cpp's
/// `json_schema` field, then the prompt; Anthropic a forced tool whose `input_schema` is the
/// schema (the tool's input becomes the reply text), then the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// A name for it (`[A-Za-z0-9_-]`, at most 64): OpenAI's `json_schema.name`, Anthropic's
    /// tool name.
    pub name: String,
    /// The JSON Schema (the root an object schema, as OpenAI and Anthropic require).
    pub schema: serde_json::Value,
}

impl OutputSchema {
    /// A schema named `name` (characters outside `[A-Za-z0-9_-]` become `_`, cut at 64).
    pub fn new(name: &str, schema: serde_json::Value) -> Self {
        let mut clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if clean.is_empty() {
            clean.push_str("reply");
        }
        Self {
            name: clean,
            schema,
        }
    }

    /// True when OpenAI's strict mode can take the schema: every object lists all its
    /// properties as required and allows no others.
    pub fn strict_compatible(&self) -> bool {
        fn check(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                        let required: Vec<&str> = map
                            .get("required")
                            .and_then(|r| r.as_array())
                            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
                            .unwrap_or_default();
                        let closed = map.get("additionalProperties")
                            == Some(&serde_json::Value::Bool(false));
                        if !closed || props.keys().any(|k| !required.contains(&k.as_str())) {
                            return false;
                        }
                    }
                    map.values().all(check)
                }
                serde_json::Value::Array(list) => list.iter().all(check),
                _ => true,
            }
        }
        check(&self.schema)
    }

    /// The instruction appended to a prompt when the server enforces no schema: reply with
    /// one JSON value matching it, nothing else.
    pub fn instruction(&self) -> String {
        format!(
            "Reply with only one JSON object that matches this JSON Schema, and no other text:\n{}",
            self.schema
        )
    }
}

impl Request {
    /// A chat request with no params.
    pub fn chat(messages: Vec<Message>) -> Self {
        Self {
            prompt: Prompt::Chat(messages),
            params: Default::default(),
            mock_reply: None,
            shared_prefix: 0,
            schema: None,
        }
    }
    /// A completion request with no params.
    pub fn completion(prompt: impl Into<String>) -> Self {
        Self {
            prompt: Prompt::Completion(prompt.into()),
            params: Default::default(),
            mock_reply: None,
            shared_prefix: 0,
            schema: None,
        }
    }
    /// Sets one sampling param.
    pub fn with_param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.to_string(), value.into());
        self
    }
    /// Sets [`Request::shared_prefix`].
    pub fn with_shared_prefix(mut self, messages: usize) -> Self {
        self.shared_prefix = messages;
        self
    }
    /// Sets [`Request::schema`].
    pub fn with_schema(mut self, schema: OutputSchema) -> Self {
        self.schema = Some(schema);
        self
    }
    /// The request with `instruction` appended to its prompt: to the last user message's
    /// text (a new user message when the last one is not the user's), or to a completion
    /// prompt after a blank line.
    pub fn with_instruction(&self, instruction: &str) -> Self {
        let mut out = self.clone();
        match &mut out.prompt {
            Prompt::Chat(messages) => match messages.last_mut() {
                Some(last) if last.role == "user" => {
                    last.content = format!("{}\n\n{instruction}", last.content.trim_end());
                }
                _ => messages.push(Message::new("user", instruction)),
            },
            Prompt::Completion(text) => {
                *text = format!("{}\n\n{instruction}\n", text.trim_end());
            }
        }
        out
    }
    /// `max_tokens` if set as a number.
    pub fn max_tokens(&self) -> Option<u64> {
        self.params.get("max_tokens").and_then(|v| v.as_u64())
    }
}

/// Token usage of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, all of them (cached ones included).
    pub prompt_tokens: u64,
    /// Tokens in the reply.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those read from the provider's prompt cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// Of `prompt_tokens`, those written to the prompt cache (Anthropic
    /// `cache_creation_input_tokens`).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// True when counted locally because the server sent no usage.
    pub estimated: bool,
}

/// Where time went in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Time waiting for a concurrency/rate slot.
    pub queued: Duration,
    /// From sending to the first byte of the successful attempt.
    pub first_byte: Duration,
    /// Whole call, retries included.
    pub total: Duration,
    /// Transport attempts made (1 = no retry).
    pub attempts: u32,
}

/// A complete reply: returned only when the server finished it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The generated text.
    pub text: String,
    /// `stop`, `length`, ... as sent by the server (`length` means cut by max_tokens).
    pub finish_reason: Option<String>,
    /// Token usage.
    pub usage: Usage,
    /// Model name the server reported (or the configured one).
    pub model: String,
    /// Timing.
    pub timing: Timing,
}
