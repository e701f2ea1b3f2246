//! Schema steps' replies: the JSON Schema of an output type (what the engine asks the server to
//! enforce), reading a reply into that type, and the repair turn a reply that does not read
//! gets.
//!
//! The reading rule, in order; the first candidate that is JSON decides (it is then checked by
//! deserializing into the type, and its error is the one reported):
//! 1. the whole reply, trimmed;
//! 2. the inside of its first fenced code block (` ``` ` or ` ```json `), for a model that
//!    fences its JSON;
//! 3. the text from its first `{` to its last `}`, for a model that wraps the object in a
//!    sentence.
//!
//! One lossless fix is made to each candidate that does not parse: raw control characters
//! (a newline, a tab) inside a string are read as their escapes. llama.cpp's grammar lets a
//! model put a bare newline in a JSON string (measured: SmolLM2-135M under llama-cpp-python's
//! `json_object` + `schema`), which JSON forbids. Nothing else is guessed: no quotes or commas
//! are repaired. A reply that does not read goes
//! back to the model with the error (a repair turn), within the step's `max_retries`.

use atk_engine::{Message, OutputSchema, Prompt, Request};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Formats that are not JSON Schema's own (schemars marks Rust's integer widths with them);
/// strict servers refuse unknown formats, so they are dropped.
const RUST_FORMATS: &[&str] = &[
    "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "int",
    "float", "double",
];

/// The JSON Schema of `T` as sent: subschemas inline (no `$ref`), no `$schema` key, every object
/// closed (`additionalProperties: false`) unless the type says otherwise, Rust-only formats
/// dropped.
pub fn schema_of<T: JsonSchema>(name: &str) -> OutputSchema {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut value = settings
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    tidy(&mut value);
    OutputSchema::new(name, value)
}

fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("$schema");
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| RUST_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(list) => list.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Reads `reply` as one JSON value that deserializes into `T` (the rule in the module doc);
/// returns the value as read. The error says what is wrong, for the log and the repair turn.
pub fn read_json<T: DeserializeOwned>(reply: &str) -> Result<Value, String> {
    let whole = reply.trim();
    let first_error = match parse(whole) {
        Ok(value) => return validate::<T>(value),
        Err(e) => e,
    };
    for candidate in [fenced(whole), braced(whole)].into_iter().flatten() {
        if let Ok(value) = parse(candidate) {
            return validate::<T>(value);
        }
    }
    Err(format!("the reply is not JSON ({first_error})"))
}

/// `text` as JSON, or as JSON once raw control characters inside its strings are escaped.
fn parse(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Value>(text).or_else(|e| {
        let escaped = escape_controls_in_strings(text);
        if escaped == text {
            Err(e)
        } else {
            serde_json::from_str::<Value>(&escaped).map_err(|_| e)
        }
    })
}

/// Raw control characters inside JSON strings replaced by their escapes (outside strings they
/// are whitespace and stay).
fn escape_controls_in_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string && !escaped && (c as u32) < 0x20 {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                other => out.push_str(&format!("\\u{:04x}", other as u32)),
            }
            continue;
        }
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
    }
    out
}

fn validate<T: DeserializeOwned>(value: Value) -> Result<Value, String> {
    match serde_json::from_value::<T>(value.clone()) {
        Ok(_) => Ok(value),
        Err(e) => Err(format!("the reply does not match the schema ({e})")),
    }
}

/// The inside of the first fenced code block.
fn fenced(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    // The info string (`json`) ends the opening line.
    let body = &after[after.find('\n')? + 1..];
    let end = body.find("```")?;
    Some(body[..end].trim())
}

/// From the first `{` to the last `}`.
fn braced(text: &str) -> Option<&str> {
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    (start < end).then(|| &text[start..=end])
}

/// The repair turn: `original` (chat) with the rejected reply as the assistant's and a user
/// turn quoting `error` and asking for corrected JSON only. `None` for a completion prompt,
/// which is asked again as it was.
pub(crate) fn repair(original: &Request, reply: &str, error: &str) -> Option<Request> {
    let Prompt::Chat(messages) = &original.prompt else {
        return None;
    };
    let mut messages = messages.clone();
    messages.push(Message::new("assistant", reply));
    messages.push(Message::new(
        "user",
        format!(
            "Your reply could not be used: {error}. Reply again with only the corrected JSON: \
             one JSON object matching the requested schema, with no other text."
        ),
    ));
    let mut request = original.clone();
    request.prompt = Prompt::Chat(messages);
    Some(request)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Verdict {
        Yes,
        No,
    }

    /// One vote.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)] // read by deserializing only
    struct Vote {
        /// yes or no.
        verdict: Verdict,
        reason: String,
        score: u32,
    }

    #[test]
    fn the_schema_is_inline_closed_and_strict() {
        let schema = schema_of::<Vote>("check answer");
        assert_eq!(schema.name, "check_answer");
        let v = &schema.schema;
        assert_eq!(v["type"], "object");
        assert_eq!(v["additionalProperties"], false);
        assert_eq!(
            v["properties"]["verdict"]["enum"],
            serde_json::json!(["yes", "no"])
        );
        assert!(v["properties"]["score"].get("format").is_none());
        let text = v.to_string();
        assert!(
            !text.contains("$ref") && !text.contains("$schema"),
            "{text}"
        );
        assert!(schema.strict_compatible());
    }

    #[test]
    fn replies_are_read_by_the_rule_and_checked_by_the_type() {
        let ok = r#"{"verdict": "yes", "reason": "r", "score": 3}"#;
        assert_eq!(read_json::<Vote>(ok).unwrap()["score"], 3);
        let fenced = format!("Here it is:\n```json\n{ok}\n```\nHope that helps.");
        assert!(read_json::<Vote>(&fenced).is_ok());
        let wrapped = format!("Sure! {ok} Anything else?");
        assert!(read_json::<Vote>(&wrapped).is_ok());
        let cut = &ok[..20];
        let err = read_json::<Vote>(cut).unwrap_err();
        assert!(err.starts_with("the reply is not JSON (EOF"), "{err}");
        let wrong = r#"{"verdict": "maybe", "reason": "r", "score": 3}"#;
        let err = read_json::<Vote>(wrong).unwrap_err();
        assert!(
            err.contains("does not match the schema") && err.contains("maybe"),
            "{err}"
        );
        // llama.cpp's grammar lets a bare newline into a string: read as its escape.
        let newline = "{\"verdict\": \"yes\", \"reason\": \"two\nlines\\\" here\", \"score\": 1}";
        assert_eq!(
            read_json::<Vote>(newline).unwrap()["reason"],
            "two\nlines\" here"
        );
        let missing = r#"{"verdict": "no", "score": 1}"#;
        assert!(read_json::<Vote>(missing).unwrap_err().contains("reason"));
    }

    #[test]
    fn a_repair_turn_quotes_the_reply_and_the_error() {
        let original = Request::chat(vec![Message::new("user", "judge")]).with_shared_prefix(1);
        let fixed = repair(&original, "{\"verdict\": ", "EOF").unwrap();
        let Prompt::Chat(m) = &fixed.prompt else {
            panic!("chat")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[1].role.as_str(), m[1].content.as_str()),
            ("assistant", "{\"verdict\": ")
        );
        assert!(m[2].content.contains("EOF") && m[2].content.contains("only the corrected JSON"));
        assert!(repair(&Request::completion("x"), "bad", "EOF").is_none());
    }
}
