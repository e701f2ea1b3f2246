//! Structured output per endpoint: the forms a request's [`OutputSchema`] can take in the
//! engine's dialect, tried in order, and the one the endpoint accepted, remembered for the run.
//!
//! A server that does not take a form says so in its error body, whatever its status:
//! llama-cpp-python 0.3 answers `response_format: {type: json_schema}` with HTTP 500 and a
//! validation error naming `response_format`. So a refusal is recognised by what the body names
//! (the keys of the form sent), never by status alone, and such an answer is not a transient
//! fault: the same request goes again at once in the next form. The last form of every ladder is
//! [`Form::Prompt`]: the schema stated in the prompt and the reply parsed by the step, with one
//! warning naming the endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;

use crate::config::Dialect;
use crate::{OutputSchema, Prompt, Request};

/// One way of asking a server for a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// OpenAI: `response_format: {type: json_schema, json_schema: {name, strict, schema}}`.
    JsonSchema,
    /// llama-cpp-python: `response_format: {type: json_object, schema}`.
    JsonObject,
    /// llama.cpp's completion field `json_schema`.
    CompletionField,
    /// Anthropic: a forced tool whose `input_schema` is the schema.
    Tool,
    /// None the server enforces: the schema is stated in the prompt.
    Prompt,
}

impl Form {
    /// How a log line names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::JsonSchema => "response_format json_schema",
            Self::JsonObject => "response_format json_object with a schema",
            Self::CompletionField => "the json_schema field",
            Self::Tool => "a forced tool",
            Self::Prompt => "the schema stated in the prompt",
        }
    }

    /// What an error body names when the server refuses this form.
    fn names(self) -> &'static [&'static str] {
        match self {
            Self::JsonSchema => &["response_format", "json_schema"],
            Self::JsonObject => &["response_format", "json_object", "schema"],
            Self::CompletionField => &["json_schema", "schema", "grammar"],
            Self::Tool => &["tool", "input_schema"],
            Self::Prompt => &[],
        }
    }
}

/// The forms of a dialect and prompt kind, best first.
fn ladder(dialect: Dialect, completion: bool) -> &'static [Form] {
    match (dialect, completion) {
        (Dialect::OpenAi, false) => &[Form::JsonSchema, Form::JsonObject, Form::Prompt],
        (Dialect::OpenAi, true) => &[Form::CompletionField, Form::Prompt],
        (Dialect::Anthropic, _) => &[Form::Tool, Form::Prompt],
    }
}

/// True when an error answer (`status`, `body`) refuses `form`: the body names one of the
/// form's keys. Statuses that mean something else (auth, not found, rate limits, a proxy's
/// 502/503/504, an overloaded provider) never count.
pub(crate) fn refuses(form: Form, status: StatusCode, body: &str) -> bool {
    if matches!(
        status.as_u16(),
        401 | 403 | 404 | 408 | 429 | 502 | 503 | 504 | 529
    ) {
        return false;
    }
    let body = body.to_ascii_lowercase();
    form.names().iter().any(|name| body.contains(name))
}

/// The form each prompt kind of one endpoint is at: shared by its concurrent requests, moved
/// on once per refusal (the first request refused moves it; the others follow).
#[derive(Debug)]
pub(crate) struct Forms {
    dialect: Dialect,
    /// Index into the chat ladder.
    chat: AtomicUsize,
    /// Index into the completion ladder.
    completion: AtomicUsize,
}

/// What to do after a refusal.
pub(crate) enum Next {
    /// This request moved the endpoint on to `Form` (log it once).
    MovedTo(Form),
    /// Another request already moved it: send again in the current form.
    Again,
}

impl Forms {
    /// The forms of an endpoint speaking `dialect`; with `enforce` off every request goes
    /// straight to [`Form::Prompt`] (no warning: it was asked for).
    pub(crate) fn new(dialect: Dialect, enforce: bool) -> Self {
        let start = |completion| {
            if enforce {
                0
            } else {
                ladder(dialect, completion).len() - 1
            }
        };
        Self {
            dialect,
            chat: AtomicUsize::new(start(false)),
            completion: AtomicUsize::new(start(true)),
        }
    }

    fn slot(&self, completion: bool) -> &AtomicUsize {
        if completion {
            &self.completion
        } else {
            &self.chat
        }
    }

    /// The form a request goes out in now, `None` without a schema.
    pub(crate) fn current(&self, request: &Request) -> Option<Form> {
        request.schema.as_ref()?;
        let completion = matches!(request.prompt, Prompt::Completion(_));
        let ladder = ladder(self.dialect, completion);
        let at = self.slot(completion).load(Ordering::Acquire);
        Some(ladder[at.min(ladder.len() - 1)])
    }

