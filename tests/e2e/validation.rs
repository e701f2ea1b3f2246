//! A model whose every reply fails validation: non-zero exit, reasons shown.

use atk_e2e::{Config, Env, run};
use atk_testkit::{ReplyMode, ServerConfig};

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn every_reply_failing_validation_exits_nonzero_with_reasons() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    server.set_reply(ReplyMode::Fixed(
        "I would rather not write anything today.".to_owned(),
    ));
    let env = Env::new();
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    assert_ne!(
        out.code,
        Some(0),
        "every item failed, the run must not look fine\n{out}"
    );
    assert!(out.code.is_some(), "exited, not killed\n{out}");
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("no <poem> tag"),
        "the failure reason is shown\n{out}"
    );
    assert!(
        env.dataset().is_empty(),
        "no dataset line from a failed item"
    );
    let stats = server.stats();
    assert_eq!(stats.per_prompt.len(), 3);
    assert!(
        stats.per_prompt.values().all(|&n| n > 1),
        "validation retried each item: {stats:?}"
    );
}

#[tokio::test]
async fn poems_too_short_fail_validation_with_the_validators_reason() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    server.set_reply(ReplyMode::Fixed(
        "<poem>\njust one line\n</poem>".to_owned(),
    ));
    let env = Env::new();
    env.write_docs(2);
    let config = env.write_config(&Config::new(server.base_url()));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    assert_ne!(out.code, Some(0), "{out}");
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("at least 3 lines"),
        "the validator's reason is shown\n{out}"
    );
    assert!(env.dataset().is_empty());
}
