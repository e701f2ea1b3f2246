//! Iterating on a pipeline already run: an edited prompt is named before anything is sent,
//! `--redo` remakes results (resumably, losing none when killed), `--dry-run` says what a redo
//! would send, and bad step names exit 2.

use std::time::Duration;

use atk_e2e::{Config, Env, Running, run};
use atk_testkit::{ReplyMode, ServerConfig, render_template};

use crate::{RUN_TIMEOUT, bin, poem_server};

/// The example pipeline's chat prompt, copied into the config's `prompts` folder.
const PROMPT: &str = include_str!("../../pipelines/example/prompts/write_poem.yaml");

/// An env with `docs` documents, a `prompts/write_poem.yaml` override and its config.
fn env_with_prompt(docs: usize, config: Config) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.write_docs(docs);
    std::fs::create_dir_all(env.root().join("prompts")).unwrap();
    std::fs::write(env.root().join("prompts/write_poem.yaml"), PROMPT).unwrap();
    let config = env.write_config(&config.set("prompts", "./prompts"));
    (env, config)
}

/// `bin --config <config> ARGS...`.
fn with_args(env: &Env, config: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = env.command(bin(), config);
    cmd.args(args);
    cmd
}

fn edit_prompt(env: &Env) {
    let edited = PROMPT.replace("poem", "short poem");
    assert_ne!(edited, PROMPT);
    std::fs::write(env.root().join("prompts/write_poem.yaml"), edited).unwrap();
}

#[tokio::test]
async fn an_edited_prompt_is_named_and_nothing_is_sent_until_asked() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let (env, config) = env_with_prompt(5, Config::new(server.base_url()));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    assert_eq!(server.stats().requests, 5);

    edit_prompt(&env);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("warning: step `write_poem`: 5 results were made with another prompt"),
        "the warning names the step and the count\n{out}"
    );
    assert!(
        out.stderr.contains("--redo write_poem") && out.stderr.contains("--redo-changed"),
        "and says what to do\n{out}"
    );
    assert_eq!(server.stats().requests, 5, "nothing was sent: {out}");

    // A dry run of the redo says what it would send, and sends nothing.
    let out = run(
        with_args(&env, &config, &["--dry-run", "--redo-changed"]),
        RUN_TIMEOUT,
    )
    .await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("5 requests") && out.stdout.contains("estimated cost"),
        "the estimate, on stdout\n{out}"
    );
    assert!(
        out.stdout
            .contains("redo `write_poem`: 5 results requested again"),
        "{out}"
    );
    assert_eq!(server.stats().requests, 5);

    // --redo write_poem: each item is requested once more, with the edited prompt.
    server.set_reply(ReplyMode::func(|body| {
        render_template("<poem>\nredone\n{lines}\n</poem>", body)
    }));
    let out = run(
        with_args(&env, &config, &["--redo", "write_poem"]),
        RUN_TIMEOUT,
    )
    .await;
    out.assert_code(0);
    let stats = server.stats();
    assert_eq!(stats.requests, 10, "{out}");
    assert!(
        stats.per_prompt.values().all(|&n| n == 1),
        "each redone request carries the edited prompt, sent once: {stats:?}"
    );
    assert!(
        env.dataset_replies().iter().all(|r| r.contains("redone")),
        "every dataset line is remade\n{out}"
    );
    // Done: the same command again starts a new redo of every item; a plain run sends nothing.
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(!out.stderr.contains("warning: step"), "{out}");
    assert_eq!(server.stats().requests, 10);
}

#[tokio::test]
async fn bad_step_names_exit_2_naming_the_steps() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let (env, config) = env_with_prompt(2, Config::new(server.base_url()));
    for args in [&["--redo", "write_poems"][..], &["--reprocess", "nope"][..]] {
        let out = run(with_args(&env, &config, args), RUN_TIMEOUT).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("the steps are `write_poem`"),
            "{args:?}\n{out}"
        );
    }
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn a_redo_killed_part_way_loses_nothing_and_the_same_command_finishes_it() {
    const DOCS: usize = 16;
    const LIMIT: usize = 2;
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(60))).await;
    let mut cfg = Config::new(server.base_url());
    cfg.concurrency_limit = LIMIT;
    let (env, config) = env_with_prompt(DOCS, cfg);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    assert_eq!(server.stats().requests, DOCS as u64);

    server.set_reply(ReplyMode::func(|body| {
        render_template("<poem>\nredone\n{lines}\n</poem>", body)
    }));
    let redo = || with_args(&env, &config, &["--redo", "write_poem"]);
    let running = Running::spawn(redo());
    let reached = server
        .wait_until(RUN_TIMEOUT, |s| s.completed >= DOCS as u64 + 8)
        .await;
    let out = running.kill().await;
    assert!(reached.is_some(), "{out}");
    assert_eq!(out.code, None, "killed\n{out}");
    let at_kill = server.stats().requests;
    assert!(at_kill < 2 * DOCS as u64, "killed part-way: {at_kill}");

    // Every item still has a result, old or new: a plain run sends nothing and writes them all,
    // and says the redo is unfinished.
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(server.stats().requests, at_kill, "{out}");
    let replies = env.dataset_replies();
    assert_eq!(replies.len(), DOCS, "{out}");
    let redone = replies.iter().filter(|r| r.contains("redone")).count();
    assert!((1..DOCS).contains(&redone), "a mix: {redone} redone\n{out}");
    assert!(
        out.stderr.contains("did not finish"),
        "the unfinished redo is named\n{out}"
    );

    // The same command finishes the redo: only what was not redone yet is sent.
    let out = run(redo(), RUN_TIMEOUT).await;
    out.assert_code(0);
    let sent = server.stats().requests - at_kill;
    assert!(
        sent <= (DOCS - redone) as u64,
        "{sent} sent to finish, {redone} were already redone\n{out}"
    );
    assert!(
        env.dataset_replies().iter().all(|r| r.contains("redone")),
        "{out}"
    );
    assert!(
        server.stats().requests <= 2 * DOCS as u64 + 2 * LIMIT as u64,
        "a redo with one kill costs about one request per item"
    );
}
