//! The HTTP engine against atk-testkit's loopback server: every injected fault ends with the
//! full reply or the right typed error, with the server's request counts checked.

use crate::common;

use std::time::Duration;

use atk_engine::{
    ConcurrencyLimit, CostCounter, Error, Pricing, Request, RetryConfig, Timeouts, build_engine,
};
use atk_testkit::{Fault, Faults, RateLimit, ReplyMode, ServerConfig, TestServer};
use common::{KEY, TEXT, chat, engine_cfg, ms, server_cfg};
use tokio::time::Instant;

async fn check_fault(fault: Fault, stream: bool, kind: &str) {
    let server = TestServer::start(server_cfg().with_faults(Faults::scripted([fault])))
        .await
        .unwrap();
    let cost = CostCounter::new("t", Pricing::default());
    let engine = build_engine(engine_cfg(&server).with_stream(stream), vec![cost.clone()]).unwrap();
    let reply = engine
        .call(chat("hello"))
        .await
        .unwrap_or_else(|e| panic!("{fault:?} stream={stream}: {e}"));
    assert_eq!(reply.text, TEXT, "{fault:?} stream={stream}");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(reply.timing.attempts, 2);
    let s = server.stats();
    assert_eq!(
        (s.requests, s.completed, s.faults_injected),
        (2, 1, 1),
        "{fault:?} stream={stream}"
    );
    let totals = cost.snapshot();
    assert_eq!(
        totals.retries.get(kind),
        Some(&1),
        "{fault:?} stream={stream}: {:?}",
        totals.retries
    );
    assert_eq!((totals.requests, totals.failed_requests), (1, 0));
}

#[tokio::test]
async fn every_fault_is_retried_to_the_full_reply() {
    for (fault, kind) in [
        (Fault::RateLimit, "rate_limited"),
        (Fault::ServerError, "server_error"),
        (Fault::ResetMidStream, "incomplete_reply"),
        (Fault::MalformedSse, "malformed_reply"),
        (Fault::Garbage, "malformed_reply"),
        (Fault::CutBeforeDone, "incomplete_reply"),
        (Fault::ErrorMidStream, "malformed_reply"),
        (Fault::NoFinishReason, "cut_stream"),
    ] {
        check_fault(fault, true, kind).await;
    }
    for (fault, kind) in [
        (Fault::ServerError, "server_error"),
        (Fault::ResetMidStream, "incomplete_reply"),
        (Fault::MalformedSse, "malformed_reply"),
        (Fault::Garbage, "malformed_reply"),
        (Fault::CutBeforeDone, "malformed_reply"),
        (Fault::ErrorMidStream, "malformed_reply"),
        (Fault::NoFinishReason, "cut_stream"),
    ] {
        check_fault(fault, false, kind).await;
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    for as_ms in [false, true] {
        let faults = Faults::scripted([Fault::RateLimit])
            .with_retry_after(Duration::from_secs(30))
            .with_retry_after_ms(as_ms);
        let server = TestServer::start(server_cfg().with_faults(faults))
            .await
            .unwrap();
        let engine = build_engine(engine_cfg(&server), vec![]).unwrap();
        let t0 = Instant::now();
        let reply = engine.call(chat("hello")).await.unwrap();
        let waited = t0.elapsed();
        assert_eq!(reply.text, TEXT);
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "ms={as_ms}: {waited:?}"
        );
        assert_eq!(server.stats().requests, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn stalled_stream_hits_the_idle_timeout_and_is_retried() {
    let faults = Faults::scripted([Fault::Stall]).with_stall_for(Duration::from_secs(600));
    let server = TestServer::start(server_cfg().with_faults(faults))
        .await
        .unwrap();
    let cost = CostCounter::new("t", Pricing::default());
    let timeouts = Timeouts::default().with_idle(Duration::from_secs(5));
    let engine = build_engine(
        engine_cfg(&server).with_timeouts(timeouts),
        vec![cost.clone()],
    )
    .unwrap();
    let t0 = Instant::now();
    let reply = engine.call(chat("hello")).await.unwrap();
    assert_eq!(reply.text, TEXT);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert_eq!(cost.snapshot().retries.get("timeout"), Some(&1));
    assert_eq!(server.stats().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn a_serial_server_queue_is_not_a_timeout() {
    // Like llama.cpp: one request at a time, 30 s each; the 8th waits 4 minutes for its first byte.
    let server = TestServer::start(
        server_cfg()
            .with_serial(true)
            .with_latency(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let engine = build_engine(engine_cfg(&server).with_concurrency_limit(8usize), vec![]).unwrap();
    let calls = (0..8).map(|i| engine.call(chat(&format!("p{i}"))));
    let replies = futures_util::future::join_all(calls).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.text == TEXT))
    );
    assert_eq!(server.stats().requests, 8);
}

#[tokio::test]
async fn server_errors_exhaust_bounded_retries() {
    let server = TestServer::start(
        server_cfg().with_faults(Faults::none().with_rate(Fault::ServerError, 1.0)),
    )
    .await
    .unwrap();
    let cfg = engine_cfg(&server).with_retry(
        RetryConfig::default()
            .with_max_attempts(3)
            .with_base_delay(ms(1))
            .with_max_delay(ms(2)),
    );
    let engine = build_engine(cfg, vec![]).unwrap();
    let err = engine.call(chat("hello")).await.unwrap_err();
    assert!(
        matches!(&err, Error::RetriesExhausted { attempts: 3, last, .. } if last.is_transient()),
        "{err}"
    );
    assert!(!err.is_fatal());
    assert_eq!(server.stats().requests, 3);
}

#[tokio::test]
async fn context_overflow_fails_only_that_call_with_the_server_message() {
    let server = TestServer::start(server_cfg().with_context_limit(20))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&server), vec![]).unwrap();
    let err = engine
        .call(chat("short").with_param("max_tokens", 100))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Rejected { status: 400, .. }), "{err}");
    assert!(err.to_string().contains("context_length_exceeded"), "{err}");
    assert!(!err.is_fatal());
    // The engine is still alive.
    assert_eq!(
        engine
            .call(chat("short").with_param("max_tokens", 5))
            .await
            .unwrap()
            .text,
        TEXT
    );
    // Streamed, the server answered an empty 200; the retry went unstreamed and got the 400.
    assert_eq!(server.stats().requests, 3);
}

