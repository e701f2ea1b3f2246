//! The executor: runs a chain of steps over the store's items, depth-first, under a bound on
//! units in flight, storing each result the moment it is accepted.
//!
//! How it works: the store's root item ids are streamed in order (never collected; the sled
//! store reads them without decoding records), an item that finished the chain is counted from
//! one key lookup (in chains without a fan-in), and only the others are read and decoded. Each
//! item becomes a task that walks the chain (`drive.rs`): a step whose result is stored is
//! skipped (its output merged into the item's fields), the first missing one is run, its result
//! stored, and the item goes straight on to the next step (no barrier between steps). A
//! `JoinSet` holds at most `max_in_flight` such tasks; children made by a fan-out are queued
//! ahead of new root items, and a parent is gathered by its fan-in as soon as its last child is
//! through, so memory grows with the bound, not with the number of items. The engines enforce
//! the real request concurrency; the bound here only keeps them fed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use atk_state::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::chain::layout;
use crate::drive::{Group, Route, Shared, Walked, Work};
use crate::error::StepError;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::report::{RunReport, StepReport, Tally};
use crate::rework::Rework;
use crate::step::{Shape, Step, StepContext};

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    cancel: CancellationToken,
    max_in_flight: usize,
    count_first: bool,
    rework: Option<Arc<Rework>>,
    stop_before_barrier: bool,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            cancel: CancellationToken::new(),
            max_in_flight: 64,
            count_first: true,
            rework: None,
            stop_before_barrier: false,
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

    /// Asks for stored results again (`--redo`, `--redo-changed`, `--reprocess`); read what
    /// was done from the same `Rework` after the run.
    pub fn with_rework(mut self, rework: Option<Arc<Rework>>) -> Self {
        self.rework = rework;
        self
    }

    /// Stops the run before its first barrier step, once every item passed the steps before
    /// it ([`RunReport::stopped_before`] names the barrier): a `--shard` run (the barrier needs
    /// every shard's items) or a preview.
    pub fn with_stop_before_barrier(mut self, on: bool) -> Self {
        self.stop_before_barrier = on;
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
    /// The chain's structure and every prompt are checked first (`StepError::Config` /
    /// `StepError::Prompt`, before any request). A fatal engine or store error stops new work,
    /// lets in-flight items finish, and is returned.
    ///
    /// A chain with barrier steps runs in segments: every item goes through the steps before a
    /// barrier, the barrier's pass runs over the survivors, and the next segment goes on from
    /// there (items walk the earlier steps again, reusing their stored results).
    pub async fn run(&self, chain: &[Arc<dyn Step>]) -> Result<RunReport, StepError> {
        layout(chain)?;
        for step in chain {
            self.ctx
                .prompts
                .check_all(&step.prompt_names(), self.ctx.completion_mode)?;
        }
        let n = chain.len();
        let mut reports: Vec<Option<StepReport>> = vec![None; n];
        let take = |reports: &mut Vec<Option<StepReport>>, seg: &RunReport, from: usize| {
            for (k, r) in seg.steps.iter().enumerate().skip(from) {
                if reports[k].is_none() {
                    reports[k] = Some(r.clone());
                }
            }
        };
        let finish = |reports: Vec<Option<StepReport>>| -> Vec<StepReport> {
            reports
                .into_iter()
                .zip(chain)
                .map(|(r, s)| {
                    r.unwrap_or_else(|| StepReport {
                        step: s.name().to_string(),
                        ..Default::default()
                    })
                })
                .collect()
        };
        let mut barrier_tallies: Vec<(usize, StepReport)> = Vec::new();
        let mut run_from = 0;
        for b in (0..n).filter(|&k| chain[k].shape() == Shape::Barrier) {
            if b > run_from || (b > 0 && run_from == 0) {
                let seg = self.run_segment(&chain[..b], run_from).await?;
                take(&mut reports, &seg, run_from);
                if seg.cancelled {
                    return Ok(RunReport {
                        steps: finish(reports),
                        finished: 0,
                        cancelled: true,
                        stopped_before: None,
                    });
                }
            }
            if self.cfg.cancel.is_cancelled() {
                return Ok(RunReport {
                    steps: finish(reports),
                    finished: 0,
                    cancelled: true,
                    stopped_before: None,
                });
            }
            if self.cfg.stop_before_barrier {
                return Ok(RunReport {
                    steps: finish(reports),
                    finished: 0,
                    cancelled: false,
                    stopped_before: Some(chain[b].name().to_string()),
                });
            }
            let tally = crate::barrier::run_pass(
                &self.store,
                chain,
                b,
                &self.ctx,
                self.cfg.rework.as_deref(),
            )
            .await?;
            barrier_tallies.push((b, tally.finish()));
            run_from = b + 1;
        }
        let mut last = self.run_segment(chain, run_from).await?;
        // A barrier's verdicts were written by its pass; the walk after it met them stored.
        for (b, pass) in barrier_tallies {
            let walked = &mut last.steps[b];
            walked.skipped = walked.skipped.saturating_sub(pass.done);
            walked.done = pass.done;
            walked.dropped = pass.dropped;
        }
        take(&mut reports, &last, 0);
        Ok(RunReport {
            steps: finish(reports),
            ..last
        })
    }

    /// Runs `chain` over every item; steps before `run_from` only take up stored results (an
    /// earlier segment ran them).
    async fn run_segment(
        &self,
        chain: &[Arc<dyn Step>],
        run_from: usize,
    ) -> Result<RunReport, StepError> {
        let layout = layout(chain)?;
        // Progress totals are counted (on a blocking thread) only once the loop below meets the
        // first item with work left, and announced before that item starts. When the loop gets
        // through every root without meeting one (a rerun over finished work), its own tallies
        // are the counts and no counting pass runs at all: one pass over the store, not two
        // competing for the same cores and cache.
        let steps: Vec<(String, bool)> = chain
            .iter()
            .zip(&layout.child_level)
            .map(|(s, &c)| (s.name().to_string(), c))
            .collect();
        // Per step, whether the store holds none of its results (every step, on a first run):
        // the walks then look none up, and the count needs no lookup per root.
        let none_stored = chain
            .iter()
            .map(|s| self.store.has_any_result(s.name()).map(|any| !any))
            .collect::<Result<Vec<_>, _>>()?;
        let start_counting = || {
            self.cfg.count_first.then(|| {
                let (store, steps, none) = (self.store.clone(), steps.clone(), none_stored.clone());
                tokio::task::spawn_blocking(move || count(store.as_ref(), &steps, &none))
            })
        };
        let mut announced = false;
        let stop = self.cfg.cancel.child_token();
        let mut ctx = self.ctx.clone();
        ctx.cancel = stop.clone();
        let top = Route {
            end: chain.len(),
            group: None,
            floor: 0,
        };
        let fingerprints = chain.iter().map(|s| s.fingerprint(&ctx)).collect();
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            ctx,
            sink: self.sink.clone(),
            chain: chain.to_vec(),
            layout,
            stop,
            tallies: chain
                .iter()
                .map(|s| Mutex::new(Tally::new(s.name())))
                .collect(),
            finished: Mutex::new(0),
            fingerprints,
            rework: self.cfg.rework.clone(),
            run_from,
            has_barrier: chain.iter().any(|s| s.shape() == Shape::Barrier),
            none_stored: none_stored.clone(),
        });
        // Every root is read when every item is walked (a first run): from the store's own
        // scan. Otherwise by id, and only those with work left.
        let mut roots: Box<
            dyn Iterator<Item = Result<Option<atk_state::ItemRecord>, StepError>> + Send + '_,
        > = if shared.walks_every_item() {
            Box::new(
                self.store
                    .root_items()
                    .map(|r| r.map(Some).map_err(StepError::from)),
            )
        } else {
            let shared = shared.clone();
            Box::new(self.store.root_ids().map(move |id| {
                let id = id?;
                if shared.fully_done(&id, 0)? {
                    Ok(None)
                } else {
                    Ok(shared.store.item(&id)?)
                }
            }))
        };
        let mut roots_done = false;
        let mut pending: VecDeque<Work> = VecDeque::new();
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
                let work = match pending.pop_front() {
                    // A child past the end of the chain (a fan-out was the last step) is through.
                    Some(Work::Item(_, start, route))
                        if start >= route.end && route.group.is_none() =>
                    {
                        shared.add_finished(1);
                        continue;
                    }
                    Some(Work::Item(item, start, route)) if route.group.is_none() => {
                        match shared.fully_done(&item.id, start) {
                            Ok(true) => continue,
                            Ok(false) => Work::Item(item, start, route),
                            Err(e) => {
                                fail(e, &mut fatal);
                                break;
                            }
                        }
                    }
                    Some(work) => work,
                    None if roots_done => break,
                    None => match roots.next() {
                        None => {
                            roots_done = true;
                            break;
                        }
                        Some(Err(e)) => {
                            fail(e, &mut fatal);
                            break;
                        }
                        Some(Ok(Some(item))) => Work::Item(item, 0, top.clone()),
                        // Done already, or removed since the scan began.
                        Some(Ok(None)) => continue,
                    },
                };
                if !announced {
                    announced = true;
                    match counted(start_counting()).await {
                        Ok(counts) => self.announce(chain, &shared.layout.child_level, counts),
                        Err(e) => {
                            fail(e, &mut fatal);
                            break;
                        }
                    }
                }
                tasks.spawn(shared.clone().perform(work));
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok(Ok((walked, route)))) => match walked {
                    Walked::Split {
                        parent,
                        at,
                        children,
                        floor,
                        unchanged,
                    } => match shared.layout.closes[at] {
                        Some(fan_in) => {
                            let group = Arc::new(Group {
                                parent,
                                fan_out: at,
                                fan_in,
                                child_ids: children.iter().map(|c| c.id.clone()).collect(),
                                remaining: AtomicUsize::new(children.len()),
                                route,
                            });
                            if children.is_empty() {
                                pending.push_front(Work::Gather(group.clone()));
                            }
                            for child in children.into_iter().rev() {
                                let floor = if unchanged.contains(&child.id) {
                                    0
                                } else {
                                    floor
                                };
                                pending.push_front(Work::Item(
                                    child,
                                    at + 1,
                                    Route {
                                        end: fan_in,
                                        group: Some(group.clone()),
                                        floor,
                                    },
                                ));
                            }
                        }
                        None => {
                            for child in children.into_iter().rev() {
                                let floor = if unchanged.contains(&child.id) {
                                    0
                                } else {
                                    floor
                                };
                                pending.push_front(Work::Item(
                                    child,
                                    at + 1,
                                    Route {
                                        end: route.end,
                                        group: None,
                                        floor,
                                    },
                                ));
                            }
                        }
                    },
                    Walked::Through => {
                        if let Some(group) = route.group
                            && group.remaining.fetch_sub(1, Ordering::AcqRel) == 1
                        {
                            pending.push_front(Work::Gather(group));
                        }
                    }
                    Walked::Stopped => {}
                },
                Some(Ok(Err(e))) => fail(e, &mut fatal),
                Some(Err(e)) => fail(
                    StepError::Internal(format!("a step task failed: {e}")),
                    &mut fatal,
                ),
            }
        }
        drop(roots);
        if !announced && roots_done && fatal.is_none() && self.cfg.count_first {
            // Every root was skipped as finished: each one added 1 to every step's `skipped`.
            let already: Vec<u64> = shared
                .tallies
                .iter()
                .zip(&shared.layout.child_level)
                .map(|(t, &child)| {
                    if child {
                        0
                    } else {
                        t.lock().unwrap_or_else(|e| e.into_inner()).report.skipped
                    }
                })
                .collect();
            let total = shared.tallies[0]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .report
                .skipped;
            self.announce(chain, &shared.layout.child_level, Some((total, already)));
        } else if !announced {
            match counted(start_counting()).await {
                Ok(counts) => self.announce(chain, &shared.layout.child_level, counts),
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
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner())).finish())
            .collect();
        let finished = *shared.finished.lock().unwrap_or_else(|e| e.into_inner());
        Ok(RunReport {
            steps,
            finished,
            cancelled: self.cfg.cancel.is_cancelled(),
            stopped_before: None,
        })
    }

    /// Sends `StepStarted` for each step, with the counts when they were taken (a step that
    /// runs on children starts at 0: its total grows as they arrive).
    fn announce(&self, chain: &[Arc<dyn Step>], child_level: &[bool], counts: Option<Counts>) {
        let (total, mut already) = counts.unwrap_or_else(|| (0, vec![0; chain.len()]));
        if self.cfg.rework.is_some() {
            // Some stored results will be remade: each reused one is reported as it is met.
            already = vec![0; chain.len()];
        }
        for (k, step) in chain.iter().enumerate() {
            let total = if child_level[k] { 0 } else { total };
            self.sink.event(ProgressEvent::StepStarted {
                step: step.name().to_string(),
                total,
                already_done: already[k],
            });
        }
    }
}