    /// The server refused `form` (sent for `request`): where to go next, or `None` when there
    /// is no next form (the prompt form carries nothing to refuse).
    pub(crate) fn refused(&self, request: &Request, form: Form) -> Option<Next> {
        let completion = matches!(request.prompt, Prompt::Completion(_));
        let ladder = ladder(self.dialect, completion);
        let at = ladder.iter().position(|f| *f == form)?;
        let next = *ladder.get(at + 1)?;
        match self.slot(completion).compare_exchange(
            at,
            at + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Some(Next::MovedTo(next)),
            Err(now) if now > at => Some(Next::Again),
            Err(_) => None,
        }
    }
}

/// `request` as sent in `form`: itself, or (the prompt form) with the schema stated in it.
pub(crate) fn in_form<'a>(
    request: &'a Request,
    form: Option<Form>,
) -> std::borrow::Cow<'a, Request> {
    match (form, &request.schema) {
        (Some(Form::Prompt), Some(schema)) => {
            std::borrow::Cow::Owned(request.with_instruction(&schema.instruction()))
        }
        _ => std::borrow::Cow::Borrowed(request),
    }
}

/// OpenAI's `response_format` (or llama.cpp's `json_schema` value) for `form`.
pub(crate) fn openai_entry(
    form: Form,
    schema: &OutputSchema,
) -> Option<(&'static str, serde_json::Value)> {
    use serde_json::json;
    match form {
        Form::JsonSchema => Some((
            "response_format",
            json!({"type": "json_schema", "json_schema": {
                "name": schema.name, "strict": schema.strict_compatible(), "schema": schema.schema}}),
        )),
        Form::JsonObject => Some((
            "response_format",
            json!({"type": "json_object", "schema": schema.schema}),
        )),
        Form::CompletionField => Some(("json_schema", schema.schema.clone())),
        Form::Tool | Form::Prompt => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn request() -> Request {
        Request::chat(vec![Message::new("user", "judge this")]).with_schema(OutputSchema::new(
            "judge chunk",
            serde_json::json!({"type": "object", "properties": {"verdict": {"type": "string"}},
                               "required": ["verdict"], "additionalProperties": false}),
        ))
    }

    #[test]
    fn a_refusal_is_told_by_what_the_body_names_not_by_its_status() {
        let llama = r#"{"detail":[{"type":"literal_error","loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'"}]}"#;
        assert!(refuses(
            Form::JsonSchema,
            StatusCode::INTERNAL_SERVER_ERROR,
            llama
        ));
        assert!(refuses(Form::JsonSchema, StatusCode::BAD_REQUEST, llama));
        assert!(!refuses(
            Form::JsonSchema,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request."
        ));
        assert!(!refuses(
            Form::JsonSchema,
            StatusCode::TOO_MANY_REQUESTS,
            llama
        ));
        assert!(!refuses(Form::Prompt, StatusCode::BAD_REQUEST, llama));
    }

    #[test]
    fn forms_move_on_once_and_are_shared() {
        let forms = Forms::new(Dialect::OpenAi, true);
        let req = request();
        assert_eq!(forms.current(&req), Some(Form::JsonSchema));
        assert!(matches!(
            forms.refused(&req, Form::JsonSchema),
            Some(Next::MovedTo(Form::JsonObject))
        ));
        // A second request refused in the old form follows without moving it further.
        assert!(matches!(
            forms.refused(&req, Form::JsonSchema),
            Some(Next::Again)
        ));
        assert_eq!(forms.current(&req), Some(Form::JsonObject));
        assert!(matches!(
            forms.refused(&req, Form::JsonObject),
            Some(Next::MovedTo(Form::Prompt))
        ));
        assert!(forms.refused(&req, Form::Prompt).is_none());
        assert_eq!(
            forms.current(&Request::chat(vec![])),
            None,
            "no schema, no form"
        );
        // Schemas off: the prompt at once.
        let off = Forms::new(Dialect::Anthropic, false);
        assert_eq!(off.current(&req), Some(Form::Prompt));
        assert_eq!(req.schema.as_ref().unwrap().name, "judge_chunk");
        assert!(req.schema.as_ref().unwrap().strict_compatible());
    }

    #[test]
    fn the_prompt_form_states_the_schema_in_the_last_user_message() {
        let req = request();
        let sent = in_form(&req, Some(Form::Prompt));
        let Prompt::Chat(messages) = &sent.prompt else {
            panic!("chat")
        };
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0]
                .content
                .starts_with("judge this\n\nReply with only one JSON object")
        );
        assert!(messages[0].content.contains("\"verdict\""));
        assert!(matches!(
            in_form(&req, Some(Form::JsonSchema)),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
