//! Asking for stored results again: `--redo STEP`, `--redo-changed`, `--reprocess STEP`.
//!
//! A rework names steps and a start time (`since_ms`, kept in store meta by the CLI so a rerun
//! of the same command goes on with the same one). While it is on, the executor decides for
//! each stored result whether to reuse it, request it again, or replace it with what the
//! step's processor and validator now make of its stored raw reply:
//!
//! - a result stored before its input was (re)made (its `stored_at_ms` is older than that of
//!   an earlier step's result for the same item) is requested again: this is how a redo flows
//!   down the chain, and how an interrupted redo resumes;
//! - a result stored at or after `since_ms` was already redone by this rework: reused;
//! - otherwise the step's mode decides: `Redo` requests it again, `RedoChanged` only when its
//!   fingerprint differs from the current one, `Reprocess` reruns the processor and validator.
//!
//! The old result stays in the store until the new one replaces it (one `put_result`), so an
//! item has its old or its new result at every moment.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How a step's stored results are asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReworkMode {
    /// Request every stored result again (`--redo STEP`).
    Redo,
    /// Request again the results whose fingerprint differs from the current one (`--redo-changed`).
    RedoChanged,
    /// Rerun the output processor and validator over the stored raw replies (`--reprocess STEP`).
    Reprocess,
}

/// What a run is asked to do again, and what it did (read it after the run).
#[derive(Debug, Default)]
pub struct Rework {
    /// Step name → mode.
    pub steps: BTreeMap<String, ReworkMode>,
    /// Unix ms this rework started: results stored since then are already redone.
    pub since_ms: u64,
    /// With `Reprocess`: replies that now fail are only reported, not requested again.
    pub report_only: bool,
    /// What happened, per step.
    pub tally: Mutex<BTreeMap<String, ReworkCounts>>,
}

