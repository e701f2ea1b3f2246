//! Ctrl-C (or SIGTERM): the first stops new requests and waits for those in flight, the
//! second quits. Either way the run is recorded as interrupted.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long the first Ctrl-C waits for in-flight requests before exiting anyway.
pub(super) const CTRL_C_GRACE: Duration = Duration::from_secs(30);

/// First Ctrl-C: stop new requests, let in-flight ones finish (at most [`CTRL_C_GRACE`]).
/// Second Ctrl-C, or the grace running out: record the run as interrupted in `output_dir`'s
/// `status.json` and exit 130 at once (stored results are durable).
pub(super) async fn watch_ctrl_c(
    mut ctrl_c: CtrlC,
    cancel: CancellationToken,
    output_dir: PathBuf,
) {
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
    crate::ending::mark(&output_dir, crate::status::RunState::Interrupted);
    std::process::exit(130);
}

/// Ctrl-C and SIGTERM, listened for from the moment [`CtrlC::install`] returns (tokio's
/// `ctrl_c()` only registers on its first poll, which could come after the run has started).
pub(super) struct CtrlC {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl CtrlC {
    pub(super) fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                signal: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// True when Ctrl-C was pressed (or SIGTERM came); false (or never returning) when
    /// neither can be listened for.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            async fn one(signal: &mut Option<tokio::signal::unix::Signal>) -> bool {
                match signal {
                    Some(signal) => signal.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                got = one(&mut self.signal) => got,
                got = one(&mut self.term) => got,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}
