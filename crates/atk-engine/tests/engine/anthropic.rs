//! The HTTP engine in the Anthropic dialect against atk-testkit's Messages route: whole
//! replies only after `message_stop` with a stop reason, 529 and 429 waited out with their
//! headers, pacing from `anthropic-ratelimit-*`, cached prompt tokens counted and priced; and
//! OpenAI's automatic caching counted the same way.

use crate::common;

use std::time::Duration;

use atk_engine::{
    ConcurrencyLimit, CostCounter, Dialect, Error, Message, Pricing, Request, build_engine,
};
use atk_testkit::{Fault, Faults, RateLimit, ReplyMode, ServerConfig, TestServer};
use common::{KEY, TEXT, chat, engine_cfg, ms, server_cfg};
use tokio::time::Instant;

fn anthropic(server: &TestServer) -> atk_engine::EngineConfig {
    engine_cfg(server)
        .with_dialect(Dialect::Anthropic)
        .with_api_key(KEY)
}

fn keyed() -> ServerConfig {
    server_cfg().with_api_key(KEY)
}

#[tokio::test]
async fn replies_streamed_or_not_come_whole_with_their_usage() {
    let server = TestServer::start(keyed()).await.unwrap();
    for stream in [true, false] {
        let engine = build_engine(anthropic(&server).with_stream(stream), vec![]).unwrap();
        let reply = engine
            .call(chat("hello").with_param("max_tokens", 100))
            .await
            .unwrap_or_else(|e| panic!("stream={stream}: {e}"));
        assert_eq!(reply.text, TEXT, "stream={stream}");
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
        assert_eq!(reply.model, "m");
        // The server counts words: "user: hello" is 2, the reply 8.
        assert!(!reply.usage.estimated);
        assert_eq!(
            (reply.usage.prompt_tokens, reply.usage.completion_tokens),
            (2, 8)
        );
    }
    // Sent with x-api-key (a bearer token would be refused) and anthropic-version.
    assert_eq!(server.stats().rejected_auth, 0);
    assert_eq!(server.stats().completed, 2);
}

