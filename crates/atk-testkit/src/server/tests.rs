//! Tests of `server.rs`.

use super::*;
use crate::config::Faults;

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
async fn completions_faults_and_scripted_401() {
    let faults = Faults::scripted([Fault::CutBeforeDone, Fault::Unauthorized, Fault::None]);
    let server = TestServer::start(fixed(Fault::None).with_faults(faults))
        .await
        .unwrap();
    let body = json!({"model": "m", "prompt": "Once upon", "stream": true});
    let cut = events(
        &post(&server, "/completions", &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(
        cut.iter().all(|e| e != "[DONE]" && !e.contains("\"stop\"")),
        "{cut:?}"
    );
    assert_eq!(post(&server, "/completions", &body).await.status(), 401);
    let whole: Value = post(&server, "/completions", &json!({"prompt": "Once upon"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(
        whole["choices"][0]["text"],
        "one two three four five six seven eight"
    );
    assert_eq!(whole["usage"]["prompt_tokens"], 2);
    let s = server.stats();
    assert_eq!(
        (s.requests, s.completed, s.faults_injected, s.rejected_auth),
        (3, 1, 2, 0)
    );
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
async fn rate_limit_sends_retry_after_in_seconds_or_ms() {
    let faults = Faults::scripted([Fault::RateLimit, Fault::RateLimit])
        .with_retry_after(Duration::from_millis(1500));
    let server = TestServer::start(ServerConfig::default().with_faults(faults))
        .await
        .unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    server.set_faults(
        Faults::scripted([Fault::RateLimit])
            .with_retry_after(Duration::from_millis(1500))
            .with_retry_after_ms(true),
    );
    // The script position carries on: request 2 is still scripted.
    let resp = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(resp.status(), 200);
    server.reset_stats();
    let resp = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(server.stats().status_count(429), 1);
}

#[tokio::test]
async fn server_error_is_500_and_garbage_is_html() {
    let cfg = fixed(Fault::None).with_faults(Faults::scripted([
        Fault::ServerError,
        Fault::Garbage,
        Fault::Garbage,
    ]));
    let server = TestServer::start(cfg).await.unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("x", true)).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );
    for stream in [true, false] {
        let resp = post(&server, "/chat/completions", &chat_body("x", stream)).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err() && !text.contains("data:"));
    }
    let s = server.stats();
    assert_eq!((s.faults_injected, s.completed), (3, 0));
}

#[tokio::test]
async fn reset_mid_stream_leaves_an_incomplete_body() {
    let cfg = fixed(Fault::None).with_faults(Faults::scripted([
        Fault::ResetMidStream,
        Fault::ResetMidStream,
    ]));
    let server = TestServer::start(cfg).await.unwrap();
    for stream in [true, false] {
        let resp = post(&server, "/chat/completions", &chat_body("x", stream)).await;
        assert_eq!(resp.status(), 200);
        let mut resp = resp;
        let mut got = Vec::new();
        let end = loop {
            match resp.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(
            end.is_err(),
            "stream={stream}: the body must end in an error"
        );
        assert!(
            String::from_utf8_lossy(&got).contains("one two"),
            "stream={stream}: half the body first"
        );
    }
    let s = server.stats();
    assert_eq!((s.completed, s.faults_injected), (0, 2));
    assert!(
        server
            .wait_until(Duration::from_secs(5), |s| s.in_flight == 0)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn cut_before_done_ends_cleanly_without_finish_reason() {
    let server = TestServer::start(fixed(Fault::CutBeforeDone))
        .await
        .unwrap();
    let ev = events(
        &post(&server, "/chat/completions", &chat_body("x", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(!ev.is_empty());
    assert!(ev.iter().all(|e| e != "[DONE]" && !e.contains("\"stop\"")));
    assert_eq!(joined_deltas(&ev), "one two three four ");
    assert_eq!(server.stats().completed, 0);
}

#[tokio::test]
async fn malformed_sse_line_is_not_json_and_loses_a_delta() {
    let server = TestServer::start(fixed(Fault::MalformedSse)).await.unwrap();
    let ev = events(
        &post(&server, "/chat/completions", &chat_body("x", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(
        ev.iter()
            .filter(|e| serde_json::from_str::<Value>(e).is_err() && *e != "[DONE]")
            .count(),
        1
    );
    assert_ne!(
        joined_deltas(&ev),
        "one two three four five six seven eight"
    );
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn error_object_mid_stream_then_end() {
    let server = TestServer::start(fixed(Fault::ErrorMidStream))
        .await
        .unwrap();
    let ev = events(
        &post(&server, "/chat/completions", &chat_body("x", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    let last: Value = serde_json::from_str(ev.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(joined_deltas(&ev), "one two three four ");
}

#[tokio::test(start_paused = true)]
async fn stall_stops_sending_for_stall_for_then_finishes() {
    let faults = Faults::scripted([Fault::Stall]).with_stall_for(Duration::from_secs(90));
    let server = TestServer::start(fixed(Fault::None).with_faults(faults))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut resp = post(&server, "/chat/completions", &chat_body("x", true)).await;
    let mut got = String::new();
    let mut before_gap = String::new();
    let mut last = start;
    let mut longest_gap = Duration::ZERO;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let now = tokio::time::Instant::now();
        if now - last > longest_gap {
            longest_gap = now - last;
            before_gap = got.clone();
        }
        last = now;
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        longest_gap >= Duration::from_secs(90),
        "gap {longest_gap:?}"
    );
    assert!(before_gap.contains("one two") && !before_gap.contains("[DONE]"));
    assert_eq!(
        joined_deltas(&events(&got)),
        "one two three four five six seven eight"
    );
    assert_eq!(server.stats().completed, 1);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_head_and_serial_queues_requests() {
    let cfg = fixed(Fault::None)
        .with_latency(Duration::from_secs(10))
        .with_serial(true);
    let server = Arc::new(TestServer::start(cfg).await.unwrap());
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let resp = post(
                    &server,
                    "/chat/completions",
                    &chat_body(&format!("p{i}"), true),
                )
                .await;
                let head = start.elapsed();
                resp.text().await.unwrap();
                head
            })
        })
        .collect();
    let mut heads = Vec::new();
    for t in tasks {
        heads.push(t.await.unwrap());
    }
    heads.sort();
    // One at a time: the n-th head comes after n latencies, none before its turn.
    for (n, head) in heads.iter().enumerate() {
        let turn = Duration::from_secs(10 * (n as u64 + 1));
        assert!(
            *head >= turn && *head < turn + Duration::from_secs(5),
            "heads {heads:?}"
        );
    }
    let s = server.stats();
    assert_eq!(
        (s.requests, s.completed, s.max_in_flight, s.in_flight),
        (3, 3, 3, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_with_50_concurrent_requests() {
    let faults = Faults::fail_first(1, Fault::ServerError);
    let cfg = fixed(Fault::None)
        .with_faults(faults)
        .with_latency(Duration::from_millis(300));
    let server = Arc::new(TestServer::start(cfg).await.unwrap());
    let client = client();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (client, url) = (
                client.clone(),
                format!("{}/chat/completions", server.base_url()),
            );
            tokio::spawn(async move {
                // 10 prompts, 5 requests each.
                let resp = client
                    .post(url)
                    .json(&chat_body(&format!("prompt {}", i % 10), i % 2 == 0))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                resp.text().await.unwrap();
                status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += u64::from(t.await.unwrap() == 200);
    }
    let s = server
        .wait_until(Duration::from_secs(5), |s| s.in_flight == 0)
        .await
        .unwrap();
    assert_eq!((s.requests, s.completed, s.faults_injected), (50, 40, 10));
    assert_eq!(ok, 40);
    assert_eq!(s.status_count(200), 40);
    assert_eq!(s.status_count(500), 10);
    assert_eq!(s.per_prompt.len(), 10);
    assert!(s.per_prompt.values().all(|&n| n == 5));
    assert_eq!(s.repeats(), 40);
    assert!(
        s.max_in_flight > 1 && s.max_in_flight <= 50,
        "max in flight {}",
        s.max_in_flight
    );
}

#[tokio::test]
async fn drawn_faults_depend_on_seed_prompt_and_attempt_only() {
    let faults = Faults::none().with_rate(Fault::ServerError, 0.5);
    let run = |seed: u64| {
        let faults = faults.clone();
        async move {
            let server =
                TestServer::start(ServerConfig::default().with_faults(faults).with_seed(seed))
                    .await
                    .unwrap();
            let (client, url) = (client(), format!("{}/chat/completions", server.base_url()));
            let mut statuses = Vec::new();
            for i in 0..30 {
                let body = chat_body(&format!("p{}", i % 3), false);
                statuses.push(
                    client
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            statuses
        }
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert!(a.contains(&500) && a.contains(&200));
    assert_ne!(a, run(8).await);
}

#[tokio::test]
async fn a_client_leaving_a_stalled_body_is_counted_out_at_once() {
    let faults = Faults::scripted([Fault::Stall]).with_stall_for(Duration::from_secs(3600));
    let server = TestServer::start(fixed(Fault::None).with_faults(faults))
        .await
        .unwrap();
    let mut resp = post(&server, "/chat/completions", &chat_body("x", true)).await;
    assert!(resp.chunk().await.unwrap().is_some());
    assert_eq!(server.stats().in_flight, 1);
    drop(resp);
    let s = server
        .wait_until(Duration::from_secs(5), |s| s.in_flight == 0)
        .await;
    assert!(
        s.is_some(),
        "a stalled body outlived its client: {:?}",
        server.stats()
    );
}

#[tokio::test]
async fn shutdown_ends_a_stalled_body() {
    let faults = Faults::scripted([Fault::Stall]).with_stall_for(Duration::from_secs(3600));
    let server = TestServer::start(fixed(Fault::None).with_faults(faults))
        .await
        .unwrap();
    let resp = post(&server, "/chat/completions", &chat_body("x", true)).await;
    let body = tokio::spawn(resp.text());
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .unwrap()
        .unwrap();
    assert!(text.is_err());
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
async fn no_finish_reason_fault_keeps_the_text_and_the_done() {
    let cfg = fixed(Fault::None).with_faults(Faults::scripted([Fault::NoFinishReason; 2]));
    let server = TestServer::start(cfg).await.unwrap();
    let ev = events(
        &post(&server, "/chat/completions", &chat_body("x", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(
        joined_deltas(&ev),
        "one two three four five six seven eight"
    );
    assert!(ev.iter().all(|e| !e.contains("\"stop\"")));
    let v: Value = post(&server, "/chat/completions", &chat_body("x", false))
        .await
        .json()
        .await
        .unwrap();
    assert!(v["choices"][0]["finish_reason"].is_null());
    assert_eq!(server.stats().completed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_newer_request_cuts_the_running_stream_with_done_and_no_finish_reason() {
    let cfg = fixed(Fault::None)
        .with_latency(Duration::from_secs(4))
        .with_cut_on_arrival(true);
    let server = Arc::new(TestServer::start(cfg).await.unwrap());
    let first = {
        let server = server.clone();
        tokio::spawn(async move {
            post(&server, "/chat/completions", &chat_body("a", true))
                .await
                .text()
                .await
                .unwrap()
        })
    };
    server
        .wait_until(Duration::from_secs(1), |s| s.requests == 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = post(&server, "/chat/completions", &chat_body("b", true))
        .await
        .text()
        .await
        .unwrap();
    let (first, second) = (events(&first.await.unwrap()), events(&second));
    assert_eq!(first.last().unwrap(), "[DONE]");
    assert!(first.iter().all(|e| !e.contains("\"stop\"")), "{first:?}");
    assert_ne!(
        joined_deltas(&first),
        "one two three four five six seven eight"
    );
    assert!(second.iter().any(|e| e.contains("\"stop\"")));
    let s = server.stats();
    assert_eq!((s.cut_streams, s.completed, s.max_in_flight), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn token_bucket_refuses_with_retry_after_and_sends_ratelimit_headers() {
    let cfg = ServerConfig::default()
        .with_rate_limit(crate::RateLimit::requests(2, Duration::from_secs(1)));
    let server = TestServer::start(cfg).await.unwrap();
    let r1 = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(r1.status(), 200);
    let h = r1.headers();
    assert_eq!(h["x-ratelimit-limit-requests"], "2");
    assert_eq!(h["x-ratelimit-remaining-requests"], "1");
    assert_eq!(h["x-ratelimit-reset-requests"], "500ms");
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("x", false))
            .await
            .status(),
        200
    );
    let r3 = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(r3.status(), 429);
    let h = r3.headers();
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert_eq!(h["retry-after"], "1");
    assert_eq!(h["retry-after-ms"], "500");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("x", false))
            .await
            .status(),
        200
    );
    let s = server.stats();
    assert_eq!((s.rate_limited, s.status_count(429)), (1, 1));
    assert_eq!(go_duration(Duration::from_millis(360)), "360ms");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
}

#[tokio::test]
async fn a_server_goes_away_and_comes_back_on_the_same_port() {
    let mut server = TestServer::start(ServerConfig::default()).await.unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let send = || client().post(&url).json(&chat_body("x", false)).send();
    assert_eq!(send().await.unwrap().status(), 200);
    server.go_away().await;
    let err = send().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    server.come_back().await.unwrap();
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(server.stats().completed, 2);
}
