//! Where the runner's own lines go, following CLI conventions: the lines a script may want
//! (where each dataset went) on stdout, diagnostics (warnings, banner, summary, errors) on
//! stderr; `-q` keeps errors, warnings (each is about what runs: an ignored key, a prompt
//! override that overrides nothing, a `{name}` sent as written) and a command's own result (the
//! dry run's estimate); a closed stdout or stderr (`| head -1`) ends that output
//! quietly instead of panicking, and the run goes on.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);
/// Warnings already shown in this process (a warning found by every chain is shown once).
static SHOWN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// `-q`: from now on only errors, warnings and a command's own result are printed.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// True under `-q`.
pub(crate) fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes `text` to stderr above any progress bars; a closed stderr is ignored.
fn stderr_text(text: &str) {
    crate::logging::write_stderr(text.as_bytes());
}

/// A result line for scripts (e.g. `dataset written: PATH (N lines)`): stdout, not under `-q`.
/// A closed stdout is ignored.
pub(crate) fn result(line: &str) {
    if is_quiet() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The command's own result (the dry run's estimate) on stdout, under `-q` too. A closed
/// stdout is ignored.
pub(crate) fn command_result(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// A machine-readable event line (`--progress json`) on stdout, printed under `-q` too (the
/// progress events are). A closed stdout is ignored.
pub(crate) fn event(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `warning: MESSAGE` on stderr for what does not change what runs (the card's licence),
/// once per process per message; nothing under `-q`.
pub(crate) fn note(message: &str) {
    if !is_quiet() {
        warn(message);
    }
}

/// `warning: MESSAGE` on stderr, once per process per message, under `-q` too.
pub(crate) fn warn(message: &str) {
    let fresh = SHOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(message.to_string());
    if fresh {
        stderr_text(&format!("warning: {message}\n"));
    }
}

/// Diagnostic text on stderr (banner, chunking report, summary); nothing under `-q`.
/// `text` is written as given (add the newline).
pub(crate) fn info(text: &str) {
    if !is_quiet() {
        stderr_text(text);
    }
}

/// Text on stderr whatever `-q` says (errors, and a summary that explains a failure).
pub fn always(text: &str) {
    stderr_text(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_shown_once() {
        // Only the dedup set is observable here; stderr itself is the test harness's.
        warn("same thing");
        warn("same thing");
        let shown = SHOWN.lock().unwrap();
        assert!(shown.as_ref().is_some_and(|s| s.contains("same thing")));
    }
}
