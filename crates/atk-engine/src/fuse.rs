//! `Fuse`: the per-engine "dead" flag. A refused key (401/403) or a wrong URL/model (404) trips it;
//! every call queued behind the concurrency bound, waiting out a backoff or arriving later then
//! fails at once with `EngineDead` instead of sending another doomed request.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::Error;

/// Shared between an engine's layers; cloning shares the flag.
#[derive(Clone)]
pub(crate) struct Fuse {
    inner: Arc<FuseInner>,
}

struct FuseInner {
    label: String,
    token: CancellationToken,
    reason: OnceLock<String>,
}

impl Fuse {
    pub(crate) fn new(label: &str) -> Self {
        Self {
            inner: Arc::new(FuseInner {
                label: label.to_string(),
                token: CancellationToken::new(),
                reason: OnceLock::new(),
            }),
        }
    }

    /// Marks the engine dead because of `error` (the first reason wins).
    pub(crate) fn trip(&self, error: &Error) {
        if self.inner.reason.set(error.to_string()).is_ok() {
            tracing::error!(engine = %self.inner.label, %error, "engine stopped: queued calls will fail at once");
        }
        self.inner.token.cancel();
    }

    /// `Err(EngineDead)` once tripped.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.inner.token.is_cancelled() {
            Err(self.error())
        } else {
            Ok(())
        }
    }

    /// The error queued calls get.
    pub(crate) fn error(&self) -> Error {
        Error::EngineDead {
            engine: self.inner.label.clone(),
            reason: self
                .inner
                .reason
                .get()
                .cloned()
                .unwrap_or_else(|| "unknown".to_string()),
        }
    }

    /// Completes when the fuse trips.
    pub(crate) async fn tripped(&self) {
        self.inner.token.cancelled().await;
    }
}