/// Root items, and per step how many of them have a stored result (0 for steps that run on
/// children: their totals grow as children arrive, see [`ProgressEvent::ItemArrived`]).
type Counts = (u64, Vec<u64>);

/// Counts root items and stored results (one lookup for an item that finished the chain; no
/// record decoded). `steps` are `(name, runs on children)`.
fn count(
    store: &dyn Store,
    steps: &[(String, bool)],
    none_stored: &[bool],
) -> Result<Counts, StepError> {
    let mut total = 0;
    let mut already = vec![0u64; steps.len()];
    let last = steps.len() - 1;
    // When no root-level step has a stored result (every step, on a first run), no lookup per
    // root is needed: the run's own check at its start says so.
    if none_stored
        .iter()
        .zip(steps)
        .all(|(none, (_, child))| *none || *child)
    {
        for id in store.root_ids() {
            id?;
            total += 1;
        }
        return Ok((total, already));
    }
    for id in store.root_ids() {
        let id = id?;
        total += 1;
        if !steps[last].1 && store.has_result(&steps[last].0, &id)? {
            already
                .iter_mut()
                .zip(steps)
                .filter(|(_, s)| !s.1)
                .for_each(|(a, _)| *a += 1);
            continue;
        }
        for (k, (step, child)) in steps[..last].iter().enumerate() {
            if !child && store.has_result(step, &id)? {
                already[k] += 1;
            }
        }
    }
    Ok((total, already))
}

async fn counted(
    counting: Option<tokio::task::JoinHandle<Result<Counts, StepError>>>,
) -> Result<Option<Counts>, StepError> {
    match counting {
        None => Ok(None),
        Some(handle) => match handle.await {
            Ok(counts) => counts.map(Some),
            Err(e) => Err(StepError::Internal(format!("counting items failed: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests;
