//! The API key never leaves `Secret`: not in the output dir (store, datasets, debug outputs,
//! meta datagen), not on stdout, not on stderr at trace level.

use std::time::Duration;

use atk_e2e::{API_KEY, Config, Env, count_files, files_containing, run};
use atk_testkit::{Fault, Faults, ServerConfig};

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn the_key_appears_nowhere_even_at_trace_level() {
    // A few faults too, so error and retry paths log.
    let faults = Faults::scripted([Fault::ServerError, Fault::RateLimit, Fault::ResetMidStream]);
    let cfg = ServerConfig::default()
        .with_latency(Duration::from_millis(5))
        .with_faults(faults);
    let (server, _) = poem_server(cfg).await;
    let env = Env::new();
    env.write_docs(3);
    let extras = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../prompts/meta_extras/poem_from_passage.yaml"
    );
    let config = Config::new(server.base_url())
        .set("do_meta_datagen", "true")
        .set("meta_datagen_keys", "[poetry_details]")
        .set("meta_datagen_extras", &format!("[\"{extras}\"]"))
        .set("debug_outputs", "true");
    let config = env.write_config(&config);

    let mut cmd = env.command(bin(), &config);
    cmd.arg("-vv").env("RUST_LOG", "trace");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr.lines().count() > 20,
        "trace logging was on\n{out}"
    );
    assert!(server.stats().completed >= 3);

    assert!(!out.stdout.contains(API_KEY), "key on stdout");
    assert!(!out.stderr.contains(API_KEY), "key on stderr");
    assert!(
        count_files(&env.output()) > 1,
        "the run wrote its output dir"
    );
    assert!(
        count_files(&env.output().join("meta_datagen")) > 0,
        "meta datagen wrote its datasets\n{out}"
    );
    assert!(
        count_files(&env.output().join("debug_outputs")) > 0,
        "debug outputs were written\n{out}"
    );
    let hits = files_containing(&env.output(), API_KEY.as_bytes());
    assert!(hits.is_empty(), "key written to {hits:?}");
    // The only file allowed to hold the key is the config the test wrote.
    let hits = files_containing(env.root(), API_KEY.as_bytes());
    assert_eq!(hits, vec![env.root().join("config.yaml")]);
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_prints_no_key() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()));

    let mut cmd = env.command(bin(), &config);
    cmd.args(["--dry-run", "-vv"]).env("RUST_LOG", "trace");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(server.stats().requests, 0, "a dry run sends nothing\n{out}");
    assert!(
        !out.stdout.contains(API_KEY) && !out.stderr.contains(API_KEY),
        "key printed by --dry-run"
    );
    assert!(
        files_containing(env.root(), API_KEY.as_bytes()) == vec![env.root().join("config.yaml")]
    );
}
