//! Ctrl-C: the first stops new requests and waits for those in flight, the second quits.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long the first Ctrl-C waits for in-flight requests before exiting anyway.
pub(super) const CTRL_C_GRACE: Duration = Duration::from_secs(30);

/// First Ctrl-C: stop new requests, let in-flight ones finish (at most [`CTRL_C_GRACE`]).
/// Second Ctrl-C, or the grace running out: exit 130 at once (stored results are durable).
pub(super) async fn watch_ctrl_c(mut ctrl_c: CtrlC, cancel: CancellationToken) {
    if !ctrl_c.recv().await {
        return;
    }
    cancel.cancel();
    crate::out::always(&format!(
        "\nstopping: no new requests; waiting up to {} s for those in flight (Ctrl-C again to quit now)\n",
        CTRL_C_GRACE.as_secs()
    ));
    tokio::select! {
        _ = ctrl_c.recv() => crate::out::always("quitting now; rerun the same command to resume\n"),
        () = tokio::time::sleep(CTRL_C_GRACE) => crate::out::always("in-flight requests did not finish in time; quitting; rerun to resume\n"),
    }
    std::process::exit(130);
}

/// Ctrl-C, listened for from the moment [`CtrlC::install`] returns (tokio's `ctrl_c()` only
/// registers on its first poll, which could come after the run has started).
pub(super) struct CtrlC {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl CtrlC {
    pub(super) fn install() -> Self {
        #[cfg(unix)]
        {
            Self {
                signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// True when Ctrl-C was pressed; false (or never returning) when it cannot be listened for.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            match &mut self.signal {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}
