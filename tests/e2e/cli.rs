//! The pipeline command line: `--set` and `--override-json` change the config for one run;
//! completion mode talks to `/v1/completions`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atk_e2e::{Config, Env, POEM_TEMPLATE, run};
use atk_testkit::{ReplyMode, ServerConfig, render_template};

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn set_and_override_json_change_the_concurrency_limit() {
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(30))).await;
    let env = Env::new();
    env.write_docs(6);
    let config = env.write_config(&Config::new(server.base_url())); // concurrency_limit: 4

    let mut cmd = env.command(bin(), &config);
    cmd.args([
        "--override-json",
        r#"{"concurrency_limit": 3}"#,
        "--set",
        "concurrency_limit=1",
    ]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 6);
    assert_eq!(
        server.stats().max_in_flight,
        1,
        "--set wins over --override-json and the file\n{out}"
    );

    server.reset_stats();
    let mut cmd = env.command(bin(), &config);
    cmd.args([
        "--override-json",
        r#"{"concurrency_limit": 2, "output_dir": "./output2"}"#,
    ]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        env.root().join("output2/sharegpt_format.jsonl").is_file(),
        "{out}"
    );
    let stats = server.stats();
    assert!(
        stats.max_in_flight <= 2 && stats.completed == 6,
        "{stats:?}"
    );
}

#[tokio::test]
async fn completion_mode_sends_text_prompts() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let completions = Arc::new(AtomicU64::new(0));
    let seen = completions.clone();
    server.set_reply(ReplyMode::func(move |body| {
        if body.get("prompt").and_then(|p| p.as_str()).is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        render_template(POEM_TEMPLATE, body)
    }));
    let env = Env::new();
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()).set("completion_mode", "true"));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 3, "{out}");
    assert_eq!(
        completions.load(Ordering::SeqCst),
        server.stats().requests,
        "every request was a completion"
    );
}
