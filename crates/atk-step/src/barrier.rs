//! `BarrierStep`: a corpus-level step. It runs once, after every item has passed the steps
//! before it, over the survivors together: each survivor gives a small fixed-size state
//! (`observe`: ids, hashes, signatures — never its text), and `decide` keeps or drops each one
//! (with a reason), optionally attaching a JSON result.
//!
//! How the executor runs it (`run_pass`): the survivors are streamed from the store in item
//! order (as a dataset reads them), observed, decided; each verdict is stored as the item's
//! result for the barrier step, but only where it differs from the stored one (so a rerun
//! writes nothing, and a barrier killed half-way is finished by the next run: it is complete
//! when every survivor's stored result equals its verdict). Later steps then take the stored
//! verdicts like any step's results; a later result older than a verdict that changed is
//! remade.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{ItemRecord, Outcome, ResultRecord, Store};
use futures_util::future::try_join_all;
use serde_json::Value;

use crate::error::StepError;
use crate::item::Item;
use crate::report::Tally;
use crate::rework::{Rework, ReworkMode};
use crate::step::{Shape, Step, StepContext, StepOutput};

/// What a barrier decided for one survivor.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The item goes on, with this value as the barrier's result (`Value::Null` for none).
    Keep(Value),
    /// The item stops here, for this reason.
    Drop(String),
}

/// One item that reached a barrier: its id and the state `observe` made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Survivor<S> {
    /// The item's id.
    pub id: String,
    /// What `observe` returned for it.
    pub state: S,
}

/// The corpus-level pass of a [`Shape::Barrier`] step, as the executor drives it.
pub trait Barrier: Send + Sync {
    /// Starts a pass over the survivors.
    fn pass<'a>(&'a self, ctx: &'a StepContext) -> Box<dyn BarrierPass + 'a>;
}

/// One pass of a barrier: fed every survivor in item order, then asked for the verdicts.
pub trait BarrierPass: Send {
    /// Takes in one survivor (keeping only its small state).
    fn observe(&mut self, item: &Item);
    /// The verdict for every survivor observed, in the order observed.
    fn decide(self: Box<Self>) -> Vec<(String, Verdict)>;
}

type ObserveFn<S> = Arc<dyn Fn(&Item, &StepContext) -> Result<S, String> + Send + Sync>;
type DecideFn<S> = Arc<dyn Fn(&[Survivor<S>], &StepContext) -> Vec<Verdict> + Send + Sync>;

/// A barrier step built from two functions: `observe` makes each survivor's small state (an
/// `Err(reason)` drops that item), `decide` gets every state in item order and returns one
/// [`Verdict`] per survivor, in the same order. Both must be deterministic: the same survivors
/// give the same verdicts, so a rerun stores nothing new. Its fingerprint is its
/// [`version`](Self::version). Under `--shard I/N` a run stops before its first barrier (run
/// the barrier on the merged shards).
///
/// ```
/// use atk_step::{BarrierStep, Verdict};
/// // Keep only the first item of each document.
/// let first_of_doc = BarrierStep::new(
///     "first_of_doc",
///     |item, _| item.text("metadata").map_err(|e| e.to_string()),
///     |survivors, _| {
///         let mut seen = std::collections::HashSet::new();
///         survivors
///             .iter()
///             .map(|s| match seen.insert(s.state.clone()) {
///                 true => Verdict::Keep(serde_json::Value::Null),
///                 false => Verdict::Drop(format!("another chunk of {} came first", s.state)),
///             })
///             .collect()
///     },
/// );
/// ```
pub struct BarrierStep<S> {
    name: String,
    version: String,
    observe: ObserveFn<S>,
    decide: DecideFn<S>,
}

