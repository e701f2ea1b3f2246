//! SIGKILL at three points of a run, then resume: the dataset equals an uninterrupted run's
//! and few requests are sent twice.

use std::time::Duration;

use atk_e2e::{Config, Env, Running, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

const DOCS: usize = 24;
const LIMIT: usize = 4;

#[tokio::test]
async fn killed_three_times_then_resumed_gives_the_uninterrupted_dataset() {
    // The reference: the same inputs and replies, never interrupted.
    let reference = {
        let (server, _) = poem_server(ServerConfig::default()).await;
        let env = Env::new();
        env.write_docs(DOCS);
        let mut config = Config::new(server.base_url());
        config.concurrency_limit = LIMIT;
        let config = env.write_config(&config);
        run(env.command(bin(), &config), RUN_TIMEOUT)
            .await
            .assert_code(0);
        env.dataset_bytes().expect("reference dataset")
    };
    assert_eq!(String::from_utf8_lossy(&reference).lines().count(), DOCS);

    // Latency slows the run down enough to kill it part-way.
    let (server, poems) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(150))).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    let config = env.write_config(&config);

    let kills = [4_u64, 10, 16];
    let mut at_kill = Vec::new();
    for at in kills {
        let running = Running::spawn(env.command(bin(), &config));
        let reached = server.wait_until(RUN_TIMEOUT, |s| s.completed >= at).await;
        let out = running.kill().await;
        assert!(
            reached.is_some(),
            "the run never reached {at} replies\n{out}"
        );
        assert_eq!(out.code, None, "killed by a signal, not exited\n{out}");
        at_kill.push(server.stats());
    }
    let stats = server.stats();
    assert!(
        stats.completed < DOCS as u64,
        "the kills came before the end: {stats:?}"
    );

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        env.dataset_bytes().as_deref(),
        Some(&reference[..]),
        "resumed dataset differs\n{out}"
    );
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert_eq!(stats.per_prompt.len(), DOCS);
    // Requests each kill caused to be sent again: those, in the runs after it, for prompts
    // already requested before it.
    at_kill.push(stats.clone());
    for (i, pair) in at_kill.windows(2).enumerate() {
        let (before, after) = (&pair[0], &pair[1]);
        let resent: u64 = before
            .per_prompt
            .keys()
            .map(|p| after.prompt_count(p) - before.prompt_count(p))
            .sum();
        assert!(
            resent <= 2 * LIMIT as u64,
            "kill {} made {resent} requests be sent again (bound {})",
            i + 1,
            2 * LIMIT
        );
    }
    let bound = kills.len() as u64 * 2 * LIMIT as u64;
    assert!(
        stats.repeats() <= bound,
        "{} requests re-sent over {} kills: {stats:?}",
        stats.repeats(),
        kills.len()
    );
}

#[tokio::test]
async fn ctrl_c_lets_in_flight_requests_finish_and_a_rerun_resends_nothing() {
    const DOCS: usize = 12;
    const LIMIT: usize = 3;
    let (server, poems) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(200))).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    let config = env.write_config(&config);

    let running = Running::spawn(env.command(bin(), &config));
    let reached = server.wait_until(RUN_TIMEOUT, |s| s.completed >= 3).await;
    running.interrupt();
    let out = running.wait(RUN_TIMEOUT).await;
    assert!(reached.is_some(), "{out}");
    out.assert_code(130);
    let stopped = server.stats();
    assert!(
        stopped.completed < DOCS as u64,
        "stopped part-way: {stopped:?}"
    );
    assert_eq!(
        stopped.completed, stopped.requests,
        "every request in flight was let finish: {stopped:?}"
    );

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), DOCS, "{out}");
    poems.assert_all_whole(&env);
    let stats = server.stats();
    assert_eq!(
        stats.repeats(),
        0,
        "a graceful stop loses nothing, so nothing is sent twice: {stats:?}"
    );
}
