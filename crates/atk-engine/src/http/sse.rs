//! Server-sent events framing over a reply's byte stream, for both dialects' readers.
//!
//! Hand-written instead of `eventsource-stream` (used before): that crate turns every body
//! chunk into a fresh `String`, re-allocates its whole buffer for every line it consumes and
//! builds three `String`s per event; a streamed reply is read once per request, so that was a
//! measurable share of the CPU per request (issue 25, round 4). This reader keeps one byte
//! buffer and one data buffer per reply, reused for every event, and hands out borrowed views.
//!
//! The framing follows the WHATWG `text/event-stream` rules the old crate followed: lines end
//! in CRLF, LF or CR; a blank line dispatches the event; `:` starts a comment; a field's value
//! loses one leading space; `data` lines are joined with `\n`; an event with no data is not
//! dispatched; a leading BOM is skipped; an event not closed by a blank line when the body
//! ends is dropped. Only `data` and `event` are kept (nothing here reads `id` or `retry`).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};

use crate::timeout::BodyError;

/// One dispatched event, borrowed from the reader until its next call.
pub(super) struct Event<'a> {
    /// The `event` field (`message` when the event named none).
    pub(super) event: &'a str,
    /// The `data` lines, joined with `\n`.
    pub(super) data: &'a str,
}

/// Why the event stream ended early.
pub(super) enum SseError {
    /// The body failed (reset, timeout).
    Transport(BodyError),
    /// A field's value was not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::NotUtf8 => f.write_str("a line is not UTF-8"),
        }
    }
}

/// Reads events off a body stream (see the module doc for the rules).
pub(super) struct Events<S> {
    body: S,
    /// Received bytes; `buf[pos..]` is not yet read.
    buf: Vec<u8>,
    pos: usize,
    /// The current event's data lines, each followed by `\n`.
    data: String,
    /// The current event's type.
    event: String,
    /// The last call handed out an event: clear it before reading on.
    dispatched: bool,
    /// The first bytes (a BOM, maybe) were seen.
    started: bool,
    /// The body ended.
    ended: bool,
}

impl<S> Events<S>
where
    S: Stream<Item = Result<bytes::Bytes, BodyError>> + Unpin,
{
    pub(super) fn new(body: S) -> Self {
        Self {
            body,
            buf: Vec::new(),
            pos: 0,
            data: String::new(),
            event: String::new(),
            dispatched: false,
            started: false,
            ended: false,
        }
    }

    /// The next event; `None` once the body ended.
    pub(super) async fn next(&mut self) -> Option<Result<Event<'_>, SseError>> {
        loop {
            match self.parse() {
                Ok(true) => {
                    let event = if self.event.is_empty() {
                        "message"
                    } else {
                        &self.event
                    };
                    return Some(Ok(Event {
                        event,
                        data: &self.data,
                    }));
                }
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.ended {
                return None;
            }
            match Pin::new(&mut self.body).next().await {
                Some(Ok(chunk)) => {
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                    } else if self.pos > 0 {
                        self.buf.drain(..self.pos);
                    }
                    self.pos = 0;
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(SseError::Transport(e)));
                }
                None => self.ended = true,
            }
        }
    }

    /// Reads whole lines from the buffer until an event is complete (true) or more bytes are
    /// needed (false).
    fn parse(&mut self) -> Result<bool, SseError> {
        if std::mem::take(&mut self.dispatched) {
            self.data.clear();
            self.event.clear();
        }
        if !self.started {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let rest = &self.buf[self.pos..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) && !self.ended {
                return Ok(false);
            }
            self.started = true;
            if rest.starts_with(BOM) {
                self.pos += BOM.len();
            }
        }
        loop {
            let rest = &self.buf[self.pos..];
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                return Ok(false);
            };
            let eol = if rest[end] == b'\n' {
                1
            } else if end + 1 < rest.len() {
                if rest[end + 1] == b'\n' { 2 } else { 1 }
            } else if self.ended {
                1
            } else {
                // A CR last in the buffer: its LF may be in the next chunk.
                return Ok(false);
            };
            let line = &rest[..end];
            self.pos += end + eol;
            if line.is_empty() {
                if self.data.is_empty() {
                    // No data: nothing to dispatch (the type does not carry over).
                    self.event.clear();
                    continue;
                }
                self.data.pop();
                self.dispatched = true;
                return Ok(true);
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            match field {
                b"data" => {
                    let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                b"event" => {
                    let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                    self.event.clear();
                    self.event.push_str(value);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of a body sent in `chunks`, as (type, data), or the error's text.
    async fn events(chunks: &[&[u8]]) -> Result<Vec<(String, String)>, String> {
        let chunks: Vec<Result<bytes::Bytes, BodyError>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let mut events = Events::new(futures_util::stream::iter(chunks));
        let mut out = Vec::new();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| e.to_string())?;
            out.push((event.event.to_string(), event.data.to_string()));
        }
        Ok(out)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(e, d)| (e.to_string(), d.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn events_split_anywhere_read_the_same_as_whole() {
        let body: &[u8] = b"\xEF\xBB\xBFdata: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: error\ndata: one\ndata:two\r\rdata: [DONE]\n\nid: 7\nretry: 10\n\ndata: cut before its blank line\n";
        let expected = pairs(&[
            ("message", "{\"a\":1}"),
            ("error", "one\ntwo"),
            ("message", "[DONE]"),
        ]);
        assert_eq!(events(&[body]).await.unwrap(), expected);
        // Every split point, CR/LF pairs and the BOM included.
        for cut in 1..body.len() {
            assert_eq!(
                events(&[&body[..cut], &body[cut..]]).await.unwrap(),
                expected,
                "split at byte {cut}"
            );
        }
        // One byte per chunk.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(events(&bytes).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_field_without_colon_or_value_and_an_event_without_data() {
        // `data` alone is an empty data line; an event with only a type dispatches nothing
        // and its type does not carry over to the next event.
        let got = events(&[b"event: ping\n\ndata\ndata\n\ndata:x\n\n"])
            .await
            .unwrap();
        assert_eq!(got, pairs(&[("message", "\n"), ("message", "x")]));
        // A lone CR at the very end of the body still ends its line.
        let got = events(&[b"data: y\r\r"]).await.unwrap();
        assert_eq!(got, pairs(&[("message", "y")]));
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_an_error_and_a_cut_body_reports_its_error() {
        assert!(events(&[b"data: \xFF\xFE\n\n"]).await.is_err());
        let chunks: Vec<Result<bytes::Bytes, BodyError>> = vec![
            Ok(bytes::Bytes::from_static(b"data: a\n\n")),
            Err(BodyError::Idle(std::time::Duration::from_secs(1))),
        ];
        let mut events = Events::new(futures_util::stream::iter(chunks));
        assert_eq!(events.next().await.unwrap().ok().unwrap().data, "a");
        assert!(matches!(
            events.next().await,
            Some(Err(SseError::Transport(BodyError::Idle(_))))
        ));
        assert!(events.next().await.is_none());
    }
}
