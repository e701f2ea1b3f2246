//! factual-qa: documents in, verified question/answer conversations out. The shape of most
//! real pipelines, in one chain:
//!
//! 1. `judge_chunk` (filter): drop chunks with nothing to ask about (contents pages, licence
//!    boilerplate, indexes, near-empty text);
//! 2. `generate_qa` (fan-out): N question/answer pairs per kept chunk, one child item each;
//! 3. `check_answer` (vote, large engine): does the question stand on its own and does the
//!    chunk support the answer? Majority of `votes`; a pair that fails is dropped;
//! 4. `write_conversation` (fan-in): one multi-turn conversation per chunk from its verified pairs.
//!
//! All four are schema steps: each asks the server to enforce the JSON Schema of its reply
//! type ([`Judgement`], [`QaPairs`], [`Check`], [`Dialogue`]) and reads the reply typed.

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

/// `judge_chunk`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
#[serde(rename_all = "lowercase")]
pub enum Suitability {
    /// Facts in sentences a reader could be asked about.
    Suitable,
    /// Contents, index, licence, bare lists, near-empty or garbled text.
    Unsuitable,
}

/// `judge_chunk`'s reply: why, then the verdict.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct Judgement {
    /// One short sentence of reasoning.
    pub reason: String,
    /// Whether the passage is worth asking questions about.
    pub verdict: Suitability,
}

/// One question with its answer.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct QaPair {
    /// A question that makes sense without the passage.
    pub question: String,
    /// Its answer, supported by the passage alone.
    pub answer: String,
}

/// `generate_qa`'s reply.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct QaPairs {
    /// The pairs, as many as asked for.
    pub pairs: Vec<QaPair>,
}

/// One `check_answer` vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// The pair is fit for the dataset.
    Yes,
    /// It is not.
    No,
}

/// `check_answer`'s reply: why, then the vote.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct Check {
    /// One or two sentences of reasoning.
    pub reason: String,
    /// Yes when the question stands alone and the passage supports the answer.
    pub verdict: YesNo,
}

/// One exchange of the conversation: the user's turn and the assistant's reply.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct Exchange {
    /// What the user asks (a question of a verified pair, maybe reworded).
    pub user: String,
    /// The assistant's answer: the pair's answer, every fact kept, none added.
    pub assistant: String,
}

/// `write_conversation`'s reply: the conversation, one exchange per verified pair.
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct Dialogue {
    /// The exchanges, in order.
    pub turns: Vec<Exchange>,
}

/// A stored `write_conversation` output: a [`Dialogue`], or the `[user, assistant]` pairs the
/// tagged text prompt of earlier releases stored (their output dirs resume as they are).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StoredDialogue {
    Schema(Dialogue),
    Tagged(Vec<(String, String)>),
}

/// The conversation's turns from a stored `write_conversation` output, either shape.
fn dialogue_turns(stored: StoredDialogue) -> Vec<(String, String)> {
    match stored {
        StoredDialogue::Schema(d) => d.turns.into_iter().map(|t| (t.user, t.assistant)).collect(),
        StoredDialogue::Tagged(turns) => turns,
    }
}

/// A conversation with no exchange, or an empty turn, is rejected (retried).
fn whole_dialogue(output: &Value, _: &Item) -> Result<(), String> {
    let Dialogue { turns } = typed(output)?;
    if turns.is_empty() {
        return Err("the conversation has no turns".into());
    }
    if turns
        .iter()
        .any(|t| t.user.trim().is_empty() || t.assistant.trim().is_empty())
    {
        return Err("a turn of the conversation is empty".into());
    }
    Ok(())
}

/// A `write_conversation` reply of the text prompt before schemas (`<user>`/`<assistant>`
/// tags) as the value the schema step makes: for `--reprocess` of an old output dir.
fn legacy_dialogue(reply: &str) -> Result<Value, String> {
    let turns = tagged_turns(reply, "user", "assistant")?;
    let turns: Vec<Value> = turns
        .into_iter()
        .map(|(user, assistant)| json!({"user": user, "assistant": assistant}))
        .collect();
    Ok(json!({ "turns": turns }))
}

/// A schema step's stored output read as its type (the step read it so already: an error
/// here means the output was not made by the current step).
fn typed<T: serde::de::DeserializeOwned>(output: &Value) -> Result<T, String> {
    serde_json::from_value(output.clone()).map_err(|e| format!("unexpected output ({e})"))
}

/// A `judge_chunk` reply of the text prompt before schemas (`Verdict: SUITABLE` on its last
/// line) as the value the schema step makes: for `--reprocess` of an old output dir.
fn legacy_judgement(reply: &str) -> Result<Value, String> {
    let keep = verdict(reply)?;
    let verdict = if keep { "suitable" } else { "unsuitable" };
    Ok(json!({"reason": reply.trim(), "verdict": verdict}))
}

