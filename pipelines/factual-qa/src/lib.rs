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

use atk_cli::prelude::*;

mod demo;

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
pub const PROMPTS: &[(&str, &str)] = prompts!(
    "judge_chunk",
    "generate_qa",
    "check_answer",
    "write_conversation"
);

/// The verified pairs of a chunk as one `{qa_pairs}` text for the conversation prompt.
fn gather_pairs(pairs: &[Item]) -> Result<Fields, String> {
    let mut text = Vec::new();
    for p in pairs {
        let (question, answer) = (p.text("question")?, p.text("answer")?);
        text.push(format!("Question: {question}\nAnswer: {answer}"));
    }
    Ok(Fields::from_iter([(
        "qa_pairs".into(),
        text.join("\n\n").into(),
    )]))
}

/// One line of `qa_pairs.jsonl`: a pair that passed the vote, with its source and chunk id.
fn pair_row(p: Item) -> Result<Value, RunError> {
    let (question, answer, source) = (p.text("question")?, p.text("answer")?, p.text("metadata")?);
    Ok(json!({"question": question, "answer": answer, "source": source, "chunk_id": p.parent()}))
}

/// The chain, built once: used to run the steps and to read the results back.
pub fn chain(config: &FactualQaConfig) -> Chain {
    let wanted = config.pairs_per_chunk.max(1) as usize;
    let judge = PromptStep::new("judge_chunk")
        .param("max_tokens", 300)
        .details_key("judge_details")
        .mock_reply_with(demo::judge);
    let generate = PromptStep::new("generate_qa")
        .param("max_tokens", 1200)
        .arg("pairs", wanted)
        .details_key("generate_details")
        .mock_reply_with(demo::generate);
    // A vote reads "yes"/"no" from each reply's last line (default_judge).
    let check = PromptStep::new("check_answer")
        .engine(EngineChoice::Large)
        .param("max_tokens", 300)
        .details_key("check_details")
        .mock_replies(demo::CHECK);
    let write = PromptStep::new("write_conversation")
        .param("max_tokens", 2000)
        .output_processor(|reply| tagged_turns(reply, "user", "assistant").map(|t| json!(t)))
        .details_key("conversation_details")
        .mock_reply_with(demo::write);
    Chain::new()
        .then(FilterStep::new(judge))
        .then(FanOutStep::new(generate, move |reply, _| {
            qa_children(reply.as_str().unwrap_or_default(), wanted)
        }))
        .then(check.votes(config.votes))
        .then(FanInStep::new(write, |_, pairs| gather_pairs(pairs)))
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

    fn chain(&self, config: &FactualQaConfig) -> Chain {
        chain(config)
    }

    fn write_datasets(
        &self,
        ctx: &RunContext<Self::Config>,
        chain: &Chain,
    ) -> Result<(), RunError> {
        let sharegpt = ctx.dataset("sharegpt_format.jsonl")?;
        let openai = ctx.dataset("openai_messages.jsonl")?;
        for item in ctx.final_items(chain) {
            let turns: Vec<(String, String)> = item?.get("write_conversation")?;
            let conversation = Conversation::from_turns(turns);
            sharegpt.write_sharegpt(&conversation)?;
            openai.write_openai(&conversation)?;
        }
        let pairs = ctx.dataset("qa_pairs.jsonl")?;
        let checked = chain.up_to("check_answer").expect("a step of the chain");
        for pair in ctx.final_items(&checked) {
            pairs.write(&pair_row(pair?)?)?;
        }
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
        let items: Vec<Item> = children
            .into_iter()
            .map(|fields| {
                let (q, a) = (&fields["question"], &fields["answer"]);
                Item::new("c")
                    .with("question", q.clone())
                    .with("answer", a.clone())
            })
            .collect();
        let gathered = gather_pairs(&items).unwrap();
        assert_eq!(
            gathered["qa_pairs"],
            "Question: a?\nAnswer: b\n\nQuestion: c?\nAnswer: d"
        );
        let view = Item::new("p").with("qa_pairs", gathered["qa_pairs"].clone());
        let turns = tagged_turns(&demo::write(&view, 0), "user", "assistant").unwrap();
        assert_eq!(
            turns,
            [("a?".into(), "b".into()), ("c?".into(), "d".into())],
            "the mock conversation parses like a real one"
        );
    }
}