#[tokio::test]
async fn wrong_key_stops_the_engine_within_two_windows() {
    let server = TestServer::start(
        server_cfg()
            .with_api_key("sk-the-right-one")
            .with_latency(ms(50)),
    )
    .await
    .unwrap();
    let cfg = engine_cfg(&server)
        .with_api_key(KEY)
        .with_concurrency_limit(8usize);
    let engine = build_engine(cfg, vec![]).unwrap();
    let t0 = std::time::Instant::now();
    let calls = (0..200).map(|i| engine.call(chat(&format!("p{i}"))));
    let results = futures_util::future::join_all(calls).await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::AuthRefused { status: 401, .. })))
        .count();
    let dead = results
        .iter()
        .filter(|r| matches!(r, Err(Error::EngineDead { .. })))
        .count();
    assert!(
        refused >= 1 && refused + dead == 200,
        "refused {refused} dead {dead}"
    );
    assert!(results.iter().all(|r| r.as_ref().unwrap_err().is_fatal()));
    let s = server.stats();
    assert!(
        s.requests <= 16,
        "{} requests sent with a refused key",
        s.requests
    );
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(!format!("{e} {e:?}").contains(KEY));
    }
    assert!(
        results[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("invalid_api_key")
            || refused > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_sees_more_than_the_limit() {
    let server = TestServer::start(server_cfg().with_latency(ms(20)))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&server).with_concurrency_limit(5usize), vec![]).unwrap();
    let calls = (0..60).map(|i| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.call(chat(&format!("p{i}"))).await })
    });
    let calls: Vec<_> = calls.collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().text, TEXT);
    }
    let s = server.stats();
    assert_eq!(s.requests, 60);
    assert_eq!(
        s.max_in_flight, 5,
        "the bound is used fully and never exceeded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_waiting_out_its_backoff_holds_no_slot() {
    let server =
        TestServer::start(server_cfg().with_faults(Faults::scripted([Fault::ServerError])))
            .await
            .unwrap();
    let retry = RetryConfig::default().with_base_delay(Duration::from_secs(10));
    let engine = build_engine(
        engine_cfg(&server)
            .with_concurrency_limit(1usize)
            .with_retry(retry),
        vec![],
    )
    .unwrap();
    let t0 = Instant::now();
    let first = {
        let engine = engine.clone();
        tokio::spawn(async move { (engine.call(chat("a")).await, Instant::now()) })
    };
    server
        .wait_until(Duration::from_secs(1), |s| s.requests == 1)
        .await
        .unwrap();
    let second = engine.call(chat("b")).await.unwrap();
    let second_done = t0.elapsed();
    let (first, first_done) = first.await.unwrap();
    assert_eq!(
        (first.unwrap().text, second.text),
        (TEXT.to_string(), TEXT.to_string())
    );
    // A 500 backs off at most 1 s (half of it at least, with jitter).
    assert!(second_done < ms(400), "{second_done:?}");
    assert!(first_done - t0 >= ms(500));
}

