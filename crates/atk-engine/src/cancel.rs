//! `Cancel`: the run's stop signal as seen by one engine. Once the caller's token fires, calls
//! that have not been sent yet (waiting for a slot, an RPM/TPM budget or a retry backoff) end with
//! `Error::Cancelled`; requests already on the wire are left alone.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::Error;

/// Shared between an engine's layers; without a token it never fires.
#[derive(Clone)]
pub(crate) struct Cancel {
    label: String,
    token: Option<CancellationToken>,
}

impl Cancel {
    pub(crate) fn new(label: &str, token: Option<CancellationToken>) -> Self {
        Self {
            label: label.to_string(),
            token,
        }
    }

    /// `Err(Cancelled)` once the token fired.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.token {
            Some(t) if t.is_cancelled() => Err(self.error()),
            _ => Ok(()),
        }
    }

    /// The error a stopped call gets.
    pub(crate) fn error(&self) -> Error {
        Error::Cancelled {
            engine: self.label.clone(),
        }
    }

    /// Completes when the token fires (never, without a token).
    pub(crate) async fn cancelled(&self) {
        match &self.token {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Runs a wait (for a slot, a budget) unless the token fires first; cancel wins a tie.
    pub(crate) async fn guard<T>(
        &self,
        wait: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            biased;
            () = self.cancelled() => Err(self.error()),
            r = wait => r,
        }
    }
}
