//! How one unit of work walks the chain: an item from a step up to where its level ends, or a
//! fan-in gathering a parent's kept children. Shared by the executor's tasks.
//!
//! A root item runs to the end of the chain. A fan-out's children run from the step after it
//! up to its closing fan-in (or to the end when none closes it). When the last child of a
//! parent is through (kept, dropped or failed), the parent is gathered: its kept children are
//! read back from the store, hashed (ids and results), and the fan-in's stored result is reused
//! when it was made from the same set, redone otherwise. The parent then goes on after the fan-in.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use atk_state::{FailureRecord, ItemRecord, Outcome, RECORD_VERSION, ResultRecord, Store};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::chain::Layout;
use crate::error::StepError;
use crate::fingerprint::with_version_of;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::prompt_step::now_ms;
use crate::report::Tally;
use crate::rework::{Rework, ReworkMode};
use crate::step::{Shape, Step, StepContext, StepOutput};
use crate::template::value_text;

/// Where an item's walk stops and whom it reports to there.
#[derive(Clone)]
pub(crate) struct Route {
    /// The step index the item stops before (a fan-in, or the chain's length).
    pub(crate) end: usize,
    /// The parent waiting for this item, when it is a child gathered by a fan-in.
    pub(crate) group: Option<Arc<Group>>,
    /// When a rework is on: the `stored_at_ms` of the latest result the item was made from
    /// (its fan-out's); a later step's result stored before it is stale.
    pub(crate) floor: u64,
}

/// A parent waiting for its children before its fan-in.
pub(crate) struct Group {
    /// The parent as it was at its fan-out (earlier results merged).
    pub(crate) parent: ItemRecord,
    /// The fan-out step's index.
    pub(crate) fan_out: usize,
    /// The fan-in step's index.
    pub(crate) fan_in: usize,
    /// The children's ids, in order.
    pub(crate) child_ids: Vec<String>,
    /// The parent's own route, taken up after the fan-in.
    pub(crate) route: Route,
    /// Children not yet through (counted down by the run loop only).
    pub(crate) remaining: AtomicUsize,
}

/// One unit of work for a task.
pub(crate) enum Work {
    /// Walk an item from a step along its route.
    Item(ItemRecord, usize, Route),
    /// Gather a parent whose children are all through.
    Gather(Arc<Group>),
}

/// How a walk ended.
pub(crate) enum Walked {
    /// The item reached its route's end, or was dropped, or failed: its group may go on.
    Through,
    /// The run stopped before the item was through: its group must not be gathered.
    Stopped,
    /// A fan-out made (or had stored) children.
    Split {
        /// The parent, with its earlier results merged.
        parent: ItemRecord,
        /// The fan-out's index.
        at: usize,
        /// The children.
        children: Vec<ItemRecord>,
        /// When the fan-out's result was stored (children's later results stored before are stale).
        floor: u64,
        /// Children a reprocessed split made again exactly as stored: their later results
        /// stay valid (no floor applies to them).
        unchanged: HashSet<String>,
    },
}

/// State every task of one run shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ctx: StepContext,
    pub(crate) sink: Arc<dyn ProgressSink>,
    pub(crate) chain: Vec<Arc<dyn Step>>,
    pub(crate) layout: Layout,
    pub(crate) stop: CancellationToken,
    pub(crate) tallies: Vec<Mutex<Tally>>,
    /// Items that went through the whole chain.
    pub(crate) finished: Mutex<u64>,
    /// Each step's current fingerprint, stored in its new results.
    pub(crate) fingerprints: Vec<Option<String>>,
    /// What is asked for again, when anything is.
    pub(crate) rework: Option<Arc<Rework>>,
    /// Steps before this index ran in an earlier segment (before a barrier): only their
    /// stored results are taken up; an item without one stops there.
    pub(crate) run_from: usize,
    /// True when a step of the chain is a barrier (its verdicts can change later results).
    pub(crate) has_barrier: bool,
    /// Per step, true when the store held none of its results as the segment began (every step
    /// of a first run): no lookup can find one for an item that has not been walked through
    /// that step yet, and only its own walk writes it, so none is made (a sled read each).
    pub(crate) none_stored: Vec<bool>,
}

