//! `EngineBuilder`: a transport plus the layers around it, in the spirit of tower's
//! `ServiceBuilder`, but in one fixed order whatever order the methods are called in (the
//! order matters: a retry outside the limit waits out its backoff without holding a slot).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::budget::{Budget, BudgetGuard};
use crate::cancel::Cancel;
use crate::fuse::Fuse;
use crate::http::{BatchTransport, Http};
use crate::limit::{ConcurrencyLimit, Gate, Limit};
use crate::observer::{Observed, Observers};
use crate::outage::{Outage, OutageGuard};
use crate::pool::Pool;
use crate::rate::RateLimiter;
use crate::retry::Retry;
use crate::stack::{Layer, Stack};
use crate::{Engine, EngineConfig, Error, MockEngine, Mode, Observer, RetryConfig};

/// Builds one engine: a transport wrapped, outermost first, in
///
/// ```text
/// observe   observers see each call once (on_request, on_reply / on_error)
/// retry     transport retries with backoff; the wait holds no slot
/// outage    while the endpoint is down, calls wait and one probe goes out
/// limit     a slot in the endpoint's own window and in the shared bound, then RPM/TPM
/// budget    the attempt's worst case reserved under the run's cost cap, or it is not sent
/// transport HTTP, a pool of HTTP endpoints (a window each), the mock, or any Engine
/// ```
///
/// Each layer is optional; the transport's `label`, `model` and `is_mock` are the engine's.
///
/// ```
/// use atk_engine::{ConcurrencyLimit, EngineBuilder, EngineConfig, LimitConfig, MockConfig, MockEngine, RetryConfig};
///
/// let bound = ConcurrencyLimit::new(8); // shared by every engine of the run
/// let small = EngineBuilder::new(MockEngine::new("small", "m", MockConfig::default()))
///     .retry(RetryConfig::default())
///     .limit(LimitConfig::new(bound.clone()).with_requests_per_minute(600))
///     .build()
///     .unwrap();
/// let large = EngineBuilder::transport(&EngineConfig::default().with_label("large").with_mode(atk_engine::Mode::Mock))
///     .limit(LimitConfig::new(bound.clone()))
///     .build()
///     .unwrap();
/// assert_eq!((small.label(), large.label()), ("small", "large"));
/// assert_eq!(bound.windows().len(), 2, "a window each, inside one bound");
/// ```
pub struct EngineBuilder {
    transport: Transport,
    observers: Vec<Arc<dyn Observer>>,
    retry: Option<RetryConfig>,
    outage_limit: Option<Duration>,
    limit: Option<LimitConfig>,
    cancel: Option<CancellationToken>,
    budget: Option<(Arc<Budget>, crate::Pricing)>,
}

enum Transport {
    Ready(Arc<dyn Engine>),
    Config(Box<EngineConfig>),
}

/// Options of the limit layer: the shared bound and the engine's own rate limits.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    bound: Arc<ConcurrencyLimit>,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u32>,
    rate_burst: Duration,
}

impl LimitConfig {
    /// Slots from `bound` (share it between engines for one bound on the run); no RPM/TPM.
    pub fn new(bound: Arc<ConcurrencyLimit>) -> Self {
        Self {
            bound,
            requests_per_minute: None,
            tokens_per_minute: None,
            rate_burst: EngineConfig::default().rate_burst,
        }
    }
    /// Sets a requests-per-minute limit (see `EngineConfig::requests_per_minute`).
    pub fn with_requests_per_minute(mut self, rpm: impl Into<Option<u32>>) -> Self {
        self.requests_per_minute = rpm.into();
        self
    }
    /// Sets a tokens-per-minute limit (see `EngineConfig::tokens_per_minute`).
    pub fn with_tokens_per_minute(mut self, tpm: impl Into<Option<u32>>) -> Self {
        self.tokens_per_minute = tpm.into();
        self
    }
    /// Sets how much of the rate may go out at once (see `EngineConfig::rate_burst`).
    pub fn with_rate_burst(mut self, burst: Duration) -> Self {
        self.rate_burst = burst;
        self
    }
}

/// The longest a call of a `batch` engine may take, retries included.
const BATCH_MAX_ELAPSED: Duration = Duration::from_secs(7 * 86_400);

/// The key of an endpoint's window: engines that name the same base URL and model share one.
pub(crate) fn window_key(base_url: &str, model: &str) -> String {
    format!("{} {model}", base_url.trim().trim_end_matches('/'))
}

impl EngineBuilder {
    /// Layers around `transport`, any engine (a test double, a mock).
    pub fn new(transport: impl Engine + 'static) -> Self {
        Self::with(Transport::Ready(Arc::new(transport)))
    }

    /// Layers around the transport `cfg` names: HTTP (a pool when `endpoints` lists several)
    /// or the mock. Only the transport's options are read from `cfg`; see [`build_engine`]
    /// for a stack made entirely from a config.
    ///
    /// [`build_engine`]: crate::build_engine
    pub fn transport(cfg: &EngineConfig) -> Self {
        Self::with(Transport::Config(Box::new(cfg.clone())))
    }

