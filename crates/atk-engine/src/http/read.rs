//! Reading a reply body: an SSE stream (framing in `sse.rs`) or one JSON body, into the
//! text, finish_reason and usage, or a classified error.

use futures_util::StreamExt;

use super::message::{error_chain, error_text, quote};
use super::sse::{Events, SseError};
use super::wire::{Parsed, WireReply};
use super::{DRAIN_GRACE, Http};
use crate::timeout::BodyError;
use crate::{Error, TransientKind};

impl Http {
    pub(super) async fn read_sse(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<Parsed, Error> {
        let body = std::pin::pin!(body);
        let mut events = Events::new(body);
        let mut acc = Parsed::default();
        let mut events_seen = 0usize;
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // Once finish_reason arrived the text is whole; a cut before the usage chunk or
                // [DONE] only costs the usage figures (then estimated).
                Err(_) if acc.finish_reason.is_some() => break,
                Err(SseError::Transport(e)) => return Err(self.body_error(e, events_seen)),
                Err(e) => {
                    return Err(self.transient(
                        TransientKind::Malformed,
                        format!("unreadable SSE stream: {e}"),
                    ));
                }
            };
            events_seen += 1;
            let data = event.data.trim();
            if data == "[DONE]" {
                done = true;
                // Read to the end of the body (normally already buffered) so the connection goes
                // back to the pool; a server that keeps the body open gets a short grace only.
                let drain = async { while let Some(Ok(_)) = events.next().await {} };
                let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: WireReply<'_> = match serde_json::from_str(data) {
                Ok(chunk) => chunk,
                Err(_) if acc.finish_reason.is_some() => break,
                Err(_) => {
                    return Err(self.transient(
                        TransientKind::Malformed,
                        format!("SSE data line is not JSON: {}", quote(data)),
                    ));
                }
            };
            if let Some(error) = &chunk.error {
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!(
                        "error object mid-stream: {}",
                        self.key.scrub(&error_text(error))
                    ),
                ));
            }
            if event.event == "error" {
                return Err(self.transient(
                    TransientKind::Malformed,
                    format!("error event mid-stream: {}", quote(data)),
                ));
            }
            acc.absorb(chunk, true);
        }
        if events_seen == 0 {
            return Err(self.transient(TransientKind::Malformed, "empty reply body (no SSE event)"));
        }
        if !done && acc.finish_reason.is_none() {
            return Err(self.transient(
                TransientKind::Incomplete,
                format!("stream ended after {events_seen} events without finish_reason or [DONE]"),
            ));
        }
        Ok(acc)
    }

    /// The whole body as text; an empty one is a malformed reply.
    pub(super) async fn read_whole(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<String, Error> {
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(e) => return Err(self.body_error(e, usize::from(!bytes.is_empty()))),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.trim().is_empty() {
            return Err(self.transient(TransientKind::Malformed, "empty reply body"));
        }
        Ok(text)
    }

    pub(super) async fn read_json(
        &self,
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send,
    ) -> Result<Parsed, Error> {
        let text = self.read_whole(body).await?;
        self.parse_openai_json(&text)
    }

    /// Reads one whole OpenAI reply body (`chat.completion` or `text_completion`).
    pub(super) fn parse_openai_json(&self, text: &str) -> Result<Parsed, Error> {
        let reply: WireReply<'_> = serde_json::from_str(text).map_err(|_| {
            self.transient(
                TransientKind::Malformed,
                format!("reply is not JSON: {}", quote(text)),
            )
        })?;
        if let Some(error) = &reply.error {
            return Err(self.transient(
                TransientKind::Malformed,
                format!(
                    "error object in reply: {}",
                    self.key.scrub(&error_text(error))
                ),
            ));
        }
        if reply.choices.is_empty() {
            return Err(self.transient(
                TransientKind::Malformed,
                format!("reply has no choices: {}", quote(text)),
            ));
        }
        let mut acc = Parsed::default();
        acc.absorb(reply, false);
        Ok(acc)
    }

    pub(super) fn body_error(&self, e: BodyError, progress: usize) -> Error {
        match e {
            BodyError::Transport(e) if progress == 0 => self.transient(
                TransientKind::Connection,
                format!("connection lost before the reply: {e}"),
            ),
            BodyError::Transport(e) => self.transient(
                TransientKind::Incomplete,
                format!("connection lost mid-reply: {}", error_chain(&e)),
            ),
            e @ (BodyError::FirstByte(_) | BodyError::Idle(_) | BodyError::Total(_)) => {
                self.transient(TransientKind::Timeout, e.to_string())
            }
        }
    }
}
