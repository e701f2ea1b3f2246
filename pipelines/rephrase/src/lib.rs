//! The rephrase pipeline: reads an existing dataset (JSONL/JSON rows with a text field, or
//! ShareGPT conversations) instead of documents, and rewrites each conversation with one
//! prompted step: a short line of reasoning before every answer, the questions kept verbatim.
//! It shows how a pipeline brings its own items (`read_files_manually: false` and
//! [`RunContext::seed_items`]): one item per row, not chunked.

use std::process::ExitCode;

use atk_cli::dataset::Turn;
use atk_cli::prelude::*;

mod demo;

/// How rows are read: `auto` takes a row with a `conversations` list as ShareGPT, others as JSONL.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, atk_cli::config::JsonSchema,
)]
#[schemars(crate = "atk_cli::config::schemars")]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// ShareGPT when the row has `conversations`, a text row otherwise.
    #[default]
    Auto,
    /// Every row must be `{"conversations": [{"from", "value"}, ...]}`.
    Sharegpt,
    /// Every row is a text row (`text_field`, and `question_field` when present).
    Jsonl,
}

/// The pipeline's own config keys (the common ones come from `atk_cli`).
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
#[serde(default)]
pub struct RephraseConfig {
    /// `auto`, `sharegpt` or `jsonl`.
    pub input_format: InputFormat,
    /// Text rows: the field holding the answer.
    pub text_field: String,
    /// Text rows: the field holding the question (a row without it has no human turn).
    pub question_field: String,
    /// A rewritten answer keeps at least this share of the original's characters.
    pub min_answer_ratio: f64,
}

impl Default for RephraseConfig {
    fn default() -> Self {
        Self {
            input_format: InputFormat::Auto,
            text_field: "text".into(),
            question_field: "question".into(),
            min_answer_ratio: 0.8,
        }
    }
}

/// Prompts compiled into the binary; a config's `prompts` folder overrides them file by file.
pub const PROMPTS: &[(&str, &str)] = prompts!("add_reasoning");

/// The conversation of one row, or why the row cannot be used.
pub fn conversation(row: &Value, cfg: &RephraseConfig) -> Result<Vec<Turn>, String> {
    let turns: Vec<Turn> = match (row.get("conversations"), cfg.input_format) {
        (Some(c), InputFormat::Auto | InputFormat::Sharegpt) => {
            serde_json::from_value(c.clone())
                .map_err(|e| format!("`conversations` is not a list of {{from, value}} ({e})"))?
        }
        (None, InputFormat::Sharegpt) => return Err("no `conversations` list".into()),
        _ => {
            let field = |k: &str| row.get(k)?.as_str().filter(|t| !t.trim().is_empty());
            let Some(answer) = field(&cfg.text_field) else {
                return Err(format!("no text in field `{}`", cfg.text_field));
            };
            let question = field(&cfg.question_field).map(|q| Turn::new("human", q));
            question
                .into_iter()
                .chain([Turn::new("gpt", answer)])
                .collect()
        }
    };
    let mut answers = turns.iter().filter(|t| t.from == "gpt").peekable();
    if answers.peek().is_none() || answers.any(|t| t.value.trim().is_empty()) {
        return Err("no gpt turn, or an empty one".into());
    }
    Ok(turns)
}

/// The item with what its prompt shows added (not stored): the `transcript` of its
/// `conversation`, answers numbered, and the number of `answers`.
pub fn with_transcript(mut item: Item) -> Item {
    let turns: Vec<Turn> = item.get("conversation").unwrap_or_default();
    let (mut n, mut transcript) = (0, Vec::new());
    for t in &turns {
        n += usize::from(t.from == "gpt");
        let who = if t.from == "gpt" {
            format!("gpt, answer {n}")
        } else {
            t.from.clone()
        };
        transcript.push(format!("[{who}]\n{}", t.value.trim()));
    }
    item.set("transcript", transcript.join("\n\n"));
    item.set("answers", n);
    item
}