/// What a rework did for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReworkCounts {
    /// Results asked for again (redo, a stale later step, or a reply that now fails).
    pub requested: u64,
    /// Reprocessed replies whose output is unchanged (nothing stored, nothing sent).
    pub unchanged: u64,
    /// Reprocessed replies whose output changed and was stored (nothing sent).
    pub changed: u64,
    /// Reprocessed replies that now fail, by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl ReworkCounts {
    /// Replies that now fail.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl Rework {
    /// A rework of `steps` started at `since_ms`.
    pub fn new(steps: BTreeMap<String, ReworkMode>, since_ms: u64) -> Self {
        Self {
            steps,
            since_ms,
            ..Self::default()
        }
    }

    /// Only report replies that now fail (`--reprocess-only`).
    pub fn report_only(mut self, on: bool) -> Self {
        self.report_only = on;
        self
    }

    /// The mode for a step, if it is reworked.
    pub fn mode(&self, step: &str) -> Option<ReworkMode> {
        self.steps.get(step).copied()
    }

    /// What was done, per step.
    pub fn counts(&self) -> BTreeMap<String, ReworkCounts> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn count(&self, step: &str, f: impl FnOnce(&mut ReworkCounts)) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        f(tally.entry(step.to_string()).or_default());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atk_state::{Fields, ItemRecord, RECORD_VERSION, Store};
    use serde_json::{Value, json};

    use super::*;
    use crate::prompt::PromptLibrary;
    use crate::prompt_step::PromptStep;
    use crate::step::{Engines, Step, StepContext};
    use crate::testing::{MemStore, ScriptedEngine, last_text, reply};
    use crate::{Executor, ExecutorConfig, FilterStep};

    const PROMPTS: &[(&str, &str)] = &[
        ("one.yaml", "- role: user\n  content: \"one: {text}\"\n"),
        ("two.yaml", "- role: user\n  content: \"two: {first}\"\n"),
        ("ans.yaml", "- role: user\n  content: \"ans: {q}\"\n"),
    ];

    async fn store_with(n: usize) -> Arc<MemStore> {
        let store = Arc::new(MemStore::new());
        let items = (0..n)
            .map(|i| {
                let mut fields = Fields::new();
                fields.insert("text".into(), json!(format!("t{i}")));
                ItemRecord {
                    v: RECORD_VERSION,
                    id: format!("id{i}"),
                    parent: None,
                    order: vec![i as u64],
                    fields,
                }
            })
            .collect();
        store.put_items(items).await.unwrap();
        store
    }

    /// An engine answering `<tag>:<last message>`.
    fn echo(tag: &'static str) -> Arc<ScriptedEngine> {
        Arc::new(
            ScriptedEngine::new("e")
                .with_fallback(move |r| Ok(reply(format!("{tag}:{}", last_text(r))))),
        )
    }

    async fn run(
        store: &Arc<MemStore>,
        engine: &Arc<ScriptedEngine>,
        chain: &[Arc<dyn Step>],
        rework: Option<Arc<Rework>>,
    ) -> crate::RunReport {
        let ctx = StepContext::new(
            Engines::single(engine.clone()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let cfg = ExecutorConfig::default().with_rework(rework);
        Executor::new(store.clone(), ctx, Arc::new(crate::NullSink), cfg)
            .run(chain)
            .await
            .unwrap()
    }

    /// Makes every stored result a minute older: the earlier runs of these tests happened in
    /// the same millisecond as the rework that follows them, which no user's runs do.
    async fn age(store: &MemStore) {
        for step in ["first", "second", "split", "answer", "join"] {
            let all: Vec<_> = store.results(step).map(Result::unwrap).collect();
            for (id, mut r) in all {
                r.stored_at_ms -= 60_000;
                store.put_result(step, &id, r).await.unwrap();
            }
        }
    }

    fn chain(first: PromptStep) -> Vec<Arc<dyn Step>> {
        vec![
            Arc::new(first),
            Arc::new(PromptStep::new("second").prompt("two")),
        ]
    }

    fn sent(engine: &ScriptedEngine) -> Vec<String> {
        let mut v: Vec<String> = engine
            .requests()
            .iter()
            .map(|r| last_text(r).to_string())
            .collect();
        v.sort();
        v
    }

    fn rework(step: &str, mode: ReworkMode) -> Arc<Rework> {
        let steps = [(step.to_string(), mode)].into_iter().collect();
        Arc::new(Rework::new(steps, atk_state::now_ms()))
    }

    #[tokio::test]
    async fn results_carry_the_fingerprint_and_a_version_bump_changes_only_its_part() {
        let store = store_with(1).await;
        run(
            &store,
            &echo("a"),
            &chain(PromptStep::new("first").prompt("one")),
            None,
        )
        .await;
        let r = store.result("first", "id0").unwrap().unwrap();
        let fp = r.fingerprint.expect("fingerprint stored");
        let ctx = StepContext::new(
            Engines::single(echo("a")),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let bumped = PromptStep::new("first")
            .prompt("one")
            .version("2")
            .fingerprint(&ctx);
        assert_eq!(
            crate::changed_parts(&fp, &bumped.unwrap()),
            [crate::Part::Version]
        );
    }

    /// One vote (a schema step's output type).
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // read by deserializing only
    struct Vote {
        verdict: String,
    }

    /// The same vote with a reason: another schema.
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // read by deserializing only
    struct ReasonedVote {
        verdict: String,
        #[serde(default)]
        reason: String,
    }

    #[tokio::test]
    async fn a_schema_change_marks_the_results_stale_and_redo_changed_asks_again() {
        let store = store_with(2).await;
        let json = || {
            Arc::new(
                ScriptedEngine::new("e")
                    .with_fallback(|_| Ok(reply(r#"{"verdict": "yes", "reason": "r"}"#))),
            )
        };
        let step = |schema_v2: bool| {
            let s = PromptStep::new("first").prompt("one");
            if schema_v2 {
                s.json::<ReasonedVote>()
            } else {
                s.json::<Vote>()
            }
        };
        run(&store, &json(), &[Arc::new(step(false))], None).await;
        let ctx = StepContext::new(
            Engines::single(json()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let current = step(true).fingerprint(&ctx).unwrap();
        let counts = crate::count_fingerprints(store.as_ref(), "first", &current).unwrap();
        assert_eq!(counts.current, 0);
        assert_eq!(counts.other.get(&vec![crate::Part::Schema]), Some(&2));
        // Without a rework they are reused; --redo-changed asks for both again.
        let engine = json();
        run(&store, &engine, &[Arc::new(step(true))], None).await;
        assert_eq!(engine.calls(), 0, "reused as they are");
        age(&store).await;
        let engine = json();
        let redo = rework("first", ReworkMode::RedoChanged);
        run(&store, &engine, &[Arc::new(step(true))], Some(redo)).await;
        assert_eq!(engine.calls(), 2);
        let r = store.result("first", "id0").unwrap().unwrap();
        assert_eq!(r.fingerprint.as_deref(), Some(current.as_str()));
        assert_eq!(r.output, json!({"verdict": "yes", "reason": "r"}));
    }

    #[tokio::test]
    async fn redo_of_the_first_step_redoes_the_later_step_for_the_same_items_only() {
        let store = store_with(3).await;
        run(
            &store,
            &echo("a"),
            &chain(PromptStep::new("first").prompt("one")),
            None,
        )
        .await;
        // Item id1 gets a result made with another version: only it is "changed".
        let mut old = store.result("first", "id1").unwrap().unwrap();
        old.fingerprint = Some("p=0;s=0;m=0;v=0".into());
        store.put_result("first", "id1", old).await.unwrap();
        age(&store).await;

        let engine = echo("b");
        let rw = rework("first", ReworkMode::RedoChanged);
        run(
            &store,
            &engine,
            &chain(PromptStep::new("first").prompt("one")),
            Some(rw.clone()),
        )
        .await;
        assert_eq!(sent(&engine), ["one: t1", "two: b:one: t1"]);
        assert_eq!(
            store.result("second", "id1").unwrap().unwrap().output,
            json!("b:two: b:one: t1")
        );
        assert_eq!(
            store.result("second", "id0").unwrap().unwrap().output,
            json!("a:two: a:one: t0"),
            "untouched items keep their results"
        );
        assert_eq!(rw.counts()["first"].requested, 1);

        // --redo first: every item, and its later step; a rerun of the same rework sends nothing.
        age(&store).await;
        let engine = echo("c");
        let rw = rework("first", ReworkMode::Redo);
        let chain = chain(PromptStep::new("first").prompt("one"));
        run(&store, &engine, &chain, Some(rw.clone())).await;
        assert_eq!(engine.calls(), 6);
        let engine = echo("d");
        run(&store, &engine, &chain, Some(rw)).await;
        assert_eq!(engine.calls(), 0, "a finished redo is not redone again");
    }

    #[tokio::test]
    async fn an_interrupted_redo_resumes_with_the_later_steps_still_to_redo() {
        let store = store_with(2).await;
        let chain = chain(PromptStep::new("first").prompt("one"));
        run(&store, &echo("a"), &chain, None).await;
        age(&store).await;
        let rw = rework("first", ReworkMode::Redo);
        // As if killed after item id0's first step was redone: its second step is stale.
        let mut redone = store.result("first", "id0").unwrap().unwrap();
        redone.output = json!("b:one: t0");
        redone.stored_at_ms = atk_state::now_ms();
        store.put_result("first", "id0", redone).await.unwrap();
        let engine = echo("b");
        run(&store, &engine, &chain, Some(rw)).await;
        assert_eq!(
            sent(&engine),
            ["one: t1", "two: b:one: t0", "two: b:one: t1"],
            "id0's first step is not asked again, its second is"
        );
    }

    #[tokio::test]
    async fn reprocess_sends_nothing_for_replies_that_pass_and_requests_those_that_fail() {
        let store = store_with(3).await;
        let strict = |first: PromptStep| {
            first.validator(|out, _| {
                if out.as_str().is_some_and(|s| s.ends_with("t1")) {
                    Err("t1 is not allowed any more".into())
                } else {
                    Ok(())
                }
            })
        };
        run(
            &store,
            &echo("a"),
            &chain(PromptStep::new("first").prompt("one")),
            None,
        )
        .await;
        age(&store).await;
        // Only reported: nothing sent, nothing changed.
        let engine = echo("b");
        let rw = Arc::new(
            Rework::new(
                [("first".to_string(), ReworkMode::Reprocess)].into(),
                atk_state::now_ms(),
            )
            .report_only(true),
        );
        run(
            &store,
            &engine,
            &chain(strict(PromptStep::new("first").prompt("one"))),
            Some(rw.clone()),
        )
        .await;
        assert_eq!(engine.calls(), 0);
        let c = &rw.counts()["first"];
        assert_eq!((c.unchanged, c.rejected_total(), c.requested), (2, 1, 0));
        // Requested again: only the failing one, under the validation retries (it fails again
        // with the echo engine, so its old result stays and a failure is recorded).
        let engine =
            Arc::new(ScriptedEngine::new("e").with_fallback(|r| {
                Ok(reply(format!("fixed {}", last_text(r).replace("t1", "x"))))
            }));
        let rw = rework("first", ReworkMode::Reprocess);
        run(
            &store,
            &engine,
            &chain(strict(PromptStep::new("first").prompt("one"))),
            Some(rw.clone()),
        )
        .await;
        assert_eq!(
            sent(&engine),
            ["one: t1", "two: fixed one: x"],
            "the failing item and its later step only"
        );
        // A processor whose output changes is stored without a request, and flows on.
        age(&store).await;
        let engine = echo("c");
        let upper = PromptStep::new("first")
            .prompt("one")
            .output_processor(|raw| Ok(Value::String(raw.to_uppercase())));
        let rw = rework("first", ReworkMode::Reprocess);
        run(&store, &engine, &chain(upper), Some(rw.clone())).await;
        assert_eq!(rw.counts()["first"].changed, 3);
        assert_eq!(
            sent(&engine),
            ["two: A:ONE: T0", "two: A:ONE: T2", "two: FIXED ONE: X"]
        );
    }

    #[tokio::test]
    async fn a_reprocessed_filter_can_drop_what_it_kept() {
        let store = store_with(2).await;
        let engine = Arc::new(
            ScriptedEngine::new("e")
                .with_fallback(|r| Ok(reply(format!("{}\nkeep", last_text(r))))),
        );
        let judge = || FilterStep::new(PromptStep::new("first").prompt("one"));
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(judge())];
        run(&store, &engine, &chain, None).await;
        age(&store).await;
        let picky = judge().judge(|out| {
            let text = out.as_str().unwrap_or_default();
            Ok((!text.contains("t1"), text.to_string()))
        });
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(picky)];
        let rw = rework("first", ReworkMode::Reprocess);
        run(&store, &engine, &chain, Some(rw.clone())).await;
        assert_eq!(engine.calls(), 2, "nothing more was sent");
        let r = store.result("first", "id1").unwrap().unwrap();
        assert!(r.drop_reason().is_some(), "{r:?}");
        assert!(store.result("first", "id0").unwrap().unwrap().is_kept());
    }

    fn split_answer_join() -> Vec<Arc<dyn Step>> {
        let split = crate::FanOutStep::from_fn("split", |item| {
            let text = item.text("text").map_err(|e| e.to_string())?;
            Ok((0..2)
                .map(|k| {
                    let mut f = Fields::new();
                    f.insert("q".into(), json!(format!("{text}.{k}")));
                    f
                })
                .collect())
        });
        let join = crate::FanInStep::from_fn("join", |_, children| {
            Ok(json!(
                children
                    .iter()
                    .map(|c| c.text("answer").unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("|")
            ))
        });
        vec![
            Arc::new(split),
            Arc::new(PromptStep::new("answer").prompt("ans")),
            Arc::new(join),
        ]
    }

    #[tokio::test]
    async fn a_redo_reaches_children_and_regathers_their_parent() {
        let store = store_with(2).await;
        let chain = split_answer_join();
        run(&store, &echo("a"), &chain, None).await;
        age(&store).await;
        // Redo the children's step: every child asked again, each parent gathered again.
        let engine = echo("b");
        run(
            &store,
            &engine,
            &chain,
            Some(rework("answer", ReworkMode::Redo)),
        )
        .await;
        assert_eq!(
            sent(&engine),
            ["ans: t0.0", "ans: t0.1", "ans: t1.0", "ans: t1.1"]
        );
        assert_eq!(
            store.result("join", "id1").unwrap().unwrap().output,
            json!("b:ans: t1.0|b:ans: t1.1")
        );
        // Redo the fan-out (a function: free): its children's later results are stale.
        age(&store).await;
        let engine = echo("c");
        run(
            &store,
            &engine,
            &chain,
            Some(rework("split", ReworkMode::Redo)),
        )
        .await;
        assert_eq!(engine.calls(), 4, "{:?}", sent(&engine));
        assert_eq!(
            store.result("join", "id0").unwrap().unwrap().output,
            json!("c:ans: t0.0|c:ans: t0.1")
        );
    }

    #[tokio::test]
    async fn reprocessing_a_fan_out_resplits_and_redoes_only_the_children_that_changed() {
        // An LLM fan-out: one reply, split into two children by a function.
        let split_by = |upper_second: bool| -> Arc<dyn Step> {
            Arc::new(crate::FanOutStep::new(
                PromptStep::new("split").prompt("one"),
                move |reply, _| {
                    let text = reply.as_str().unwrap_or_default();
                    Ok((0..2)
                        .map(|k| {
                            let q = format!("{text}.{k}");
                            let q = if upper_second && k == 1 {
                                q.to_uppercase()
                            } else {
                                q
                            };
                            Fields::from_iter([("q".to_string(), json!(q))])
                        })
                        .collect())
                },
            ))
        };
        let chain = |upper| {
            vec![
                split_by(upper),
                Arc::new(PromptStep::new("answer").prompt("ans")) as Arc<dyn Step>,
            ]
        };
        let store = store_with(2).await;
        let engine = echo("a");
        run(&store, &engine, &chain(false), None).await;
        assert_eq!(engine.calls(), 2 + 4);
        age(&store).await;
        // The split changed for the second child only: re-split from the stored replies (no
        // request for `split`), and only the second children are answered again.
        let rw = rework("split", ReworkMode::Reprocess);
        run(&store, &engine, &chain(true), Some(rw.clone())).await;
        let counts = rw.counts();
        assert_eq!(counts["split"].changed, 2, "{counts:?}");
        assert_eq!(engine.calls(), 2 + 4 + 2, "{:?}", sent(&engine));
        let second = store.item(&crate::child_id("id0", 1)).unwrap().unwrap();
        assert_eq!(second.fields["q"], json!("A:ONE: T0.1"));
        let answer = store
            .result("answer", &crate::child_id("id0", 1))
            .unwrap()
            .unwrap();
        assert_eq!(answer.output, json!("a:ans: A:ONE: T0.1"));
        // Reprocessing again changes nothing and sends nothing.
        age(&store).await;
        let rw = rework("split", ReworkMode::Reprocess);
        run(&store, &engine, &chain(true), Some(rw.clone())).await;
        assert_eq!(rw.counts()["split"].unchanged, 2);
        assert_eq!(engine.calls(), 8);
    }
}
