//! The wire shapes of the OpenAI-compatible API: the request body atk sends, and the reply
//! (one SSE chunk or a whole non-streamed body), deserialized with borrowed strings.
//! (Anthropic's are in `anthropic.rs`. A request's output schema is rendered in each dialect's
//! `Body` in the form `schema.rs` chose: `response_format` or `json_schema` here, a forced tool
//! there.)

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::Message;

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

impl Body<'_> {
    /// Writes the body as compact JSON (the bytes `serde_json::to_writer` writes for the same
    /// object, keys in the same order), the first `request.shared_prefix` chat messages from
    /// `prefix` when given. Written by hand rather than through `Serialize` because serde has
    /// no way to splice JSON kept from an earlier request (short of serde_json's `raw_value`).
    pub(super) fn write(
        &self,
        out: &mut Vec<u8>,
        prefix: Option<&PrefixCache>,
    ) -> serde_json::Result<()> {
        let params = &self.request.params;
        out.extend_from_slice(b"{\"model\":");
        serde_json::to_writer(&mut *out, self.model)?;
        match &self.request.prompt {
            Prompt::Chat(messages) => {
                out.extend_from_slice(b",\"messages\":[");
                let shared = match prefix {
                    Some(cache) if self.request.shared_prefix > 0 => {
                        let shared = self.request.shared_prefix.min(messages.len());
                        cache.write(&messages[..shared], out)?;
                        shared
                    }
                    _ => 0,
                };
                for (i, message) in messages.iter().enumerate().skip(shared) {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, message)?;
                }
                out.push(b']');
            }
            Prompt::Completion(prompt) => {
                out.extend_from_slice(b",\"prompt\":");
                serde_json::to_writer(&mut *out, prompt)?;
            }
        }
        out.extend_from_slice(if self.stream {
            b",\"stream\":true"
        } else {
            b",\"stream\":false"
        });
        if self.stream_usage && !params.contains_key("stream_options") {
            out.extend_from_slice(b",\"stream_options\":{\"include_usage\":true}");
        }
        let schema_entry = self
            .form
            .zip(self.request.schema.as_ref())
            .and_then(|(form, schema)| super::schema::openai_entry(form, schema));
        if let Some((key, value)) = &schema_entry {
            entry(out, key, value)?;
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
                _ => entry(out, key, value)?,
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// `,"key":value` of a JSON object being written.
fn entry(out: &mut Vec<u8>, key: &str, value: &impl Serialize) -> serde_json::Result<()> {
    out.push(b',');
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

/// The JSON of the chat messages that open every request of a step (`Request::shared_prefix`:
/// the system prompt and few-shot examples), kept per engine: escaping them again for every
/// request was most of a body's serialization. A kept message is used only for an equal one.
#[derive(Default)]
pub(super) struct PrefixCache {
    kept: std::sync::Mutex<Vec<(Message, Box<[u8]>)>>,
}

/// Messages kept at most (the prefixes of the steps that share an engine); past it the cache
/// starts over.
const PREFIX_KEPT_MAX: usize = 32;

impl PrefixCache {
    /// Writes `messages` as JSON array elements (comma-separated), each kept or serialized now.
    fn write(&self, messages: &[Message], out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match kept.iter().find(|(m, _)| m == message) {
                Some((_, json)) => out.extend_from_slice(json),
                None => {
                    let json = serde_json::to_vec(message)?;
                    out.extend_from_slice(&json);
                    if kept.len() >= PREFIX_KEPT_MAX {
                        kept.clear();
                    }
                    kept.push((message.clone(), json.into()));
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
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
        let mut out = Vec::new();
        b.write(&mut out, None).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_kept_prefix_writes_the_same_bytes_and_only_for_equal_messages() {
        let request = |system: &str, passage: &str| {
            Request::chat(vec![
                Message::new("system", system),
                Message::new("user", "an \"example\"\n passage"),
                Message::new("assistant", "an example reply\twith <tags>"),
                Message::new("user", passage),
            ])
            .with_shared_prefix(3)
            .with_param("temperature", 0.7)
            .with_param("stop", vec!["###"])
        };
        let write = |request: &Request, cache: Option<&PrefixCache>| {
            let mut out = Vec::new();
            Body {
                model: "m",
                request,
                stream: true,
                stream_usage: true,
                form: None,
            }
            .write(&mut out, cache)
            .unwrap();
            out
        };
        let cache = PrefixCache::default();
        let requests = [
            request("You are a poet.", "first passage"),
            request("You are a poet.", "second passage: ünïcode \u{1}"),
            // Another step's system prompt on the same engine: not taken for the first one.
            request("You are a critic.", "third passage"),
            request("You are a poet.", "fourth"),
        ];
        for r in &requests {
            let plain = write(r, None);
            assert_eq!(
                String::from_utf8(write(r, Some(&cache))).unwrap(),
                String::from_utf8(plain.clone()).unwrap(),
                "the kept prefix changes no byte"
            );
            // What serde_json writes for the same object.
            let value: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            let Prompt::Chat(messages) = &r.prompt else {
                unreachable!()
            };
            assert_eq!(
                value["messages"][3]["content"],
                messages[3].content.as_str()
            );
            assert_eq!(
                value["messages"][0]["content"],
                messages[0].content.as_str()
            );
        }
        assert_eq!(
            cache.len(),
            4,
            "two system prompts and the two few-shot messages"
        );
        // A prefix as long as the prompt, and one longer than it, are both whole prompts.
        let mut whole = request("You are a poet.", "p");
        whole.shared_prefix = 9;
        assert_eq!(write(&whole, Some(&cache)), write(&whole, None));
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
