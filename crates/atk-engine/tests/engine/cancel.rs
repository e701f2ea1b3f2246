//! The run's cancel token (first Ctrl-C): calls queued behind the concurrency bound or waiting
//! out a retry backoff are not sent; requests already on the wire are left alone.

use std::sync::Arc;
use std::time::Duration;

use atk_engine::{CostCounter, EngineConfig, Error, Pricing, Request, RetryConfig, build_engine};
use atk_testkit::{Fault, Faults, ReplyMode, ServerConfig, TestServer};
use tokio_util::sync::CancellationToken;

/// Bound on every event-driven wait (nothing here should come near it).
const WAIT: Duration = Duration::from_secs(10);

fn engine_cfg(server: &TestServer, cancel: &CancellationToken) -> EngineConfig {
    EngineConfig::default()
        .with_label("t")
        .with_base_url(server.base_url())
        .with_model("m")
        .with_cancel(cancel.clone())
}

#[tokio::test]
async fn queued_calls_are_not_sent_after_cancel() {
    // Slow server: the first two requests stay on the wire for the whole test.
    let server = TestServer::start(
        ServerConfig::default()
            .with_reply(ReplyMode::Fixed("ok".into()))
            .with_latency(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let cost = CostCounter::new("t", Pricing::default());
    let engine = build_engine(
        engine_cfg(&server, &cancel).with_concurrency_limit(2usize),
        vec![cost.clone()],
    )
    .unwrap();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move { engine.call(Request::completion(format!("p{i}"))).await })
        })
        .collect();
    server
        .wait_until(WAIT, |s| s.requests == 2)
        .await
        .expect("two requests reach the server");
    cancel.cancel();

    // The eight queued calls end promptly with Cancelled; the two on the wire keep going.
    let mut pending = calls;
    for _ in 0..8 {
        let (done, _, rest) = tokio::time::timeout(WAIT, futures_util::future::select_all(pending))
            .await
            .expect("queued calls end at cancel");
        let err = done
            .unwrap()
            .expect_err("no reply can come from the slow server");
        assert!(
            matches!(err, Error::Cancelled { ref engine } if engine == "t"),
            "{err}"
        );
        assert!(!err.is_fatal() && !err.is_transient());
        pending = rest;
    }
    let in_flight = pending;
    assert_eq!(in_flight.len(), 2);
    assert!(
        in_flight.iter().all(|c| !c.is_finished()),
        "in-flight requests are left alone"
    );
    for call in &in_flight {
        call.abort();
    }
    let s = server.stats();
    assert_eq!(s.requests, 2, "only the two calls holding slots were sent");
    let totals = cost.snapshot();
    assert_eq!(
        (totals.requests, totals.failed_requests),
        (0, 0),
        "cancelled calls are not failed requests"
    );
}

#[tokio::test]
async fn a_retry_backoff_ends_at_cancel() {
    let server = TestServer::start(
        ServerConfig::default()
            .with_reply(ReplyMode::Fixed("ok".into()))
            .with_faults(Faults::fail_first(1, Fault::ServerError)),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let cost = CostCounter::new("t", Pricing::default());
    let engine = build_engine(
        engine_cfg(&server, &cancel).with_retry(
            RetryConfig::default()
                .with_base_delay(Duration::from_secs(300))
                .with_max_delay(Duration::from_secs(300)),
        ),
        vec![cost.clone()],
    )
    .unwrap();
    let call = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.call(Request::completion("p")).await }
    });
    // The first attempt fails; the call now waits out a (long) backoff.
    server
        .wait_until(WAIT, |s| s.faults_injected == 1 && s.in_flight == 0)
        .await
        .expect("the first attempt fails");
    cancel.cancel();
    let err = tokio::time::timeout(WAIT, call)
        .await
        .expect("the backoff ends at cancel")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(server.stats().requests, 1, "no retry was sent");
    assert_eq!(cost.snapshot().failed_requests, 0);
}