impl<S> std::fmt::Debug for BarrierStep<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarrierStep")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> BarrierStep<S> {
    /// A barrier named `name` (keys its stored verdicts).
    pub fn new(
        name: impl Into<String>,
        observe: impl Fn(&Item, &StepContext) -> Result<S, String> + Send + Sync + 'static,
        decide: impl Fn(&[Survivor<S>], &StepContext) -> Vec<Verdict> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            version: "1".to_string(),
            observe: Arc::new(observe),
            decide: Arc::new(decide),
        }
    }

    /// The functions' version (default `"1"`), the step's fingerprint: bump it when they change.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
}

impl BarrierStep<()> {
    /// A barrier that keeps every survivor: a point the whole run reaches before going on,
    /// whose kept set later steps read with [`StepContext::kept_by`] (e.g. distractors only
    /// from chunks a judge kept).
    pub fn keep_all(name: impl Into<String>) -> Self {
        Self::new(
            name,
            |_, _| Ok(()),
            |survivors, _| vec![Verdict::Keep(Value::Null); survivors.len()],
        )
    }
}

struct Pass<'a, S> {
    step: &'a BarrierStep<S>,
    ctx: &'a StepContext,
    /// Survivors in order: `Ok` with their state, or `Err` with `observe`'s reason.
    seen: Vec<(String, Result<usize, String>)>,
    states: Vec<Survivor<S>>,
}

impl<S: Send + Sync> BarrierPass for Pass<'_, S> {
    fn observe(&mut self, item: &Item) {
        let id = item.id().to_string();
        match (self.step.observe)(item, self.ctx) {
            Ok(state) => {
                self.seen.push((id.clone(), Ok(self.states.len())));
                self.states.push(Survivor { id, state });
            }
            Err(reason) => self.seen.push((id, Err(reason))),
        }
    }

    fn decide(self: Box<Self>) -> Vec<(String, Verdict)> {
        let mut verdicts = (self.step.decide)(&self.states, self.ctx).into_iter();
        self.seen
            .into_iter()
            .map(|(id, slot)| {
                let verdict = match slot {
                    Ok(_) => verdicts.next().unwrap_or_else(|| {
                        Verdict::Drop("the barrier gave no verdict for this item".into())
                    }),
                    Err(reason) => Verdict::Drop(reason),
                };
                (id, verdict)
            })
            .collect()
    }
}

impl<S: Send + Sync + 'static> Barrier for BarrierStep<S> {
    fn pass<'a>(&'a self, ctx: &'a StepContext) -> Box<dyn BarrierPass + 'a> {
        Box::new(Pass {
            step: self,
            ctx,
            seen: Vec::new(),
            states: Vec::new(),
        })
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> Step for BarrierStep<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn shape(&self) -> Shape {
        Shape::Barrier
    }

    fn adds_fields(&self) -> Option<Vec<String>> {
        Some(vec![self.name.clone()])
    }

    fn fingerprint_parts(&self, _ctx: &StepContext) -> Option<crate::Fingerprint> {
        crate::fingerprint::of_function(Some(&self.version))
    }

    fn barrier(&self) -> Option<&dyn Barrier> {
        Some(self)
    }

    async fn run(&self, item: &ItemRecord, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        Err(StepError::Internal(format!(
            "barrier step `{}` was asked to run on item {} alone; the executor runs it over every item at once",
            self.name, item.id
        )))
    }
}

/// Stored results written at once while a barrier's verdicts are stored.
const WRITE_BATCH: usize = 256;