/// Accepted when every answer is rewritten, each reasoning is one short line, and no answer
/// kept less than `min_ratio` of its original length.
pub fn validate(pairs: &Value, item: &Item, min_ratio: f64) -> Result<(), String> {
    let turns: Vec<Turn> = item.get("conversation")?;
    let pairs: Vec<(String, String)> =
        serde_json::from_value(pairs.clone()).map_err(|e| e.to_string())?;
    let originals: Vec<&Turn> = turns.iter().filter(|t| t.from == "gpt").collect();
    let (got, want) = (pairs.len(), originals.len());
    if got != want {
        return Err(format!(
            "{got} answers rewritten, the conversation has {want}"
        ));
    }
    for (n, ((why, answer), orig)) in (1..).zip(pairs.iter().zip(originals)) {
        let (have, had) = (answer.chars().count(), orig.value.trim().chars().count());
        let need = ((had as f64) * min_ratio).ceil().max(1.0) as usize;
        if why.is_empty() || why.len() > 400 || why.contains('\n') {
            return Err(format!(
                "answer {n}: the reasoning must be one line, 1-400 bytes"
            ));
        } else if have < need {
            return Err(format!(
                "answer {n}: {have} characters of {had} kept (< {need})"
            ));
        }
    }
    Ok(())
}

/// The one step: rewrite every answer of the item's conversation with a line of reasoning.
pub fn add_reasoning_step(cfg: &RephraseConfig) -> PromptStep {
    let ratio = cfg.min_answer_ratio;
    PromptStep::new("add_reasoning")
        .input_processor(with_transcript)
        .param("temperature", 0.4)
        .param("max_tokens", 3000)
        .param("stop", json!(["\nConversation ("]))
        // `(reasoning, answer)` pairs, in order: `<reasoning>…</reasoning><answer>…</answer>`.
        .output_processor(|reply| tagged_turns(reply, "reasoning", "answer").map(|p| json!(p)))
        .validator(move |pairs, item| validate(pairs, item, ratio))
        .result_key("rewritten")
        .details_key("add_reasoning_details")
        .mock_reply_with(demo::rewrite)
}

/// The conversation with each gpt turn replaced by `<reasoning>…</reasoning>` and the answer.
pub fn rewritten(turns: Vec<Turn>, pairs: Vec<(String, String)>) -> Conversation {
    let mut pairs = pairs.into_iter();
    let turns = turns
        .into_iter()
        .map(|t| match (t.from == "gpt").then(|| pairs.next()) {
            Some(Some((r, a))) => Turn::new("gpt", format!("<reasoning>{r}</reasoning>\n{a}")),
            _ => t,
        });
    Conversation {
        conversations: turns.collect(),
    }
}

/// The rephrase pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct RephrasePipeline;

#[async_trait]
impl Pipeline for RephrasePipeline {
    type Config = RephraseConfig;

    fn name(&self) -> &'static str {
        "rephrase"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    fn chain(&self, config: &RephraseConfig) -> Chain {
        Chain::new().then(add_reasoning_step(config))
    }

    async fn seed(&self, ctx: &mut RunContext<RephraseConfig>) -> Result<(), RunError> {
        if ctx.common.read_files_manually {
            let why = "rephrase reads its rows itself: set `read_files_manually: false` (system)";
            return Err(RunError::Config(why.into()));
        }
        let cfg = ctx.config.clone();
        let rows = atk_cli::rows::read_rows(&ctx.common.input_dir)?;
        let items = rows.into_iter().filter_map(|(file, line, row)| {
            match row.and_then(|r| conversation(&r, &cfg)) {
                Ok(turns) => Some((
                    file,
                    Fields::from_iter([("conversation".into(), json!(turns))]),
                )),
                Err(why) => {
                    tracing::warn!("{file}:{line}: {why}; row skipped");
                    None
                }
            }
        });
        if ctx.seed_items(items).await? == 0 {
            let dir = ctx.common.input_dir.display();
            return Err(RunError::Input(format!("{dir}: no usable row")));
        }
        Ok(())
    }

    fn write_datasets(
        &self,
        ctx: &RunContext<RephraseConfig>,
        chain: &Chain,
    ) -> Result<(), RunError> {
        let out = ctx.dataset("sharegpt_format.jsonl")?;
        for item in ctx.final_items(chain) {
            let item = item?;
            out.write_sharegpt(&rewritten(
                item.get("conversation")?,
                item.get("rewritten")?,
            ))?;
        }
        Ok(())
    }
}

/// The binary's entry point (also called in-process by tests).
pub fn main() -> ExitCode {
    atk_cli::main(RephrasePipeline)
}
