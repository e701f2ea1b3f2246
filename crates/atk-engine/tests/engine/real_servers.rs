//! What real servers do that test servers tend not to (DESIGN.md, "Real servers"), taught to
//! atk-testkit and met by the engine: cut streams, one-at-a-time servers, over-long prompts,
//! token-bucket rate limits, outages.

use crate::common;

use std::time::Duration;

use atk_engine::{ConcurrencyLimit, CostCounter, EngineConfig, Pricing, RetryConfig, build_engine};
use atk_testkit::{Fault, Faults, RateLimit, TestServer};
use common::{TEXT, chat, engine_cfg, ms, server_cfg};

const N: usize = 8;

#[tokio::test]
async fn done_without_finish_reason_is_not_a_complete_reply_unless_opted_out() {
    for stream in [true, false] {
        let faults = Faults::scripted([Fault::NoFinishReason]);
        let server = TestServer::start(server_cfg().with_faults(faults))
            .await
            .unwrap();
        let cost = CostCounter::new("t", Pricing::default());
        let engine =
            build_engine(engine_cfg(&server).with_stream(stream), vec![cost.clone()]).unwrap();
        let reply = engine.call(chat("hello")).await.unwrap();
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"), "{stream}");
        assert_eq!(reply.timing.attempts, 2, "stream={stream}: retried");
        assert_eq!(cost.snapshot().retries.get("cut_stream"), Some(&1));

        // The documented opt-out, for a server that never sends a finish_reason.
        server.set_faults(Faults::scripted([Fault::NoFinishReason]));
        server.reset_stats();
        let engine = build_engine(
            engine_cfg(&server)
                .with_stream(stream)
                .with_require_finish_reason(false),
            vec![],
        )
        .unwrap();
        let reply = engine.call(chat("hello")).await.unwrap();
        assert_eq!((reply.text.as_str(), reply.finish_reason), (TEXT, None));
        assert_eq!(server.stats().requests, 1);
    }
}

