//! The bodies a reply is sent as: SSE events or one JSON body, shaped by the fault drawn
//! for the request, played step by step so faults can stall, reset or cut them.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{Kind, error_body};
use crate::config::{Fault, ServerConfig};
use crate::reply::split_pieces;
use crate::stats::{Counters, InFlight};

/// What a complete reply is made of.
pub(super) struct ReplyShape {
    pub(super) finish: Option<&'static str>,
    pub(super) kind: Kind,
    pub(super) model: String,
    pub(super) id: String,
    pub(super) text: String,
    pub(super) prompt_tokens: u64,
    pub(super) completion_tokens: u64,
    /// Of `prompt_tokens`, those read from the prompt cache.
    pub(super) cached_tokens: u64,
    /// Of `prompt_tokens`, those written to the prompt cache (Messages only).
    pub(super) cache_written: u64,
    /// The tool a Messages request forced: the reply is its `tool_use` block, `text` its input.
    pub(super) tool: Option<String>,
}

impl ReplyShape {
    fn usage(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        });
        if self.cached_tokens > 0 {
            usage["prompt_tokens_details"] = json!({"cached_tokens": self.cached_tokens});
        }
        usage
    }

    /// A stream chunk carrying `piece` (or only a finish reason).
    fn chunk(&self, piece: Option<&str>, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat | Kind::Messages => {
                let delta = piece.map_or_else(|| json!({}), |p| json!({"content": p}));
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": 1_700_000_000, "model": self.model, "choices": [choice]})
    }

    /// The whole non-streamed reply; `text` and `finish` may differ from the real ones.
    pub(super) fn whole(&self, text: &str, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat | Kind::Messages => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": 1_700_000_000, "model": self.model,
               "choices": [choice], "usage": self.usage()})
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat | Kind::Messages, true) => "chat.completion.chunk",
            (Kind::Chat | Kind::Messages, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }
}

/// One step of a response body.
pub(super) enum Step {
    Data(Bytes),
    Pause(Duration),
    /// Abort the connection (the client sees a reset / incomplete body).
    Abort,
    /// Count the request as completed (placed just before the last bytes).
    Completed,
    /// Wait this long, unless a newer request cuts the stream: then `data: [DONE]` and the end.
    Gap(Duration),
}

pub(super) fn sse(v: &Value) -> Step {
    Step::Data(Bytes::from(format!("data: {v}\n\n")))
}

/// `reply` as SSE events, shaped by `fault`.
pub(super) fn sse_body(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault, tail: Tail) -> Body {
    streamed(body_steps_sse(reply, cfg, fault), tail)
}

/// `reply` as one JSON body, shaped by `fault`.
pub(super) fn json_body(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault, tail: Tail) -> Body {
    streamed(body_steps_json(reply, cfg, fault), tail)
}

