//! Honest endings: a run that does not exit 0 writes and announces no dataset and no card,
//! leaves the previous ones as they were, and `atk status` says how it ended.

use std::time::Duration;

use atk_cli::status::{RunState, read_status};
use atk_e2e::{Config, Env, Running, run, sample_doc};
use atk_testkit::{ReplyMode, ServerConfig};

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn a_run_where_every_item_fails_writes_and_announces_nothing() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    let docs = env.write_docs(2);
    let config = env.write_config(&Config::new(server.base_url()));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let card = env.output().join("README.md");
    let (dataset_before, card_before) = (
        env.dataset_bytes()
            .expect("the first run wrote its dataset"),
        std::fs::read(&card).expect("and its card"),
    );

    // New documents, and a model whose every reply fails validation.
    for name in docs {
        std::fs::remove_file(env.inputs().join(name)).unwrap();
    }
    for i in 0..2 {
        std::fs::write(
            env.inputs().join(format!("new_{i}.txt")),
            sample_doc(100 + i),
        )
        .unwrap();
    }
    server.set_reply(ReplyMode::Fixed(
        "I would rather not write anything today.".to_owned(),
    ));
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(1);
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !shown.contains("dataset written") && !shown.contains("complete"),
        "nothing announced\n{out}"
    );
    assert_eq!(
        env.dataset_bytes().as_deref(),
        Some(&dataset_before[..]),
        "the previous dataset is untouched\n{out}"
    );
    assert_eq!(
        std::fs::read(&card).unwrap(),
        card_before,
        "the previous card too"
    );
    assert!(
        !env.output().join(".atk-staging").exists(),
        "nothing staged is left behind"
    );

    let status = read_status(&env.output()).expect("status after the failed run");
    let text = status.render();
    match &status.state {
        RunState::Failed { reason } => {
            assert!(reason.contains("no <poem> tag"), "{reason}");
        }
        other => panic!("expected failed, got {other:?}\n{text}"),
    }
    assert!(text.contains(": failed ("), "{text}");
    assert!(!text.contains("complete"), "{text}");
}

#[tokio::test]
async fn ctrl_c_then_status_says_interrupted() {
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(200))).await;
    let env = Env::new();
    env.write_docs(10);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = 2;
    let config = env.write_config(&config);
    let running = Running::spawn(env.command(bin(), &config));
    let reached = server.wait_until(RUN_TIMEOUT, |s| s.completed >= 2).await;
    running.interrupt();
    let out = running.wait(RUN_TIMEOUT).await;
    assert!(reached.is_some(), "{out}");
    out.assert_code(130);
    assert!(!out.stdout.contains("dataset written"), "{out}");
    assert!(
        env.dataset_bytes().is_none(),
        "no dataset from a stopped run"
    );

    let status = read_status(&env.output()).expect("status after Ctrl-C");
    let text = status.render();
    assert_eq!(status.state, RunState::Interrupted, "{text}");
    assert!(text.contains(": interrupted ("), "{text}");
}