#[tokio::test]
async fn a_server_cutting_the_running_stream_never_yields_a_cut_reply() {
    // llama-cpp-python 0.3: one request at a time; a new request ends the running stream
    // with `data: [DONE]` and no finish_reason.
    let server = TestServer::start(server_cfg().with_cut_on_arrival(true).with_latency(ms(40)))
        .await
        .unwrap();
    let cost = CostCounter::new("t", Pricing::default());
    let limit = ConcurrencyLimit::new(4);
    let engine = build_engine(
        engine_cfg(&server)
            .with_shared_limit(limit.clone())
            .with_retry(
                RetryConfig::default()
                    .with_max_attempts(20)
                    .with_base_delay(ms(1))
                    .with_max_delay(ms(5)),
            ),
        vec![cost.clone()],
    )
    .unwrap();
    let calls = (0..N).map(|i| engine.call(chat(&format!("p{i}"))));
    let replies = futures_util::future::join_all(calls).await;
    for r in &replies {
        let r = r.as_ref().unwrap();
        assert_eq!(
            (r.text.as_str(), r.finish_reason.as_deref()),
            (TEXT, Some("stop"))
        );
    }
    let s = server.stats();
    let totals = cost.snapshot();
    assert!(s.cut_streams > 0, "{s:?}");
    assert_eq!(s.completed, N as u64, "{s:?} {totals:?}");
    assert_eq!(
        totals.retries.get("cut_stream").copied(),
        Some(s.cut_streams)
    );
    // A congestion signal: the window fell to 1, and the counters say why.
    assert_eq!(limit.window(), 1);
    assert!(
        totals.cut_while_busy > 0 && totals.cut_window == Some(1),
        "{totals:?}"
    );
    assert!(s.cut_streams <= 6, "cuts stop once the window is 1: {s:?}");
    // ... and stays there: another batch is served one at a time, with no cut.
    let before = s.cut_streams;
    let calls = (0..N).map(|i| engine.call(chat(&format!("q{i}"))));
    assert!(
        futures_util::future::join_all(calls)
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!((server.stats().cut_streams, limit.window()), (before, 1));
}

#[tokio::test]
async fn an_over_long_prompt_fails_at_once_with_the_servers_reason() {
    // llama-cpp-python: streamed, an empty 200; unstreamed, 400 context_length_exceeded.
    let server = TestServer::start(server_cfg().with_context_limit(20))
        .await
        .unwrap();
    for stream in [true, false] {
        server.reset_stats();
        let cost = CostCounter::new("t", Pricing::default());
        let engine =
            build_engine(engine_cfg(&server).with_stream(stream), vec![cost.clone()]).unwrap();
        let err = engine
            .call(chat("a prompt").with_param("max_tokens", 100))
            .await
            .unwrap_err();
        assert!(err.is_context_overflow() && !err.is_fatal(), "{err}");
        assert!(
            err.to_string()
                .contains("maximum context length is 20 tokens"),
            "{err}"
        );
        // One empty streamed answer, then the unstreamed 400; nothing more.
        assert_eq!(server.stats().requests, 1 + u64::from(stream), "{stream}");
        let retries = cost.snapshot().retries;
        assert_eq!(
            retries.get("malformed_reply").copied().unwrap_or(0),
            u64::from(stream)
        );
        // The engine carries on, streaming again.
        let ok = engine.call(chat("short").with_param("max_tokens", 5)).await;
        assert_eq!(ok.unwrap().text, TEXT);
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_that_does_not_show_the_limit_used_up_delays_only_its_own_retry() {
    // A stray 429 (no x-ratelimit headers) asking for 30 s: the other calls go on.
    let faults = Faults::scripted([Fault::RateLimit])
        .with_retry_after(Duration::from_secs(30))
        .with_retry_after_ms(true);
    let server = TestServer::start(server_cfg().with_faults(faults).with_latency(ms(100)))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&server), vec![]).unwrap();
    let t0 = tokio::time::Instant::now();
    let calls = (0..8).map(|i| {
        let engine = engine.clone();
        async move {
            engine.call(chat(&format!("p{i}"))).await.unwrap();
            t0.elapsed()
        }
    });
    let mut times = futures_util::future::join_all(calls).await;
    times.sort();
    assert!(times[6] < Duration::from_secs(1), "{times:?}");
    assert!(times[7] >= Duration::from_secs(30), "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn a_real_rate_limit_is_met_with_few_429s_and_most_of_its_throughput() {
    // A token bucket of 10 requests refilled over 1 s, x-ratelimit headers on every response.
    let server = TestServer::start(
        server_cfg()
            .with_rate_limit(RateLimit::requests(10, Duration::from_secs(1)))
            .with_latency(ms(50)),
    )
    .await
    .unwrap();
    let engine = build_engine(engine_cfg(&server).with_concurrency_limit(8usize), vec![]).unwrap();
    let t0 = tokio::time::Instant::now();
    let calls = (0..100).map(|i| engine.call(chat(&format!("p{i}"))));
    let replies = futures_util::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    let elapsed = t0.elapsed().as_secs_f64();
    // The limit's own time: the first 10 at once, then 10 per second.
    let ideal = 9.0;
    let s = server.stats();
    let refused = s.status_count(429) as f64 / s.requests as f64;
    assert!(ideal / elapsed >= 0.9, "{elapsed} s for {ideal} s of limit");
    assert!(refused <= 0.05, "{refused} of requests refused: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_90_s_outage_is_waited_out_without_spending_attempts() {
    // A replica restarts mid-run: gone for 90 s, back on the same port.
    let mut server = TestServer::start(server_cfg().with_latency(ms(50)))
        .await
        .unwrap();
    let cost = CostCounter::new("t", Pricing::default());
    let retry = RetryConfig::default()
        .with_max_attempts(3)
        .with_base_delay(ms(10))
        .with_max_delay(ms(50));
    let engine = build_engine(engine_cfg(&server).with_retry(retry), vec![cost.clone()]).unwrap();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.call(chat(&format!("p{i}"))).await })
        })
        .collect();
    server
        .wait_until(Duration::from_secs(60), |s| s.completed >= 10)
        .await
        .unwrap();
    assert_eq!(cost.outage(), None, "no outage while it answers");
    server.go_away().await;
    let gone = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(90)).await;
    // The observers were told: what status.json shows while the endpoint is down.
    let down = cost
        .outage()
        .expect("the outage is recorded while it lasts");
    assert!(!down.error.is_empty(), "{down:?}");
    server.come_back().await.unwrap();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().text, TEXT);
    }
    assert_eq!(cost.outage(), None, "the endpoint answers again");
    assert_eq!(cost.snapshot().outages, 1);
    let back_after = gone.elapsed();
    assert!(
        back_after < Duration::from_secs(101),
        "resumed {back_after:?} after the outage began"
    );
    let totals = cost.snapshot();
    assert_eq!(
        (totals.requests, totals.failed_requests),
        (40, 0),
        "{totals:?}"
    );
    // A handful of refused connections (the first failures, then one probe at a time), not
    // every queued call's attempts.
    let refused = totals.retries.get("unavailable").copied().unwrap_or(0);
    assert!(refused <= 6, "{totals:?}");
}

