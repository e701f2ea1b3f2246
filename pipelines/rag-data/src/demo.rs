//! The offline demo's stand-in replies (what the mock engine answers, JSON as each step's
//! schema asks): the contents page is dropped (judge), two questions per chunk from its first
//! sentences (so the two documents that open with the same harbour rule give near-duplicate
//! questions), answers that cite the question's own passage, and split votes. Not pipeline
//! logic: a real run never calls these.

use atk_cli::prelude::{Item, Value, json};

/// The chunk's sentences of five words or more.
fn sentences(item: &Item) -> Vec<String> {
    let text = item.text("text").unwrap_or_default();
    // Prose paragraphs only: no heading, no title line.
    let prose = text
        .split("\n\n")
        .filter(|p| p.contains('.') && !p.starts_with('#'));
    let text = prose.collect::<Vec<_>>().join(" ");
    let split = text.split_inclusive(['.', '!', '?']).map(str::trim);
    split
        .filter(|s| s.split_whitespace().count() >= 5)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// What the demo's questions start with; the answer reads the sentence back after it.
const ASKED: &str = "Which passage states that ";

/// `judge_chunk`: prose is suitable, a contents page is not.
pub(crate) fn judge(item: &Item, _: u32) -> String {
    let contents_page = item.text("text").unwrap_or_default().contains("....");
    let (reason, verdict) = if sentences(item).len() >= 2 && !contents_page {
        ("Full sentences stating facts.", "suitable")
    } else {
        ("A list of titles and page numbers.", "unsuitable")
    };
    json!({"reason": reason, "verdict": verdict}).to_string()
}

/// `write_questions`: one question per opening sentence.
pub(crate) fn questions(item: &Item, _: u32) -> String {
    let ask = |s: &String| format!("{ASKED}{}?", s.trim_end_matches(['.', '!', '?']));
    let questions: Vec<String> = sentences(item).iter().take(2).map(ask).collect();
    json!({ "questions": questions }).to_string()
}

/// `answer_question`: cites the question's own passage, answers with its sentence.
pub(crate) fn answer(item: &Item, _: u32) -> String {
    let source = item
        .path("context.source")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let question = item.text("question").unwrap_or_default();
    let sentence = question.trim_start_matches(ASKED).trim_end_matches('?');
    json!({"passage": source, "answer": format!("{sentence}.")}).to_string()
}

/// `check_support`: votes picked per item and vote, so some answers fail.
pub(crate) const CHECK: [&str; 3] = [
    r#"{"reason":"The passage states this.","verdict":"yes"}"#,
    r#"{"reason":"Supported word for word.","verdict":"yes"}"#,
    r#"{"reason":"The answer goes beyond the passage.","verdict":"no"}"#,
];
