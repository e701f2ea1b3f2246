//! Replies as a client sees them: bodies, streams, usage, keys, the context limit, routes.

use super::*;

#[tokio::test]
async fn non_streamed_chat_has_reply_and_usage() {
    let server = TestServer::start(fixed(Fault::None)).await.unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("a b c", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "one two three four five six seven eight"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 4); // "user: a b c"
    assert_eq!(v["usage"]["completion_tokens"], 8);
    let s = server.stats();
    assert_eq!(
        (s.requests, s.completed, s.faults_injected, s.in_flight),
        (1, 1, 0, 0)
    );
    assert_eq!(s.status_count(200), 1);
}

#[tokio::test]
async fn streamed_chat_rejoins_to_the_reply_then_done() {
    let server = TestServer::start(fixed(Fault::None)).await.unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("x", true)).await;
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let ev = events(&resp.text().await.unwrap());
    assert_eq!(
        joined_deltas(&ev),
        "one two three four five six seven eight"
    );
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 8);
    let finish: Value = serde_json::from_str(&ev[ev.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(server.stats().completed, 1);
}

#[tokio::test]
async fn llama_style_stream_has_no_usage_chunk_and_completions_stream_text() {
    let server = TestServer::start(fixed(Fault::None).with_usage_in_stream(false))
        .await
        .unwrap();
    let body = json!({"model": "m", "prompt": "Once upon", "stream": true});
    let ev = events(
        &post(&server, "/completions", &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(ev.iter().all(|e| !e.contains("\"usage\"")));
    let text: String = ev
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "one two three four five six seven eight");
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn template_reply_is_the_same_for_the_same_prompt() {
    let cfg = ServerConfig::default()
        .with_reply(ReplyMode::Template("<poem>{lines}</poem> {excerpt}".into()));
    let server = TestServer::start(cfg).await.unwrap();
    let a: Value = post(
        &server,
        "/chat/completions",
        &chat_body("the sea at night", false),
    )
    .await
    .json()
    .await
    .unwrap();
    let b: Value = post(
        &server,
        "/chat/completions",
        &chat_body("the sea at night", false),
    )
    .await
    .json()
    .await
    .unwrap();
    let text = a["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(a["choices"], b["choices"]);
    assert!(text.starts_with("<poem>") && text.ends_with("</poem> the sea at night"));
    assert_eq!(
        server
            .stats()
            .prompt_count(&prompt_hash(&chat_body("the sea at night", false))),
        2
    );
}

#[tokio::test]
async fn honor_max_tokens_cuts_with_finish_reason_length() {
    let server = TestServer::start(fixed(Fault::None).with_honor_max_tokens(true))
        .await
        .unwrap();
    let mut body = chat_body("x", false);
    body["max_tokens"] = json!(3);
    let v: Value = post(&server, "/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "one two three");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    body["stream"] = json!(true);
    let text = post(&server, "/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(joined_deltas(&events(&text)), "one two three");
    assert!(text.contains("\"finish_reason\":\"length\""));
    assert_eq!(cut_words("  a  b c", 2), "  a  b");
}

#[tokio::test]
async fn wrong_key_gets_401_without_echoing_it() {
    let server = TestServer::start(ServerConfig::default().with_api_key("sk-right"))
        .await
        .unwrap();
    let client = client();
    let url = format!("{}/chat/completions", server.base_url());
    let wrong = client
        .post(&url)
        .bearer_auth("sk-wrong-123")
        .json(&chat_body("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.unwrap();
    assert!(!text.contains("sk-wrong-123"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let none = client
        .post(&url)
        .json(&chat_body("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let right = client
        .post(&url)
        .bearer_auth("sk-right")
        .json(&chat_body("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let s = server.stats();
    assert_eq!((s.requests, s.rejected_auth, s.completed), (3, 2, 1));
    assert_eq!(s.status_count(401), 2);
}

#[tokio::test]
async fn over_the_context_limit_is_400_context_length_exceeded() {
    let server = TestServer::start(ServerConfig::default().with_context_limit(60))
        .await
        .unwrap();
    // 4 prompt words + 50 max_tokens fits; 12 + 50 does not.
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("a b c", false))
            .await
            .status(),
        200
    );
    let resp = post(
        &server,
        "/chat/completions",
        &chat_body("a b c d e f g h i j k", false),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 60")
    );
}

#[tokio::test]
async fn over_the_context_a_stream_is_an_empty_200_and_a_plain_request_a_400() {
    let server = TestServer::start(ServerConfig::default().with_context_limit(10))
        .await
        .unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("a b c", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "", "no SSE event at all");
    let resp = post(&server, "/chat/completions", &chat_body("a b c", false)).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn stats_and_models_routes() {
    let server = TestServer::start(ServerConfig::default()).await.unwrap();
    post(&server, "/chat/completions", &chat_body("x", false))
        .await
        .text()
        .await
        .unwrap();
    let root = server.base_url().trim_end_matches("/v1").to_owned();
    let stats: Stats = client()
        .get(format!("{root}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, server.stats());
    let models: Value = client()
        .get(format!("{}/models", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "atk-testkit");
}