#[tokio::test(start_paused = true)]
async fn an_outage_longer_than_the_limit_stops_the_engine() {
    let mut server = TestServer::start(server_cfg()).await.unwrap();
    let engine = build_engine(
        engine_cfg(&server).with_outage_limit(Duration::from_secs(60)),
        vec![],
    )
    .unwrap();
    engine.call(chat("first")).await.unwrap();
    server.go_away().await;
    let t0 = tokio::time::Instant::now();
    let calls = (0..10).map(|i| engine.call(chat(&format!("p{i}"))));
    let results = futures_util::future::join_all(calls).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(75),
        "{waited:?}"
    );
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.is_fatal(), "{e}");
        assert!(e.to_string().contains("has not answered for"), "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stall_before_the_first_byte_is_bounded_by_the_first_byte_timeout() {
    let server = TestServer::start(server_cfg().with_latency(Duration::from_secs(3600)))
        .await
        .unwrap();
    let cfg = engine_cfg(&server)
        .with_timeouts(atk_engine::Timeouts::default().with_first_byte(Duration::from_secs(5)))
        .with_retry(RetryConfig::default().with_max_attempts(2));
    let engine = build_engine(cfg, vec![]).unwrap();
    let t0 = tokio::time::Instant::now();
    let err = engine.call(chat("hello")).await.unwrap_err();
    assert!(err.to_string().contains("first-byte timeout"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn several_endpoints_share_the_load_and_a_dead_one_is_avoided() {
    // Two replicas; one dies mid-run. Every call still completes, on the other.
    let a = TestServer::start(server_cfg().with_latency(ms(20)))
        .await
        .unwrap();
    let mut b = TestServer::start(server_cfg().with_latency(ms(20)))
        .await
        .unwrap();
    let cost = CostCounter::new("t", Pricing::default());
    let endpoints = vec![
        atk_engine::Endpoint::new(a.base_url()),
        atk_engine::Endpoint {
            concurrency: Some(2),
            ..atk_engine::Endpoint::new(b.base_url())
        },
    ];
    let engine =
        build_engine(engine_cfg(&a).with_endpoints(endpoints), vec![cost.clone()]).unwrap();
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.call(chat(&format!("p{i}"))).await })
        })
        .collect();
    b.wait_until(Duration::from_secs(20), |s| s.completed >= 5)
        .await
        .unwrap();
    b.go_away().await;
    let b_done = b.stats().completed;
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().text, TEXT);
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.completed + sb.completed, 60, "{sa:?} {sb:?}");
    assert_eq!(sb.completed, b_done, "nothing more went to the dead one");
    assert!(sa.completed > 0);
    let totals = cost.snapshot();
    assert_eq!((totals.requests, totals.failed_requests), (60, 0));
    let per = &totals.endpoints;
    assert_eq!(per.len(), 2, "{per:?}");
    assert_eq!(per.values().map(|[ok, _]| ok).sum::<u64>(), 60, "{per:?}");
}

#[tokio::test(start_paused = true)]
async fn each_endpoint_of_a_pool_keeps_its_own_window() {
    // Two replicas under one bound of 8; one runs out of its rate limit (2 requests per 10 s,
    // x-ratelimit headers). Its 429s lower its window only; the calls go on at the other.
    let a = TestServer::start(
        server_cfg()
            .with_rate_limit(RateLimit::requests(2, Duration::from_secs(10)))
            .with_latency(ms(100)),
    )
    .await
    .unwrap();
    let b = TestServer::start(server_cfg().with_latency(ms(100)))
        .await
        .unwrap();
    let limit = ConcurrencyLimit::new(8);
    let endpoints = vec![
        atk_engine::Endpoint::new(a.base_url()),
        atk_engine::Endpoint::new(b.base_url()),
    ];
    let engine = build_engine(
        engine_cfg(&a)
            .with_endpoints(endpoints)
            .with_shared_limit(limit.clone()),
        vec![],
    )
    .unwrap();
    let calls = (0..16).map(|i| engine.call(chat(&format!("p{i}"))));
    let replies = futures_util::future::join_all(calls).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.text == TEXT))
    );
    assert!(a.stats().status_count(429) > 0, "{:?}", a.stats());
    let window = |url: String| {
        let name = format!("t @ {url}");
        let all = limit.windows();
        all.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| *w)
            .unwrap_or_else(|| panic!("{name} in {all:?}"))
    };
    assert!(window(a.base_url()) < 8, "{:?}", limit.windows());
    assert_eq!(window(b.base_url()), 8, "{:?}", limit.windows());
}

#[test]
fn an_endpoint_with_concurrency_0_is_refused_by_name() {
    let cfg = EngineConfig::default()
        .with_label("small")
        .with_endpoints(vec![
            atk_engine::Endpoint::new("http://127.0.0.1:1/v1"),
            atk_engine::Endpoint {
                concurrency: Some(0),
                ..atk_engine::Endpoint::new("http://127.0.0.1:2/v1")
            },
        ]);
    let err = build_engine(cfg, vec![]).err().unwrap().to_string();
    assert!(
        err.contains("endpoint 2 (http://127.0.0.1:2/v1): concurrency must be at least 1"),
        "{err}"
    );
}
