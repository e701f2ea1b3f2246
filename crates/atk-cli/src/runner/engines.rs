//! The run's engines: built from the settings around one shared concurrency limit, with
//! cost counters restored from the store.

use std::sync::{Arc, Mutex};

use atk_engine::{
    BatchConfig, BatchJournal, CostCounter, CostTotals, DebugObserver, Dialect, EngineConfig, Mode,
    Observer, Pricing,
};
use atk_state::Store;
use atk_step::Engines;
use tokio_util::sync::CancellationToken;

use crate::error::RunError;
use crate::layout::COST_META_KEY;
use crate::settings::{EngineSettings, Settings};

pub(super) type Counters = Vec<Arc<CostCounter>>;

pub(super) fn build_engines(
    settings: &Settings,
    store: &Arc<dyn Store>,
    cancel: &CancellationToken,
    budget: Option<&Arc<atk_engine::Budget>>,
    batches: Option<&super::journal::RunBatches>,
) -> Result<(Engines, Counters, Arc<atk_engine::ConcurrencyLimit>), RunError> {
    let saved = store.meta(COST_META_KEY)?.unwrap_or_default();
    // One bound on requests in flight for the run; each engine keeps its own window inside it.
    let shared_limit = atk_engine::ConcurrencyLimit::new(settings.in_flight);
    let debug = settings
        .debug_outputs
        .then(|| DebugObserver::new(settings.output_dir.join("debug_outputs")));
    let mut built: Vec<Arc<dyn atk_engine::Engine>> = Vec::new();
    let mut counters = Vec::new();
    let totals = Arc::new(CostSource {
        counters: Mutex::new(Vec::new()),
    });
    let saver = Arc::new(CostSaver {
        store: store.clone(),
        source: totals.clone(),
        totals,
    });
    for e in &settings.engines {
        let counter = CostCounter::new(e.label.clone(), pricing(settings, e));
        if let Some(prev) = saved
            .get(&e.label)
            .and_then(|v| serde_json::from_value::<CostTotals>(v.clone()).ok())
        {
            counter.restore(&prev);
        }
        saver.lock().push(counter.clone());
        // The saver after the counter: it stages the totals that include this reply.
        let mut observers: Vec<Arc<dyn Observer>> = vec![counter.clone(), saver.clone()];
        if let Some(d) = &debug {
            observers.push(d.clone());
        }
        if !e.used {
            built.push(Arc::new(crate::unused::UnusedEngine::new(
                &e.label, &e.model,
            )));
            counters.push(counter);
            continue;
        }
        let limit = atk_engine::LimitConfig::new(shared_limit.clone())
            .with_requests_per_minute(settings.requests_per_minute)
            .with_tokens_per_minute(settings.tokens_per_minute)
            .with_rate_burst(settings.burst);
        let mut cfg = engine_config(settings, e);
        if e.mode == Mode::Batch {
            let journal: Arc<dyn BatchJournal> = match batches.and_then(|b| b.journal(&e.label)) {
                Some(j) => j,
                None => super::journal::StoreJournal::load(&e.label, e.dialect, store.clone())?,
            };
            cfg = cfg.with_batch(BatchConfig {
                journal: Some(journal),
                no_wait: batches.is_some_and(super::journal::RunBatches::no_wait),
                ..batch_config(settings)
            });
        }
        let mut builder = atk_engine::EngineBuilder::transport(&cfg);
        if let Some(budget) = budget {
            builder = builder.budget(budget.clone(), pricing(settings, e));
        }
        let engine = builder
            .observe(observers)
            .retry(settings.retry)
            .outage(settings.outage_limit)
            .limit(limit)
            .cancel(cancel.clone())
            .build()?;
        built.push(engine);
        counters.push(counter);
    }
    let large = built
        .pop()
        .ok_or_else(|| RunError::fatal("no large engine"))?;
    let small = built
        .pop()
        .ok_or_else(|| RunError::fatal("no small engine"))?;
    Ok((Engines { small, large }, counters, shared_limit))
}

/// Stages the cost totals in the store after every reply (`Store::stage_meta_from`, no wait):
/// the reply's step stores its result after this, and that durable write takes the totals, read
/// as the store commits (so including this reply), to disk with it. So a killed run's saved
/// cost includes every reply whose result was stored (the status loop's save once a second
/// alone would miss up to a second of them). The totals are serialized once per commit, not
/// once per reply.
struct CostSaver {
    store: Arc<dyn Store>,
    /// The totals, as the store reads them.
    source: Arc<dyn atk_state::MetaSource>,
    /// The same, to register the counters.
    totals: Arc<CostSource>,
}

impl CostSaver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.totals.lock()
    }
}

/// Every engine's counter (the totals are saved together, under one meta key).
struct CostSource {
    counters: Mutex<Counters>,
}

impl CostSource {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl atk_state::MetaSource for CostSource {
    fn current(&self) -> serde_json::Value {
        serde_json::Value::Object(super::status_loop::cost_totals(&self.lock()))
    }
}

impl Observer for CostSaver {
    fn on_reply(&self, _label: &str, _request: &atk_engine::Request, _reply: &atk_engine::Reply) {
        if let Err(e) = self.store.stage_meta_from(COST_META_KEY, &self.source) {
            tracing::debug!(error = %e, "could not stage the cost totals");
        }
    }
}

/// An engine's prices: the configured ones, at `batch_discount` in batch mode; Anthropic's
/// cache writes at 1.25 x the input price (its 5-minute cache).
pub(super) fn pricing(s: &Settings, e: &EngineSettings) -> Pricing {
    let d = if e.mode == Mode::Batch {
        s.batch_discount
    } else {
        1.0
    };
    Pricing {
        input_per_million: e.price_in * d,
        output_per_million: e.price_out * d,
        cached_input_per_million: e.price_cached.map(|p| p * d),
        cache_write_per_million: (e.dialect == Dialect::Anthropic).then_some(e.price_in * 1.25 * d),
    }
}

/// Batch options from the config (no journal).
pub(super) fn batch_config(s: &Settings) -> BatchConfig {
    use sha2::{Digest, Sha256};
    let dir = s.output_dir.to_string_lossy();
    BatchConfig {
        size: s.batch_size,
        max_wait: s.batch_max_wait,
        // Names this output dir in each batch's metadata.
        tag: hex::encode(&Sha256::digest(dir.as_bytes())[..8]),
        ..BatchConfig::default()
    }
}

pub(super) fn engine_config(s: &Settings, e: &EngineSettings) -> EngineConfig {
    EngineConfig::default()
        .with_label(e.label.clone())
        .with_mode(e.mode)
        .with_dialect(e.dialect)
        .with_prompt_cache(e.prompt_cache)
        .with_model(e.model.clone())
        .with_base_url(e.base_url.clone())
        .with_api_key(e.api_key.clone())
        .with_concurrency_limit(s.in_flight)
        .with_stream(s.stream)
        .with_require_finish_reason(e.require_finish_reason)
        .with_structured_output(e.structured_output)
        .with_endpoints(e.endpoints.clone())
        .with_timeouts(s.timeouts)
        .with_retry(s.retry)
        .with_outage_limit(s.outage_limit)
        .with_rate_burst(s.burst)
        .with_requests_per_minute(s.requests_per_minute)
        .with_tokens_per_minute(s.tokens_per_minute)
        .with_mock(s.mock.clone())
}
