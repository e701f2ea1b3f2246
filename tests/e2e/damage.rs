//! A damaged store between two runs (64 KiB of garbage in the middle of sled's data file,
//! which makes sled drop every record after it without a word): the next run says how many
//! results are missing before it sends anything, and sends exactly those again.

use atk_e2e::{Config, Env, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

const DOCS: usize = 60;

/// Overwrites 64 KiB in the middle of the store's data file (`file`) with garbage.
fn damage(env: &Env, file: &str) {
    let db = env.output().join("store").join(file);
    let mut bytes = std::fs::read(&db).expect("the store's data file");
    let mid = bytes.len() / 2;
    let end = (mid + 64 * 1024).min(bytes.len());
    for (i, b) in bytes[mid..end].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    std::fs::write(&db, bytes).expect("write the damaged file");
}

/// The number before ` missing` on the report's `step write_poem` line.
fn reported_missing(stderr: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("step write_poem"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[tokio::test]
async fn a_damaged_store_is_reported_before_anything_is_sent_again() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(DOCS);
    // Details kept (meta datagen on): results are large enough to fill the data file.
    let config = env.write_config(&Config::new(server.base_url()).set("do_meta_datagen", "true"));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let reference = env.dataset_bytes().expect("first dataset");
    let first = server.stats().requests;
    assert_eq!(first, DOCS as u64);

    damage(&env, "db");
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains("STORE DAMAGED"),
        "the loss is reported\n{out}"
    );
    assert!(
        out.stderr.contains("requested (and paid for) again") && out.stderr.contains("cp -a"),
        "{out}"
    );
    let missing =
        reported_missing(&out.stderr).unwrap_or_else(|| panic!("a count for write_poem\n{out}"));
    assert!(missing > 0, "{out}");
    let report_at = out.stderr.find("STORE DAMAGED").unwrap_or_default();
    let work_at = out.stderr.find("write_poem").unwrap_or_default();
    assert!(
        report_at < work_at
            || out.stderr[..report_at]
                .lines()
                .all(|l| !l.contains("write_poem")),
        "reported before the step starts\n{out}"
    );
    assert_eq!(
        server.stats().requests - first,
        missing,
        "exactly the reported results are requested again\n{out}"
    );
    assert_eq!(
        env.dataset_bytes().as_deref(),
        Some(&reference[..]),
        "the same dataset\n{out}"
    );

    // Recovered: the next run reports nothing and sends nothing.
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(!out.stderr.contains("STORE DAMAGED"), "{out}");
    assert_eq!(server.stats().requests - first, missing, "{out}");
}

/// The same damage to a redb store (which trusts its pages and would panic deep inside a
/// read): the store was changed since its clean close, so the next run checks every page on
/// open and stops before any step starts, naming the store damaged and how to keep a copy, in
/// its own words only: no database panic text, no backtrace, nothing sent.
#[tokio::test]
async fn a_damaged_redb_store_stops_the_run_before_any_step_with_our_message_only() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let config = env.write_config(
        &Config::new(server.base_url())
            .set("do_meta_datagen", "true")
            .set("store_backend", "redb"),
    );
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let first = server.stats().requests;
    assert_eq!(first, DOCS as u64);

    damage(&env, "store.redb");
    let mut cmd = env.command(bin(), &config);
    cmd.env("RUST_BACKTRACE", "1");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(
        out.stderr.contains("is damaged") && out.stderr.contains("cp -a"),
        "the store is named damaged, with how to keep a copy\n{out}"
    );
    for noise in ["panicked", "backtrace", "redb-", ".rs:"] {
        assert!(
            !out.stderr.contains(noise),
            "no database panic text on stderr ({noise:?})\n{out}"
        );
    }
    assert!(
        !out.stderr.contains("write_poem") && !out.stderr.contains("already done"),
        "stopped before any step started\n{out}"
    );
    assert_eq!(server.stats().requests, first, "nothing sent\n{out}");
}