/// A `generate_qa` reply of the text prompt before schemas (`Q:`/`A:` lines) as the value the
/// schema step makes: for `--reprocess` of an old output dir.
fn legacy_pairs(reply: &str) -> Result<Value, String> {
    let pairs: Vec<Value> = qa_pairs(reply)
        .into_iter()
        .map(|(question, answer)| json!({"question": question, "answer": answer}))
        .collect();
    if pairs.is_empty() {
        return Err("no question/answer pair (Q: ... A: ...) in the reply".into());
    }
    Ok(json!({ "pairs": pairs }))
}

/// The children of a `generate_qa` reply: one per pair (at most `most`), fields `question`
/// and `answer`.
fn pair_children(reply: &Value, most: usize) -> Result<Vec<Fields>, String> {
    let QaPairs { pairs } = typed(reply)?;
    let pairs: Vec<Fields> = pairs
        .into_iter()
        .filter(|p| !p.question.trim().is_empty() && !p.answer.trim().is_empty())
        .take(most)
        .map(|p| {
            Fields::from_iter([
                ("question".into(), p.question.trim().into()),
                ("answer".into(), p.answer.trim().into()),
            ])
        })
        .collect();
    if pairs.is_empty() {
        return Err("no question/answer pair with both halves in the reply".into());
    }
    Ok(pairs)
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
        .json::<Judgement>()
        .legacy_reader(legacy_judgement)
        .param("max_tokens", 300)
        .details_key("judge_details")
        .mock_reply_with(demo::judge);
    let generate = PromptStep::new("generate_qa")
        .json::<QaPairs>()
        .legacy_reader(legacy_pairs)
        .param("max_tokens", 1200)
        .arg("pairs", wanted)
        .details_key("generate_details")
        .mock_reply_with(demo::generate);
    let check = PromptStep::new("check_answer")
        .json::<Check>()
        .engine(EngineChoice::Large)
        .param("max_tokens", 300)
        .details_key("check_details")
        .mock_replies(demo::CHECK);
    let write = PromptStep::new("write_conversation")
        .json::<Dialogue>()
        .legacy_reader(legacy_dialogue)
        .validator(whole_dialogue)
        .param("max_tokens", 2000)
        .details_key("conversation_details")
        .mock_reply_with(demo::write);
    Chain::new()
        .then(FilterStep::new(judge).judge(|output| {
            let j: Judgement = typed(output)?;
            Ok((j.verdict == Suitability::Suitable, j.reason))
        }))
        .then(FanOutStep::new(generate, move |reply, _| {
            pair_children(reply, wanted)
        }))
        .then(check.votes(config.votes).verdict(|output| {
            let c: Check = typed(output)?;
            Ok((c.verdict == YesNo::Yes, c.reason))
        }))
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
            let stored: StoredDialogue = item?.get("write_conversation")?;
            let conversation = Conversation::from_turns(dialogue_turns(stored));
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
        let reply = json!({"pairs": [
            {"question": "a?", "answer": "b"}, {"question": "c?", "answer": "d"},
            {"question": "e?", "answer": "f"}]});
        let children = pair_children(&reply, 2).unwrap();
        assert_eq!(
            (children.len(), children[1]["question"].as_str()),
            (2, Some("c?"))
        );
        assert!(pair_children(&json!({"pairs": []}), 2).is_err());
        assert!(pair_children(&json!({"pairs": [{"question": " ", "answer": "x"}]}), 2).is_err());
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
        let read = atk_cli::atk_step::read_json::<Dialogue>(&demo::write(&view, 0)).unwrap();
        assert!(whole_dialogue(&read, &view).is_ok());
        let turns = dialogue_turns(serde_json::from_value(read).unwrap());
        assert_eq!(
            turns,
            [("a?".into(), "b".into()), ("c?".into(), "d".into())],
            "the mock conversation reads like a real one"
        );
    }

    #[test]
    fn a_conversation_reads_from_either_stored_shape_and_the_old_tags() {
        let old = json!([["q1", "a1"], ["q2", "a2"]]);
        let new = json!({"turns": [{"user": "q1", "assistant": "a1"}, {"user": "q2", "assistant": "a2"}]});
        let from = |v: &Value| dialogue_turns(serde_json::from_value(v.clone()).unwrap());
        assert_eq!(from(&old), from(&new));
        let legacy = legacy_dialogue(
            "<user>q1</user>\n<assistant>a1</assistant>\n<user>q2</user><assistant>a2</assistant>",
        )
        .unwrap();
        assert_eq!(
            legacy, new,
            "--reprocess brings an old tagged reply to the schema's shape"
        );
        assert!(legacy_dialogue("no tags").is_err());
        let view = Item::new("p");
        assert!(whole_dialogue(&json!({"turns": []}), &view).is_err());
        let blank = json!({"turns": [{"user": "q", "assistant": " "}]});
        assert!(whole_dialogue(&blank, &view).is_err());
    }
}
