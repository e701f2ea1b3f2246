//! Capturing what a `tracing` fmt subscriber writes, for tests that assert on logs
//! (a key never logged, a fatal error logged once).

use std::sync::{Arc, Mutex};

/// A `MakeWriter` that keeps every byte the subscriber writes; clones share the buffer.
#[derive(Clone, Default, Debug)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// A fmt subscriber writing to this buffer at `level` and below, without colours.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_was_logged() {
        let logs = CapturedLogs::default();
        tracing::subscriber::with_default(logs.subscriber(tracing::Level::INFO), || {
            tracing::info!("kept");
            tracing::debug!("too verbose");
        });
        let text = logs.text();
        assert!(
            text.contains("kept") && !text.contains("too verbose"),
            "{text}"
        );
    }
}
