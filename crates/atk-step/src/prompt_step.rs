//! `PromptStep`: the seed's `PipelineStep` — render a prompt for an item, call an engine,
//! process and validate the reply, retry rejected outputs up to `max_retries`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use atk_engine::{Prompt, Request};
use atk_state::{Details, ItemRecord, RECORD_VERSION, ResultRecord};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{ItemFailure, StepError};
use crate::item::{Item, lookup_path};
use crate::step::{EngineChoice, Step, StepContext, StepOutput};
use crate::template::value_text;

type OutputProcessor = Arc<dyn Fn(&str) -> Result<Value, String> + Send + Sync>;
type Validator = Arc<dyn Fn(&Value, &Item) -> Result<(), String> + Send + Sync>;
type InputProcessor = Arc<dyn Fn(Item) -> Result<Item, String> + Send + Sync>;
type MockChoice = Arc<dyn Fn(&Item, u32) -> String + Send + Sync>;
type JsonReader = Arc<dyn Fn(&str) -> Result<Value, String> + Send + Sync>;

/// A schema step's output: the schema sent with each request and the reader of its replies.
#[derive(Clone)]
struct JsonOutput {
    schema: atk_engine::OutputSchema,
    read: JsonReader,
}

/// What a validation retry adds to the call number a mock choice sees
/// ([`PromptStep::mock_reply_with`]): retry `r` of call `c` is call `c + r * MOCK_RETRY_CALL`,
/// so a demo on the mock engine can show a reply rejected, then a retry accepted.
pub const MOCK_RETRY_CALL: u32 = 1000;

/// The reason recorded when a reply was cut by `max_tokens`.
pub const LENGTH_CUT_REASON: &str = "cut off by max_tokens (finish_reason=length)";
/// Failure kind of an item whose prompt the server refused as longer than the model's context.
pub const OVER_CONTEXT: &str = "over_context";

/// A prompted LLM step (builder). Without an output processor the output is the reply text.
#[derive(Clone)]
pub struct PromptStep {
    name: String,
    prompt_name: String,
    engine: EngineChoice,
    sampling: Map<String, Value>,
    output_processor: Option<OutputProcessor>,
    validator: Option<Validator>,
    input_processor: Option<InputProcessor>,
    result_key: Option<String>,
    details_key: Option<String>,
    max_retries: u32,
    args: Map<String, Value>,
    mock_reply: Option<String>,
    mock_choice: Option<MockChoice>,
    accept_length_cut: bool,
    version: String,
    json: Option<JsonOutput>,
    legacy: Option<JsonReader>,
}