/// The SSE body for `fault` (None, Stall, ResetMidStream, MalformedSse, CutBeforeDone,
/// ErrorMidStream).
fn body_steps_sse(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let pieces = split_pieces(&reply.text, cfg.stream_chunks);
    // The fault strikes before this delta: after half the content (before any, for one delta).
    let half = pieces.len() / 2;
    let mut steps = VecDeque::new();
    if reply.kind == Kind::Chat {
        let mut first = reply.chunk(Some(""), None);
        first["choices"][0]["delta"]["role"] = json!("assistant");
        steps.push_back(sse(&first));
    }
    let gap = cfg.latency / u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    for (i, piece) in pieces.iter().enumerate() {
        if cfg.cut_on_arrival {
            steps.push_back(Step::Gap(gap));
        }
        if i == half {
            match fault {
                Fault::Stall => steps.push_back(Step::Pause(cfg.faults.stall_for)),
                Fault::ResetMidStream => {
                    steps.push_back(Step::Abort);
                    return steps;
                }
                Fault::MalformedSse => {
                    // This delta is lost: a client that skips bad lines keeps a damaged reply.
                    let line = format!(
                        "data: {{\"id\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\n\n",
                        reply.id,
                        piece.len()
                    );
                    steps.push_back(Step::Data(Bytes::from(line)));
                    continue;
                }
                Fault::CutBeforeDone => return steps,
                Fault::ErrorMidStream => {
                    let err = error_body(
                        "The server had an error while streaming.",
                        "server_error",
                        Some("internal_error"),
                    );
                    steps.push_back(sse(&err));
                    return steps;
                }
                _ => {}
            }
        }
        steps.push_back(sse(&reply.chunk(Some(piece), None)));
    }
    steps.push_back(sse(&reply.chunk(None, reply.finish)));
    if cfg.usage_in_stream {
        let usage = json!({"id": reply.id, "object": reply.object(true), "created": 1_700_000_000,
                           "model": reply.model, "choices": [], "usage": reply.usage()});
        steps.push_back(sse(&usage));
    }
    if fault == Fault::None || fault == Fault::Stall {
        steps.push_back(Step::Completed);
    }
    steps.push_back(Step::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    steps
}

/// The non-streamed JSON body for `fault`.
fn body_steps_json(reply: &ReplyShape, cfg: &ServerConfig, fault: Fault) -> VecDeque<Step> {
    let whole = Bytes::from(reply.whole(&reply.text, reply.finish).to_string());
    let half = whole.len() / 2;
    let mut steps = VecDeque::new();
    match fault {
        Fault::Stall => {
            steps.push_back(Step::Data(whole.slice(..half)));
            steps.push_back(Step::Pause(cfg.faults.stall_for));
            steps.push_back(Step::Completed);
            steps.push_back(Step::Data(whole.slice(half..)));
        }
        Fault::ResetMidStream => {
            steps.push_back(Step::Data(whole.slice(..half)));
            steps.push_back(Step::Abort);
        }
        Fault::MalformedSse | Fault::CutBeforeDone => {
            steps.push_back(Step::Data(whole.slice(..half)))
        }
        Fault::ErrorMidStream => {
            let err = error_body(
                "The server had an error while processing your request.",
                "server_error",
                Some("internal_error"),
            );
            steps.push_back(Step::Data(Bytes::from(err.to_string())));
        }
        Fault::NoFinishReason => steps.push_back(Step::Data(whole)),
        _ => {
            steps.push_back(Step::Completed);
            steps.push_back(Step::Data(whole));
        }
    }
    steps
}

/// What a body holds until it ends: the in-flight guard and the serial permit.
pub(super) struct Tail {
    pub(super) counters: Counters,
    pub(super) cancel: CancellationToken,
    /// Fires when a newer request cuts this stream (`cut_on_arrival`).
    pub(super) cut: Option<CancellationToken>,
    pub(super) _guard: InFlight,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

/// A body that plays `steps`; an `Abort` (or the server shutting down) ends it with an error.
pub(super) fn streamed(steps: VecDeque<Step>, tail: Tail) -> Body {
    let stream = futures_util::stream::unfold((steps, tail), |(mut steps, tail)| async move {
        loop {
            match steps.pop_front()? {
                Step::Data(bytes) => return Some((Ok(bytes), (steps, tail))),
                Step::Pause(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = tail.cancel.cancelled() => {
                            steps.clear();
                            return Some((Err(io::Error::other("test server shut down")), (steps, tail)));
                        }
                    }
                }
                Step::Abort => {
                    // Return Pending once first so hyper writes out what it buffered: the
                    // client must get the head and half the body before the reset.
                    tokio::task::yield_now().await;
                    steps.clear();
                    let err =
                        io::Error::new(io::ErrorKind::ConnectionReset, "injected connection reset");
                    return Some((Err(err), (steps, tail)));
                }
                Step::Completed => tail.counters.update(|s| s.completed += 1),
                Step::Gap(d) => {
                    let cut = tail.cut.clone().unwrap_or_default();
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = cut.cancelled() => {
                            steps.clear();
                            tail.counters.update(|s| s.cut_streams += 1);
                            let done = Bytes::from_static(b"data: [DONE]\n\n");
                            return Some((Ok(done), (steps, tail)));
                        }
                        () = tail.cancel.cancelled() => {
                            steps.clear();
                            return Some((Err(io::Error::other("test server shut down")), (steps, tail)));
                        }
                    }
                }
            }
        }
    });
    Body::from_stream(stream)
}