#[tokio::test(start_paused = true)]
async fn rate_limits_shrink_the_window_which_regrows() {
    // A real limit: 4 requests per second, with x-ratelimit headers. The first 8 go out
    // together (nothing known yet); those refused with the bucket used up shrink the window.
    let server = TestServer::start(
        server_cfg()
            .with_rate_limit(RateLimit::requests(4, Duration::from_secs(1)))
            .with_latency(ms(100)),
    )
    .await
    .unwrap();
    let limit = ConcurrencyLimit::new(8);
    let engine =
        build_engine(engine_cfg(&server).with_shared_limit(limit.clone()), vec![]).unwrap();
    let replies =
        futures_util::future::join_all((0..8).map(|i| engine.call(chat(&format!("p{i}"))))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.text == TEXT))
    );
    assert!(limit.window() < 8, "window {}", limit.window());
    let refused = server.stats().status_count(429);
    for i in 0..40 {
        engine.call(chat(&format!("q{i}"))).await.unwrap();
    }
    assert_eq!(limit.window(), 8);
    // Paced from the headers: the 40 later calls met no 429.
    assert_eq!(server.stats().status_count(429), refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_truncated_reply_is_ever_accepted() {
    let faults = Faults::none()
        .with_rate(Fault::ServerError, 0.05)
        .with_rate(Fault::ResetMidStream, 0.05)
        .with_rate(Fault::MalformedSse, 0.05)
        .with_rate(Fault::Garbage, 0.05)
        .with_rate(Fault::CutBeforeDone, 0.05)
        .with_rate(Fault::ErrorMidStream, 0.05);
    let reply = ReplyMode::func(|body| {
        format!(
            "full reply to <{}> {TEXT} end.",
            body["messages"][0]["content"].as_str().unwrap_or("")
        )
    });
    let server = TestServer::start(
        ServerConfig::default()
            .with_reply(reply)
            .with_faults(faults)
            .with_seed(11)
            .with_stream_chunks(6),
    )
    .await
    .unwrap();
    let retry = RetryConfig::default()
        .with_max_attempts(12)
        .with_base_delay(ms(1))
        .with_max_delay(ms(4));
    let engine = build_engine(
        engine_cfg(&server)
            .with_concurrency_limit(20usize)
            .with_retry(retry),
        vec![],
    )
    .unwrap();
    let calls = (0..200).map(|i| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let prompt = format!("prompt number {i}");
            let expected = format!("full reply to <{prompt}> {TEXT} end.");
            (engine.call(chat(&prompt)).await, expected)
        })
    });
    let calls: Vec<_> = calls.collect();
    let mut ok = 0;
    for c in calls {
        let (result, expected) = c.await.unwrap();
        let reply = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.text, expected);
        ok += 1;
    }
    let s = server.stats();
    assert_eq!(ok, 200);
    assert_eq!(s.completed, 200);
    assert!(s.faults_injected > 30, "faults {}", s.faults_injected);
    assert_eq!(s.requests, s.completed + s.faults_injected);
}

#[tokio::test]
async fn usage_from_the_server_or_estimated() {
    for with_usage in [true, false] {
        let server = TestServer::start(server_cfg().with_usage_in_stream(with_usage))
            .await
            .unwrap();
        let cost = CostCounter::new("t", Pricing::new(1.0, 1.0));
        let engine = build_engine(engine_cfg(&server), vec![cost.clone()]).unwrap();
        let reply = engine.call(chat("count these five words")).await.unwrap();
        assert_eq!(reply.usage.estimated, !with_usage);
        assert_eq!(reply.usage.completion_tokens, 8, "{with_usage}");
        assert!(reply.usage.prompt_tokens >= 4);
        let t = cost.snapshot();
        assert_eq!(
            (t.requests, t.estimated_replies, t.completion_tokens),
            (1, u64::from(!with_usage), 8)
        );
    }
}

#[tokio::test]
async fn completion_mode_and_non_streaming() {
    let server = TestServer::start(server_cfg()).await.unwrap();
    for stream in [true, false] {
        let engine = build_engine(engine_cfg(&server).with_stream(stream), vec![]).unwrap();
        let reply = engine
            .call(Request::completion("Once upon a time").with_param("max_tokens", 50))
            .await
            .unwrap();
        assert_eq!(reply.text, TEXT);
        assert!(!reply.usage.estimated);
    }
}

#[tokio::test]
async fn wrong_base_url_is_not_found_and_kills_the_engine() {
    let server = TestServer::start(server_cfg()).await.unwrap();
    let base = server.base_url().replace("/v1", "/nope/v1");
    let engine = build_engine(engine_cfg(&server).with_base_url(base), vec![]).unwrap();
    let err = engine.call(chat("hello")).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { url, .. } if url.ends_with("/nope/v1/chat/completions")),
        "{err}"
    );
    assert!(err.is_fatal() && err.to_string().contains("check base_url and model"));
    let next = engine.call(chat("again")).await.unwrap_err();
    assert!(matches!(next, Error::EngineDead { .. }), "{next}");
}
