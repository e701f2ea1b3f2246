//! The example pipeline on Anthropic's Messages API and through the providers' batch APIs:
//! the same dataset as an online OpenAI run, no online request in batch mode, and a run
//! killed while its batch is polled resumes by polling that batch, not by paying again.

use std::time::Duration;

use atk_e2e::{Config, Env, Running, run};
use atk_testkit::{BatchBehaviour, ServerConfig};

use crate::{RUN_TIMEOUT, bin, poem_server};

/// The dataset of an online OpenAI run over `docs` documents (the reference).
async fn online_dataset(docs: usize) -> Option<Vec<u8>> {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(docs);
    let config = env.write_config(&Config::new(server.base_url()));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    env.dataset_bytes()
}

#[tokio::test]
async fn the_example_pipeline_on_the_anthropic_api_gives_the_openai_dataset() {
    let reference = online_dataset(5).await;
    let (server, poems) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(5);
    let config = env.write_config(&Config::new(server.base_url()));
    let cmd = env.command_with(
        bin(),
        &config,
        &[
            "small_api=anthropic",
            "large_api=anthropic",
            "small_prompt_cache=true",
        ],
    );
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    poems.assert_all_whole(&env);
    assert_eq!(
        env.dataset_bytes(),
        reference,
        "same replies, same dataset\n{out}"
    );
    let stats = server.stats();
    assert_eq!((stats.requests, stats.rejected_auth), (5, 0), "{stats:?}");
    // Completion mode has no Anthropic endpoint: a config error naming the key.
    let cmd = env.command_with(
        bin(),
        &config,
        &["small_api=anthropic", "completion_mode=true"],
    );
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(out.stderr.contains("small_api"), "{out}");
}

async fn batch_run(dialect: &str) {
    let reference = online_dataset(6).await;
    let batch = BatchBehaviour {
        latency: Duration::from_millis(300),
        errored: 0.05,
        expired: 0.05,
        ..BatchBehaviour::default()
    };
    // A seed whose draws fail two of the six lines in the first batch: one errored, one
    // expired (the batch ends `expired` with the rest done).
    let (server, poems) = poem_server(ServerConfig::default().with_batch(batch).with_seed(4)).await;
    let env = Env::new();
    env.write_docs(6);
    let config = env.write_config(&Config::new(server.base_url()));
    let api = format!("small_api={dialect}");
    let cmd = env.command_with(
        bin(),
        &config,
        &[&api, "small_mode=batch", "batch_max_wait=0.2"],
    );
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    poems.assert_all_whole(&env);
    assert_eq!(
        env.dataset_bytes(),
        reference,
        "{dialect}: the online dataset\n{out}"
    );
    let stats = server.stats();
    assert_eq!(stats.requests, 0, "{dialect}: no online request: {stats:?}");
    assert_eq!(stats.batch_completed, 6, "{dialect}: {stats:?}");
    // Only what failed was batched again.
    let repeats: u64 = stats.batch_per_prompt.values().map(|n| n - 1).sum();
    assert_eq!(stats.batch_lines, 6 + repeats, "{dialect}: {stats:?}");
    assert!(
        repeats >= 2,
        "{dialect}: the seed fails two lines: {stats:?}"
    );
    assert!(stats.batches_created >= 2, "{dialect}: {stats:?}");
    // A rerun finds everything done: nothing is sent.
    let cmd = env.command_with(
        bin(),
        &config,
        &[&api, "small_mode=batch", "batch_max_wait=0.2"],
    );
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    assert_eq!(server.stats().batch_lines, stats.batch_lines);
}

#[tokio::test]
async fn the_example_pipeline_in_openai_batch_mode_gives_the_online_dataset() {
    batch_run("openai").await;
}

#[tokio::test]
async fn the_example_pipeline_in_anthropic_batch_mode_gives_the_online_dataset() {
    batch_run("anthropic").await;
}

#[tokio::test]
async fn killed_while_polling_a_batch_the_rerun_polls_the_same_batch() {
    for dialect in ["openai", "anthropic"] {
        let batch = BatchBehaviour {
            latency: Duration::from_secs(4),
            ..BatchBehaviour::default()
        };
        let (server, poems) = poem_server(ServerConfig::default().with_batch(batch)).await;
        let env = Env::new();
        env.write_docs(4);
        let config = env.write_config(&Config::new(server.base_url()));
        let api = format!("small_api={dialect}");
        let sets = [api.as_str(), "small_mode=batch", "batch_max_wait=0.2"];
        let running = Running::spawn(env.command_with(bin(), &config, &sets));
        server
            .wait_until(Duration::from_secs(30), |s| s.batch_polls >= 1)
            .await
            .expect("the batch is created and polled");
        let killed = running.kill().await;
        assert_eq!(
            killed.code, None,
            "{dialect}: killed while polling\n{killed}"
        );
        let out = run(env.command_with(bin(), &config, &sets), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(env.dataset().len(), 4, "{dialect}\n{out}");
        poems.assert_all_whole(&env);
        let stats = server.stats();
        assert_eq!(
            (stats.batches_created, stats.batch_lines, stats.requests),
            (1, 4, 0),
            "{dialect}: the rerun polled the stored batch: {stats:?}"
        );
    }
}

#[tokio::test]
async fn killed_as_its_batch_ends_the_rerun_reads_the_same_batch() {
    // Killed the moment its batch has ended (reading the results, or storing them): the rerun
    // reads that batch's results again; nothing is paid twice.
    let batch = BatchBehaviour {
        latency: Duration::from_millis(500),
        ..BatchBehaviour::default()
    };
    let (server, poems) = poem_server(ServerConfig::default().with_batch(batch)).await;
    let env = Env::new();
    env.write_docs(4);
    let config = env.write_config(&Config::new(server.base_url()));
    let sets = ["small_mode=batch", "batch_max_wait=0.2"];
    let running = Running::spawn(env.command_with(bin(), &config, &sets));
    server
        .wait_until(Duration::from_secs(30), |s| s.batch_completed >= 4)
        .await
        .expect("the batch ends");
    let killed = running.kill().await;
    let out = run(env.command_with(bin(), &config, &sets), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 4, "killed: {:?}\n{out}", killed.code);
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert_eq!(
        (stats.batches_created, stats.batch_lines, stats.requests),
        (1, 4, 0),
        "{stats:?}"
    );
}
