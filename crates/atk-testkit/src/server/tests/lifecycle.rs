//! Latency, queueing, counters under concurrency, stalled bodies, shutdown and restart.

use super::*;

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