/// Runs barrier step `b` of `chain` over the survivors of `chain[..b]`: stores each verdict
/// that differs from the stored one, tells `ctx` which ids were kept, and returns the step's
/// tally (done: verdicts written, dropped: new drops).
pub(crate) async fn run_pass(
    store: &Arc<dyn Store>,
    chain: &[Arc<dyn Step>],
    b: usize,
    ctx: &StepContext,
    rework: Option<&Rework>,
) -> Result<Tally, StepError> {
    let step = &chain[b];
    let name = step.name();
    let barrier = step
        .barrier()
        .ok_or_else(|| StepError::Internal(format!("step `{name}` is not a barrier")))?;
    let mut pass = barrier.pass(ctx);
    for item in crate::collect_final(store.as_ref(), &chain[..b]) {
        pass.observe(Item::of(&item?));
    }
    let verdicts = pass.decide();
    let fingerprint = step.fingerprint(ctx);
    let redo_before = rework.and_then(|r| match r.mode(name) {
        Some(ReworkMode::Redo) => Some(r.since_ms),
        _ => None,
    });
    let mut tally = Tally::new(name);
    let mut kept = HashSet::new();
    let mut writes = Vec::new();
    for (id, verdict) in verdicts {
        let mut record = match &verdict {
            Verdict::Keep(value) => ResultRecord::new(value.clone()),
            Verdict::Drop(reason) => {
                let mut r = ResultRecord::new(Value::Null);
                r.outcome = Outcome::Dropped {
                    reason: reason.clone(),
                };
                r
            }
        };
        record.fingerprint = fingerprint.clone();
        if let Verdict::Keep(_) = verdict {
            kept.insert(id.clone());
        }
        let stored = store.result(name, &id)?;
        let same = stored.as_ref().is_some_and(|s| {
            s.outcome == record.outcome
                && s.output == record.output
                && s.fingerprint == record.fingerprint
                && redo_before.is_none_or(|since| s.stored_at_ms >= since)
        });
        if same {
            continue;
        }
        if stored.is_some() {
            // A changed verdict must be newer than every later result of the item, which were
            // made from the old one (the walk after the barrier remakes the older ones), even
            // within the same millisecond.
            for later in &chain[b + 1..] {
                if let Some(r) = store.result(later.name(), &id)? {
                    record.stored_at_ms = record.stored_at_ms.max(r.stored_at_ms + 1);
                }
            }
        }
        tally.report.done += 1;
        if let Verdict::Drop(reason) = &verdict {
            tally.report.dropped += 1;
            tracing::debug!(step = name, item = %id, %reason, "dropped by the barrier");
        }
        if let Some(r) = rework {
            r.count(name, |c| c.requested += 1);
        }
        writes.push((id, record));
        if writes.len() == WRITE_BATCH {
            put_all(store, name, std::mem::take(&mut writes)).await?;
        }
    }
    put_all(store, name, writes).await?;
    ctx.set_kept(name, kept);
    Ok(tally)
}

