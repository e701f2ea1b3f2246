//! What the engine's test binaries share: a loopback server with a fixed reply and an engine
//! config pointed at it, with retries fast enough for tests.

#![allow(dead_code)] // not every part is used by every module

use std::time::Duration;

use atk_engine::{EngineConfig, Message, Request, RetryConfig};
use atk_testkit::{ReplyMode, ServerConfig, TestServer};

pub mod schema;

/// The reply every test server gives.
pub const TEXT: &str = "one two three four five six seven eight";
/// An API key the tests check never leaks.
pub const KEY: &str = "sk-test-5f0c2e9a7d41b3";

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A server answering [`TEXT`] to everything.
pub fn server_cfg() -> ServerConfig {
    ServerConfig::default().with_reply(ReplyMode::Fixed(TEXT.into()))
}

/// Engine `t` on model `m` at `server`: 4 in flight, retries 1–5 ms apart.
pub fn engine_cfg(server: &TestServer) -> EngineConfig {
    EngineConfig::default()
        .with_label("t")
        .with_base_url(server.base_url())
        .with_model("m")
        .with_concurrency_limit(4usize)
        .with_retry(
            RetryConfig::default()
                .with_base_delay(ms(1))
                .with_max_delay(ms(5)),
        )
}

/// One user message, with a sampling param passed through verbatim.
pub fn chat(prompt: &str) -> Request {
    Request::chat(vec![Message::new("user", prompt)]).with_param("temperature", 0.2)
}