impl std::fmt::Debug for PromptStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptStep")
            .field("name", &self.name)
            .field("prompt_name", &self.prompt_name)
            .field("engine", &self.engine)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl PromptStep {
    /// A step named `name` (keys its stored results; use a stable name) whose prompt is the
    /// file of the same stem (`name.yaml`, or `name.txt` in completion mode); see
    /// [`prompt`](Self::prompt) for another file.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            prompt_name: name.clone(),
            name,
            engine: EngineChoice::Small,
            sampling: Map::new(),
            output_processor: None,
            validator: None,
            input_processor: None,
            result_key: None,
            details_key: None,
            max_retries: 3,
            args: Map::new(),
            mock_reply: None,
            mock_choice: None,
            accept_length_cut: false,
            version: "1".to_string(),
            json: None,
            legacy: None,
        }
    }

    /// Makes this a schema step: each request carries the JSON Schema of `T` (the engine asks
    /// the server to enforce it in the form the endpoint takes), the reply is read as one JSON
    /// value that deserializes into `T` (a ```` ```json ```` fence or a sentence around the
    /// object is tolerated, nothing else), and that value is the stored output: templates
    /// reach inside it with `{key.field}`, code reads it typed with
    /// [`Item::get`](crate::Item::get). A reply that does not read gets a repair turn (chat:
    /// the reply and the error go back to the model, asking for corrected JSON only) within
    /// `max_retries`. The schema is part of the fingerprint. An output processor set as well
    /// gets the JSON text of the value read.
    pub fn json<T: serde::de::DeserializeOwned + schemars::JsonSchema + 'static>(mut self) -> Self {
        self.json = Some(JsonOutput {
            schema: crate::json::schema_of::<T>(&self.name),
            read: Arc::new(crate::json::read_json::<T>),
        });
        self
    }

    /// For `--reprocess` of results stored before this step had a schema (their fingerprint
    /// has no schema part: made by a text prompt): reads such a stored text reply into the
    /// value the schema step makes, so an old output dir is brought to the new shape without
    /// a request. Fresh replies are always read as JSON.
    pub fn legacy_reader(
        mut self,
        f: impl Fn(&str) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.legacy = Some(Arc::new(f));
        self
    }

    /// The JSON Schema the step's requests carry ([`json`](Self::json)), if any.
    pub fn output_schema(&self) -> Option<&atk_engine::OutputSchema> {
        self.json.as_ref().map(|j| &j.schema)
    }

    /// Uses prompt file `prompt_name` (a file stem) instead of the step's name.
    pub fn prompt(mut self, prompt_name: impl Into<String>) -> Self {
        self.prompt_name = prompt_name.into();
        self
    }

    /// The step's version (default `"1"`), part of its fingerprint: bump it when you change
    /// its output processor or validator, and the next run says which results were made with
    /// the old one (`--reprocess STEP` reruns the new ones over the stored replies).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The step's arguments the prompt refers to (`{name}` or `{name.field}`): one it does not
    /// use changes nothing, so it is not part of the fingerprint.
    fn used_args(
        &self,
        template: &crate::prompt::PromptTemplate,
    ) -> serde_json::Map<String, Value> {
        let names: std::collections::BTreeSet<String> = template
            .names()
            .into_iter()
            .map(|(n, _)| n.split('.').next().unwrap_or_default().to_string())
            .collect();
        self.args
            .iter()
            .filter(|(k, _)| names.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What this step's results are made with: the prompt file as used (after overrides, chat
    /// or completion) with the step's arguments it uses, the sampling params sent, the engine's model
    /// and mode, and the version. `None` when the prompt cannot be loaded.
    pub fn fingerprint_of(&self, ctx: &StepContext) -> Option<crate::Fingerprint> {
        use crate::fingerprint::Part;
        let template = ctx
            .prompts
            .load(&self.prompt_name, ctx.completion_mode)
            .ok()?;
        let mut params = self.sampling.clone();
        if !ctx.use_stop {
            params.remove("stop");
        }
        let schema = self.json.as_ref().map(|j| j.schema.schema.to_string());
        let engine = ctx.engines.get(self.engine);
        let mode = format!(
            "{} {} {}",
            engine.model(),
            if engine.is_mock() { "mock" } else { "api" },
            if ctx.completion_mode {
                "completion"
            } else {
                "chat"
            }
        );
        let fingerprint = crate::Fingerprint::new()
            .with(
                Part::Prompt,
                &format!(
                    "{} args {}",
                    template.digest(),
                    Value::Object(self.used_args(&template))
                ),
            )
            .with(Part::Params, &Value::Object(params).to_string())
            .with(Part::Model, &mode)
            .with(Part::Version, &self.version);
        // Only a schema step has the part: every other step keeps the fingerprint it had.
        Some(match schema {
            Some(schema) => fingerprint.with(Part::Schema, &schema),
            None => fingerprint,
        })
    }

    /// Reruns the input processor, output processor, validator and `accept` over a stored raw
    /// reply (nothing is sent): the processed value and output, or the rejection reason.
    pub(crate) fn recheck<T>(
        &self,
        item: &ItemRecord,
        stored: &ResultRecord,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
    ) -> Option<Result<(T, ResultRecord), String>> {
        let raw = stored.raw.as_deref()?;
        let processed_item;
        let item = match &self.input_processor {
            Some(f) => match f(Item::from_record(item.clone())) {
                Ok(processed) => {
                    processed_item = processed.into_record();
                    &processed_item
                }
                Err(reason) => return Some(Err(reason)),
            },
            None => item,
        };
        let cut = stored
            .details
            .as_ref()
            .and_then(|d| d.finish_reason.as_deref())
            == Some("length");
        if cut && !self.accept_length_cut {
            return Some(Err(LENGTH_CUT_REASON.to_string()));
        }
        let schemaless = !stored
            .fingerprint
            .as_deref()
            .is_some_and(|fp| fp.split(';').any(|part| part.starts_with("j=")));
        let checked = match &self.legacy {
            Some(legacy) if schemaless && self.json.is_some() => {
                self.check_read(raw, item, accept, Some(legacy))
            }
            _ => self.check(raw, item, accept),
        };
        Some(checked.map(|(value, output)| {
            let mut record = stored.clone();
            record.output = output;
            (value, record)
        }))
    }

    /// Which engine to call (default small).
    pub fn engine(mut self, choice: EngineChoice) -> Self {
        self.engine = choice;
        self
    }

    /// Replaces the sampling params (sent verbatim: temperature, top_p, max_tokens, stop, ...).
    pub fn sampling(mut self, params: Map<String, Value>) -> Self {
        self.sampling = params;
        self
    }

    /// Sets one sampling param.
    pub fn param(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.sampling.insert(key.to_string(), value.into());
        self
    }

    /// Turns the raw reply into the stored output; `Err(reason)` rejects it (retried).
    pub fn output_processor(
        mut self,
        f: impl Fn(&str) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.output_processor = Some(Arc::new(f));
        self
    }

    /// Checks a processed output against the (processed) input; `Err(reason)` rejects it (retried).
    pub fn validator(
        mut self,
        f: impl Fn(&Value, &Item) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(f));
        self
    }

    /// Rewrites the item before its prompt is rendered (not stored).
    pub fn input_processor(mut self, f: impl Fn(Item) -> Item + Send + Sync + 'static) -> Self {
        self.input_processor = Some(Arc::new(move |item| Ok(f(item))));
        self
    }

    /// Rewrites the item before its prompt is rendered, or refuses it: `Err(reason)` fails the
    /// item with that reason (kind `input`) and sends nothing for it; the next run tries again.
    pub fn try_input_processor(
        mut self,
        f: impl Fn(Item) -> Result<Item, String> + Send + Sync + 'static,
    ) -> Self {
        self.input_processor = Some(Arc::new(f));
        self
    }

    /// Field the output is merged under for later steps and datasets (default: the step name).
    pub fn result_key(mut self, key: impl Into<String>) -> Self {
        self.result_key = Some(key.into());
        self
    }

    /// Field the raw exchange is merged under when details are kept.
    pub fn details_key(mut self, key: impl Into<String>) -> Self {
        self.details_key = Some(key.into());
        self
    }

    /// Validation retries after the first attempt (default 3: up to 4 engine calls).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// An extra template argument (looked up after the item's fields).
    pub fn arg(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.args.insert(key.to_string(), value.into());
        self
    }

    /// The reply template the mock engine uses for this step (sets `Request::mock_reply`).
    pub fn mock_reply(mut self, template: impl Into<String>) -> Self {
        self.mock_reply = Some(template.into());
        self
    }

    /// Mock reply templates picked per item and call (by a hash of the item id and the call
    /// number: vote `k` of a [`VoteStep`](crate::VoteStep), or the retry), so a demo or a
    /// test on the mock engine sees different replies for different items: drops, split votes.
    pub fn mock_replies<S: Into<String>>(self, templates: impl IntoIterator<Item = S>) -> Self {
        let templates: Vec<String> = templates.into_iter().map(Into::into).collect();
        if templates.is_empty() {
            return self;
        }
        self.mock_reply_with(move |item, call| {
            let digest = Sha256::new()
                .chain_update(item.id().as_bytes())
                .chain_update(call.to_le_bytes())
                .finalize();
            let pick = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
            templates[(pick % templates.len() as u64) as usize].clone()
        })
    }

    /// The mock reply template for an item and call number (0 for the first call of an item;
    /// a vote's number for votes; a validation retry adds [`MOCK_RETRY_CALL`] per retry),
    /// chosen by `f`. Wins over [`mock_reply`](Self::mock_reply).
    pub fn mock_reply_with(
        mut self,
        f: impl Fn(&Item, u32) -> String + Send + Sync + 'static,
    ) -> Self {
        self.mock_choice = Some(Arc::new(f));
        self
    }

    /// Turns this step into a vote of `n` calls per item ([`VoteStep`](crate::VoteStep));
    /// by default a majority of "yes" verdicts keeps the item.
    pub fn votes(self, n: u32) -> crate::VoteStep {
        crate::VoteStep::new(self, n)
    }

    /// Accept replies cut by `max_tokens` (`finish_reason: length`); rejected by default.
    pub fn accept_length_cut(mut self, accept: bool) -> Self {
        self.accept_length_cut = accept;
        self
    }

    /// The prompt name.
    pub fn prompt_name(&self) -> &str {
        &self.prompt_name
    }

    /// Builds the request for an item (after the input processor).
    pub fn request(&self, item: &ItemRecord, ctx: &StepContext) -> Result<Request, StepError> {
        self.request_for(item, ctx, 0)
    }

    /// The request for call number `call` of an item (the mock reply may differ per call).
    pub(crate) fn request_for(
        &self,
        item: &ItemRecord,
        ctx: &StepContext,
        call: u32,
    ) -> Result<Request, StepError> {
        let template = ctx.prompts.load(&self.prompt_name, ctx.completion_mode)?;
        // `{key.field}` reaches inside a result (see `template.rs`).
        let lookup = |name: &str| {
            lookup_path(&item.fields, name)
                .or_else(|| lookup_path(&self.args, name))
                .or_else(|| lookup_path(&ctx.run_args, name))
                .map(value_text)
        };
        let prompt = template.render(&lookup);
        let shared_prefix = template.shared_prefix(&|name| item.fields.contains_key(name));
        let mut params = self.sampling.clone();
        if !ctx.use_stop {
            params.remove("stop");
        }
        let mock_reply = match &self.mock_choice {
            Some(choose) => Some(choose(Item::of(item), call)),
            None => self.mock_reply.clone(),
        };
        Ok(Request {
            prompt,
            params,
            mock_reply,
            shared_prefix,
            schema: self.json.as_ref().map(|j| j.schema.clone()),
        })
    }

    /// The validation loop shared by prompt, fan-out and filter steps: call, process, validate,
    /// then `accept`; any rejection is retried up to `max_retries` with its reason kept.
    /// The returned record's `output` is the processed output.
    pub(crate) async fn attempt<T>(
        &self,
        item: &ItemRecord,
        ctx: &StepContext,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
    ) -> Result<(T, ResultRecord), StepError> {
        self.attempt_call(item, ctx, 0, accept).await
    }

    /// [`attempt`](Self::attempt) as call number `call` of the item (votes).
    pub(crate) async fn attempt_call<T>(
        &self,
        item: &ItemRecord,
        ctx: &StepContext,
        call: u32,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
    ) -> Result<(T, ResultRecord), StepError> {
        let processed_item;
        let item = match &self.input_processor {
            Some(f) => {
                processed_item = f(Item::from_record(item.clone()))
                    .map_err(|reason| StepError::failed("input", reason))?
                    .into_record();
                &processed_item
            }
            None => item,
        };
        let request = self.request_for(item, ctx, call)?;
        let engine = ctx.engines.get(self.engine);
        let started = Instant::now();
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        let mut failure = ItemFailure {
            kind: String::new(),
            reason: String::new(),
            last_output: None,
            last_prompt: None,
            attempts: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        // The next attempt's request when the last reply did not read as JSON: a repair turn.
        let mut repair: Option<Request> = None;
        for attempt in 1..=self.max_retries.saturating_add(1) {
            failure.attempts = attempt;
            // Checked right before each attempt: after a Ctrl-C (or a fatal error elsewhere) an
            // item whose request has not gone out yet, or that would retry, sends nothing more.
            if ctx.cancel.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            // The request goes out borrowed (no copy of the prompt) unless this attempt
            // changes it: a repair turn, or a mock retry's own reply.
            let mut changed = repair.take();
            if let (Some(choose), 2..) = (&self.mock_choice, attempt) {
                let retry_call = call.saturating_add((attempt - 1).saturating_mul(MOCK_RETRY_CALL));
                let mut sent = changed.unwrap_or_else(|| request.clone());
                sent.mock_reply = Some(choose(Item::of(item), retry_call));
                changed = Some(sent);
            }
            let reply = match engine.call_ref(changed.as_ref().unwrap_or(&request)).await {
                Ok(reply) => reply,
                Err(e) if e.is_fatal() => return Err(StepError::Engine(e)),
                // The run is stopping and the engine did not send this call: not done, not failed.
                Err(atk_engine::Error::Cancelled { .. }) => return Err(StepError::Cancelled),
                Err(e) => {
                    // Transport retries already happened inside the engine; this item fails.
                    let kind = if e.is_context_overflow() {
                        OVER_CONTEXT
                    } else if matches!(e, atk_engine::Error::Rejected { .. }) {
                        "rejected"
                    } else {
                        "transport"
                    };
                    failure.kind = kind.into();
                    failure.reason = e.to_string();
                    break;
                }
            };
            prompt_tokens += reply.usage.prompt_tokens;
            completion_tokens += reply.usage.completion_tokens;
            let verdict =
                if reply.finish_reason.as_deref() == Some("length") && !self.accept_length_cut {
                    Err(("length", LENGTH_CUT_REASON.to_string()))
                } else {
                    match self.check_detailed(&reply.text, item, accept, None) {
                        Ok(ok) => Ok(ok),
                        Err(Rejection::Json(reason)) => {
                            repair = crate::json::repair(&request, &reply.text, &reason);
                            Err(("validation", reason))
                        }
                        Err(Rejection::Other(reason)) => Err(("validation", reason)),
                    }
                };
            match verdict {
                Ok((value, output)) => {
                    let details = ctx.include_details.then(|| details(&request, &reply));
                    let record = ResultRecord {
                        v: RECORD_VERSION,
                        outcome: Default::default(),
                        raw: Some(reply.text),
                        fingerprint: None,
                        input_hash: None,
                        output,
                        details,
                        attempts: attempt,
                        prompt_tokens,
                        completion_tokens,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                        stored_at_ms: now_ms(),
                    };
                    return Ok((value, record));
                }
                Err((kind, reason)) => {
                    tracing::debug!(step = %self.name, item = %item.id, attempt, %reason, "output rejected");
                    failure.kind = kind.into();
                    failure.reason = reason;
                    failure.last_output = Some(reply.text);
                }
            }
        }
        failure.prompt_tokens = prompt_tokens;
        failure.completion_tokens = completion_tokens;
        failure.last_prompt = Some(prompt_text(&request));
        Err(StepError::Failed(failure))
    }

    fn check<T>(
        &self,
        text: &str,
        item: &ItemRecord,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
    ) -> Result<(T, Value), String> {
        self.check_read(text, item, accept, None)
    }

    /// [`check`](Self::check) with the JSON reader replaced by `reader` (a legacy one).
    fn check_read<T>(
        &self,
        text: &str,
        item: &ItemRecord,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
        reader: Option<&JsonReader>,
    ) -> Result<(T, Value), String> {
        self.check_detailed(text, item, accept, reader)
            .map_err(|r| match r {
                Rejection::Json(reason) | Rejection::Other(reason) => reason,
            })
    }

    /// Reads (a schema step: as JSON of its type), processes and validates a reply.
    fn check_detailed<T>(
        &self,
        text: &str,
        item: &ItemRecord,
        accept: &(dyn Fn(&Value, &ItemRecord) -> Result<T, String> + Sync),
        reader: Option<&JsonReader>,
    ) -> Result<(T, Value), Rejection> {
        let read = match (&self.json, reader) {
            (Some(_), Some(reader)) => Some(reader(text).map_err(Rejection::Json)?),
            (Some(json), None) => Some((json.read)(text).map_err(Rejection::Json)?),
            (None, _) => None,
        };
        let output = match (&self.output_processor, read) {
            (Some(f), Some(value)) => f(&value.to_string()).map_err(Rejection::Other)?,
            (Some(f), None) => f(text).map_err(Rejection::Other)?,
            (None, Some(value)) => value,
            (None, None) => Value::String(text.to_string()),
        };
        if let Some(v) = &self.validator {
            v(&output, Item::of(item)).map_err(Rejection::Other)?;
        }
        let accepted = accept(&output, item).map_err(Rejection::Other)?;
        Ok((accepted, output))
    }
}

/// Why a reply was rejected: it did not read as the step's JSON (repaired), or anything else.
enum Rejection {
    Json(String),
    Other(String),
}

/// The prompt a failure record keeps: chat messages as `[role]` blocks, or the completion
/// text, cut to `atk_state::MAX_FAILURE_PROMPT_CHARS`.
fn prompt_text(request: &Request) -> String {
    let text = match &request.prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| format!("[{}]\n{}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n\n"),
        Prompt::Completion(text) => text.clone(),
    };
    match text.char_indices().nth(atk_state::MAX_FAILURE_PROMPT_CHARS) {
        Some((cut, _)) => format!("{}\n[… cut]", &text[..cut]),
        None => text,
    }
}