async fn put_all(
    store: &Arc<dyn Store>,
    name: &str,
    writes: Vec<(String, ResultRecord)>,
) -> Result<(), StepError> {
    try_join_all(
        writes
            .into_iter()
            .map(|(id, record)| async move { store.put_result(name, &id, record).await }),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::testing::{MemStore, ScriptedEngine, last_text, reply};
    use crate::{Chain, Engines, Executor, ExecutorConfig, MapStep, PromptLibrary, PromptStep};
    use atk_state::{Fields, RECORD_VERSION};
    use serde_json::json;

    const PROMPTS: &[(&str, &str)] = &[
        ("one.yaml", "- role: user\n  content: \"one: {text}\"\n"),
        (
            "two.yaml",
            "- role: user\n  content: \"two: {first} {mark}\"\n",
        ),
    ];

    /// Items whose texts repeat every third one: t0 t1 t2 t0 t1 ...
    pub(super) async fn store(n: usize) -> Arc<MemStore> {
        let store = Arc::new(MemStore::new());
        let items = (0..n)
            .map(|i| {
                let mut fields = Fields::new();
                fields.insert("text".into(), json!(format!("t{}", i % 3)));
                ItemRecord {
                    v: RECORD_VERSION,
                    id: format!("id{i:02}"),
                    parent: None,
                    order: vec![i as u64],
                    fields,
                }
            })
            .collect();
        store.put_items(items).await.unwrap();
        store
    }

    pub(super) fn engine() -> Arc<ScriptedEngine> {
        Arc::new(
            ScriptedEngine::new("e").with_fallback(|r| Ok(reply(format!("re:{}", last_text(r))))),
        )
    }

    /// first (prompt) → first_text (barrier: drops repeated replies, marks the kept) →
    /// mark (function, reads what the barrier kept) → second (prompt).
    pub(super) fn chain(tag: &'static str) -> Chain {
        Chain::new()
            .then(PromptStep::new("first").prompt("one"))
            .then(BarrierStep::new(
                "first_text",
                |item, _| item.text("first").map_err(|e| e.to_string()),
                move |survivors: &[Survivor<String>], _| {
                    let mut seen = std::collections::HashMap::new();
                    survivors
                        .iter()
                        .map(|s| match seen.get(&s.state) {
                            Some(id) => Verdict::Drop(format!("same reply as {id}")),
                            None => {
                                seen.insert(s.state.clone(), s.id.clone());
                                Verdict::Keep(json!({ "tag": tag }))
                            }
                        })
                        .collect()
                },
            ))
            .then(MapStep::with_context("mark", |item, ctx| {
                let kept = ctx.kept_by("first_text").ok_or("the barrier has not run")?;
                let tag = item
                    .path("first_text.tag")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                Ok(json!(format!("{tag}/{}", kept.len())))
            }))
            .then(PromptStep::new("second").prompt("two"))
    }

    pub(super) fn run_with(
        store: Arc<MemStore>,
        e: Arc<ScriptedEngine>,
        cfg: ExecutorConfig,
    ) -> Executor {
        let ctx = StepContext::new(Engines::single(e), Arc::new(PromptLibrary::new(PROMPTS)));
        Executor::new(store, ctx, Arc::new(crate::NullSink), cfg)
    }

    pub(super) fn finals(store: &MemStore, chain: &Chain) -> Vec<(String, Value)> {
        crate::collect_final(store, chain)
            .map(|i| {
                let i = i.unwrap();
                (i.id.clone(), i.fields["second"].clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::ExecutorConfig;
    use serde_json::json;

    #[tokio::test]
    async fn a_barrier_sees_every_survivor_then_later_steps_go_on_and_a_rerun_sends_nothing() {
        let store = store(7).await;
        let e = engine();
        let chain = chain("a");
        let report = run_with(store.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap();
        assert_eq!(
            e.calls(),
            7 + 3,
            "every first, then second only for the kept three"
        );
        let out = finals(&store, &chain);
        assert_eq!(
            out,
            [
                ("id00".to_string(), json!("re:two: re:one: t0 a/3")),
                ("id01".to_string(), json!("re:two: re:one: t1 a/3")),
                ("id02".to_string(), json!("re:two: re:one: t2 a/3")),
            ]
        );
        let barrier = &report.steps[1];
        assert_eq!((barrier.done, barrier.dropped), (7, 4));
        let dropped = store.result("first_text", "id03").unwrap().unwrap();
        assert_eq!(dropped.drop_reason(), Some("same reply as id00"));
        assert_eq!(report.finished, 3);

        let again = run_with(store.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap();
        assert_eq!(e.calls(), 10, "a rerun sends nothing");
        assert_eq!(again.steps[1].done, 0, "and writes no verdict again");
        assert_eq!(again.finished, 3);
        assert_eq!(finals(&store, &chain), out);
    }

    #[tokio::test]
    async fn a_stopped_run_halts_before_the_barrier_and_a_changed_verdict_remakes_later_results() {
        let store = store(4).await;
        let e = engine();
        let report = run_with(
            store.clone(),
            e.clone(),
            ExecutorConfig::default().with_stop_before_barrier(true),
        )
        .run(&chain("a"))
        .await
        .unwrap();
        assert_eq!(report.stopped_before.as_deref(), Some("first_text"));
        assert_eq!(e.calls(), 4, "only the steps before the barrier ran");
        assert!(!store.has_result("first_text", "id00").unwrap());
        assert!(
            !report.nothing_kept(),
            "a stop before a barrier is no empty run"
        );

        run_with(store.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain("a"))
            .await
            .unwrap();
        assert_eq!(e.calls(), 4 + 3);
        // The barrier now attaches another value: the kept items' later results are remade
        // from it (the judge-like first step is not asked again).
        run_with(store.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain("b"))
            .await
            .unwrap();
        assert_eq!(
            e.calls(),
            4 + 3 + 3,
            "only `second` of the three kept items again"
        );
        let out = finals(&store, &chain("b"));
        assert!(
            out.iter()
                .all(|(_, v)| v.as_str().unwrap().ends_with(" b/3")),
            "{out:?}"
        );
    }
}

#[cfg(test)]
mod resume_tests {
    use super::tests_support::*;
    use super::*;
    use crate::{Chain, ExecutorConfig};
    use serde_json::json;

    /// A run killed while the barrier stored its verdicts (some stored, some not) is finished
    /// by the next run to exactly what an uninterrupted run gives, with no request for the
    /// steps before the barrier.
    #[tokio::test]
    async fn a_barrier_killed_half_way_through_its_verdicts_resumes_to_the_same_output() {
        let whole = store(7).await;
        run_with(whole.clone(), engine(), ExecutorConfig::default())
            .run(&chain("a"))
            .await
            .unwrap();
        let expected = finals(&whole, &chain("a"));

        let cut = store(7).await;
        let e = engine();
        run_with(
            cut.clone(),
            e.clone(),
            ExecutorConfig::default().with_stop_before_barrier(true),
        )
        .run(&chain("a"))
        .await
        .unwrap();
        // The pass stored the first three verdicts when the process died.
        for id in ["id00", "id01", "id02"] {
            let verdict = whole.result("first_text", id).unwrap().unwrap();
            cut.put_result("first_text", id, verdict).await.unwrap();
        }
        let report = run_with(cut.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain("a"))
            .await
            .unwrap();
        assert_eq!(
            report.steps[1].done, 4,
            "only the missing verdicts are stored"
        );
        assert_eq!(e.calls(), 7 + 3, "no `first` request again");
        assert_eq!(finals(&cut, &chain("a")), expected);
    }

    /// A barrier between a fan-out and its fan-in sees the children, and the fan-in gathers
    /// only those it kept.
    #[tokio::test]
    async fn a_barrier_inside_a_fan_out_judges_the_children_before_they_are_gathered() {
        let store = store(4).await; // id03 repeats id00's text
        let split = crate::FanOutStep::from_fn("split", |item| {
            let text = item.text("text").map_err(|e| e.to_string())?;
            Ok((0..2)
                .map(|k| {
                    atk_state::Fields::from_iter([("q".to_string(), json!(format!("{text}/{k}")))])
                })
                .collect())
        });
        // Drops every child whose text was seen before, over all parents.
        let unique = BarrierStep::new(
            "unique",
            |item, _| item.text("q").map_err(|e| e.to_string()),
            |survivors: &[Survivor<String>], _| {
                let mut seen = std::collections::HashSet::new();
                survivors
                    .iter()
                    .map(|s| match seen.insert(s.state.clone()) {
                        true => Verdict::Keep(Value::Null),
                        false => Verdict::Drop("seen".into()),
                    })
                    .collect()
            },
        );
        let join = crate::FanInStep::from_fn("join", |_, kids| {
            Ok(json!(
                kids.iter()
                    .map(|k| k.text("q").unwrap_or_default())
                    .collect::<Vec<_>>()
            ))
        });
        let chain = Chain::new().then(split).then(unique).then(join);
        let e = engine();
        run_with(store.clone(), e.clone(), ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap();
        let out: Vec<Value> = crate::collect_final(store.as_ref(), &chain)
            .map(|i| i.unwrap().fields["join"].clone())
            .collect();
        assert_eq!(
            out,
            [
                json!(["t0/0", "t0/1"]),
                json!(["t1/0", "t1/1"]),
                json!(["t2/0", "t2/1"])
            ]
        );
        assert_eq!(e.calls(), 0);
        let gathered = store.result("join", "id03").unwrap().unwrap();
        assert!(
            gathered.drop_reason().is_some(),
            "id03's children were all repeats: {gathered:?}"
        );
    }
}
