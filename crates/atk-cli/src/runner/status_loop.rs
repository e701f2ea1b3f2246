//! The running run's status: `status.json` and the saved cost totals, about once a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atk_engine::CostTotals;
use atk_state::Store;
use atk_step::Engines;

use super::engines::Counters;
use crate::damage::StoredCounts;
use crate::layout::COST_META_KEY;
use crate::progress::Progress;
use crate::status::{EngineStatus, StatusSnapshot};

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
            }
        })
        .collect();
    s.cost_usd = s.engines.iter().map(|e| e.cost_usd).sum();
    s.run_cost_usd = s.engines.iter().map(|e| e.run_cost_usd).sum();
    if let Some(b) = &inputs.batches {
        s.batches = b.statuses();
    }
    s
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

/// About once a second: writes `status.json`, saves the cost totals in the store (so a killed
/// run loses at most a second of them), and ticks the plain-line renderer.
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
            if let Err(e) = store
                .put_meta(COST_META_KEY, serde_json::Value::Object(totals.clone()))
                .await
            {
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