#[tokio::test]
async fn a_reply_cut_by_max_tokens_is_length() {
    let server = TestServer::start(keyed().with_honor_max_tokens(true))
        .await
        .unwrap();
    let engine = build_engine(anthropic(&server), vec![]).unwrap();
    let reply = engine
        .call(chat("hello").with_param("max_tokens", 3))
        .await
        .unwrap();
    assert_eq!(reply.text, "one two three");
    assert_eq!(reply.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn a_wrong_key_and_a_completion_prompt_fail_fast() {
    let server = TestServer::start(keyed()).await.unwrap();
    let engine = build_engine(anthropic(&server).with_api_key("sk-wrong"), vec![]).unwrap();
    let err = engine.call(chat("hello")).await.unwrap_err();
    assert!(
        matches!(err, Error::AuthRefused { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("sk-wrong"));
    let engine = build_engine(anthropic(&server), vec![]).unwrap();
    let err = engine
        .call(Request::completion("once upon"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("no completion mode")),
        "{err}"
    );
    assert_eq!(server.stats().completed, 0);
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_is_never_kept() {
    for (fault, stream, kind) in [
        (Fault::CutBeforeDone, true, "incomplete_reply"),
        (Fault::ResetMidStream, true, "incomplete_reply"),
        (Fault::NoFinishReason, true, "cut_stream"),
        (Fault::MalformedSse, true, "malformed_reply"),
        (Fault::ErrorMidStream, true, "server_error"),
        (Fault::NoFinishReason, false, "cut_stream"),
        (Fault::CutBeforeDone, false, "malformed_reply"),
        (Fault::ServerError, false, "server_error"),
    ] {
        let server = TestServer::start(keyed().with_faults(Faults::scripted([fault])))
            .await
            .unwrap();
        let cost = CostCounter::new("t", Pricing::default());
        let engine =
            build_engine(anthropic(&server).with_stream(stream), vec![cost.clone()]).unwrap();
        let reply = engine
            .call(chat("hello"))
            .await
            .unwrap_or_else(|e| panic!("{fault:?} stream={stream}: {e}"));
        assert_eq!(reply.text, TEXT, "{fault:?} stream={stream}");
        assert_eq!(reply.timing.attempts, 2, "{fault:?} stream={stream}");
        assert_eq!(
            cost.snapshot().retries.get(kind),
            Some(&1),
            "{fault:?} stream={stream}: {:?}",
            cost.snapshot().retries
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_truncated_reply_is_ever_accepted() {
    let faults = Faults::none()
        .with_rate(Fault::CutBeforeDone, 0.08)
        .with_rate(Fault::ResetMidStream, 0.05)
        .with_rate(Fault::MalformedSse, 0.05)
        .with_rate(Fault::ErrorMidStream, 0.05)
        .with_rate(Fault::Overloaded, 0.05);
    let reply = ReplyMode::func(|body| {
        format!(
            "full reply to <{}> {TEXT} end.",
            body["messages"][0]["content"].as_str().unwrap_or("")
        )
    });
    let server = TestServer::start(keyed().with_faults(faults).with_reply(reply))
        .await
        .unwrap();
    let engine = build_engine(anthropic(&server).with_concurrency_limit(8usize), vec![]).unwrap();
    let calls = (0..120).map(|i| {
        let engine = engine.clone();
        async move { (i, engine.call(chat(&format!("p{i}"))).await) }
    });
    for (i, result) in futures_util::future::join_all(calls).await {
        let reply = result.unwrap_or_else(|e| panic!("p{i}: {e}"));
        assert_eq!(reply.text, format!("full reply to <p{i}> {TEXT} end."));
    }
    assert!(server.stats().faults_injected > 10);
}

#[tokio::test(start_paused = true)]
async fn overloaded_529_and_429_are_waited_out_as_their_retry_after_says() {
    for (fault, wait) in [(Fault::Overloaded, 20), (Fault::RateLimit, 30)] {
        let faults = Faults::scripted([fault]).with_retry_after(Duration::from_secs(wait));
        let server = TestServer::start(keyed().with_faults(faults))
            .await
            .unwrap();
        let cost = CostCounter::new("t", Pricing::default());
        let engine = build_engine(anthropic(&server), vec![cost.clone()]).unwrap();
        let t0 = Instant::now();
        let reply = engine.call(chat("hello")).await.unwrap();
        let waited = t0.elapsed();
        assert_eq!(reply.text, TEXT);
        assert!(
            waited >= Duration::from_secs(wait) && waited < Duration::from_secs(wait + 1),
            "{fault:?}: {waited:?}"
        );
        let status = if fault == Fault::Overloaded { 529 } else { 429 };
        assert_eq!(server.stats().status_count(status), 1);
        let kind = if fault == Fault::Overloaded {
            "unavailable"
        } else {
            "rate_limited"
        };
        assert_eq!(cost.snapshot().retries.get(kind), Some(&1), "{fault:?}");
    }
}

#[tokio::test]
async fn anthropic_rate_limit_headers_pace_the_engine() {
    // 4 requests per second, told in anthropic-ratelimit-* headers: after the first burst,
    // the engine paces itself and meets no more 429s.
    let server = TestServer::start(
        keyed()
            .with_rate_limit(RateLimit::requests(4, Duration::from_secs(1)))
            .with_latency(ms(100)),
    )
    .await
    .unwrap();
    let limit = ConcurrencyLimit::new(8);
    let engine = build_engine(anthropic(&server).with_shared_limit(limit.clone()), vec![]).unwrap();
    let replies =
        futures_util::future::join_all((0..8).map(|i| engine.call(chat(&format!("p{i}"))))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.text == TEXT))
    );
    let refused = server.stats().status_count(429);
    assert!(refused > 0, "the first burst went over the limit");
    for i in 0..16 {
        engine.call(chat(&format!("q{i}"))).await.unwrap();
    }
    assert_eq!(server.stats().status_count(429), refused);
}

fn few_shot(item: &str) -> Request {
    Request::chat(vec![
        Message::new(
            "system",
            "You write short poems about the sea and its tides.",
        ),
        Message::new("user", "Example: waves"),
        Message::new("assistant", "Foam."),
        Message::new("user", format!("Now: {item}")),
    ])
    .with_shared_prefix(3)
}

#[tokio::test]
async fn cached_prompt_tokens_are_counted_and_priced_apart() {
    // Prompt words: system 11 ("system:" + 10), "user: Example: waves" 3, "assistant: Foam." 2,
    // "user: Now: <item>" 3. The prefix (16 words) is written once, then read.
    let pricing = Pricing {
        cached_input_per_million: Some(0.1),
        cache_write_per_million: Some(1.25),
        ..Pricing::new(1.0, 2.0)
    };
    let server = TestServer::start(keyed()).await.unwrap();
    let cost = CostCounter::new("t", pricing);
    let engine = build_engine(
        anthropic(&server).with_prompt_cache(true),
        vec![cost.clone()],
    )
    .unwrap();
    for item in ["moon", "stars", "salt"] {
        engine.call(few_shot(item)).await.unwrap();
    }
    let t = cost.snapshot();
    assert_eq!(t.prompt_tokens, 3 * 19);
    assert_eq!((t.cache_write_tokens, t.cached_prompt_tokens), (16, 32));
    let expected = (3.0 * 3.0 + 16.0 * 1.25 + 32.0 * 0.1 + 3.0 * 8.0 * 2.0) / 1e6;
    assert!((t.cost_usd - expected).abs() < 1e-15, "{}", t.cost_usd);

    // Caching off: nothing marked, nothing cached, every token at the input price.
    let cost = CostCounter::new("t", pricing);
    let engine = build_engine(anthropic(&server), vec![cost.clone()]).unwrap();
    engine.call(few_shot("tide")).await.unwrap();
    let t = cost.snapshot();
    assert_eq!((t.cache_write_tokens, t.cached_prompt_tokens), (0, 0));
    assert!((t.cost_usd - (19.0 + 16.0) / 1e6).abs() < 1e-15);
}

#[tokio::test]
async fn openai_cached_tokens_are_counted_and_priced_apart() {
    let server = TestServer::start(server_cfg().with_prompt_cache(true))
        .await
        .unwrap();
    let pricing = Pricing {
        cached_input_per_million: Some(0.5),
        ..Pricing::new(1.0, 2.0)
    };
    let cost = CostCounter::new("t", pricing);
    let engine = build_engine(engine_cfg(&server), vec![cost.clone()]).unwrap();
    for item in ["moon", "stars", "salt"] {
        engine.call(few_shot(item)).await.unwrap();
    }
    let t = cost.snapshot();
    // OpenAI caches by itself: the second and third calls read the 16-word prefix.
    assert_eq!((t.cached_prompt_tokens, t.cache_write_tokens), (32, 0));
    let expected = ((3.0 * 19.0 - 32.0) + 32.0 * 0.5 + 3.0 * 8.0 * 2.0) / 1e6;
    assert!((t.cost_usd - expected).abs() < 1e-15, "{}", t.cost_usd);
}
