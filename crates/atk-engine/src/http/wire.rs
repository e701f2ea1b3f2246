//! The wire shapes of the OpenAI-compatible API: the request body atk sends, and the reply
//! (one SSE chunk or a whole non-streamed body), deserialized with borrowed strings.
//! (Anthropic's are in `anthropic.rs`. A request's output schema is rendered in each dialect's
//! `Body` in the form `schema.rs` chose: `response_format` or `json_schema` here, a forced tool
//! there.)

use std::borrow::Cow;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::*;

/// The request body: engine keys, then the params verbatim. A param may not replace `model`,
/// `messages`/`prompt` or `stream`; `use_stop: false` drops `stop` (and `use_stop` itself is
/// never sent, since strict servers reject unknown keys). The output schema, in `form`, wins
/// over a param of the same key.
pub(super) struct Body<'a> {
    pub(super) model: &'a str,
    pub(super) request: &'a Request,
    pub(super) stream: bool,
    pub(super) stream_usage: bool,
    pub(super) form: Option<super::schema::Form>,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct StreamOptions {
            include_usage: bool,
        }
        let params = &self.request.params;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        match &self.request.prompt {
            Prompt::Chat(messages) => map.serialize_entry("messages", messages)?,
            Prompt::Completion(prompt) => map.serialize_entry("prompt", prompt)?,
        }
        map.serialize_entry("stream", &self.stream)?;
        if self.stream_usage && !params.contains_key("stream_options") {
            map.serialize_entry(
                "stream_options",
                &StreamOptions {
                    include_usage: true,
                },
            )?;
        }
        let schema_entry = self
            .form
            .zip(self.request.schema.as_ref())
            .and_then(|(form, schema)| super::schema::openai_entry(form, schema));
        if let Some((key, value)) = &schema_entry {
            map.serialize_entry(key, value)?;
        }
        let schema_key = schema_entry.as_ref().map(|(k, _)| *k);
        let use_stop = params
            .get("use_stop")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        for (key, value) in params {
            match key.as_str() {
                "model" | "messages" | "prompt" | "stream" | "use_stop" => {}
                "stop" if !use_stop => {}
                k if Some(k) == schema_key => {}
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// One SSE chunk or a whole non-streamed reply (the shapes overlap).
#[derive(Deserialize)]
pub(super) struct WireReply<'a> {
    #[serde(default, borrow)]
    pub(super) choices: Vec<WireChoice<'a>>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default, borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice<'a> {
    #[serde(default)]
    pub(super) index: u32,
    #[serde(default, borrow)]
    pub(super) delta: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    pub(super) message: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct WireMessage<'a> {
    #[serde(default, borrow)]
    pub(super) content: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: u64,
    #[serde(default)]
    pub(super) completion_tokens: u64,
    /// OpenAI's automatic prompt caching: `cached_tokens` of `prompt_tokens` were cache hits.
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) struct WirePromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: 0,
            estimated: false,
        }
    }
}

/// What a reply amounted to (in either dialect).
#[derive(Default, Clone)]
pub(super) struct Parsed {
    pub(super) text: String,
    /// In OpenAI's terms (`stop`, `length`, ...): an Anthropic `stop_reason` is mapped.
    pub(super) finish_reason: Option<String>,
    pub(super) usage: Option<Usage>,
    pub(super) model: Option<String>,
}

impl Parsed {
    pub(super) fn absorb(&mut self, reply: WireReply<'_>, streamed: bool) {
        if let Some(u) = reply.usage {
            self.usage = Some(u.into());
        }
        if self.model.is_none()
            && let Some(m) = reply.model
            && !m.is_empty()
        {
            self.model = Some(m.into_owned());
        }
        // n = 1: only the first choice is the reply.
        for choice in reply.choices.into_iter().filter(|c| c.index == 0) {
            let piece = if streamed {
                choice.delta.and_then(|d| d.content)
            } else {
                choice.message.and_then(|m| m.content)
            };
            if let Some(piece) = piece.or(choice.text) {
                self.text.push_str(&piece);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.into_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn body(request: &Request, stream: bool, usage: bool) -> serde_json::Value {
        let b = Body {
            model: "m",
            request,
            stream,
            stream_usage: usage,
            form: None,
        };
        serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap()
    }

    #[test]
    fn params_pass_verbatim_and_use_stop_false_drops_stop() {
        let req = Request::chat(vec![Message::new("user", "hi")])
            .with_param("temperature", 0.7)
            .with_param("min_p", 0.05)
            .with_param("stop", vec!["###"])
            .with_param("custom_key", serde_json::json!({"a": 1}))
            .with_param("model", "other");
        let b = body(&req, true, true);
        assert_eq!(b["model"], "m");
        assert_eq!(b["temperature"], 0.7);
        assert_eq!(b["min_p"], 0.05);
        assert_eq!(b["stop"][0], "###");
        assert_eq!(b["custom_key"]["a"], 1);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["messages"][0]["content"], "hi");
        let req = req.with_param("use_stop", false);
        let b = body(&req, false, false);
        assert!(
            b.get("stop").is_none()
                && b.get("use_stop").is_none()
                && b.get("stream_options").is_none()
        );
        let b = body(&Request::completion("once upon"), true, false);
        assert_eq!(b["prompt"], "once upon");
    }

    #[test]
    fn cached_tokens_are_read_from_prompt_tokens_details() {
        let reply: WireReply<'_> = serde_json::from_str(
            r#"{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":2006,"completion_tokens":300,
                         "prompt_tokens_details":{"cached_tokens":1920}}}"#,
        )
        .unwrap();
        let mut p = Parsed::default();
        p.absorb(reply, false);
        let u = p.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.cached_prompt_tokens), (2006, 1920));
        // `null` details (some servers) are no cached tokens.
        let reply: WireReply<'_> = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null}}"#,
        )
        .unwrap();
        p.absorb(reply, true);
        assert_eq!(p.usage.unwrap().cached_prompt_tokens, 0);
    }
}
