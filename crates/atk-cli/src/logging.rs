//! Tracing setup for pipeline binaries and `atk`: logs go to stderr, `RUST_LOG` wins over
//! `-v`/`-q`, and while progress bars are drawn each log line is printed above them.

use std::io::Write;
use std::sync::Mutex;

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The bars currently drawn, if any: log lines are printed through them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Routes log lines above these bars until [`detach_bars`] (or another call).
pub(crate) fn attach_bars(multi: Option<MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = multi;
}

/// Stops routing log lines through bars.
pub(crate) fn detach_bars() {
    attach_bars(None);
}

/// The default filter for a verbosity (-1 quiet, 0 default, 1 `-v`, 2 `-vv`).
pub(crate) fn default_filter(verbosity: i8) -> &'static str {
    match verbosity {
        i8::MIN..=-1 => "error",
        0 => {
            "warn,atk_cli=info,atk_engine=info,atk_chunk=info,atk_state=info,atk_step=info,atk_metadatagen=warn"
        }
        1 => {
            "info,atk_cli=debug,atk_engine=debug,atk_chunk=debug,atk_state=debug,atk_step=debug,atk_metadatagen=debug"
        }
        _ => "trace",
    }
}

/// Installs the global subscriber (once; later calls are ignored). `RUST_LOG`, when set and
/// valid, replaces the verbosity's default filter.
pub fn init(verbosity: i8) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter(verbosity)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrAboveBars)
        .with_ansi(ansi)
        .with_target(verbosity >= 1)
        .try_init();
}

/// A `MakeWriter` for stderr that suspends the progress bars while a line is written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StderrAboveBars;

/// One buffered log line, written on drop.
#[derive(Debug, Default)]
pub(crate) struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_stderr(&self.0);
        }
    }
}

/// Writes `bytes` to stderr, above the progress bars when they are drawn. A closed or broken
/// stderr is ignored: output stops, the run does not.
pub(crate) fn write_stderr(bytes: &[u8]) {
    let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes).and_then(|()| err.flush());
    };
    match bars {
        Some(multi) => multi.suspend(write),
        None => write(),
    }
}

impl<'a> MakeWriter<'a> for StderrAboveBars {
    type Writer = LogLine;
    fn make_writer(&'a self) -> Self::Writer {
        LogLine::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(default_filter(-1), "error");
        assert!(default_filter(0).contains("atk_step=info"));
        assert!(default_filter(1).contains("atk_engine=debug"));
        assert_eq!(default_filter(2), "trace");
        for v in [-1, 0, 1, 2] {
            assert!(EnvFilter::try_new(default_filter(v)).is_ok());
        }
    }
}