fn details(request: &Request, reply: &atk_engine::Reply) -> Details {
    let (messages, prompt) = match &request.prompt {
        Prompt::Chat(messages) => (
            messages
                .iter()
                .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                .collect(),
            None,
        ),
        Prompt::Completion(text) => (Vec::new(), Some(text.clone())),
    };
    Details {
        messages,
        prompt,
        reply: reply.text.clone(),
        finish_reason: reply.finish_reason.clone(),
        model: reply.model.clone(),
    }
}

pub(crate) use atk_state::now_ms;

#[async_trait]
impl Step for PromptStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_names(&self) -> Vec<String> {
        vec![self.prompt_name.clone()]
    }

    fn engines(&self) -> Vec<EngineChoice> {
        vec![self.engine]
    }

    fn result_key(&self) -> &str {
        self.result_key.as_deref().unwrap_or(&self.name)
    }

    fn details_key(&self) -> Option<&str> {
        self.details_key.as_deref()
    }

    fn fingerprint_parts(&self, ctx: &StepContext) -> Option<crate::Fingerprint> {
        self.fingerprint_of(ctx)
    }

    fn can_reprocess(&self) -> bool {
        true
    }

    fn reprocess(
        &self,
        item: &ItemRecord,
        stored: &ResultRecord,
        _ctx: &StepContext,
    ) -> Option<Result<StepOutput, String>> {
        self.recheck(item, stored, &|_, _| Ok(()))
            .map(|r| r.map(|((), record)| StepOutput::Result(record)))
    }

    fn template_args(&self) -> Option<Vec<String>> {
        self.input_processor
            .is_none()
            .then(|| self.args.keys().cloned().collect())
    }

    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let ((), record) = self.attempt(item, ctx, &|_, _| Ok(())).await?;
        Ok(StepOutput::Result(record))
    }
}

#[cfg(test)]
mod tests;
