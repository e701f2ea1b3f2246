#![doc = include_str!("../README.md")]

mod error;
mod types;

use async_trait::async_trait;

pub use error::{Error, TransientKind};
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
