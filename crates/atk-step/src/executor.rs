//! The executor: runs a chain of steps over the store's items, depth-first, under a bound on
//! items in flight, storing each result the moment it is accepted.
//!
//! How it works: the store's root item ids are streamed in order (never collected; the sled
//! store reads them without decoding records), an item that finished the chain is counted from
//! one key lookup, and only the others are read and decoded. Each item
//! becomes a task that walks the chain: a step whose result is stored is skipped (its output
//! merged into the item's fields), the first missing one is run, its result stored, and the
//! item goes straight on to the next step (no barrier between steps). A `JoinSet` holds at most
//! `max_in_flight` such tasks; children made by a fan-out step are queued ahead of new root
//! items, so memory grows with the bound, not with the number of items. The engines enforce
//! the real request concurrency; the bound here only keeps them fed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use atk_state::{FailureRecord, ItemRecord, RECORD_VERSION, Records, ResultRecord, Store};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::StepError;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::prompt_step::now_ms;
use crate::step::{Step, StepContext, StepOutput};
use crate::template::value_text;

/// Distinct failure reasons kept per step in a report; further ones are counted together.
const MAX_FAILURE_GROUPS: usize = 32;
/// Longest sample output kept in a report (characters).
const MAX_SAMPLE_CHARS: usize = 2000;
/// Stored-output marker of a dropped item: `{"atk_dropped": reason}`.
const DROPPED: &str = "atk_dropped";
/// Stored-output marker of a fan-out: `{"atk_children": [ids], "output": ...}`.
const CHILDREN: &str = "atk_children";

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    cancel: CancellationToken,
    max_in_flight: usize,
    count_first: bool,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            cancel: CancellationToken::new(),
            max_in_flight: 64,
            count_first: true,
        }
    }
}

impl ExecutorConfig {
    /// Cancelling this token starts no new requests; in-flight ones finish and are stored.
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Items in flight at once (default 64). Set it to about twice the larger engine's
    /// concurrency limit: enough to keep the engines full, small enough to bound memory.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Count items and stored results before starting, for progress totals (default on; one
    /// extra pass over the store).
    pub fn with_count_first(mut self, on: bool) -> Self {
        self.count_first = on;
        self
    }

    /// The cancellation token.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// Runs chains of steps over a store's items.
pub struct Executor {
    store: Arc<dyn Store>,
    ctx: StepContext,
    sink: Arc<dyn ProgressSink>,
    cfg: ExecutorConfig,
}

/// Failures of one kind and reason, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// Short class (`validation`, `length`, `rejected`, `transport`, ...).
    pub kind: String,
    /// The reason, as given.
    pub reason: String,
    /// Items that failed this way in this run.
    pub count: u64,
    /// The raw output of the first such item, when there was one (truncated).
    pub sample_output: Option<String>,
}

/// What one step did in a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Step name.
    pub step: String,
    /// Results stored in this run.
    pub done: u64,
    /// Items skipped because their result was already stored.
    pub skipped: u64,
    /// Items that failed for good in this run.
    pub failed: u64,
    /// Items a filter dropped in this run.
    pub dropped: u64,
    /// Failures grouped by kind and reason, most common first.
    pub failures_by_reason: Vec<FailureGroup>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunReport {
    /// One report per step, in chain order.
    pub steps: Vec<StepReport>,
    /// True when the run was cancelled before all work was done.
    pub cancelled: bool,
}

impl RunReport {
    /// True when items failed and none reached the end of the chain (in this run or an earlier
    /// one): the dataset would be empty, so the CLI exits non-zero with the summary.
    pub fn all_failed(&self) -> bool {
        let failed: u64 = self.steps.iter().map(|s| s.failed).sum();
        let finished = self.steps.last().map_or(0, |s| s.done + s.skipped);
        failed > 0 && finished == 0
    }

    /// Items that failed in this run, over all steps.
    pub fn failed(&self) -> u64 {
        self.steps.iter().map(|s| s.failed).sum()
    }

    /// A readable summary: counts per step, failures by reason, one raw output for the most common.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!(
                "{}: {} done, {} already stored, {} failed, {} dropped\n",
                s.step, s.done, s.skipped, s.failed, s.dropped
            ));
            for g in &s.failures_by_reason {
                out.push_str(&format!("  {} x {}: {}\n", g.count, g.kind, g.reason));
            }
        }
        let most_common = self
            .steps
            .iter()
            .flat_map(|s| s.failures_by_reason.iter().map(move |g| (s, g)))
            .fold(
                None::<(&StepReport, &FailureGroup)>,
                |best, cur| match best {
                    Some(b) if b.1.count >= cur.1.count => Some(b),
                    _ => Some(cur),
                },
            );
        if let Some((step, group)) = most_common {
            match &group.sample_output {
                Some(sample) => out.push_str(&format!(
                    "most common failure ({}, {}): {}\nsample raw output:\n{}\n",
                    step.step, group.kind, group.reason, sample
                )),
                None => out.push_str(&format!(
                    "most common failure ({}, {}): {}\n",
                    step.step, group.kind, group.reason
                )),
            }
        }
        if self.all_failed() {
            out.push_str("every attempted item failed: no item reached the end of the chain\n");
        }
        if self.cancelled {
            out.push_str("cancelled: the next run resumes where this one stopped\n");
        }
        out
    }
}

