#![doc = include_str!("../README.md")]

mod batch;
mod budget;
mod builder;
mod cancel;
mod config;
mod cost;
mod debug;
mod error;
mod fuse;
mod http;
mod limit;
mod mock;
mod observer;
mod outage;
mod pace;
mod pool;
mod rate;
mod retry;
mod secret;
mod stack;
mod timeout;
mod types;
mod window;

use std::sync::{Arc, Once};

use async_trait::async_trait;

pub use batch::{BatchConfig, BatchControl, BatchJournal, BatchProgress, JournalEntry};
pub use budget::{Budget, UNBOUNDED_COMPLETION_TOKENS, price_of, worst_case_tokens};
pub use builder::{EngineBuilder, LimitConfig};
pub use config::{Dialect, Endpoint, EngineConfig, MockConfig, Mode, RetryConfig, Timeouts};
pub use cost::{CostCounter, CostTotals, OutageNow, Pricing, tagged};
pub use debug::DebugObserver;
pub use error::{Error, TransientKind};
pub use limit::ConcurrencyLimit;
pub use mock::{DEFAULT_MOCK_TEMPLATE, MockEngine, prompt_hash, render_mock_reply};
pub use observer::Observer;
pub use secret::Secret;
pub use types::{Message, OutputSchema, Prompt, Reply, Request, Timing, Usage};

/// An LLM endpoint. Object safe: pipelines hold `Arc<dyn Engine>`.
///
/// An implementation returns `Ok` only for a complete reply; transport retries, timeouts and
/// the concurrency bound live inside it, validation retries live in `atk-step`.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Sends one request and waits for the complete reply.
    async fn call(&self, request: Request) -> Result<Reply, Error>;
    /// [`call`](Self::call) with a borrowed request. The default copies it; the engines built
    /// here only read it, so a call through their layers makes no copy of the prompt.
    async fn call_ref(&self, request: &Request) -> Result<Reply, Error> {
        self.call(request.clone()).await
    }
    /// The engine's label (`small`, `large`), used in logs, errors and counters.
    fn label(&self) -> &str;
    /// The configured model name.
    fn model(&self) -> &str;
    /// True for the offline mock engine (every run that used it says so).
    fn is_mock(&self) -> bool {
        false
    }
}

/// Builds an engine entirely from `cfg`: its transport (HTTP, a pool, the mock) with every
/// layer [`EngineBuilder`] has, the bound being `cfg.shared_limit` or a new one of
/// `cfg.concurrency_limit`.
pub fn build_engine(
    cfg: EngineConfig,
    observers: Vec<Arc<dyn Observer>>,
) -> Result<Arc<dyn Engine>, Error> {
    if cfg.concurrency_limit == 0 && cfg.shared_limit.is_none() {
        return Err(Error::Config(format!(
            "{}: concurrency_limit must be at least 1",
            cfg.label
        )));
    }
    let bound = cfg
        .shared_limit
        .clone()
        .unwrap_or_else(|| ConcurrencyLimit::new(cfg.concurrency_limit));
    let limit = LimitConfig::new(bound)
        .with_requests_per_minute(cfg.requests_per_minute)
        .with_tokens_per_minute(cfg.tokens_per_minute)
        .with_rate_burst(cfg.rate_burst);
    EngineBuilder::transport(&cfg)
        .observe(observers)
        .retry(cfg.retry)
        .outage(cfg.outage_limit)
        .limit(limit)
        .cancel(cfg.cancel.clone())
        .build()
}

/// Installs rustls' `ring` crypto provider as the process default (idempotent; a provider
/// installed earlier by someone else is kept). `build_engine` calls it.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_mock_honours_the_concurrency_limit() {
        let cfg = EngineConfig::default()
            .with_mode(Mode::Mock)
            .with_concurrency_limit(2usize)
            .with_mock(MockConfig::default().with_latency(Duration::from_secs(1)));
        let cost = CostCounter::new("default", Pricing::default());
        let engine = build_engine(cfg, vec![cost.clone()]).unwrap();
        assert!(engine.is_mock());
        let t0 = tokio::time::Instant::now();
        let calls = (0..6).map(|i| engine.call(Request::completion(format!("p{i}"))));
        let replies = futures_util::future::join_all(calls).await;
        assert!(replies.iter().all(Result::is_ok));
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(3),
            "6 calls, 2 at a time, 1 s each"
        );
        assert_eq!(cost.snapshot().requests, 6);
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |cfg: EngineConfig| {
            build_engine(cfg, vec![])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(EngineConfig::default()).contains("base_url is empty"));
        assert!(err(EngineConfig::default().with_base_url("not a url")).contains("bad base_url"));
        assert!(
            err(EngineConfig::default()
                .with_base_url("http://127.0.0.1:1/v1")
                .with_api_key("bad\nkey"))
            .contains("header")
        );
        assert!(
            err(EngineConfig::default()
                .with_mode(Mode::Mock)
                .with_concurrency_limit(0usize))
            .contains("concurrency_limit")
        );
    }
}
