//! The offline demo's stand-in replies (what the mock engine answers), so the demo drops the
//! contents page (judge), splits votes (check) and writes well-formed conversations (write),
//! each reply the JSON its step's schema asks for.
//! Not pipeline logic: a real run never calls these.

use atk_cli::prelude::{Item, json};

/// The chunk's sentences of five words or more.
fn sentences(item: &Item) -> Vec<String> {
    let text = item.text("text").unwrap_or_default();
    let split = text.split_inclusive(['.', '!', '?']).map(str::trim);
    split
        .filter(|s| s.split_whitespace().count() >= 5)
        .map(String::from)
        .collect()
}

/// `judge_chunk` (JSON, as the schema asks): prose is suitable, a contents page is not.
pub(crate) fn judge(item: &Item, _: u32) -> String {
    let contents_page = item.text("text").unwrap_or_default().contains("....");
    let (reason, verdict) = if sentences(item).len() >= 2 && !contents_page {
        ("Plain prose with facts to ask about.", "suitable")
    } else {
        ("A list of titles and page numbers.", "unsuitable")
    };
    json!({"reason": reason, "verdict": verdict}).to_string()
}

/// `generate_qa`: one pair per sentence.
pub(crate) fn generate(item: &Item, _: u32) -> String {
    let pair = |(s, i): (&String, usize)| json!({"question": format!("What does sentence {i} say?"), "answer": s});
    let pairs: Vec<_> = sentences(item).iter().zip(1..).map(pair).collect();
    json!({ "pairs": pairs }).to_string()
}

/// `check_answer`: votes picked per item and vote, so some pairs fail.
pub(crate) const CHECK: [&str; 3] = [
    r#"{"reason":"The passage states this.","verdict":"yes"}"#,
    r#"{"reason":"Stated plainly.","verdict":"yes"}"#,
    r#"{"reason":"The answer adds a claim.","verdict":"no"}"#,
];

/// `write_conversation` (JSON, as the schema asks): the pairs as the conversation's turns.
pub(crate) fn write(item: &Item, _: u32) -> String {
    let pairs = item.text("qa_pairs").unwrap_or_default();
    let turn = |block: &str| {
        let (question, answer) = block.split_once("\nAnswer: ").unwrap_or((block, ""));
        json!({"user": question, "assistant": answer})
    };
    let blocks = pairs
        .trim_start_matches("Question: ")
        .split("\n\nQuestion: ");
    let turns: Vec<_> = blocks.map(turn).collect();
    json!({ "turns": turns }).to_string()
}
