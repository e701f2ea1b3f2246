//! rag-data: documents in, retrieval-augmented training conversations out. Each question is
//! answered from its own chunk set among distractor chunks of *other* documents:
//!
//! 1. `judge_chunk` (filter): drop chunks with nothing to ask about;
//! 2. `judged` (barrier): every chunk is judged before anything goes on; later steps read the
//!    set of kept chunks (`ctx.kept_by("judged")`), the same on every shard;
//! 3. `write_questions` (fan-out): two questions per kept chunk, one child item each;
//! 4. `context` (function, no request): the question's chunk plus `distractors` chunks of
//!    other documents the judge kept, shuffled and numbered; `--redo context` remakes it for
//!    free and the steps after it are asked again;
//! 5. `answer_question`: the answer and the number of the passage it cites;
//! 6. `check_support` (vote, large engine): does the cited passage support the answer?
//! 7. `dedup_questions` (barrier): near-duplicate questions removed, the first kept.
//!
//! The four prompted steps are schema steps: the server is asked to enforce each reply's JSON
//! Schema ([`Judgement`], [`Questions`], [`Answer`], [`Vote`]) and the reply is read typed.

use std::process::ExitCode;

use atk_cli::prelude::*;

mod demo;

/// The pipeline's own config keys.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
#[serde(default)]
pub struct RagDataConfig {
    /// Distractor chunks (of other documents, kept by the judge) beside each question's own chunk (default 2).
    pub distractors: u32,
    /// Votes per answer in `check_support` (default 3, at least 1; a majority keeps the answer).
    #[serde(deserialize_with = "atk_cli::config::rules::count")]
    pub votes: u32,
}

impl Default for RagDataConfig {
    fn default() -> Self {
        Self {
            distractors: 2,
            votes: 3,
        }
    }
}

/// Prompts compiled into the binary (chat `.yaml` and completion `.txt` twins).
pub const PROMPTS: &[(&str, &str)] = prompts!(
    "judge_chunk",
    "write_questions",
    "answer_question",
    "check_support"
);

/// The system turn's instruction, before the passages.
const SYSTEM: &str = "Answer the question from these passages, citing the one you use as [N].";

/// Questions asked per kept chunk.
const QUESTIONS: usize = 2;

/// `answer_question`'s reply: the passage used, then the answer from it.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct Answer {
    /// The number of the passage that holds the answer.
    pub passage: u64,
    /// The answer, in one to three sentences, from that passage alone.
    pub answer: String,
}

/// The passage the item's answer cites.
fn cited(item: &Item) -> Option<&Value> {
    cited_passage(item, "context", "answer.passage")
}

/// An answer whose passage number is one of the passages.
fn valid_citation(answer: &Value, item: &Item) -> Result<(), String> {
    let item = item.clone().with("answer", answer.clone());
    cited(&item)
        .map(|_| ())
        .ok_or("the cited passage is not one of the passages".into())
}

/// The item with the text of the passage its answer cites as `{cited}`.
fn with_cited(item: Item) -> Result<Item, String> {
    let text = cited(&item).ok_or("no cited passage")?["text"].clone();
    Ok(item.with("cited", text))
}

/// The questions of a reply, one child item each.
fn split(reply: &Value, _: &Item) -> Result<Vec<Fields>, String> {
    list_children(reply, "questions", "question", QUESTIONS)
}

/// The chain, built once: used to run the steps and to read the results back.
pub fn chain(config: &RagDataConfig) -> Chain {
    let distractors = config.distractors as usize;
    let judge = PromptStep::new("judge_chunk")
        .json::<Judgement>()
        .param("max_tokens", 300)
        .details_key("judge_details");
    let questions = PromptStep::new("write_questions")
        .json::<Questions>()
        .param("max_tokens", 400)
        .arg("count", QUESTIONS)
        .details_key("question_details")
        .mock_reply_with(demo::questions);
    let context = MapStep::with_context("context", move |item, ctx| {
        passages(item, ctx, distractors, Some("judged"))
    });
    let answer = PromptStep::new("answer_question")
        .result_key("answer")
        .json::<Answer>()
        .param("max_tokens", 400)
        .validator(valid_citation)
        .details_key("answer_details");
    let check = PromptStep::new("check_support")
        .engine(EngineChoice::Large)
        .json::<Vote>()
        .param("max_tokens", 300)
        .try_input_processor(with_cited)
        .details_key("check_details");
    let dedup = BarrierStep::near_duplicates("dedup_questions", "question", 0.7);
    Chain::new()
        .then(FilterStep::new(judge.mock_reply_with(demo::judge)))
        .then(BarrierStep::keep_all("judged"))
        .then(FanOutStep::new(questions, split))
        .then(context.version(format!("1 distractors={distractors}")))
        .then(answer.mock_reply_with(demo::answer))
        .then(check.mock_replies(demo::CHECK).votes(config.votes))
        .then(dedup)
}

/// One row of `rag_qa.jsonl`.
fn qa_row(item: &Item) -> Result<Value, RunError> {
    let passage = cited(item).ok_or_else(|| RunError::fatal("an answer cites no passage"))?;
    Ok(json!({
        "question": item.text("question")?,
        "answer": item.text("answer.answer")?,
        "source_chunk_id": item.parent(),
        "distractor_ids": item.path("context.distractor_ids"),
        "cited_passage": {"number": item.path("answer.passage"), "chunk_id": passage["id"], "text": passage["text"]},
    }))
}

/// The rag-data pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct RagDataPipeline;

#[async_trait]
impl Pipeline for RagDataPipeline {
    type Config = RagDataConfig;

    fn name(&self) -> &'static str {
        "rag-data"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    fn chain(&self, config: &RagDataConfig) -> Chain {
        chain(config)
    }

    fn write_datasets(
        &self,
        ctx: &RunContext<Self::Config>,
        chain: &Chain,
    ) -> Result<(), RunError> {
        let (sharegpt, openai, rows) = (
            ctx.dataset("sharegpt_format.jsonl")?,
            ctx.dataset("openai_messages.jsonl")?,
            ctx.dataset("rag_qa.jsonl")?,
        );
        for item in ctx.final_items(chain) {
            let item = item?;
            let system = format!("{SYSTEM}\n\n{}", item.text("context.text")?);
            let answer = format!(
                "{} [{}]",
                item.text("answer.answer")?,
                item.text("answer.passage")?
            );
            let conversation = Conversation::new([
                ("system", system),
                ("human", item.text("question")?),
                ("gpt", answer),
            ]);
            sharegpt.write_sharegpt(&conversation)?;
            openai.write_openai(&conversation)?;
            rows.write(&qa_row(&item)?)?;
        }
        Ok(())
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    atk_cli::main(RagDataPipeline)
}
