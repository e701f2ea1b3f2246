//! The engine's typed errors: each says whether it is worth retrying and whether it is fatal.

use std::time::Duration;

/// Why an engine call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401/403: the key was refused. Fatal for the whole engine: every queued call fails at once.
    #[error("{engine}: the API key was refused (HTTP {status}): {message}")]
    AuthRefused {
        /// Engine label (`small`, `large`).
        engine: String,
        /// HTTP status.
        status: u16,
        /// The server's message (never contains the key).
        message: String,
    },
    /// 404: wrong base URL or model. Fatal for the engine.
    #[error("{engine}: not found (HTTP 404) at {url}: {message} (check base_url and model)")]
    NotFound {
        /// Engine label.
        engine: String,
        /// The URL that was requested.
        url: String,
        /// The server's message.
        message: String,
    },
    /// 400/422: this request was rejected (e.g. context length exceeded). Fails this call only.
    #[error("{engine}: request rejected (HTTP {status}): {message}")]
    Rejected {
        /// Engine label.
        engine: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A retryable failure (429, 408, 409, 5xx, reset, refused, timeout, cut or malformed stream).
    #[error("{engine}: {kind}: {message}")]
    Transient {
        /// Engine label.
        engine: String,
        /// What kind of transient failure this was.
        kind: TransientKind,
        /// Details (status text, server message, what was malformed).
        message: String,
        /// The server's Retry-After, when it sent one.
        retry_after: Option<Duration>,
        /// A 429 whose `x-ratelimit-*` headers show the limit used up: every request waits.
        /// Any other 429 (headers showing room, or none) delays only its own retry.
        limit_used_up: bool,
        /// The interval at which the endpoint's request limit admits a request, as the 429's
        /// rate-limit headers state it (reset time ÷ requests used); `None` without them.
        limit_interval: Option<Duration>,
    },
    /// Transport retries ran out (attempts or total time); carries the last failure.
    // No elapsed time in the message: failure summaries group items by reason, and a
    // duration would make every identical failure a group of its own.
    #[error("{engine}: gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// Engine label.
        engine: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: Box<Error>,
    },
    /// The endpoint stopped answering (no connection, or only 502/503) for longer than the
    /// outage limit. Fatal: the run stops and unsent items stay pending for the next run.
    #[error(
        "{engine}: the endpoint has not answered for {} s (more than outage_limit); stopping the run: unsent items stay pending, rerun once it is back. Last error: {last}",
        down_for.as_secs()
    )]
    EndpointDown {
        /// Engine label.
        engine: String,
        /// How long it has been down.
        down_for: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The engine was marked dead by an earlier fatal error; this call was not sent.
    #[error("{engine}: engine stopped after a fatal error: {reason}")]
    EngineDead {
        /// Engine label.
        engine: String,
        /// The fatal error's message.
        reason: String,
    },
    /// The run is stopping (`EngineConfig::cancel` fired) and this call was not sent: it was
    /// waiting for a concurrency slot, an RPM/TPM budget or a retry backoff. Neither fatal nor
    /// transient; the caller should treat the item as not done (it runs again on resume).
    #[error("{engine}: call not sent: the run is stopping")]
    Cancelled {
        /// Engine label.
        engine: String,
    },
    /// Bad engine configuration (no base_url, bad URL, bad header value, ...).
    #[error("engine configuration: {0}")]
    Config(String),
}

/// The classes of retryable failure, counted separately in retry statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TransientKind {
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx, 408 or 409.
    ServerError,
    /// Connection reset or closed.
    Connection,
    /// The endpoint is not there: the connection could not be made, or HTTP 502/503.
    Unavailable,
    /// Connect, first-byte, idle or total timeout.
    Timeout,
    /// Stream ended before `finish_reason`/`[DONE]`.
    Incomplete,
    /// The reply ended (`[DONE]`, or a whole JSON body) without any finish_reason: the server
    /// cut it (llama-cpp-python does so to a running stream when another request arrives).
    CutStream,
    /// Non-JSON SSE line, garbage body, empty body, error object mid-stream.
    Malformed,
}

impl std::fmt::Display for TransientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TransientKind {
    /// Short stable name used in logs and retry counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Connection => "connection",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Incomplete => "incomplete_reply",
            Self::CutStream => "cut_stream",
            Self::Malformed => "malformed_reply",
        }
    }
}

impl Error {
    /// True when the whole run should stop (key refused, endpoint not found, engine dead).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::AuthRefused { .. }
            | Self::NotFound { .. }
            | Self::EngineDead { .. }
            | Self::EndpointDown { .. }
            | Self::Config(_) => true,
            Self::RetriesExhausted { last, .. } => last.is_fatal(),
            _ => false,
        }
    }

    /// True when the server refused the prompt as longer than the model's context
    /// (`context_length_exceeded`, or a message saying "maximum context length").
    pub fn is_context_overflow(&self) -> bool {
        match self {
            Self::Rejected { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("context_length_exceeded")
                    || m.contains("maximum context length")
                    || m.contains("context window")
            }
            Self::RetriesExhausted { last, .. } => last.is_context_overflow(),
            _ => false,
        }
    }

    /// True when another transport attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    /// Failure summaries group items by message: identical failures must read the same.
    #[test]
    fn identical_exhausted_retries_read_the_same_whatever_the_elapsed_time() {
        let exhausted = |ms| Error::RetriesExhausted {
            engine: "small".into(),
            attempts: 2,
            elapsed: Duration::from_millis(ms),
            last: Box::new(Error::Transient {
                engine: "small".into(),
                kind: TransientKind::Connection,
                message: "connection refused".into(),
                retry_after: None,
                limit_used_up: false,
                limit_interval: None,
            }),
        };
        assert_eq!(exhausted(426).to_string(), exhausted(1003).to_string());
        assert!(
            exhausted(426)
                .to_string()
                .contains("gave up after 2 attempts")
        );
    }
}
