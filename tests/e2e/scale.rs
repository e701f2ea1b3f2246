//! Scale features a user drives from the command line: a rerun over unchanged inputs reads
//! nothing again; `--shard I/N` runs merged with `atk merge` give the unsharded dataset.

use std::path::Path;

use atk_e2e::{Config, Env, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

/// The `atk` tool under test.
fn atk() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-atk"))
}

const DOCS: usize = 16;

#[tokio::test]
async fn two_shards_merged_give_the_unsharded_dataset_and_nothing_is_sent_twice() {
    shards_then_merge("sled").await;
}

#[tokio::test]
async fn two_redb_shards_merged_give_the_unsharded_dataset_too() {
    shards_then_merge("redb").await;
}

/// Two `--shard` runs kept in `backend`, merged, then run on the merge: the unsharded
/// dataset, nothing sent twice; a second merge into the same OUT is refused.
async fn shards_then_merge(backend: &str) {
    let reference = {
        let (server, _) = poem_server(ServerConfig::default()).await;
        let env = Env::new();
        env.write_docs(DOCS);
        let config = env.write_config(&Config::new(server.base_url()));
        run(env.command(bin(), &config), RUN_TIMEOUT)
            .await
            .assert_code(0);
        env.dataset_bytes().expect("reference dataset")
    };

    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let config = env.write_config(&Config::new(server.base_url()).set("store_backend", backend));
    let mut shard_lines = 0;
    for i in 0..2 {
        let mut cmd = env.command(bin(), &config);
        cmd.args([
            "--shard",
            &format!("{i}/2"),
            "--set",
            &format!("output_dir=./shard{i}"),
        ]);
        let out = run(cmd, RUN_TIMEOUT).await;
        out.assert_code(0);
        let lines =
            std::fs::read_to_string(env.root().join(format!("shard{i}/sharegpt_format.jsonl")))
                .unwrap_or_default();
        let n = lines.lines().count();
        assert!(
            n > 0 && n < DOCS,
            "shard {i} holds part of the items: {n}\n{out}"
        );
        shard_lines += n;
    }
    assert_eq!(shard_lines, DOCS, "the shards split the items");
    assert_eq!(server.stats().requests, DOCS as u64);

    let merge = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(atk());
        cmd.arg("merge")
            .args(args)
            .current_dir(env.root())
            .env_remove("RUST_LOG");
        run(cmd, RUN_TIMEOUT)
    };
    let out = merge(&["shard0", "shard1", "--into", "merged"]).await;
    out.assert_code(0);
    assert!(out.stderr.contains(&format!("{DOCS} results")), "{out}");
    // A second merge into the same OUT is refused, naming it.
    let again = merge(&["shard0", "shard1", "--into", "merged"]).await;
    again.assert_code(2);
    assert!(
        again.stderr.contains("merged") && again.stderr.contains("already holds a store"),
        "{again}"
    );

    let mut cmd = env.command(bin(), &config);
    cmd.args(["--set", "output_dir=./merged"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    let merged =
        std::fs::read(env.root().join("merged/sharegpt_format.jsonl")).expect("merged dataset");
    assert_eq!(
        merged, reference,
        "two shards + merge = the unsharded dataset, byte for byte\n{out}"
    );
    let stats = server.stats();
    assert_eq!(
        stats.requests, DOCS as u64,
        "the run on the merge sent nothing\n{out}"
    );
    assert_eq!(stats.repeats(), 0, "no item sent twice: {stats:?}");
}

#[tokio::test]
async fn bad_shards_and_merges_exit_2_naming_what_is_wrong() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()));
    for bad in ["2/2", "1/0", "one/two"] {
        let mut cmd = env.command(bin(), &config);
        cmd.args(["--shard", bad]);
        let out = run(cmd, RUN_TIMEOUT).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("--shard") && out.stderr.contains(bad),
            "{out}"
        );
    }
    // Shards of different settings are refused.
    let mut cmd = env.command(bin(), &config);
    cmd.args(["--shard", "0/2", "--set", "output_dir=./a"]);
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    let mut cmd = env.command(bin(), &config);
    cmd.args([
        "--shard",
        "1/2",
        "--set",
        "output_dir=./b",
        "--set",
        "chunk_size=300",
    ]);
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    let mut cmd = tokio::process::Command::new(atk());
    cmd.args(["merge", "a", "b", "--into", "out"])
        .current_dir(env.root())
        .env_remove("RUST_LOG");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("cannot be merged") && out.stderr.contains("differ"),
        "{out}"
    );
    let mut cmd = tokio::process::Command::new(atk());
    cmd.args(["merge", "a", "inputs", "--into", "out"])
        .current_dir(env.root())
        .env_remove("RUST_LOG");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("inputs") && out.stderr.contains("no atk store"),
        "{out}"
    );
}

#[tokio::test]
async fn a_rerun_over_unchanged_inputs_reads_nothing_and_a_new_file_is_read() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(4);
    let config = env.write_config(&Config::new(server.base_url()));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains("inputs unchanged since the last run"),
        "{out}"
    );
    assert_eq!(server.stats().requests, 4);
    env.write_docs(5);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(!out.stderr.contains("inputs unchanged"), "{out}");
    assert_eq!(
        server.stats().requests,
        5,
        "only the new file is sent\n{out}"
    );
    assert_eq!(env.dataset().len(), 5);
}

#[tokio::test]
async fn gc_frees_the_results_of_removed_inputs_and_a_rerun_sees_no_damage() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    let names = env.write_docs(4);
    let config = env.write_config(&Config::new(server.base_url()));
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    std::fs::remove_file(env.inputs().join(&names[0])).unwrap();
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    // A pack of another input folder, and a temp file of an interrupted pack write.
    let cache = env.output().join("chunk_cache");
    std::fs::write(
        cache.join("pack-00000000000000000000000000000000.jsonl"),
        "x",
    )
    .unwrap();
    std::fs::write(cache.join(".tmpAbCd"), "y").unwrap();

    let mut cmd = tokio::process::Command::new(atk());
    cmd.arg("gc").arg(env.output()).env_remove("RUST_LOG");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("1 results and 0 failures of retired items")
            && out.stderr.contains("2 unused chunk-cache files"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "the current pack stays"
    );

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        !out.stderr.contains("STORE DAMAGED"),
        "gc updated the counts\n{out}"
    );
    assert_eq!(server.stats().requests, 4, "{out}");
    assert_eq!(env.dataset().len(), 3);

    let mut cmd = tokio::process::Command::new(atk());
    cmd.arg("gc").arg(env.inputs()).env_remove("RUST_LOG");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(out.stderr.contains("no atk store"), "{out}");
}
