//! Transport faults: every item still completes, the concurrency bound holds, and no cut-off
//! reply reaches the dataset.

use std::time::Duration;

use atk_e2e::{Config, Env, run};
use atk_testkit::{Fault, Faults, ServerConfig, TestServer};

use crate::{RUN_TIMEOUT, bin, poem_server};

/// Each of six prompts meets `fault` on its first request; the run must shrug it off.
async fn survives(fault: Fault, faults: Faults) {
    survives_with(fault, faults, 6).await;
}

/// As [`survives`], over `docs` documents (one prompt each) at concurrency 3.
async fn survives_with(fault: Fault, faults: Faults, docs: usize) {
    const LIMIT: usize = 3;
    let faults = Faults {
        fail_first_per_prompt: 1,
        fail_first_kind: fault,
        ..faults
    };
    let cfg = ServerConfig::default()
        .with_latency(Duration::from_millis(20))
        .with_faults(faults);
    let (server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(docs);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    let stats = server.stats();
    out.assert_code(0);
    assert_eq!(
        env.dataset().len(),
        docs,
        "every item completes despite {fault:?}\n{out}\n{stats:?}"
    );
    poems.assert_all_whole(&env);
    assert!(
        stats.max_in_flight <= LIMIT as u64,
        "{} requests in flight at once, limit {LIMIT}",
        stats.max_in_flight
    );
    assert_eq!(stats.faults_injected, docs as u64, "{stats:?}");
    assert!(
        stats.per_prompt.values().all(|&n| n >= 2),
        "each prompt was retried: {stats:?}"
    );
}

#[tokio::test]
async fn rate_limit_with_retry_after() {
    survives(
        Fault::RateLimit,
        Faults::none().with_retry_after(Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn rate_limit_with_retry_after_ms() {
    survives(
        Fault::RateLimit,
        Faults::none()
            .with_retry_after(Duration::from_millis(300))
            .with_retry_after_ms(true),
    )
    .await;
}

#[tokio::test]
async fn server_error() {
    survives(Fault::ServerError, Faults::none()).await;
}

#[tokio::test]
async fn connection_reset_mid_stream() {
    survives(Fault::ResetMidStream, Faults::none()).await;
}

#[tokio::test]
async fn stalled_stream() {
    // The config's idle_timeout is 1 s; the stall would last far longer. As many documents
    // as slots: the server counts a stalled request as in flight until it notices its client
    // left, and a *new* item taking the freed slot at that instant raced that notice (seen
    // once in CI as 5 > 3). Retries of the stalled prompts wait out a backoff of ≥ 250 ms
    // first, so with no new items the server-side count measures the client's bound.
    survives_with(
        Fault::Stall,
        Faults::none().with_stall_for(Duration::from_secs(60)),
        3,
    )
    .await;
}

#[tokio::test]
async fn malformed_sse_line() {
    survives(Fault::MalformedSse, Faults::none()).await;
}

#[tokio::test]
async fn garbage_reply() {
    survives(Fault::Garbage, Faults::none()).await;
}

#[tokio::test]
async fn stream_cut_before_done() {
    survives(Fault::CutBeforeDone, Faults::none()).await;
}

#[tokio::test]
async fn error_object_mid_stream() {
    survives(Fault::ErrorMidStream, Faults::none()).await;
}

#[tokio::test]
async fn a_seeded_mix_of_every_fault() {
    const DOCS: usize = 12;
    const LIMIT: usize = 4;
    let mut faults = Faults::none()
        .with_retry_after(Duration::from_millis(200))
        .with_retry_after_ms(true);
    for fault in [
        Fault::RateLimit,
        Fault::ServerError,
        Fault::ResetMidStream,
        Fault::Stall,
        Fault::MalformedSse,
        Fault::Garbage,
        Fault::CutBeforeDone,
        Fault::ErrorMidStream,
    ] {
        faults = faults.with_rate(fault, 0.025);
    }
    let cfg = ServerConfig::default()
        .with_latency(Duration::from_millis(20))
        .with_faults(faults.with_stall_for(Duration::from_secs(60)))
        .with_seed(42);
    let (server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    let stats = server.stats();
    out.assert_code(0);
    assert_eq!(env.dataset().len(), DOCS, "{out}\n{stats:?}");
    poems.assert_all_whole(&env);
    assert!(
        stats.faults_injected > 0,
        "the seed drew some faults: {stats:?}"
    );
    assert!(
        stats.max_in_flight <= LIMIT as u64,
        "{} in flight, limit {LIMIT}",
        stats.max_in_flight
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_1_after_bounded_retries() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    env.write_docs(3);
    let config = Config::new(format!("http://127.0.0.1:{port}/v1")).set("max_attempts", "2");
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(
        out.elapsed < Duration::from_secs(15),
        "bounded retries, took {:?}",
        out.elapsed
    );
    let shown = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        shown.contains("refused") || shown.contains("connect"),
        "the cause is shown\n{out}"
    );
    assert!(env.dataset().is_empty());
}

#[tokio::test]
async fn retry_after_is_waited_out_before_the_next_request() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use atk_e2e::{POEM_TEMPLATE, Running};
    use atk_testkit::{ReplyMode, render_template};

    let wait = Duration::from_secs(1);
    let faults = Faults::fail_first(1, Fault::RateLimit).with_retry_after(wait);
    let (server, _) = poem_server(ServerConfig::default().with_faults(faults)).await;
    let replied: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let times = replied.clone();
    server.set_reply(ReplyMode::func(move |body| {
        times.lock().unwrap().push(Instant::now());
        render_template(POEM_TEMPLATE, body)
    }));
    let env = Env::new();
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()));

    let running = Running::spawn(env.command(bin(), &config));
    let first_429 = server
        .wait_until(RUN_TIMEOUT, |s| s.status_count(429) > 0)
        .await;
    let limited_at = Instant::now();
    let out = running.wait(RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(first_429.is_some(), "{out}");
    assert_eq!(env.dataset().len(), 3, "{out}");
    let first_reply = *replied.lock().unwrap().iter().min().expect("some replies");
    let gap = first_reply.duration_since(limited_at);
    assert!(
        gap >= wait - Duration::from_millis(50),
        "a request was answered {gap:?} after a 429 asking for {wait:?}"
    );
}

#[tokio::test]
async fn an_outage_mid_run_is_waited_out() {
    use atk_e2e::Running;

    // A replica restarting: it goes away mid-run and comes back on the same port.
    const DOCS: usize = 10;
    let cfg = ServerConfig::default().with_latency(Duration::from_millis(20));
    let (mut server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url()).set("max_attempts", "2");
    config.concurrency_limit = 2;
    let config = env.write_config(&config);

    let running = Running::spawn(env.command(bin(), &config));
    server
        .wait_until(RUN_TIMEOUT, |s| s.completed >= 3)
        .await
        .expect("the run got going");
    server.go_away().await;
    // The outage itself (what the run must ride out), not a synchronisation wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.come_back().await.unwrap();
    let out = running.wait(RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), DOCS, "no item failed for good\n{out}");
    poems.assert_all_whole(&env);
}

#[tokio::test]
async fn an_outage_longer_than_outage_limit_exits_1_and_leaves_items_pending() {
    use atk_e2e::Running;

    const DOCS: usize = 8;
    let cfg = ServerConfig::default().with_latency(Duration::from_millis(30));
    let (mut server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url()).set("outage_limit", "1");
    config.concurrency_limit = 2;
    let config = env.write_config(&config);

    let running = Running::spawn(env.command(bin(), &config));
    server
        .wait_until(RUN_TIMEOUT, |s| s.completed >= 2)
        .await
        .expect("the run got going");
    server.go_away().await;
    let out = running.wait(RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(
        out.stderr.contains("has not answered for"),
        "a clear message\n{out}"
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.output().join("run_summary.json")).expect("run_summary.json"),
    )
    .unwrap();
    let failed: u64 = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["failed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(failed, 0, "unsent items are pending, not failed\n{out}");
    // status.json recorded the outage (what the live page and `atk status` show).
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.output().join("status.json")).expect("status.json"),
    )
    .unwrap();
    let small = &status["engines"][0];
    assert_eq!(small["label"], "small", "{status}");
    // At least one outage: a reply in flight when the server went away can land after the
    // first one was declared (the endpoint answered: up again), and the next failures start a
    // second.
    assert!(
        small["outages"].as_u64().is_some_and(|n| n >= 1)
            && small["outage"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
            && small["outage"]["since_ms"].as_u64().is_some(),
        "{small}"
    );

    // Back up: the next run carries on and finishes.
    server.come_back().await.unwrap();
    let again = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    again.assert_code(0);
    assert_eq!(env.dataset().len(), DOCS, "{again}");
    poems.assert_all_whole(&env);
}

#[tokio::test]
async fn an_over_long_prompt_fails_at_once_with_the_servers_reason_and_the_run_goes_on() {
    // llama-cpp-python: a streamed prompt over the context gets an empty 200; unstreamed, a
    // 400 context_length_exceeded with the reason.
    let cfg = ServerConfig::default().with_context_limit(1300);
    let (server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(4);
    let long: Vec<String> = (0..600).map(|i| format!("word{i}")).collect();
    std::fs::write(env.inputs().join("long.txt"), long.join(" ")).unwrap();
    let mut config = Config::new(server.base_url());
    config.chunk_size = 3000;
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 4, "the rest of the run goes on\n{out}");
    poems.assert_all_whole(&env);
    assert!(
        out.stderr
            .contains("prompt over the model's context: 1 item (e.g.")
            && out.stderr.contains("maximum context length is 1300 tokens"),
        "{out}"
    );
    let stats = server.stats();
    // Four poems, then the long prompt twice: streamed (empty), unstreamed (400). No more.
    assert_eq!(stats.requests, 4 + 2, "{stats:?}");
    assert_eq!(stats.status_count(400), 1, "{stats:?}");
}

#[tokio::test]
async fn several_endpoints_one_of_which_dies() {
    use atk_e2e::Running;

    const DOCS: usize = 10;
    let cfg = || ServerConfig::default().with_latency(Duration::from_millis(20));
    let (a, poems) = poem_server(cfg()).await;
    let mut b = TestServer::start(
        cfg()
            .with_api_key(atk_e2e::API_KEY)
            .with_reply(poems.reply()),
    )
    .await
    .unwrap();
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(a.base_url());
    config.concurrency_limit = 2;
    let config = env.write_config(&config);
    let mut cmd = env.command(bin(), &config);
    cmd.arg("--set").arg(format!(
        "small_base_url=[{}, {{url: {}, concurrency: 1}}]",
        a.base_url(),
        b.base_url()
    ));

    let running = Running::spawn(cmd);
    b.wait_until(RUN_TIMEOUT, |s| s.completed >= 2)
        .await
        .expect("both endpoints are used");
    b.go_away().await;
    let out = running.wait(RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), DOCS, "{out}");
    poems.assert_all_whole(&env);
    assert!(a.stats().completed > 0 && b.stats().completed >= 2);
    assert!(
        out.stderr
            .contains(&format!("engine small endpoint {}: ", b.base_url())),
        "per-endpoint counts in the summary\n{out}"
    );
}
