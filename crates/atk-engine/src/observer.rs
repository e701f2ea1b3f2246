//! Observers see every call's request, its final reply or error, and each transport retry.
//! `Observed` is the outermost layer: one `on_request` and one `on_reply`/`on_error` per call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::stack::{Layer, Next};
use crate::{Error, Reply, Request};

/// Watches an engine's traffic (cost counting, debug files). All methods default to doing nothing.
///
/// Callbacks run on the calling task: keep them short.
pub trait Observer: Send + Sync {
    /// A call is about to be sent (once per call, not per attempt).
    fn on_request(&self, label: &str, request: &Request) {
        let _ = (label, request);
    }
    /// A call ended with a complete reply.
    fn on_reply(&self, label: &str, request: &Request, reply: &Reply) {
        let _ = (label, request, reply);
    }
    /// Attempt `attempt` failed with a transient `error`; the next one starts after `delay`.
    fn on_retry(&self, label: &str, error: &Error, attempt: u32, delay: Duration) {
        let _ = (label, error, attempt, delay);
    }
    /// The endpoint cut a stream while other requests were in flight (it serves fewer at
    /// once); the in-flight window is now `window`.
    fn on_cut_while_busy(&self, label: &str, window: usize) {
        let _ = (label, window);
    }
    /// An attempt on one of several endpoints (`EngineConfig::endpoints`) was answered (`ok`)
    /// or failed with a lost connection or a 5xx.
    fn on_endpoint(&self, label: &str, url: &str, ok: bool) {
        let _ = (label, url, ok);
    }
    /// A call ended with an error (after any retries).
    fn on_error(&self, label: &str, request: &Request, error: &Error) {
        let _ = (label, request, error);
    }
    /// The endpoint stopped answering (`down`: calls wait while one probe at a time goes out,
    /// `error` the failure that made the outage) or answers again (`!down`).
    fn on_outage(&self, label: &str, down: bool, error: &str) {
        let _ = (label, down, error);
    }
}

/// The shared list of observers of one engine.
pub(crate) type Observers = Arc<[Arc<dyn Observer>]>;

/// Layer: reports each call to the observers.
pub(crate) struct Observed {
    observers: Observers,
}

impl Observed {
    pub(crate) fn new(observers: Observers) -> Self {
        Self { observers }
    }
}

#[async_trait]
impl Layer for Observed {
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error> {
        if self.observers.is_empty() {
            return next.call(request).await;
        }
        let label = next.label();
        for o in self.observers.iter() {
            o.on_request(label, request);
        }
        let result = next.call(request).await;
        match &result {
            Ok(reply) => self
                .observers
                .iter()
                .for_each(|o| o.on_reply(label, request, reply)),
            Err(error) => self
                .observers
                .iter()
                .for_each(|o| o.on_error(label, request, error)),
        }
        result
    }
}
