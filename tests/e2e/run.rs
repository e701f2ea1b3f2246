//! A normal run: one dataset line per chunk, reruns are free and give the same bytes.

use std::time::Duration;

use atk_e2e::{Config, Env, conversation_value, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn one_dataset_line_per_chunk_and_a_rerun_sends_nothing() {
    let (server, poems) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(10))).await;
    let env = Env::new();
    env.write_docs(6);
    let config = env.write_config(&Config::new(server.base_url()));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    let lines = env.dataset();
    assert_eq!(lines.len(), 6, "one line per chunk\n{out}");
    for (i, line) in lines.iter().enumerate() {
        let human = conversation_value(line, "human");
        assert!(
            human.contains(&format!("Chronicle number {i} of")),
            "line {i} is document {i} (source order): {human}"
        );
        let turns = line["conversations"].as_array().expect("conversations");
        assert_eq!(turns.len(), 2, "{line}");
        assert_eq!(
            (&turns[0]["from"], &turns[1]["from"]),
            (&"human".into(), &"gpt".into())
        );
    }
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert_eq!(stats.per_prompt.len(), 6, "one prompt per chunk: {stats:?}");
    assert_eq!(stats.requests, 6, "no faults, no retries: {stats:?}");

    let first = env.dataset_bytes();
    let again = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    again.assert_code(0);
    assert_eq!(
        server.stats().requests,
        6,
        "a rerun of a finished run sends nothing\n{again}"
    );
    assert_eq!(
        env.dataset_bytes(),
        first,
        "same inputs, same replies: same bytes"
    );
}

#[tokio::test]
async fn a_serial_server_is_waited_for_not_retried() {
    // Like llama.cpp: one request at a time, the others queue with no byte sent.
    let cfg = ServerConfig::default()
        .with_latency(Duration::from_millis(60))
        .with_serial(true);
    let (server, poems) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(6);
    let config = env.write_config(&Config::new(server.base_url()));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 6, "{out}");
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.completed),
        (6, 6),
        "queueing caused no retry: {stats:?}"
    );
}

#[tokio::test]
async fn long_documents_give_one_line_per_chunk() {
    let (server, poems) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(3);
    let mut config = Config::new(server.base_url());
    config.chunk_size = 40; // each ~100-token document becomes several chunks
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    let stats = server.stats();
    let chunks = stats.per_prompt.len();
    assert!(chunks > 3, "documents were split: {chunks} chunks\n{out}");
    assert_eq!(env.dataset().len(), chunks, "one line per chunk\n{out}");
    poems.assert_all_whole(&env);
}

#[tokio::test]
async fn a_server_that_cuts_running_streams_gets_one_request_at_a_time() {
    // llama-cpp-python 0.3 at concurrency 4: each new request cuts the running stream with
    // `[DONE]` and no finish_reason. No cut reply may reach the dataset, the run ends, and
    // the summary says what to set.
    let cfg = ServerConfig::default()
        .with_latency(Duration::from_millis(30))
        .with_cut_on_arrival(true);
    let (server, poems) = poem_server(cfg).await;
    let env = Env::new();
    // Enough documents for the window to come down all the way (each cut halves it).
    env.write_docs(16);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = 4;
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 16, "{out}");
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert!(stats.cut_streams > 0, "{stats:?}");
    assert!(
        out.stderr
            .contains("it serves one request at a time: set concurrency_limit: 1"),
        "{out}"
    );
}
