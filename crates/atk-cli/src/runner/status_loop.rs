//! The running run's status: `status.json` and the saved cost totals, about once a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atk_engine::CostTotals;
use atk_state::Store;
use atk_step::Engines;

use super::engines::Counters;
use crate::damage::StoredCounts;
use crate::progress::Progress;
use crate::status::{EngineStatus, ReasonSample, StatusSnapshot};

/// What a status snapshot is made of besides progress counts.
#[derive(Clone)]
pub(super) struct StatusInputs {
    pub(super) counters: Counters,
    pub(super) engines: Engines,
    /// The counters' totals when this run started (this run's figures are the difference).
    pub(super) baselines: Vec<CostTotals>,
    /// The engines' shared concurrency limit: requests in flight as the engine counts them.
    pub(super) limit: Arc<atk_engine::ConcurrencyLimit>,
    /// Results stored, counted at open and since (kept in `status.json` outside sled).
    pub(super) stored: Arc<StoredCounts>,
    /// The batch journals of engines in `batch` mode (the batches `status.json` lists).
    pub(super) batches: Option<Arc<super::journal::RunBatches>>,
    /// The run's `max_cost` budget, if any (shown while the run goes, not only at its end).
    pub(super) budget: Option<Arc<atk_engine::Budget>>,
}

pub(super) fn status_of(name: &str, progress: &Progress, inputs: &StatusInputs) -> StatusSnapshot {
    let mut s = progress.snapshot();
    s.stored_results = inputs.stored.live();
    s.damage = inputs.stored.damage.clone();
    s.pipeline = name.to_string();
    s.state = crate::status::RunState::Running;
    s.pid = std::process::id();
    s.updated_at_ms = atk_state::now_ms();
    s.requests_in_flight = inputs.limit.in_flight() as u64;
    s.request_limit = inputs.limit.window() as u64;
    s.engines = inputs
        .counters
        .iter()
        .zip([&inputs.engines.small, &inputs.engines.large])
        .zip(&inputs.baselines)
        .map(|((c, e), start)| {
            let t = c.snapshot();
            EngineStatus {
                label: c.label().to_string(),
                model: e.model().to_string(),
                requests: t.requests,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_usd: t.cost_usd,
                run_requests: t.requests.saturating_sub(start.requests),
                run_prompt_tokens: t.prompt_tokens.saturating_sub(start.prompt_tokens),
                run_completion_tokens: t.completion_tokens.saturating_sub(start.completion_tokens),
                run_cost_usd: (t.cost_usd - start.cost_usd).max(0.0),
                failed_requests: t.failed_requests,
                retries: t.retries.clone(),
                endpoints: t.endpoints.clone(),
                outages: t.outages,
                outage: c.outage(),
            }
        })
        .collect();
    s.cost_usd = s.engines.iter().map(|e| e.cost_usd).sum();
    s.run_cost_usd = s.engines.iter().map(|e| e.run_cost_usd).sum();
    if let Some(b) = &inputs.batches {
        s.batches = b.statuses();
    }
    s.reasons = live_reasons(&s);
    s.budget = super::budget::status(inputs.budget.as_deref());
    s
}

/// This run's failure and drop reasons so far, from the per-step counts (the run's end
/// replaces them with the executor's report, which adds a sample reply to each).
fn live_reasons(s: &StatusSnapshot) -> Vec<ReasonSample> {
    let mut out: Vec<ReasonSample> = s
        .steps
        .iter()
        .flat_map(|st| {
            st.reasons.iter().map(|(key, &count)| {
                let (kind, reason) = crate::progress::split_reason(key);
                ReasonSample {
                    step: st.step.clone(),
                    kind: kind.to_string(),
                    reason: reason.to_string(),
                    count,
                    sample: None,
                }
            })
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.count));
    out
}

/// The per-engine cost totals as stored under [`COST_META_KEY`].
pub(super) fn cost_totals(counters: &Counters) -> serde_json::Map<String, serde_json::Value> {
    counters
        .iter()
        .map(|c| {
            (
                c.label().to_string(),
                serde_json::to_value(c.snapshot()).unwrap_or_default(),
            )
        })
        .collect()
}

/// About once a second: writes `status.json`, makes the cost totals durable when they changed
/// (every reply stages them in the store, `engines::CostSaver`; a result's durable write takes
/// them to disk too, so this flush only matters when no result followed), and ticks the
/// plain-line renderer.
pub(super) async fn status_loop(
    dir: PathBuf,
    name: &'static str,
    progress: Arc<Progress>,
    inputs: StatusInputs,
    store: Arc<dyn Store>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut saved = serde_json::Map::new();
    let mut batch_wait = None;
    loop {
        tick.tick().await;
        if let Some(b) = &inputs.batches {
            super::batch_run::show_wait(&progress, b, &mut batch_wait);
        }
        progress.tick();
        let totals = cost_totals(&inputs.counters);
        if totals != saved {
            // One writer of the totals (the saver, in the order they grew): this only flushes.
            if let Err(e) = store.flush().await {
                tracing::debug!(error = %e, "could not save cost totals");
            }
            saved = totals;
        }
        let snapshot = status_of(name, &progress, &inputs);
        if let Ok(v) = serde_json::to_value(&snapshot)
            && let Err(e) = atk_state::write_status_snapshot(&dir, &v)
        {
            tracing::debug!(error = %e, "could not write status.json");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StepStatus;

    #[test]
    fn reasons_are_in_every_snapshot_not_only_the_last() {
        let s = StatusSnapshot {
            steps: vec![StepStatus {
                step: "judge".into(),
                reasons: [
                    ("dropped: a table of contents".to_string(), 2),
                    ("failed: validation: no verdict".to_string(), 5),
                ]
                .into(),
                ..StepStatus::default()
            }],
            ..StatusSnapshot::default()
        };
        let reasons = live_reasons(&s);
        let seen: Vec<(&str, &str, &str, u64)> = reasons
            .iter()
            .map(|r| (r.step.as_str(), r.kind.as_str(), r.reason.as_str(), r.count))
            .collect();
        assert_eq!(
            seen,
            [
                ("judge", "validation", "no verdict", 5),
                ("judge", "dropped", "a table of contents", 2)
            ]
        );
    }
}
