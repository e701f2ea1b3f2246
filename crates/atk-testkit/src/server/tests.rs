//! Tests of the server, by area; the helpers they share are here.

use std::time::Duration;

use serde_json::{Value, json};

use super::decide::cut_words;
use super::*;
use crate::config::{Fault, Faults};
use crate::reply::prompt_hash;

mod faults;
mod lifecycle;
mod messages;
mod replies;

/// A plain HTTP client (reqwest is built without a default TLS provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "max_tokens": 50,
           "messages": [{"role": "user", "content": text}]})
}

async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The content deltas of a chat stream, joined.
fn joined_deltas(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn fixed(fault: Fault) -> ServerConfig {
    ServerConfig::default()
        .with_reply(ReplyMode::Fixed(
            "one two three four five six seven eight".into(),
        ))
        .with_stream_chunks(4)
        .with_faults(Faults::scripted([fault]))
}
