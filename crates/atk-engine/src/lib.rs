#![doc = include_str!("../README.md")]

mod config;
mod cost;
mod debug;
mod error;
mod fuse;
mod http;
mod limit;
mod mock;
mod observer;
mod rate;
mod retry;
mod secret;
mod timeout;
mod types;

use std::sync::{Arc, Once};

use async_trait::async_trait;

pub use config::{EngineConfig, MockConfig, Mode, RetryConfig, Timeouts};
pub use cost::{CostCounter, CostTotals, Pricing};
pub use debug::DebugObserver;
pub use error::{Error, TransientKind};
pub use limit::ConcurrencyLimit;
pub use mock::{DEFAULT_MOCK_TEMPLATE, MockEngine, prompt_hash, render_mock_reply};
pub use observer::Observer;
pub use secret::Secret;
pub use types::{Message, Prompt, Reply, Request, Timing, Usage};

/// An LLM endpoint. Object safe: pipelines hold `Arc<dyn Engine>`.
///
/// An implementation returns `Ok` only for a complete reply; transport retries, timeouts and
/// the concurrency bound live inside it, validation retries live in `atk-step`.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Sends one request and waits for the complete reply.
    async fn call(&self, request: Request) -> Result<Reply, Error>;
    /// The engine's label (`small`, `large`), used in logs, errors and counters.
    fn label(&self) -> &str;
    /// The configured model name.
    fn model(&self) -> &str;
    /// True for the offline mock engine (every run that used it says so).
    fn is_mock(&self) -> bool {
        false
    }
}

/// Builds an engine: the HTTP or mock engine wrapped, outermost first, in
/// `Observed` → `Retry` → `Limit` → (`Http` with its timeouts | `MockEngine`).
pub fn build_engine(cfg: EngineConfig, observers: Vec<Arc<dyn Observer>>) -> Result<Arc<dyn Engine>, Error> {
    if cfg.concurrency_limit == 0 && cfg.shared_limit.is_none() {
        return Err(Error::Config(format!("{}: concurrency_limit must be at least 1", cfg.label)));
    }
    if cfg.retry.max_attempts == 0 {
        return Err(Error::Config(format!("{}: retry.max_attempts must be at least 1", cfg.label)));
    }
    let observers: observer::Observers = observers.into();
    let fuse = fuse::Fuse::new(&cfg.label);
    let limit = cfg.shared_limit.clone().unwrap_or_else(|| ConcurrencyLimit::new(cfg.concurrency_limit));
    let rate = rate::RateLimiter::new(cfg.requests_per_minute, cfg.tokens_per_minute);
    fn stack<E: Engine + 'static>(
        inner: E,
        cfg: &EngineConfig,
        observers: observer::Observers,
        fuse: fuse::Fuse,
        limit: Arc<ConcurrencyLimit>,
        rate: Option<rate::RateLimiter>,
    ) -> Arc<dyn Engine> {
        let limited = limit::Limit::new(inner, limit, rate, fuse.clone());
        let retried = retry::Retry::new(limited, cfg.retry, observers.clone(), fuse);
        Arc::new(observer::Observed::new(retried, observers))
    }
    Ok(match cfg.mode {
        Mode::Api => stack(http::Http::new(&cfg)?, &cfg, observers, fuse, limit, rate),
        Mode::Mock => stack(MockEngine::from_config(&cfg), &cfg, observers, fuse, limit, rate),
    })
}

/// Installs rustls' `ring` crypto provider as the process default (idempotent; a provider
/// installed earlier by someone else is kept). `build_engine` calls it.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