/// What to do with a stored result while a rework is on.
enum Decision {
    /// Take it up as it is.
    Reuse(ResultRecord),
    /// Request the step again (the stored result stays until the new one replaces it).
    Run,
    /// Store what the step's processor now makes of the stored reply (nothing is sent); for a
    /// fan-out, the children made again exactly as stored.
    Replace(StepOutput, HashSet<String>),
}

/// What to do after a step's outcome.
enum Next {
    Continue,
    Done(Walked),
}

impl Shared {
    pub(crate) fn tally(&self, step: usize, f: impl FnOnce(&mut Tally)) {
        f(&mut self.tallies[step].lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn add_finished(&self, n: u64) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    /// True when [`Shared::fully_done`] never says done: no fast path applies (a fan-in, a
    /// rework, a barrier) or no result of the last step is stored, so every item is walked.
    pub(crate) fn walks_every_item(&self) -> bool {
        self.layout.has_fan_in
            || self.rework.is_some()
            || self.has_barrier
            || self.none_stored[self.chain.len() - 1]
    }

    /// Fast path for resume, in chains without a fan-in: an item with a result for the last
    /// step went through the whole chain.
    pub(crate) fn fully_done(&self, id: &str, start: usize) -> Result<bool, StepError> {
        if self.walks_every_item() {
            return Ok(false);
        }
        let last = self.chain.len() - 1;
        if self.store.has_result(self.chain[last].name(), id)? {
            for k in start..=last {
                self.tally(k, |t| t.report.skipped += 1);
            }
            self.add_finished(1);
            return Ok(true);
        }
        Ok(false)
    }

    /// Runs one unit of work; returns how it ended and the route of the item it ended with.
    pub(crate) async fn perform(self: Arc<Self>, work: Work) -> Result<(Walked, Route), StepError> {
        match work {
            Work::Item(item, start, route) => {
                let walked = self
                    .walk(item, start, route.end, false, route.floor)
                    .await?;
                Ok((walked, route))
            }
            Work::Gather(group) => self.gather(group).await,
        }
    }

    /// Walks `item` through steps `start..end`; with `redo`, stored results are not reused
    /// (they were made from an input that has since changed) but replaced.
    async fn walk(
        &self,
        mut item: ItemRecord,
        start: usize,
        end: usize,
        redo: bool,
        mut floor: u64,
    ) -> Result<Walked, StepError> {
        // The latest barrier verdict met: a later result stored before it was made from an
        // item the barrier has since decided anew, and is remade.
        let mut barrier_floor = 0;
        let mut unchanged = HashSet::new();
        for k in start..end {
            let step = &self.chain[k];
            let stored = if redo || self.none_stored[k] {
                None
            } else {
                self.store.result(step.name(), &item.id)?
            };
            let fixed = k < self.run_from || step.shape() == Shape::Barrier;
            let decision = match stored {
                // Run in an earlier segment, or a barrier's verdict: taken up as stored.
                Some(record) if fixed => {
                    if step.shape() == Shape::Barrier {
                        barrier_floor = barrier_floor.max(record.stored_at_ms);
                    }
                    Decision::Reuse(record)
                }
                // Not through the earlier segment (failed there), or not among the barrier's
                // survivors when it ran: the item stops here in this run.
                None if fixed => {
                    tracing::debug!(step = step.name(), item = %item.id, "no stored result before a barrier's segment; the item waits for the next run");
                    return Ok(Walked::Through);
                }
                Some(record) if record.stored_at_ms < barrier_floor => {
                    if let Some(rework) = &self.rework {
                        rework.count(step.name(), |c| c.requested += 1);
                    }
                    Decision::Run
                }
                Some(record) => self.decide(k, &item, record, floor),
                None => Decision::Run,
            };
            if self.layout.child_level[k] {
                self.sink.event(ProgressEvent::ItemArrived {
                    step: step.name().to_string(),
                    already_done: matches!(decision, Decision::Reuse(_)),
                });
            }
            let output = match decision {
                Decision::Reuse(record) => {
                    self.tally(k, |t| t.report.skipped += 1);
                    if self.rework.is_some() && !self.layout.child_level[k] {
                        // Under a rework nothing is announced as already done (some stored
                        // results are remade): a reused one is counted as it is met.
                        self.sink.event(ProgressEvent::ItemDone {
                            step: step.name().to_string(),
                            prompt_tokens: 0,
                            completion_tokens: 0,
                        });
                    }
                    floor = floor.max(record.stored_at_ms);
                    match self.reuse(k, &mut item, record).await? {
                        Next::Continue => continue,
                        Next::Done(Walked::Split {
                            parent,
                            at,
                            children,
                            unchanged,
                            ..
                        }) => {
                            return Ok(Walked::Split {
                                parent,
                                at,
                                children,
                                floor,
                                unchanged,
                            });
                        }
                        Next::Done(walked) => return Ok(walked),
                    }
                }
                Decision::Replace(mut output, same) => {
                    if !same.is_empty() {
                        // The children made again as they were keep their later results: those
                        // are stamped with the new split's time, so they are not older than
                        // the input they were (truly) made from.
                        let at = output_record(&mut output).stored_at_ms;
                        self.restamp_children(k, &same, at).await?;
                    }
                    unchanged = same;
                    Ok(output)
                }
                Decision::Run => {
                    if self.stop.is_cancelled() {
                        return Ok(Walked::Stopped);
                    }
                    self.sink.event(ProgressEvent::ItemStarted {
                        step: step.name().to_string(),
                    });
                    // Its engine calls are costed under its name (each step's cost).
                    atk_engine::tagged(step.name(), step.run(&item, &self.ctx)).await
                }
            };
            let mut output = output;
            if let Ok(out) = &mut output {
                // Never older than the barrier verdict it was made after.
                let record = output_record(out);
                record.stored_at_ms = record.stored_at_ms.max(barrier_floor);
            }
            let walks_on = k + 1 < end;
            match self
                .settle(k, &mut item, output, None, &mut floor, walks_on)
                .await?
            {
                Next::Continue => {}
                Next::Done(Walked::Split {
                    parent,
                    at,
                    children,
                    floor,
                    ..
                }) => {
                    return Ok(Walked::Split {
                        parent,
                        at,
                        children,
                        floor,
                        unchanged,
                    });
                }
                Next::Done(walked) => return Ok(walked),
            }
        }
        if end == self.chain.len() {
            self.add_finished(1);
        }
        Ok(Walked::Through)
    }

    /// Reuse, request again or replace a stored result (always reuse when no rework is on).
    fn decide(&self, k: usize, item: &ItemRecord, record: ResultRecord, floor: u64) -> Decision {
        let Some(rework) = &self.rework else {
            return Decision::Reuse(record);
        };
        let step = &self.chain[k];
        let name = step.name();
        // Made before its input was remade: stale, whatever the step's mode.
        if record.stored_at_ms < floor {
            rework.count(name, |c| c.requested += 1);
            return Decision::Run;
        }
        let Some(mode) = rework.mode(name) else {
            return Decision::Reuse(record);
        };
        if record.stored_at_ms >= rework.since_ms {
            // Already redone by this rework (a rerun after an interruption).
            return Decision::Reuse(record);
        }
        let current = self.fingerprints[k].as_deref();
        match mode {
            ReworkMode::Redo => {
                rework.count(name, |c| c.requested += 1);
                Decision::Run
            }
            ReworkMode::RedoChanged => match (record.fingerprint.as_deref(), current) {
                (Some(old), Some(new)) if old != new => {
                    rework.count(name, |c| c.requested += 1);
                    Decision::Run
                }
                _ => Decision::Reuse(record),
            },
            ReworkMode::Reprocess => match step.reprocess(item, &record, &self.ctx) {
                None => Decision::Reuse(record),
                Some(Ok(mut output)) => {
                    // A fan-out's split may make other children from the same reply.
                    let same_children = match (&output, &record.outcome) {
                        (StepOutput::Children(children, _), Outcome::Children { ids }) => {
                            match self.same_children(children, ids) {
                                Ok(same) => same,
                                Err(e) => {
                                    tracing::warn!(step = name, item = %item.id, error = %e, "could not read the stored children; the split is stored again");
                                    HashSet::new()
                                }
                            }
                        }
                        _ => HashSet::new(),
                    };
                    let all_same = match &output {
                        StepOutput::Children(children, _) => {
                            children.iter().all(|c| same_children.contains(&c.id))
                        }
                        _ => true,
                    };
                    let new = output_record(&mut output);
                    if new.output == record.output && new.outcome == record.outcome && all_same {
                        rework.count(name, |c| c.unchanged += 1);
                        return Decision::Reuse(record);
                    }
                    rework.count(name, |c| c.changed += 1);
                    new.fingerprint = match (record.fingerprint.as_deref(), current) {
                        (Some(old), Some(new)) => Some(with_version_of(old, new)),
                        _ => record.fingerprint.clone(),
                    };
                    new.stored_at_ms = now_ms();
                    Decision::Replace(output, same_children)
                }
                Some(Err(reason)) => {
                    tracing::debug!(step = name, item = %item.id, %reason, "a stored reply now fails");
                    rework.count(name, |c| {
                        *c.rejected.entry(reason).or_default() += 1;
                        if !rework.report_only {
                            c.requested += 1;
                        }
                    });
                    if rework.report_only {
                        Decision::Reuse(record)
                    } else {
                        Decision::Run
                    }
                }
            },
        }
    }

    /// The ids among `children` whose stored item (listed in the stored split `ids`) has the
    /// same fields: a reprocessed split that made them again leaves their later results valid.
    fn same_children(
        &self,
        children: &[ItemRecord],
        ids: &[String],
    ) -> Result<HashSet<String>, StepError> {
        let mut same = HashSet::new();
        for child in children {
            if !ids.contains(&child.id) {
                continue;
            }
            if let Some(stored) = self.store.item(&child.id)?
                && stored.fields == child.fields
                && stored.order == child.order
            {
                same.insert(child.id.clone());
            }
        }
        Ok(same)
    }

    /// Restamps the stored results of `children` for the steps after fan-out `k` (up to its
    /// fan-in, or the chain's end) with time `at`, contents unchanged.
    async fn restamp_children(
        &self,
        k: usize,
        children: &HashSet<String>,
        at: u64,
    ) -> Result<(), StepError> {
        let end = self.layout.closes[k].unwrap_or(self.chain.len());
        for step in &self.chain[k + 1..end] {
            for id in children {
                if let Some(mut record) = self.store.result(step.name(), id)?
                    && record.stored_at_ms < at
                {
                    record.stored_at_ms = at;
                    self.store.put_result(step.name(), id, record).await?;
                }
            }
        }
        Ok(())
    }

    /// Takes up a stored result: merge and go on, stop at a drop, or split into the stored children.
    async fn reuse(
        &self,
        k: usize,
        item: &mut ItemRecord,
        mut record: ResultRecord,
    ) -> Result<Next, StepError> {
        match std::mem::take(&mut record.outcome) {
            Outcome::Kept => {
                merge(self.chain[k].as_ref(), item, record);
                Ok(Next::Continue)
            }
            Outcome::Dropped { reason } => {
                let raw = record.raw.as_deref();
                self.tally(k, |t| t.add_drop(&reason, raw, false));
                self.left_early(k);
                Ok(Next::Done(Walked::Through))
            }
            Outcome::Children { ids } => {
                let mut children = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(child) = self.store.item(id)? {
                        children.push(child);
                    }
                }
                if children.len() < ids.len() {
                    self.restore_children(k, item, &record, &ids).await?;
                    children = load_children(self.store.as_ref(), &ids)?;
                }
                Ok(Next::Done(Walked::Split {
                    parent: item.clone(),
                    at: k,
                    children,
                    floor: 0,
                    unchanged: HashSet::new(),
                }))
            }
        }
    }

    /// Puts back the children of a stored split that are no longer in the store (their input
    /// was retired while a run saw other inputs or another shard, and came back): made again
    /// from the stored reply by the step's split, with no request, so their own stored results
    /// are reused. One that cannot be made again is left out (warned by `load_children`).
    async fn restore_children(
        &self,
        k: usize,
        item: &ItemRecord,
        record: &ResultRecord,
        ids: &[String],
    ) -> Result<(), StepError> {
        let Some(Ok(StepOutput::Children(children, _))) =
            self.chain[k].reprocess(item, record, &self.ctx)
        else {
            return Ok(());
        };
        let mut lost = Vec::new();
        for child in children {
            if ids.contains(&child.id) && self.store.item(&child.id)?.is_none() {
                lost.push(child);
            }
        }
        if !lost.is_empty() {
            tracing::debug!(step = self.chain[k].name(), item = %item.id, children = lost.len(), "children of a stored split made again from its reply");
            self.store.put_items(lost).await?;
        }
        Ok(())
    }

    /// Stores what step `k` made of `item` (with `input_hash` for a fan-in) and says how to go
    /// on; `floor` becomes the stored result's time. A new result gets the step's current
    /// fingerprint; a reprocessed one (stamped already) keeps its own. A kept result is merged
    /// into `item` only when the item `walks_on` to a later step (else nothing reads it).
    async fn settle(
        &self,
        k: usize,
        item: &mut ItemRecord,
        mut output: Result<StepOutput, StepError>,
        input_hash: Option<String>,
        floor: &mut u64,
        walks_on: bool,
    ) -> Result<Next, StepError> {
        let step = &self.chain[k];
        let name = step.name();
        if let Ok(out) = &mut output {
            let record = output_record(out);
            if record.fingerprint.is_none() {
                record.fingerprint = self.fingerprints[k].clone();
            }
            *floor = (*floor).max(record.stored_at_ms);
        }
        match output {
            Ok(StepOutput::Result(mut record) | StepOutput::Keep(mut record)) => {
                record.outcome = Outcome::Kept;
                record.input_hash = input_hash;
                let (pt, ct) = (record.prompt_tokens, record.completion_tokens);
                if walks_on {
                    self.store
                        .put_result(name, &item.id, record.clone())
                        .await?;
                    merge(step.as_ref(), item, record);
                } else {
                    self.store.put_result(name, &item.id, record).await?;
                }
                self.done(k, pt, ct);
                Ok(Next::Continue)
            }
            Ok(StepOutput::Drop(mut record)) => {
                let reason = match &record.outcome {
                    Outcome::Dropped { reason } => reason.clone(),
                    _ => value_text(&record.output),
                };
                record.outcome = Outcome::Dropped {
                    reason: reason.clone(),
                };
                record.input_hash = input_hash;
                let (pt, ct) = (record.prompt_tokens, record.completion_tokens);
                let raw = record.raw.clone();
                self.store.put_result(name, &item.id, record).await?;
                self.tally(k, |t| t.add_drop(&reason, raw.as_deref(), true));
                self.sink.event(ProgressEvent::ItemDropped {
                    step: name.to_string(),
                    reason,
                });
                self.tokens(k, pt, ct);
                self.left_early(k);
                Ok(Next::Done(Walked::Through))
            }
            Ok(StepOutput::Children(children, mut record)) => {
                record.outcome = Outcome::Children {
                    ids: children.iter().map(|c| c.id.clone()).collect(),
                };
                let (pt, ct) = (record.prompt_tokens, record.completion_tokens);
                // Children first: once the parent's result is stored, they must exist.
                self.store.put_items(children.clone()).await?;
                self.store.put_result(name, &item.id, record).await?;
                self.done(k, pt, ct);
                Ok(Next::Done(Walked::Split {
                    parent: item.clone(),
                    at: k,
                    children,
                    floor: *floor,
                    unchanged: HashSet::new(),
                }))
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
                    last_prompt: f.last_prompt,
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
                self.left_early(k);
                Ok(Next::Done(Walked::Through))
            }
            // Stopped before its request went out: nothing to record, the next run does it.
            Err(StepError::Cancelled) => Ok(Next::Done(Walked::Stopped)),
            Err(e) => Err(e),
        }
    }

    /// Runs (or reuses) the fan-in of a parent whose children are all through, then walks the
    /// parent on along its own route.
    async fn gather(&self, group: Arc<Group>) -> Result<(Walked, Route), StepError> {
        let j = group.fan_in;
        let step = &self.chain[j];
        let mut parent = group.parent.clone();
        let (kept, hash) = kept_children(self.store.as_ref(), &self.chain, &group)?;
        let stored = self.store.result(step.name(), &parent.id)?;
        let mut redone = false;
        let mut floor = 0;
        let stored = match stored {
            Some(record) if record.input_hash.as_deref() == Some(hash.as_str()) => {
                match self.decide(j, &parent, record, 0) {
                    Decision::Reuse(record) => Some(record),
                    // A reworked fan-in is requested again (it has no reprocess).
                    Decision::Run | Decision::Replace(..) => {
                        redone = true;
                        None
                    }
                }
            }
            Some(_) => {
                redone = true;
                None
            }
            None => None,
        };
        let next = match stored {
            Some(record) => {
                self.tally(j, |t| t.report.skipped += 1);
                floor = record.stored_at_ms;
                self.reuse(j, &mut parent, record).await?
            }
            None => {
                if redone {
                    tracing::debug!(step = step.name(), parent = %parent.id, "the kept children changed; the fan-in is redone");
                }
                if self.stop.is_cancelled() {
                    return Ok((Walked::Stopped, group.route.clone()));
                }
                self.sink.event(ProgressEvent::ItemStarted {
                    step: step.name().to_string(),
                });
                let output =
                    atk_engine::tagged(step.name(), step.gather(&parent, &kept, &self.ctx)).await;
                let walks_on = j + 1 < group.route.end;
                self.settle(j, &mut parent, output, Some(hash), &mut floor, walks_on)
                    .await?
            }
        };
        let walked = match next {
            Next::Done(walked) => walked,
            // After a redone fan-in the parent's later results were made from the old output.
            Next::Continue => {
                let floor = if self.rework.is_some() { floor } else { 0 };
                self.walk(parent, j + 1, group.route.end, redone, floor)
                    .await?
            }
        };
        Ok((walked, group.route.clone()))
    }

    fn done(&self, k: usize, prompt_tokens: u64, completion_tokens: u64) {
        self.tally(k, |t| t.report.done += 1);
        self.sink.event(ProgressEvent::ItemDone {
            step: self.chain[k].name().to_string(),
            prompt_tokens,
            completion_tokens,
        });
    }

    /// An item at step `k` stops there: the later steps of its level, whose totals were
    /// counted up front, will not see it.
    fn left_early(&self, k: usize) {
        if self.layout.child_level[k] {
            return;
        }
        for j in k + 1..self.chain.len() {
            if self.layout.child_level[j] {
                continue;
            }
            self.sink.event(ProgressEvent::ItemLeft {
                step: self.chain[j].name().to_string(),
            });
        }
    }

    /// Tokens a dropped item cost (reported like a failed item's).
    fn tokens(&self, k: usize, prompt_tokens: u64, completion_tokens: u64) {
        if prompt_tokens + completion_tokens > 0 {
            self.sink.event(ProgressEvent::TokensSpent {
                step: self.chain[k].name().to_string(),
                prompt_tokens,
                completion_tokens,
            });
        }
    }
}

/// The record inside a step's output.
fn output_record(output: &mut StepOutput) -> &mut ResultRecord {
    match output {
        StepOutput::Result(r) | StepOutput::Keep(r) | StepOutput::Drop(r) => r,
        StepOutput::Children(_, r) => r,
    }
}

/// The children of a group that came through the steps between its fan-out and fan-in kept
/// (results merged, in order), and a hash of their ids and results.
pub(crate) fn kept_children(
    store: &dyn Store,
    chain: &[Arc<dyn Step>],
    group: &Group,
) -> Result<(Vec<ItemRecord>, String), StepError> {
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    'children: for child in load_children(store, &group.child_ids)? {
        let mut child = child;
        let mut child_hasher = Sha256::new();
        child_hasher.update(child.id.as_bytes());
        for step in &chain[group.fan_out + 1..group.fan_in] {
            match store.result(step.name(), &child.id)? {
                Some(record) if record.is_kept() => {
                    child_hasher.update([0]);
                    child_hasher.update(serde_json::to_vec(&record.output).unwrap_or_default());
                    merge(step.as_ref(), &mut child, record);
                }
                _ => continue 'children,
            }
        }
        hasher.update(child_hasher.finalize());
        kept.push(child);
    }
    Ok((kept, hex::encode(&hasher.finalize()[..16])))
}

pub(crate) fn load_children(
    store: &dyn Store,
    ids: &[String],
) -> Result<Vec<ItemRecord>, StepError> {
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

/// Merges a kept result into an item: output under the step's result key, details under its
/// details key.
pub(crate) fn merge(step: &dyn Step, item: &mut ItemRecord, record: ResultRecord) {
    item.fields
        .insert(step.result_key().to_string(), record.output);
    if let (Some(key), Some(details)) = (step.details_key(), record.details)
        && let Ok(value) = serde_json::to_value(details)
    {
        item.fields.insert(key.to_string(), value);
    }
}
