//! The Messages route: Anthropic's headers, shapes, events, errors and rate-limit headers.

use super::*;
use crate::config::RateLimit;

fn messages_body(text: &str, stream: bool) -> Value {
    json!({"model": "claude", "stream": stream, "max_tokens": 50,
           "system": [{"type": "text", "text": "be brief"}],
           "messages": [{"role": "user", "content": text}]})
}

async fn post_messages(server: &TestServer, body: &Value, version: bool) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/messages", server.base_url()))
        .header("x-api-key", "k")
        .json(body);
    if version {
        req = req.header("anthropic-version", "2023-06-01");
    }
    req.send().await.expect("request sent")
}

/// `(event name, data)` of each event of a Messages stream.
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|e| {
            let (name, data) = e.split_once('\n')?;
            Some((
                name.strip_prefix("event: ")?.to_owned(),
                serde_json::from_str(data.strip_prefix("data: ")?).ok()?,
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_stream_is_the_messages_event_sequence() {
    let server = TestServer::start(fixed(Fault::None).with_api_key("k"))
        .await
        .unwrap();
    let text = post_messages(&server, &messages_body("hi", true), true)
        .await
        .text()
        .await
        .unwrap();
    let events = named_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let joined: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(joined, "one two three four five six seven eight");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    // "system: be brief" + "user: hi": 5 words in.
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 5);
    assert_eq!(server.stats().completed, 1);
}

#[tokio::test]
async fn anthropic_errors_have_anthropic_shapes() {
    let server = TestServer::start(fixed(Fault::Overloaded).with_api_key("k"))
        .await
        .unwrap();
    // No anthropic-version: 400 invalid_request_error (the script is not consumed).
    let resp = post_messages(&server, &messages_body("hi", false), false).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error"))
    );
    let resp = post_messages(&server, &messages_body("hi", false), true).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    // A bearer token is not Anthropic's header.
    let resp = client()
        .post(format!("{}/messages", server.base_url()))
        .bearer_auth("k")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn rate_limit_headers_are_anthropics() {
    let server = TestServer::start(
        fixed(Fault::None).with_rate_limit(RateLimit::requests(1, Duration::from_secs(60))),
    )
    .await
    .unwrap();
    let ok = post_messages(&server, &messages_body("a", false), true).await;
    assert_eq!(ok.status(), 200);
    let h = ok.headers();
    assert_eq!(h["anthropic-ratelimit-requests-limit"], "1");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    let reset = h["anthropic-ratelimit-requests-reset"].to_str().unwrap();
    assert!(reset.ends_with('Z') && reset.contains('T'), "{reset}");
    assert!(h.get("x-ratelimit-limit-requests").is_none());
    let refused = post_messages(&server, &messages_body("b", false), true).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}
