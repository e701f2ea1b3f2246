use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{Engine, EngineBuilder, LimitConfig, Timing};

#[tokio::test(start_paused = true)]
async fn window_halves_on_429_pauses_and_regrows() {
    let limit = ConcurrencyLimit::new(8);
    let window = limit.window_for("k", "t");
    let fuse = Fuse::new("t");
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(limit.acquire(&window, &fuse).await.unwrap());
    }
    assert_eq!(limit.in_flight(), 8);
    // A wave of 429s from attempts that all started before the cut: one halving only.
    let started = held[0].started;
    for _ in 0..8 {
        window.on_rate_limited(started, Some(Duration::from_secs(2)));
    }
    assert_eq!(limit.window(), 4);
    held.clear();
    assert_eq!(limit.in_flight(), 0);
    // Paused until Retry-After passes.
    let t0 = Instant::now();
    let p = limit.acquire(&window, &fuse).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    drop(p);
    // Only 4 slots now.
    let four: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| limit.acquire(&window, &fuse))).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(10), limit.acquire(&window, &fuse))
            .await
            .is_err()
    );
    drop(four);
    // Additive increase: +1 per window of successes, never above max.
    for _ in 0..100 {
        window.on_success();
    }
    assert_eq!(limit.window(), 8);
    let eight: Vec<_> =
        futures_util::future::join_all((0..8).map(|_| limit.acquire(&window, &fuse))).await;
    assert!(eight.iter().all(|p| p.is_ok()));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), limit.acquire(&window, &fuse))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn queued_calls_fail_at_once_when_the_fuse_trips() {
    let limit = ConcurrencyLimit::new(1);
    let window = limit.window_for("k", "t");
    let fuse = Fuse::new("t");
    let _held = limit.acquire(&window, &fuse).await.unwrap();
    let waiter = {
        let (limit, window, fuse) = (limit.clone(), window.clone(), fuse.clone());
        tokio::spawn(async move { limit.acquire(&window, &fuse).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    fuse.trip(&Error::AuthRefused {
        engine: "t".into(),
        status: 401,
        message: "bad key".into(),
    });
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::EngineDead { .. }), "{err}");
    assert!(err.to_string().contains("bad key"));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_finds_its_endpoint_paused_frees_its_slots_and_waits() {
    // Engine b holds the whole bound; a call to a queues for it, and meanwhile a's endpoint
    // asks for 2 s with a 429. Given the slot, the call hands it back and waits out the pause.
    let limit = ConcurrencyLimit::new(1);
    let (a, b) = (limit.window_for("a", "a"), limit.window_for("b", "b"));
    let fuse = Fuse::new("t");
    let held = limit.acquire(&b, &fuse).await.unwrap();
    let t0 = Instant::now();
    let waiter = {
        let (limit, a, fuse) = (limit.clone(), a.clone(), fuse.clone());
        tokio::spawn(async move { limit.acquire(&a, &fuse).await.map(|p| (p, t0.elapsed())) })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    a.on_rate_limited(Instant::now(), Some(Duration::from_secs(2)));
    drop(held);
    let (permit, waited) = waiter.await.unwrap().unwrap();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert_eq!((a.in_flight(), b.in_flight(), limit.in_flight()), (1, 0, 1));
    drop(permit);
    assert_eq!((a.in_flight(), limit.in_flight()), (0, 0));
}

/// A transport answering after 100 ms (paused clock), or refusing every call with a 429 that
/// shows the limit used up; counts calls in flight across every `Scripted` sharing `busy`.
struct Scripted {
    label: &'static str,
    refuse: bool,
    busy: Arc<Busy>,
}

#[derive(Default)]
struct Busy {
    now: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Engine for Scripted {
    async fn call(&self, _request: Request) -> Result<Reply, Error> {
        let now = self.busy.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.busy.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.busy.now.fetch_sub(1, Ordering::SeqCst);
        if self.refuse {
            return Err(Error::Transient {
                engine: self.label.into(),
                kind: TransientKind::RateLimited,
                message: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(5)),
                limit_used_up: true,
                limit_interval: None,
            });
        }
        Ok(Reply {
            text: "ok".into(),
            finish_reason: Some("stop".into()),
            usage: crate::Usage::default(),
            model: "m".into(),
            timing: Timing::default(),
        })
    }
    fn label(&self) -> &str {
        self.label
    }
    fn model(&self) -> &str {
        "m"
    }
}

/// Engines `small` (refusing every call when `small_refuses`) and `large` under one bound of
/// `max`, counting their calls in flight together.
fn two_engines(
    max: usize,
    small_refuses: bool,
) -> (Arc<ConcurrencyLimit>, Arc<Busy>, [Arc<dyn Engine>; 2]) {
    let bound = ConcurrencyLimit::new(max);
    let busy = Arc::new(Busy::default());
    let engines = [("small", small_refuses), ("large", false)].map(|(label, refuse)| {
        let transport = Scripted {
            label,
            refuse,
            busy: busy.clone(),
        };
        EngineBuilder::new(transport)
            .limit(LimitConfig::new(bound.clone()))
            .build()
            .unwrap()
    });
    (bound, busy, engines)
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_on_one_engine_leaves_the_others_window_alone() {
    let (bound, _, [small, large]) = two_engines(8, true);
    let refused = (0..8).map(|_| small.call(Request::completion("s")));
    let t0 = Instant::now();
    let answered = (0..16).map(|_| async {
        let reply = large.call(Request::completion("l")).await;
        (reply, t0.elapsed())
    });
    let (refused, answered) = futures_util::future::join(
        futures_util::future::join_all(refused),
        futures_util::future::join_all(answered),
    )
    .await;
    assert!(refused.iter().all(Result::is_err));
    // small's window halved once (one wave) and small is paused for its Retry-After; large
    // kept its whole window and was never paused: 16 calls, 8 slots at a time as the refusals
    // freed theirs.
    let mut windows = bound.windows();
    windows.sort();
    assert_eq!(
        windows,
        [("large".to_string(), 8), ("small".to_string(), 4)]
    );
    for (reply, at) in &answered {
        assert!(reply.is_ok());
        assert!(*at <= Duration::from_millis(300), "{at:?}");
    }
    assert_eq!(
        bound.window(),
        8,
        "the sum of the windows, at most the bound"
    );
}

#[tokio::test(start_paused = true)]
async fn engines_together_never_exceed_the_bound() {
    let (bound, busy, [small, large]) = two_engines(4, false);
    let t0 = Instant::now();
    let calls = (0..10).flat_map(|_| {
        [
            small.call(Request::completion("s")),
            large.call(Request::completion("l")),
        ]
    });
    let replies = futures_util::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(busy.most.load(Ordering::SeqCst), 4, "in flight in total");
    // 20 calls of 100 ms, 4 at a time: the bound is used to the full.
    assert_eq!(t0.elapsed(), Duration::from_millis(500));
    assert_eq!(bound.in_flight(), 0);
    // Each engine alone may use the whole bound.
    assert_eq!(
        bound.windows().iter().map(|(_, w)| *w).collect::<Vec<_>>(),
        [4, 4]
    );
}
