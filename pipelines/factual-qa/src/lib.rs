//! factual-qa: documents in, verified question/answer conversations out. The shape of most
//! real pipelines, in one chain:
//!
//! 1. `judge_chunk` (filter): drop chunks with nothing to ask about (contents pages, licence
//!    boilerplate, indexes, near-empty text);
//! 2. `generate_qa` (fan-out): N question/answer pairs per kept chunk, one child item each;
//! 3. `check_answer` (vote, large engine): does the question stand on its own and does the
//!    chunk support the answer? Majority of `votes`; a pair that fails is dropped;
//! 4. `write_conversation` (fan-in): one multi-turn conversation per chunk from its verified pairs.

use std::process::ExitCode;

use atk_cli::atk_state::{Fields, ItemRecord};
use atk_cli::dataset::Conversation;
use atk_cli::{Pipeline, RunContext, RunError, async_trait};
use atk_step::{
    Chain, EngineChoice, FanInStep, FanOutStep, FilterStep, PromptStep, qa_children, tagged_turns,
};
use serde_json::json;

/// The pipeline's own config keys.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct FactualQaConfig {
    /// Question/answer pairs asked for per chunk (default 3; at least 1).
    #[serde(default = "three", deserialize_with = "atk_cli::config::rules::count")]
    pub pairs_per_chunk: u32,
    /// Votes per pair in `check_answer` (default 3, at least 1; a majority keeps the pair).
    #[serde(default = "three", deserialize_with = "atk_cli::config::rules::count")]
    pub votes: u32,
}

fn three() -> u32 {
    3
}

/// Prompts compiled into the binary (chat `.yaml` and completion `.txt` twins).
pub const PROMPTS: &[(&str, &str)] = atk_step::prompts!(
    "judge_chunk",
    "generate_qa",
    "check_answer",
    "write_conversation"
);

/// The chunk's sentences of five words or more (the mock engine's stand-in replies use them).
fn sentences(item: &ItemRecord) -> Vec<String> {
    let text = item.text("text").unwrap_or_default();
    let split = text.split_inclusive(['.', '!', '?']).map(str::trim);
    split
        .filter(|s| s.split_whitespace().count() >= 5)
        .map(String::from)
        .collect()
}

/// The verified pairs of a chunk as one `{qa_pairs}` text for the conversation prompt.
fn gather_pairs(pairs: &[ItemRecord]) -> Result<Fields, String> {
    let mut text = Vec::new();
    for p in pairs {
        text.push(format!(
            "Question: {}\nAnswer: {}",
            p.text("question")?,
            p.text("answer")?
        ));
    }
    Ok(Fields::from_iter([(
        "qa_pairs".into(),
        text.join("\n\n").into(),
    )]))
}

/// One line of `qa_pairs.jsonl`: a pair that passed the vote, with its source and chunk id.
fn pair_row(p: ItemRecord) -> Result<serde_json::Value, RunError> {
    let (question, answer, source) = (p.text("question")?, p.text("answer")?, p.text("metadata")?);
    Ok(json!({"question": question, "answer": answer, "source": source, "chunk_id": p.parent}))
}

/// The stand-in replies of the mock engine, so the offline demo drops the contents page
/// (judge), splits votes (check) and writes well-formed conversations (write).
fn mock_judge(item: &ItemRecord, _: u32) -> String {
    let contents_page = item.text("text").unwrap_or_default().contains("....");
    if sentences(item).len() >= 2 && !contents_page {
        "Plain prose with facts to ask about.\nVerdict: SUITABLE".into()
    } else {
        "A list of titles and page numbers.\nVerdict: UNSUITABLE".into()
    }
}

fn mock_generate(item: &ItemRecord, _: u32) -> String {
    let pair = |(s, i): (&String, usize)| format!("Q: What does sentence {i} say?\nA: {s}\n");
    sentences(item).iter().zip(1..).map(pair).collect()
}

const MOCK_CHECK: [&str; 3] = [
    "The passage states this.\nVerdict: YES",
    "Stated plainly.\nYES",
    "The answer adds a claim.\nVerdict: NO",
];

fn mock_write(item: &ItemRecord, _: u32) -> String {
    let pairs = item.text("qa_pairs").unwrap_or_default();
    let turns = pairs
        .replace("Question: ", "<user>")
        .replace("\nAnswer: ", "</user>\n<assistant>");
    turns.replace("\n\n", "</assistant>\n") + "</assistant>"
}

