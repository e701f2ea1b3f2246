//! Each injected fault and the rate limits, as a client sees them.

use super::*;

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

#[tokio::test(start_paused = true)]
async fn a_quantized_limit_states_per_minute_headers_and_enforces_per_second() {
    // 6000/min stated, enforced as a bucket of 2 refilled over 20 ms (100/s).
    let cfg = ServerConfig::default().with_rate_limit(
        crate::RateLimit::requests(2, Duration::from_millis(20))
            .with_stated(6000, Duration::from_secs(60)),
    );
    let server = TestServer::start(cfg).await.unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = post(&server, "/chat/completions", &chat_body("x", false)).await;
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    // The bucket holds 2: the third is refused at once though the headers show plenty left.
    assert_eq!(statuses, [200, 200, 429]);
    let h = last.unwrap().headers().clone();
    assert_eq!(h["x-ratelimit-limit-requests"], "6000");
    assert_eq!(h["x-ratelimit-remaining-requests"], "5998");
    // Two used, refilled at the stated 100/s: 20 ms.
    assert_eq!(h["x-ratelimit-reset-requests"], "20ms");
    assert_eq!(h["retry-after-ms"], "10");
    // A minute later what was used has left the stated window.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let r = post(&server, "/chat/completions", &chat_body("x", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "5999");
}