#[derive(Default)]
struct Tally {
    report: StepReport,
    index: HashMap<(String, String), usize>,
}

impl Tally {
    fn add_failure(&mut self, kind: &str, reason: &str, output: Option<&str>) {
        self.report.failed += 1;
        let key = if self.index.len() < MAX_FAILURE_GROUPS
            || self
                .index
                .contains_key(&(kind.to_string(), reason.to_string()))
        {
            (kind.to_string(), reason.to_string())
        } else {
            (
                "other".to_string(),
                "(more distinct reasons than shown)".to_string(),
            )
        };
        let groups = &mut self.report.failures_by_reason;
        let i = *self.index.entry(key.clone()).or_insert_with(|| {
            groups.push(FailureGroup {
                kind: key.0,
                reason: key.1,
                count: 0,
                sample_output: None,
            });
            groups.len() - 1
        });
        let group = &mut groups[i];
        group.count += 1;
        if group.sample_output.is_none() {
            group.sample_output = output.map(|o| o.chars().take(MAX_SAMPLE_CHARS).collect());
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    ctx: StepContext,
    sink: Arc<dyn ProgressSink>,
    chain: Vec<Arc<dyn Step>>,
    stop: CancellationToken,
    tallies: Vec<Mutex<Tally>>,
}

type Unit = (ItemRecord, usize);

impl Shared {
    fn tally(&self, step: usize, f: impl FnOnce(&mut Tally)) {
        f(&mut self.tallies[step].lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Fast path for resume: an item with a result for the last step went through the whole chain.
    fn fully_done(&self, id: &str, start: usize) -> Result<bool, StepError> {
        let last = self.chain.len() - 1;
        if self.store.has_result(self.chain[last].name(), id)? {
            for k in start..=last {
                self.tally(k, |t| t.report.skipped += 1);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Walks one item through the chain from `start`; returns children to run from a later step.
    async fn drive(
        self: Arc<Self>,
        mut item: ItemRecord,
        start: usize,
    ) -> Result<Option<(Vec<ItemRecord>, usize)>, StepError> {
        for k in start..self.chain.len() {
            let step = &self.chain[k];
            let name = step.name();
            if let Some(record) = self.store.result(name, &item.id)? {
                self.tally(k, |t| t.report.skipped += 1);
                match Stored::of(&record.output) {
                    Stored::Dropped => return Ok(None),
                    Stored::Children(ids) => return Ok(Some((self.load_children(&ids)?, k + 1))),
                    Stored::Continue => {
                        merge(step.as_ref(), &mut item, record);
                        continue;
                    }
                }
            }
            if self.stop.is_cancelled() {
                return Ok(None);
            }
            self.sink.event(ProgressEvent::ItemStarted {
                step: name.to_string(),
            });
            match step.run(&item, &self.ctx).await {
                Ok(StepOutput::Result(record) | StepOutput::Keep(record)) => {
                    let (pt, ct) = (record.prompt_tokens, record.completion_tokens);
                    let (output, details) = (record.output.clone(), record.details.clone());
                    self.store.put_result(name, &item.id, record).await?;
                    self.done(k, pt, ct);
                    merge_parts(step.as_ref(), &mut item, output, details);
                }
                Ok(StepOutput::Drop(mut record)) => {
                    let reason = value_text(&record.output);
                    record.output = json!({ DROPPED: reason });
                    self.store.put_result(name, &item.id, record).await?;
                    self.tally(k, |t| t.report.dropped += 1);
                    self.sink.event(ProgressEvent::ItemDropped {
                        step: name.to_string(),
                        reason,
                    });
                    return Ok(None);
                }
                Ok(StepOutput::Children(children, mut record)) => {
                    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
                    record.output = json!({ CHILDREN: ids, "output": record.output });
                    let (pt, ct) = (record.prompt_tokens, record.completion_tokens);
                    // Children first: once the parent's result is stored, they must exist.
                    self.store.put_items(children.clone()).await?;
                    self.store.put_result(name, &item.id, record).await?;
                    self.done(k, pt, ct);
                    return Ok(Some((children, k + 1)));
                }
                Err(StepError::Failed(f)) => {
                    self.tally(k, |t| {
                        t.add_failure(&f.kind, &f.reason, f.last_output.as_deref())
                    });
                    let record = FailureRecord {
                        v: RECORD_VERSION,
                        kind: f.kind.clone(),
                        reason: f.reason.clone(),
                        last_output: f.last_output,
                        attempts: f.attempts,
                        stored_at_ms: now_ms(),
                    };
                    self.store.put_failure(name, &item.id, record).await?;
                    self.sink.event(ProgressEvent::ItemFailed {
                        step: name.to_string(),
                        kind: f.kind,
                        reason: f.reason,
                        prompt_tokens: f.prompt_tokens,
                        completion_tokens: f.completion_tokens,
                    });
                    return Ok(None);
                }
                // Stopped before its request went out: nothing to record, the next run does it.
                Err(StepError::Cancelled) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn done(&self, k: usize, prompt_tokens: u64, completion_tokens: u64) {
        self.tally(k, |t| t.report.done += 1);
        self.sink.event(ProgressEvent::ItemDone {
            step: self.chain[k].name().to_string(),
            prompt_tokens,
            completion_tokens,
        });
    }

    fn load_children(&self, ids: &[String]) -> Result<Vec<ItemRecord>, StepError> {
        load_children(self.store.as_ref(), ids)
    }
}

fn load_children(store: &dyn Store, ids: &[String]) -> Result<Vec<ItemRecord>, StepError> {
    let mut children = Vec::with_capacity(ids.len());
    for id in ids {
        match store.item(id)? {
            Some(child) => children.push(child),
            None => {
                tracing::warn!(child = %id, "a stored fan-out lists a child item that is not in the store")
            }
        }
    }
    Ok(children)
}

/// How a stored result continues.
enum Stored {
    Continue,
    Dropped,
    Children(Vec<String>),
}

impl Stored {
    fn of(output: &Value) -> Self {
        let Some(obj) = output.as_object() else {
            return Self::Continue;
        };
        if obj.len() == 1 && obj.contains_key(DROPPED) {
            return Self::Dropped;
        }
        if obj.len() == 2
            && obj.contains_key("output")
            && let Some(ids) = obj.get(CHILDREN).and_then(Value::as_array)
        {
            return Self::Children(
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            );
        }
        Self::Continue
    }
}

fn merge(step: &dyn Step, item: &mut ItemRecord, record: ResultRecord) {
    merge_parts(step, item, record.output, record.details);
}

fn merge_parts(
    step: &dyn Step,
    item: &mut ItemRecord,
    output: Value,
    details: Option<atk_state::Details>,
) {
    item.fields.insert(step.result_key().to_string(), output);
    if let (Some(key), Some(details)) = (step.details_key(), details)
        && let Ok(value) = serde_json::to_value(details)
    {
        item.fields.insert(key.to_string(), value);
    }
}

impl Executor {
    /// An executor over `store`, calling steps with `ctx`, reporting to `sink`.
    pub fn new(
        store: Arc<dyn Store>,
        ctx: StepContext,
        sink: Arc<dyn ProgressSink>,
        cfg: ExecutorConfig,
    ) -> Self {
        Self {
            store,
            ctx,
            sink,
            cfg,
        }
    }

    /// Runs `chain` over every item in the store, depth-first; returns what happened.
    ///
    /// Prompts are all loaded and checked first (`StepError::Prompt`, before any request).
    /// A fatal engine or store error stops new work, lets in-flight items finish, and is returned.
    pub async fn run(&self, chain: &[Arc<dyn Step>]) -> Result<RunReport, StepError> {
        check_chain(chain)?;
        for step in chain {
            self.ctx
                .prompts
                .check_all(&step.prompt_names(), self.ctx.completion_mode)?;
        }
        // Progress totals are counted on a blocking thread while the loop below skips stored
        // work (which sends no events); they are announced before the first item starts, so a
        // resumed run over finished items pays for one pass, not two, on a multi-core machine.
        // When the loop gets through every root without starting any (all finished), its own
        // tallies are the counts: the counting pass is told to stop, its work being redundant.
        let count_stop = Arc::new(AtomicBool::new(false));
        let mut counting = self.cfg.count_first.then(|| {
            let store = self.store.clone();
            let steps: Vec<String> = chain.iter().map(|s| s.name().to_string()).collect();
            let stop = count_stop.clone();
            tokio::task::spawn_blocking(move || count(store.as_ref(), &steps, &stop))
        });
        let mut announced = false;
        let stop = self.cfg.cancel.child_token();
        let mut ctx = self.ctx.clone();
        ctx.cancel = stop.clone();
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            ctx,
            sink: self.sink.clone(),
            chain: chain.to_vec(),
            stop,
            tallies: chain
                .iter()
                .map(|s| {
                    Mutex::new(Tally {
                        report: StepReport {
                            step: s.name().to_string(),
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                })
                .collect(),
        });
        let mut roots = self.store.root_ids();
        let mut roots_done = false;
        let mut pending: VecDeque<Unit> = VecDeque::new();
        let mut tasks = JoinSet::new();
        let mut fatal: Option<StepError> = None;
        // The first fatal error is the one reported; the items in flight then usually fail the
        // same way (a refused key refuses them all), which is noise at error level.
        let mut later_fatal = 0_u64;
        let mut fail = |e: StepError, fatal: &mut Option<StepError>| {
            if fatal.is_none() {
                tracing::error!(error = %e, "stopping the run");
                *fatal = Some(e);
            } else {
                later_fatal += 1;
                tracing::debug!(error = %e, "an item in flight failed after the run was stopped");
            }
            shared.stop.cancel();
        };
        loop {
            while tasks.len() < self.cfg.max_in_flight && !shared.stop.is_cancelled() {
                let (item, start) = match pending.pop_front() {
                    Some((_, start)) if start >= chain.len() => continue,
                    Some((item, start)) => match shared.fully_done(&item.id, start) {
                        Ok(true) => continue,
                        Ok(false) => (item, start),
                        Err(e) => {
                            fail(e, &mut fatal);
                            break;
                        }
                    },
                    None if roots_done => break,
                    None => match roots.next() {
                        None => {
                            roots_done = true;
                            break;
                        }
                        Some(Err(e)) => {
                            fail(e.into(), &mut fatal);
                            break;
                        }
                        // Only an item with work left is read and decoded.
                        Some(Ok(id)) => match shared.fully_done(&id, 0).and_then(|done| {
                            if done {
                                Ok(None)
                            } else {
                                self.store.item(&id).map_err(StepError::from)
                            }
                        }) {
                            Ok(Some(item)) => (item, 0),
                            Ok(None) => continue,
                            Err(e) => {
                                fail(e, &mut fatal);
                                break;
                            }
                        },
                    },
                };
                if !announced {
                    announced = true;
                    match counted(counting.take()).await {
                        Ok(counts) => self.announce(chain, counts),
                        Err(e) => {
                            fail(e, &mut fatal);
                            break;
                        }
                    }
                }
                tasks.spawn(shared.clone().drive(item, start));
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok(Ok(Some((children, next))))) => {
                    for child in children.into_iter().rev() {
                        pending.push_front((child, next));
                    }
                }
                Some(Ok(Ok(None))) => {}
                Some(Ok(Err(e))) => fail(e, &mut fatal),
                Some(Err(e)) => fail(
                    StepError::Internal(format!("a step task failed: {e}")),
                    &mut fatal,
                ),
            }
        }
        drop(roots);
        if !announced && roots_done && fatal.is_none() && counting.is_some() {
            // Every root was skipped as finished: each one added 1 to every step's `skipped`.
            count_stop.store(true, Ordering::Relaxed);
            let _ = counted(counting.take()).await;
            let already: Vec<u64> = shared
                .tallies
                .iter()
                .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).report.skipped)
                .collect();
            self.announce(chain, Some((already[0], already)));
        } else if !announced {
            match counted(counting.take()).await {
                Ok(counts) => self.announce(chain, counts),
                Err(e) => fail(e, &mut fatal),
            }
        }
        for step in chain {
            self.sink.event(ProgressEvent::StepFinished {
                step: step.name().to_string(),
            });
        }
        if later_fatal > 0 {
            tracing::debug!(
                count = later_fatal,
                "further errors after the first fatal one"
            );
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        let steps = shared
            .tallies
            .iter()
            .map(|t| {
                let mut report =
                    std::mem::take(&mut t.lock().unwrap_or_else(|e| e.into_inner()).report);
                report
                    .failures_by_reason
                    .sort_by_key(|g| std::cmp::Reverse(g.count));
                report
            })
            .collect();
        Ok(RunReport {
            steps,
            cancelled: self.cfg.cancel.is_cancelled(),
        })
    }

    /// Sends `StepStarted` for each step, with the counts when they were taken.
    fn announce(&self, chain: &[Arc<dyn Step>], counts: Option<Counts>) {
        let (total, already) = counts.unwrap_or_else(|| (0, vec![0; chain.len()]));
        for (k, step) in chain.iter().enumerate() {
            self.sink.event(ProgressEvent::StepStarted {
                step: step.name().to_string(),
                total,
                already_done: already[k],
            });
        }
    }
}

/// Root items, and per step how many of them have a stored result.
type Counts = (u64, Vec<u64>);

/// Counts root items and stored results (one lookup for an item that finished the chain; no
/// record decoded). `None` when told to `stop` before the end.
fn count(
    store: &dyn Store,
    steps: &[String],
    stop: &AtomicBool,
) -> Result<Option<Counts>, StepError> {
    let mut total = 0;
    let mut already = vec![0u64; steps.len()];
    let last = steps.len() - 1;
    for id in store.root_ids() {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let id = id?;
        total += 1;
        if store.has_result(&steps[last], &id)? {
            already.iter_mut().for_each(|a| *a += 1);
            continue;
        }
        for (k, step) in steps[..last].iter().enumerate() {
            if store.has_result(step, &id)? {
                already[k] += 1;
            }
        }
    }
    Ok(Some((total, already)))
}

async fn counted(
    counting: Option<tokio::task::JoinHandle<Result<Option<Counts>, StepError>>>,
) -> Result<Option<Counts>, StepError> {
    match counting {
        None => Ok(None),
        Some(handle) => match handle.await {
            Ok(counts) => counts,
            Err(e) => Err(StepError::Internal(format!("counting items failed: {e}"))),
        },
    }
}

fn check_chain(chain: &[Arc<dyn Step>]) -> Result<(), StepError> {
    if chain.is_empty() {
        return Err(StepError::Config("the chain has no steps".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for step in chain {
        if step.name().is_empty() {
            return Err(StepError::Config("a step has an empty name".into()));
        }
        if !seen.insert(step.name()) {
            return Err(StepError::Config(format!(
                "two steps are named `{}`; step names key stored results and must be unique",
                step.name()
            )));
        }
    }
    Ok(())
}

/// The items that went through the whole chain, in `order`, each with every step's output
/// merged into its fields under the step's `result_key` (and details under `details_key`).
/// Dropped, failed and unfinished items are left out; a fan-out's children stand in for their
/// parent. Streams from the store; for dataset writers.
pub fn collect_final<'a>(
    store: &'a dyn Store,
    chain: &'a [Arc<dyn Step>],
) -> Records<'a, ItemRecord> {
    Box::new(FinalItems {
        store,
        chain,
        roots: store.items(),
        stack: Vec::new(),
    })
}

struct FinalItems<'a> {
    store: &'a dyn Store,
    chain: &'a [Arc<dyn Step>],
    roots: Records<'a, ItemRecord>,
    stack: Vec<Unit>,
}

impl FinalItems<'_> {
    /// Some(item) when final; pushes children when it fanned out.
    fn walk(
        &mut self,
        mut item: ItemRecord,
        start: usize,
    ) -> Result<Option<ItemRecord>, atk_state::Error> {
        for k in start..self.chain.len() {
            let step = &self.chain[k];
            let Some(record) = self.store.result(step.name(), &item.id)? else {
                return Ok(None);
            };
            match Stored::of(&record.output) {
                Stored::Dropped => return Ok(None),
                Stored::Children(ids) => {
                    for id in ids.iter().rev() {
                        if let Some(child) = self.store.item(id)? {
                            self.stack.push((child, k + 1));
                        }
                    }
                    return Ok(None);
                }
                Stored::Continue => merge(step.as_ref(), &mut item, record),
            }
        }
        Ok(Some(item))
    }
}

impl Iterator for FinalItems<'_> {
    type Item = Result<ItemRecord, atk_state::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (item, start) = match self.stack.pop() {
                Some(unit) => unit,
                None => match self.roots.next()? {
                    Err(e) => return Some(Err(e)),
                    Ok(item) if item.parent.is_some() => continue,
                    Ok(item) => (item, 0),
                },
            };
            match self.walk(item, start) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fan_out::{FanOutStep, child_id};
    use crate::filter::FilterStep;
    use crate::prompt::PromptLibrary;
    use crate::prompt_step::PromptStep;
    use crate::step::Engines;
    use crate::testing::{MemStore, ScriptedEngine, last_text, reply};
    use atk_state::Fields;

    const PROMPTS: &[(&str, &str)] = &[
        ("one.yaml", "- role: user\n  content: \"one: {text}\"\n"),
        ("two.yaml", "- role: user\n  content: \"two: {first}\"\n"),
        ("judge.yaml", "- role: user\n  content: \"judge: {text}\"\n"),
    ];

    fn items(n: usize) -> Vec<ItemRecord> {
        (0..n)
            .map(|i| {
                let mut fields = Fields::new();
                fields.insert("text".into(), json!(format!("t{i}")));
                ItemRecord {
                    v: RECORD_VERSION,
                    id: format!("id{i:04}"),
                    parent: None,
                    order: vec![i as u64],
                    fields,
                }
            })
            .collect()
    }

    async fn store_with(n: usize) -> Arc<MemStore> {
        let store = Arc::new(MemStore::new());
        store.put_items(items(n)).await.unwrap();
        store
    }

    /// An engine answering `re:<last message>`.
    fn echo() -> Arc<ScriptedEngine> {
        Arc::new(
            ScriptedEngine::new("e").with_fallback(|r| Ok(reply(format!("re:{}", last_text(r))))),
        )
    }

    fn executor(
        store: Arc<dyn Store>,
        engine: Arc<ScriptedEngine>,
        cfg: ExecutorConfig,
    ) -> Executor {
        let ctx = StepContext::new(
            Engines::single(engine),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        Executor::new(store, ctx, Arc::new(crate::NullSink), cfg)
    }

    fn two_steps() -> Vec<Arc<dyn Step>> {
        vec![
            Arc::new(PromptStep::new("first", "one")),
            Arc::new(PromptStep::new("second", "two")),
        ]
    }

    fn sent(engine: &ScriptedEngine) -> Vec<String> {
        engine
            .requests()
            .iter()
            .map(|r| last_text(r).to_string())
            .collect()
    }

    #[tokio::test]
    async fn runs_depth_first_and_feeds_results_to_later_steps() {
        let store = store_with(3).await;
        let engine = echo();
        let report = executor(
            store.clone(),
            engine.clone(),
            ExecutorConfig::default().with_max_in_flight(1),
        )
        .run(&two_steps())
        .await
        .unwrap();
        assert_eq!(
            sent(&engine),
            [
                "one: t0",
                "two: re:one: t0",
                "one: t1",
                "two: re:one: t1",
                "one: t2",
                "two: re:one: t2"
            ],
            "item 1 reaches step 2 before item 2 starts step 1"
        );
        assert_eq!(
            (report.steps[1].done, report.failed(), report.cancelled),
            (3, 0, false)
        );
        let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &two_steps())
            .map(Result::unwrap)
            .collect();
        assert_eq!(finals.len(), 3);
        assert_eq!(finals[2].fields["second"], json!("re:two: re:one: t2"));
        assert_eq!(finals[2].fields["first"], json!("re:one: t2"));
    }

    #[tokio::test]
    async fn a_second_run_sends_nothing_for_stored_results() {
        let store = store_with(5).await;
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        let engine = echo();
        let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!(engine.calls(), 0);
        assert_eq!(
            (
                report.steps[0].skipped,
                report.steps[1].skipped,
                report.steps[1].done
            ),
            (5, 5, 0)
        );
    }

    #[tokio::test]
    async fn a_resumed_run_over_finished_items_reads_no_item_record() {
        let store = store_with(10).await;
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        let before = store.records_read();
        let engine = echo();
        let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!((engine.calls(), report.steps[1].skipped), (0, 10));
        assert_eq!(
            store.records_read() - before,
            0,
            "ids and result keys are enough to skip finished items"
        );
        // An unfinished item is still read, once.
        store.put_items(items(11)[10..].to_vec()).await.unwrap();
        let before = store.records_read();
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!(store.records_read() - before, 1);
    }

    #[tokio::test]
    async fn partial_results_resume_at_the_missing_step_with_earlier_outputs() {
        let store = store_with(2).await;
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps()[..1])
            .await
            .unwrap();
        let engine = echo();
        executor(
            store.clone(),
            engine.clone(),
            ExecutorConfig::default().with_max_in_flight(1),
        )
        .run(&two_steps())
        .await
        .unwrap();
        assert_eq!(sent(&engine), ["two: re:one: t0", "two: re:one: t1"]);
    }

    struct DoneCounter(tokio::sync::watch::Sender<u64>);

    impl ProgressSink for DoneCounter {
        fn event(&self, event: ProgressEvent) {
            if let ProgressEvent::ItemDone { .. } = event {
                self.0.send_modify(|n| *n += 1);
            }
        }
    }

    async fn crash_after(store: Arc<dyn Store>, answered: u64, bound: usize) -> u64 {
        let engine = Arc::new(ScriptedEngine::new("e").hang_after(answered));
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        let ctx = StepContext::new(
            Engines::single(engine.clone()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let exec = Executor::new(
            store,
            ctx,
            Arc::new(DoneCounter(tx)),
            ExecutorConfig::default().with_max_in_flight(bound),
        );
        let run = tokio::spawn(async move { exec.run(&two_steps()).await });
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n >= answered))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while engine.calls() < answered + bound as u64 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        run.abort(); // the simulated crash: the executor and its tasks are dropped mid-request
        assert!(run.await.unwrap_err().is_cancelled());
        engine.calls()
    }

    #[tokio::test]
    async fn a_crash_loses_only_in_flight_requests() {
        let (n, bound) = (30usize, 4usize);
        let store = store_with(n).await;
        let first_calls = crash_after(store.clone(), 17, bound).await;
        let stored = (store.result_count("first") + store.result_count("second")) as u64;
        assert_eq!(stored, 17, "every answered request was stored");
        assert!(
            first_calls - stored <= bound as u64,
            "lost {} requests with a bound of {bound}",
            first_calls - stored
        );
        let engine = echo();
        let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!(
            engine.calls(),
            2 * n as u64 - stored,
            "the rerun sends exactly the missing work"
        );
        assert_eq!(
            (store.result_count("first"), store.result_count("second")),
            (n, n)
        );
        assert_eq!(report.steps[0].skipped + report.steps[0].done, n as u64);
    }

    /// Opens a sled store, waiting (bounded) for the previous opener's aborted tasks to let go.
    async fn reopen(dir: &std::path::Path) -> Arc<atk_state::SledStore> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match atk_state::SledStore::open(dir) {
                Ok(store) => return Arc::new(store),
                Err(atk_state::Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("reopen failed: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_crash_on_the_sled_store_resumes_with_the_missing_work_only() {
        let (n, bound) = (24usize, 3usize);
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path()).await;
        store.put_items(items(n)).await.unwrap();
        let first_calls = crash_after(store.clone(), 11, bound).await;
        drop(store);

        let store = reopen(dir.path()).await;
        let stored = (store.results("first").count() + store.results("second").count()) as u64;
        assert_eq!(stored, 11, "every answered request survived the crash");
        assert!(first_calls - stored <= bound as u64);
        let engine = echo();
        executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!(engine.calls(), 2 * n as u64 - stored);
        let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &two_steps())
            .map(Result::unwrap)
            .collect();
        assert_eq!(finals.len(), n);
        assert_eq!(
            finals[n - 1].fields["second"],
            json!(format!("re:two: re:one: t{}", n - 1))
        );
    }

    #[tokio::test]
    async fn cancelling_starts_no_new_requests() {
        let store = store_with(4).await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let engine = echo();
        let report = executor(
            store,
            engine.clone(),
            ExecutorConfig::default().with_cancel(cancel),
        )
        .run(&two_steps())
        .await
        .unwrap();
        assert!(report.cancelled);
        assert_eq!(engine.calls(), 0);
        assert!(report.summary().contains("cancelled"));
    }

    fn picky() -> Vec<Arc<dyn Step>> {
        let validate = |out: &Value, _: &ItemRecord| match out.as_str() {
            Some(s) if s.contains("t1") => Ok(()),
            Some(s) if s.contains("t2") => Err("too short".to_string()),
            _ => Err("no rhyme".to_string()),
        };
        vec![
            Arc::new(
                PromptStep::new("first", "one")
                    .max_retries(1)
                    .validator(validate),
            ),
            Arc::new(PromptStep::new("second", "two")),
        ]
    }

    #[tokio::test]
    async fn failures_are_grouped_recorded_and_retried_next_run() {
        let store = store_with(5).await;
        let report = executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&picky())
            .await
            .unwrap();
        let first = &report.steps[0];
        assert_eq!((first.done, first.failed), (1, 4));
        assert_eq!(first.failures_by_reason[0].reason, "no rhyme");
        assert_eq!(first.failures_by_reason[0].count, 3);
        assert_eq!(
            first.failures_by_reason[0].sample_output.as_deref(),
            Some("re:one: t0")
        );
        assert_eq!(first.failures_by_reason[1].count, 1);
        assert!(!report.all_failed(), "one item made it through");
        let summary = report.summary();
        assert!(
            summary.contains("3 x validation: no rhyme")
                && summary.contains("sample raw output:\nre:one: t0"),
            "{summary}"
        );
        let failures: Vec<_> = store.failures("first").map(Result::unwrap).collect();
        assert_eq!(failures.len(), 4);
        assert_eq!(
            (failures[0].1.attempts, failures[0].1.kind.as_str()),
            (2, "validation")
        );
        assert_eq!(
            report.steps[1].done, 1,
            "failed items are left out of later steps"
        );

        // The next run retries exactly the failed items (a stored failure does not block).
        let engine = echo();
        executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        assert_eq!(engine.calls(), 8);
        assert_eq!(
            store.failures("first").count(),
            0,
            "a stored result clears the failure"
        );
    }

    #[tokio::test]
    async fn a_run_where_every_item_fails_says_so() {
        let store = store_with(3).await;
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| Ok(reply("garbage"))));
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(
            PromptStep::new("first", "one")
                .max_retries(0)
                .validator(|_, _| Err("no <poem> tags".into())),
        )];
        let report = executor(store, engine, ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap();
        assert!(report.all_failed());
        let summary = report.summary();
        assert!(
            summary.contains("3 x validation: no <poem> tags"),
            "{summary}"
        );
        assert!(summary.contains("sample raw output:\ngarbage"), "{summary}");
        assert!(summary.contains("every attempted item failed"), "{summary}");
    }

    #[tokio::test]
    async fn a_fatal_engine_error_stops_the_run() {
        let store = store_with(50).await;
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| {
            Err(atk_engine::Error::AuthRefused {
                engine: "e".into(),
                status: 401,
                message: "bad key".into(),
            })
        }));
        let err = executor(
            store.clone(),
            engine.clone(),
            ExecutorConfig::default().with_max_in_flight(4),
        )
        .run(&two_steps())
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                StepError::Engine(atk_engine::Error::AuthRefused { .. })
            ),
            "{err:?}"
        );
        assert!(
            engine.calls() <= 4,
            "no new requests after the fatal error: {}",
            engine.calls()
        );
        assert_eq!(
            store.failures("first").count(),
            0,
            "a fatal error is not an item failure"
        );
    }

    #[tokio::test]
    async fn a_refused_key_is_logged_once_not_once_per_item_in_flight() {
        let logs = atk_testkit::CapturedLogs::default();
        // This test's runtime is single-threaded, so every task logs to this subscriber.
        let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::DEBUG));
        let store = store_with(20).await;
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| {
            Err(atk_engine::Error::AuthRefused {
                engine: "e".into(),
                status: 401,
                message: "bad key".into(),
            })
        }));
        executor(
            store,
            engine.clone(),
            ExecutorConfig::default().with_max_in_flight(5),
        )
        .run(&two_steps())
        .await
        .unwrap_err();
        assert_eq!(
            engine.calls(),
            5,
            "five items were in flight when the key was refused"
        );
        let text = logs.text();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{text}");
        assert!(errors[0].contains("stopping the run"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("DEBUG") && l.contains("after the run was stopped"))
                .count(),
            4,
            "{text}"
        );
    }

    #[tokio::test]
    async fn after_a_cancel_no_further_attempt_is_sent_and_nothing_is_recorded() {
        let store = store_with(10).await;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        // The first reply to arrive comes with the Ctrl-C; every reply fails validation, so each
        // item in flight would otherwise go on to its next attempt.
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(move |_| {
            token.cancel();
            Ok(reply("not accepted"))
        }));
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(
            PromptStep::new("first", "one")
                .validator(|_, _| Err("never".into()))
                .max_retries(3),
        )];
        let cfg = ExecutorConfig::default()
            .with_cancel(cancel)
            .with_max_in_flight(3);
        let report = executor(store.clone(), engine.clone(), cfg)
            .run(&chain)
            .await
            .unwrap();
        assert_eq!(
            engine.calls(),
            3,
            "the three first attempts in flight were sent; no retry, no new item"
        );
        assert!(report.cancelled);
        assert_eq!((report.steps[0].done, report.steps[0].failed), (0, 0));
        assert_eq!(
            store.failures("first").count(),
            0,
            "a cancelled item is not a failure"
        );
    }

    #[tokio::test]
    async fn prompt_errors_come_before_any_request() {
        let store = store_with(2).await;
        let engine = echo();
        let chain: Vec<Arc<dyn Step>> = vec![
            Arc::new(PromptStep::new("first", "one")),
            Arc::new(PromptStep::new("x", "missing")),
        ];
        let err = executor(store, engine.clone(), ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap_err();
        assert!(err.is_config_error());
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        assert_eq!(engine.calls(), 0);
    }

    #[tokio::test]
    async fn duplicate_step_names_are_refused() {
        let chain: Vec<Arc<dyn Step>> = vec![
            Arc::new(PromptStep::new("a", "one")),
            Arc::new(PromptStep::new("a", "two")),
        ];
        let err = executor(store_with(1).await, echo(), ExecutorConfig::default())
            .run(&chain)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StepError::Config(ref m) if m.contains("`a`")),
            "{err}"
        );
    }

    fn fan_out_chain() -> Vec<Arc<dyn Step>> {
        let split = FanOutStep::from_fn("split", |item| {
            let text = item.fields["text"].as_str().unwrap_or_default().to_string();
            Ok((0..2)
                .map(|i| {
                    let mut f = Fields::new();
                    f.insert("text".into(), json!(format!("{text}.{i}")));
                    f
                })
                .collect())
        });
        vec![
            Arc::new(PromptStep::new("first", "one")),
            Arc::new(split),
            Arc::new(PromptStep::new("second", "two")),
        ]
    }

    #[tokio::test]
    async fn fan_out_children_get_stable_ids_and_go_on() {
        let store = store_with(2).await;
        let engine = echo();
        let report = executor(
            store.clone(),
            engine.clone(),
            ExecutorConfig::default().with_max_in_flight(1),
        )
        .run(&fan_out_chain())
        .await
        .unwrap();
        assert_eq!(report.steps[2].done, 4);
        assert_eq!(
            sent(&engine)[..3],
            ["one: t0", "two: re:one: t0", "two: re:one: t0"]
        );
        let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &fan_out_chain())
            .map(Result::unwrap)
            .collect();
        let ids: Vec<&str> = finals.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                child_id("id0000", 0),
                child_id("id0000", 1),
                child_id("id0001", 0),
                child_id("id0001", 1)
            ]
        );
        assert_eq!(finals[1].fields["text"], json!("t0.1"));
        assert_eq!(
            finals[1].fields["first"],
            json!("re:one: t0"),
            "children carry the parent's earlier results"
        );
        assert_eq!(finals[1].order, vec![0, 1]);

        let again = echo();
        executor(store.clone(), again.clone(), ExecutorConfig::default())
            .run(&fan_out_chain())
            .await
            .unwrap();
        assert_eq!(
            again.calls(),
            0,
            "a resumed run finds the children through the stored fan-out"
        );
    }

    #[tokio::test]
    async fn filter_drops_are_recorded_with_their_reason() {
        let store = store_with(4).await;
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|r| {
            let text = last_text(r);
            Ok(reply(if text.ends_with('1') || text.ends_with('3') {
                "off-topic\nDROP"
            } else {
                "fine\nKEEP"
            }))
        }));
        let chain = || -> Vec<Arc<dyn Step>> {
            vec![
                Arc::new(FilterStep::new(PromptStep::new("judge", "judge"))),
                Arc::new(PromptStep::new("first", "one")),
            ]
        };
        let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
            .run(&chain())
            .await
            .unwrap();
        assert_eq!(
            (
                report.steps[0].done,
                report.steps[0].dropped,
                report.steps[1].done
            ),
            (2, 2, 2)
        );
        let dropped = store.result("judge", "id0001").unwrap().unwrap();
        assert_eq!(dropped.output, json!({"atk_dropped": "off-topic\nDROP"}));
        let finals: Vec<String> = collect_final(store.as_ref(), &chain())
            .map(|i| i.unwrap().id)
            .collect();
        assert_eq!(finals, ["id0000", "id0002"]);
        let calls = engine.calls();
        executor(store, engine.clone(), ExecutorConfig::default())
            .run(&chain())
            .await
            .unwrap();
        assert_eq!(engine.calls(), calls, "drops are not asked again");
    }

    #[tokio::test]
    async fn progress_events_announce_counts_and_items() {
        #[derive(Default)]
        struct Log(Mutex<Vec<ProgressEvent>>);
        impl ProgressSink for Log {
            fn event(&self, event: ProgressEvent) {
                self.0.lock().unwrap().push(event);
            }
        }
        let store = store_with(3).await;
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps()[..1])
            .await
            .unwrap();
        let log = Arc::new(Log::default());
        let ctx = StepContext::new(
            Engines::single(echo()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        Executor::new(store, ctx, log.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        let events = log.0.lock().unwrap().clone();
        assert_eq!(
            events[0],
            ProgressEvent::StepStarted {
                step: "first".into(),
                total: 3,
                already_done: 3
            }
        );
        assert_eq!(
            events[1],
            ProgressEvent::StepStarted {
                step: "second".into(),
                total: 3,
                already_done: 0
            }
        );
        let done = events.iter().filter(|e| matches!(e, ProgressEvent::ItemDone { step, prompt_tokens: 10, .. } if step == "second")).count();
        assert_eq!(done, 3);
        assert!(matches!(
            events.last(),
            Some(ProgressEvent::StepFinished { .. })
        ));

        // Everything finished: the counts come from the skipping pass itself.
        log.0.lock().unwrap().clear();
        let ctx = StepContext::new(
            Engines::single(echo()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let store = store_with(3).await;
        executor(store.clone(), echo(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        Executor::new(store, ctx, log.clone(), ExecutorConfig::default())
            .run(&two_steps())
            .await
            .unwrap();
        let events = log.0.lock().unwrap().clone();
        assert_eq!(
            events[0],
            ProgressEvent::StepStarted {
                step: "first".into(),
                total: 3,
                already_done: 3
            }
        );
        assert_eq!(
            events[1],
            ProgressEvent::StepStarted {
                step: "second".into(),
                total: 3,
                already_done: 3
            }
        );
        assert_eq!(events.len(), 4, "{events:?}");
    }
}