/// The chain, built once: used to run the steps and to read the results back.
pub fn chain(config: &FactualQaConfig) -> Chain {
    let wanted = config.pairs_per_chunk.max(1) as usize;
    let judge = PromptStep::new("judge_chunk", "judge_chunk")
        .param("max_tokens", 300)
        .details_key("judge_details");
    let generate = PromptStep::new("generate_qa", "generate_qa")
        .param("max_tokens", 1200)
        .arg("pairs", wanted);
    // A vote reads "yes"/"no" from each reply's last line (atk_step::default_judge).
    let check = PromptStep::new("check_answer", "check_answer")
        .engine(EngineChoice::Large)
        .param("max_tokens", 300);
    let write =
        PromptStep::new("write_conversation", "write_conversation").param("max_tokens", 2000);
    let write = write.output_processor(|reply| {
        tagged_turns(reply, "user", "assistant").map(|turns| json!(turns))
    });
    Chain::new()
        .then(FilterStep::new(judge.mock_reply_with(mock_judge)))
        .then(FanOutStep::new(
            generate
                .details_key("generate_details")
                .mock_reply_with(mock_generate),
            move |reply, _| qa_children(reply.as_str().unwrap_or_default(), wanted),
        ))
        .then(
            check
                .details_key("check_details")
                .mock_replies(MOCK_CHECK)
                .votes(config.votes),
        )
        .then(FanInStep::new(
            write
                .details_key("conversation_details")
                .mock_reply_with(mock_write),
            |_, pairs| gather_pairs(pairs),
        ))
}

/// The factual-qa pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct FactualQaPipeline;

#[async_trait]
impl Pipeline for FactualQaPipeline {
    type Config = FactualQaConfig;

    fn name(&self) -> &'static str {
        "factual-qa"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    async fn run(&self, ctx: &mut RunContext<FactualQaConfig>) -> Result<(), RunError> {
        ctx.set_progress(0.1, "judging chunks, asking, checking and gathering");
        let chain = chain(&ctx.config);
        ctx.run_chain(&chain).await?;

        ctx.set_progress(0.9, "writing the datasets");
        let mut sharegpt = ctx.dataset("sharegpt_format.jsonl")?;
        let mut openai = ctx.dataset("openai_messages.jsonl")?;
        for item in ctx.final_items(&chain) {
            let turns: Vec<(String, String)> = item?.get("write_conversation")?;
            let conversation = Conversation::from_turns(turns);
            sharegpt.write_sharegpt(&conversation)?;
            openai.write_openai(&conversation)?;
        }
        sharegpt.finish()?;
        openai.finish()?;
        let checked = chain.up_to("check_answer").expect("a step of the chain");
        ctx.write_jsonl(
            "qa_pairs.jsonl",
            ctx.final_items(&checked).map(|p| pair_row(p?)),
        )?;
        ctx.write_meta_datasets(&chain)?;
        ctx.set_progress(1.0, "pipeline complete");
        Ok(())
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    atk_cli::main(FactualQaPipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_split_into_children_and_gathered_back() {
        let children = qa_children("Q: a?\nA: b\nQ: c?\nA: d\nQ: e?\nA: f", 2).unwrap();
        assert_eq!(
            (children.len(), children[1]["question"].as_str()),
            (2, Some("c?"))
        );
        assert!(qa_children("nothing", 2).is_err());
        let items: Vec<ItemRecord> = children
            .into_iter()
            .map(|fields| ItemRecord {
                v: 2,
                id: "c".into(),
                parent: None,
                order: vec![0],
                fields,
            })
            .collect();
        let gathered = gather_pairs(&items).unwrap();
        assert_eq!(
            gathered["qa_pairs"],
            "Question: a?\nAnswer: b\n\nQuestion: c?\nAnswer: d"
        );
        let view = ItemRecord {
            v: 2,
            id: "p".into(),
            parent: None,
            order: vec![0],
            fields: gathered,
        };
        let turns = tagged_turns(&mock_write(&view, 0), "user", "assistant").unwrap();
        assert_eq!(
            turns,
            [("a?".into(), "b".into()), ("c?".into(), "d".into())],
            "the mock conversation parses like a real one"
        );
    }
}
