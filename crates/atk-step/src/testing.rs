//! Test doubles: a scripted [`Engine`] and an in-memory [`Store`]. Compiled for this crate's
//! tests and, with the `testing` feature, for other crates' tests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use atk_engine::{Engine, Error, Prompt, Reply, Request, Timing, Usage};
pub use atk_state::MemStore;

type Fallback = Box<dyn Fn(&Request) -> Result<Reply, Error> + Send + Sync>;

/// An engine that answers from a queue of scripted results, then from a fallback function.
pub struct ScriptedEngine {
    label: String,
    script: Mutex<VecDeque<Result<Reply, Error>>>,
    fallback: Fallback,
    requests: Mutex<Vec<Request>>,
    calls: AtomicU64,
    hang_after: Option<u64>,
}

/// A complete reply with `finish_reason: stop` and small token counts.
pub fn reply(text: impl Into<String>) -> Reply {
    Reply {
        text: text.into(),
        finish_reason: Some("stop".into()),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            estimated: false,
            ..Usage::default()
        },
        model: "scripted".into(),
        timing: Timing::default(),
    }
}

/// The text of a request's last message (chat) or the whole prompt (completion).
pub fn last_text(request: &Request) -> &str {
    match &request.prompt {
        Prompt::Chat(messages) => messages.last().map_or("", |m| m.content.as_str()),
        Prompt::Completion(text) => text,
    }
}

impl ScriptedEngine {
    /// An engine whose fallback replies `ok`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            script: Mutex::new(VecDeque::new()),
            fallback: Box::new(|_| Ok(reply("ok"))),
            requests: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            hang_after: None,
        }
    }

    /// Answers with `f(request)` once the script is used up.
    pub fn with_fallback(
        mut self,
        f: impl Fn(&Request) -> Result<Reply, Error> + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Box::new(f);
        self
    }

    /// Calls after the first `n` never return (a server that stalls; for crash tests).
    pub fn hang_after(mut self, n: u64) -> Self {
        self.hang_after = Some(n);
        self
    }

    /// Queues one result.
    pub fn push(&self, result: Result<Reply, Error>) -> &Self {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(result);
        self
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Engine for ScriptedEngine {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        if self.hang_after.is_some_and(|limit| n > limit) {
            std::future::pending::<()>().await;
        }
        tokio::task::yield_now().await;
        let scripted = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        scripted.unwrap_or_else(|| (self.fallback)(&request))
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn model(&self) -> &str {
        "scripted"
    }
}