    fn with(transport: Transport) -> Self {
        Self {
            transport,
            observers: Vec::new(),
            retry: None,
            outage_limit: None,
            limit: None,
            cancel: None,
            budget: None,
        }
    }

    /// Adds observers (cost counters, debug files); they also hear of retries, cut streams
    /// and endpoint failures.
    pub fn observe(mut self, observers: impl IntoIterator<Item = Arc<dyn Observer>>) -> Self {
        self.observers.extend(observers);
        self
    }

    /// Retries transient failures within these bounds.
    pub fn retry(mut self, cfg: RetryConfig) -> Self {
        self.retry = Some(cfg);
        self
    }

    /// Guards against outages: an endpoint that stops answering is probed, and the engine
    /// gives up (fatal `EndpointDown`) after `limit`.
    pub fn outage(mut self, limit: Duration) -> Self {
        self.outage_limit = Some(limit);
        self
    }

    /// Admits each attempt through a slot of the bound (and the endpoint's own window in it)
    /// and the rate limits.
    pub fn limit(mut self, limit: LimitConfig) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Stops calls not sent yet once `token` fires (`Error::Cancelled`); share it between
    /// engines.
    pub fn cancel(mut self, token: impl Into<Option<CancellationToken>>) -> Self {
        self.cancel = token.into();
        self
    }

    /// Reserves each attempt's worst case (at `pricing`) under `budget`, the run's cost cap
    /// shared by its engines; an attempt that would pass it is not sent.
    pub fn budget(mut self, budget: Arc<Budget>, pricing: crate::Pricing) -> Self {
        self.budget = Some((budget, pricing));
        self
    }

    /// Assembles the stack; fails on a config the transport or a layer cannot take.
    pub fn build(self) -> Result<Arc<dyn Engine>, Error> {
        let label = match &self.transport {
            Transport::Ready(t) => t.label().to_string(),
            Transport::Config(cfg) => cfg.label.clone(),
        };
        // A batch call lasts as long as its batch (up to the provider's 24 h window, then
        // maybe a later batch): the online bound on a call's total time would cut it short.
        let batch = matches!(&self.transport, Transport::Config(c) if c.mode == Mode::Batch);
        let retry = self.retry.map(|r| {
            if batch {
                r.with_max_elapsed(r.max_elapsed.max(BATCH_MAX_ELAPSED))
            } else {
                r
            }
        });
        if retry.is_some_and(|r| r.max_attempts == 0) {
            return Err(Error::Config(format!(
                "{label}: retry.max_attempts must be at least 1"
            )));
        }
        let observers: Observers = self.observers.into();
        let fuse = Fuse::new(&label);
        let cancel = Cancel::new(&label, self.cancel);
        let rate = self.limit.as_ref().and_then(|l| {
            RateLimiter::new(l.requests_per_minute, l.tokens_per_minute, l.rate_burst).map(Arc::new)
        });
        let gate = |key: &str, name: &str| {
            self.limit.as_ref().map(|l| {
                Gate::new(
                    l.bound.window_for(key, name),
                    l.bound.clone(),
                    rate.clone(),
                    fuse.clone(),
                    cancel.clone(),
                    observers.clone(),
                )
            })
        };
        let (transport, gate): (Arc<dyn Engine>, Option<Gate>) = match self.transport {
            Transport::Ready(t) => (t, gate(&format!("engine {label}"), &label)),
            Transport::Config(cfg) => match cfg.mode {
                Mode::Mock => (
                    Arc::new(MockEngine::from_config(&cfg)),
                    gate(&format!("mock {label}"), &label),
                ),
                Mode::Api if cfg.endpoints.len() > 1 => (
                    Arc::new(Pool::new(&cfg, &cancel, observers.clone(), gate)?),
                    None,
                ),
                Mode::Api => (
                    Arc::new(Http::new(&cfg, cancel.clone())?),
                    gate(&window_key(&cfg.base_url, &cfg.model), &label),
                ),
                Mode::Batch => (
                    Arc::new(BatchTransport::new(&cfg, cancel.clone())?),
                    gate(
                        &format!("batch {}", window_key(&cfg.base_url, &cfg.model)),
                        &label,
                    ),
                ),
            },
        };
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        if !observers.is_empty() {
            layers.push(Box::new(Observed::new(observers.clone())));
        }
        if let Some(cfg) = retry {
            layers.push(Box::new(Retry::new(
                cfg,
                observers.clone(),
                fuse.clone(),
                cancel.clone(),
            )));
        }
        if let Some(limit) = self.outage_limit {
            let outage = Outage::new(&label, limit, observers.clone());
            layers.push(Box::new(OutageGuard::new(outage, fuse, cancel)));
        }
        if let Some(gate) = gate {
            layers.push(Box::new(Limit::new(gate)));
        }
        if let Some((budget, pricing)) = self.budget {
            layers.push(Box::new(BudgetGuard::new(budget, pricing)));
        }
        Ok(Arc::new(Stack::new(transport, layers)))
    }
}
