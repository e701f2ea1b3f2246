//! Retrieval contexts from the corpus: an item's own chunk among distractor chunks of other
//! documents, shuffled and numbered, and the passage an answer cites. What a RAG pipeline's
//! function step and prompts read.

use serde_json::{Value, json};

use crate::item::Item;
use crate::step::StepContext;

/// The retrieval context of `item`: its source chunk (its own id when it is a chunk, its
/// parent's when a fan-out made it) and `distractors` chunks of *other* documents — only among
/// the ids barrier step `among` kept, when given — drawn with the item's random source (salt
/// `"distractors"`), shuffled with it, and numbered from 1. The JSON value:
///
/// - `text`: the passages as a prompt reads them, `[N] (document)\ntext`, blank-line separated;
/// - `passages`: `[{"id", "doc", "text"}]` in that order;
/// - `source`: the number of the source chunk's passage;
/// - `distractor_ids`: the distractors' chunk ids, in the order drawn.
///
/// The same item, corpus, seed and kept set give the same value on every run and shard. Fewer
/// distractors than asked only when fewer such chunks exist. `Err` names what is missing (no
/// corpus, a chunk not in it, a barrier that has not run).
pub fn passages(
    item: &Item,
    ctx: &StepContext,
    distractors: usize,
    among: Option<&str>,
) -> Result<Value, String> {
    let corpus = ctx.corpus().map_err(|e| e.to_string())?;
    let source_id = item.parent().unwrap_or(item.id());
    let source = corpus
        .chunk(source_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("chunk {source_id} is not in the corpus"))?;
    let kept = match among {
        Some(step) => Some(
            ctx.kept_by(step)
                .ok_or_else(|| format!("barrier step `{step}` has not run before this step"))?,
        ),
        None => None,
    };
    let mut rng = ctx.rng(item.id(), "distractors");
    let others = corpus
        .sample_other_docs(&source.doc, distractors, &mut rng, kept.as_deref())
        .map_err(|e| e.to_string())?;
    let distractor_ids: Vec<&str> = others.iter().map(|c| c.id.as_str()).collect();
    let mut all: Vec<_> = others.iter().chain([&source]).collect();
    rng.shuffle(&mut all);
    let text: Vec<String> = all
        .iter()
        .zip(1..)
        .map(|(c, i)| format!("[{i}] ({})\n{}", c.doc, c.text.trim()))
        .collect();
    Ok(json!({
        "text": text.join("\n\n"),
        "passages": all.iter().map(|c| json!({"id": c.id, "doc": c.doc, "text": c.text})).collect::<Vec<_>>(),
        "source": 1 + all.iter().position(|c| c.id == source.id).unwrap_or(0),
        "distractor_ids": distractor_ids,
    }))
}

/// The passage (`{"id", "doc", "text"}`) of the context under field `context` (made by
/// [`passages`]) whose number is at `number_path` (e.g. `answer.passage`); `None` when there
/// is no such number or it is out of range.
pub fn cited_passage<'a>(item: &'a Item, context: &str, number_path: &str) -> Option<&'a Value> {
    let n = match item.path(number_path)? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().trim_matches(['[', ']']).parse().ok()?,
        _ => return None,
    };
    item.path(&format!("{context}.passages.{}", n.checked_sub(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedEngine;
    use crate::{Engines, PromptLibrary};
    use atk_state::MemCorpus;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn a_context_holds_its_chunk_and_distractors_of_other_kept_documents_only() {
        let chunks: Vec<(String, String, String)> = (0..9)
            .map(|i| (format!("c{i}"), format!("d{}", i / 3), format!("text {i}")))
            .collect();
        let mut ctx = StepContext::new(
            Engines::single(Arc::new(ScriptedEngine::new("e"))),
            Arc::new(PromptLibrary::new(&[])),
        );
        ctx.corpus = Some(Arc::new(MemCorpus::new(chunks)));
        ctx.seed = 5;
        let item = Item::new("q1").with("question", "?");
        // A question item made from chunk c1 (its parent).
        let mut record = item.into_record();
        record.parent = Some("c1".into());
        let item = Item::from_record(record);
        assert!(
            passages(&item, &ctx, 2, Some("judged"))
                .unwrap_err()
                .contains("has not run")
        );
        ctx.set_kept(
            "judged",
            HashSet::from(["c0", "c2", "c4", "c8"].map(String::from)),
        );
        let v = passages(&item, &ctx, 2, Some("judged")).unwrap();
        assert_eq!(
            v,
            passages(&item, &ctx, 2, Some("judged")).unwrap(),
            "deterministic"
        );
        let ids: Vec<&str> = v["distractor_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(
            ids.iter().all(|id| ["c4", "c8"].contains(id)),
            "other documents, kept ones: {ids:?}"
        );
        let source = v["source"].as_u64().unwrap() as usize;
        assert_eq!(v["passages"][source - 1]["id"], "c1");
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .contains(&format!("[{source}] (d0)\ntext 1"))
        );
        let answered = Item::from_record(item.record().clone())
            .with("context", v.clone())
            .with("answer", json!({"passage": source}));
        assert_eq!(
            cited_passage(&answered, "context", "answer.passage").unwrap()["id"],
            "c1"
        );
        let wrong = answered.clone().with("answer", json!({"passage": 9}));
        assert!(cited_passage(&wrong, "context", "answer.passage").is_none());
        // Another seed draws (or orders) differently, sooner or later.
        let differs = (6..30).any(|seed| {
            let mut other = ctx.clone();
            other.seed = seed;
            passages(&item, &other, 2, Some("judged")).unwrap() != v
        });
        assert!(differs);
    }
}
