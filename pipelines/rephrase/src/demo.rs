//! The offline demo's stand-in replies (the mock engine's answers). Not pipeline logic.

use atk_cli::dataset::Turn;
use atk_cli::prelude::Item;

/// The demo's fake model (mock engine): a reasoning line quoting the question, then the
/// original answer. A conversation with several answers gets only its first rewritten on the
/// first call (rejected, then right on the retry), so the demo shows a validation retry.
pub(crate) fn rewrite(item: &Item, call: u32) -> String {
    let turns: Vec<Turn> = item.get("conversation").unwrap_or_default();
    let (mut why, mut out) = ("No question: give the text as it is".to_string(), vec![]);
    for t in &turns {
        if t.from == "human" {
            why = format!("The user asks \"{}\", so answer that", t.value.trim());
        } else if t.from == "gpt" && (call > 0 || out.is_empty()) {
            let answer = t.value.trim();
            out.push(format!(
                "<reasoning>{why}.</reasoning>\n<answer>{answer}</answer>"
            ));
        }
    }
    out.join("\n\n")
}
