//! CLI conventions: `-q` prints nothing on a clean run; where each dataset went is on stdout,
//! diagnostics on stderr; a closed output pipe (`| head -1`) neither panics nor loses work;
//! `atk status` after a `kill -9` says the run was killed.

use std::io::BufRead;
use std::time::Duration;

use atk_e2e::{Config, Env, Running, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

/// The shipped demo config, with its output in `env`'s temp dir and no fake latency.
fn demo(env: &Env) -> tokio::process::Command {
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipelines/example/demo.yaml"
    );
    let mut cmd = env.command(bin(), demo.as_ref());
    cmd.arg("--set")
        .arg(format!("output_dir={}", env.output().display()));
    cmd.args(["--set", "mock_latency_ms=0"]);
    cmd
}

#[tokio::test]
async fn quiet_prints_nothing_on_a_clean_mock_run() {
    let env = Env::new();
    let mut cmd = demo(&env);
    cmd.arg("-q");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", ""),
        "-q is errors only, no banner or warning\n{out}"
    );
    assert_eq!(env.dataset().len(), 5);
}

#[tokio::test]
async fn dataset_paths_go_to_stdout_and_diagnostics_to_stderr() {
    let env = Env::new();
    let out = run(demo(&env), RUN_TIMEOUT).await;
    out.assert_code(0);
    let stdout: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(stdout.len(), 4, "one line per dataset (1 + 3 meta)\n{out}");
    assert!(
        stdout.iter().all(|l| l.starts_with("dataset written: ")),
        "{out}"
    );
    assert!(
        stdout[0].contains("sharegpt_format.jsonl (5 lines)"),
        "{out}"
    );
    assert!(!out.stderr.contains("dataset written"), "{out}");
    assert!(
        out.stderr.contains("MOCK ENGINE") && out.stderr.contains("summary"),
        "{out}"
    );
}

#[tokio::test]
async fn a_closed_output_pipe_ends_output_quietly_and_loses_nothing() {
    // `example-pipeline ... 2>&1 | head -1`: one pipe for both streams, closed after a line,
    // while the run still has replies to wait for (server latency), a summary and datasets to print.
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(80))).await;
    let env = Env::new();
    env.write_docs(6);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = 2;
    let config = env.write_config(&config);
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut cmd = env.command(bin(), &config);
    cmd.stdout(writer.try_clone().expect("dup pipe"))
        .stderr(writer)
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("pipeline starts");
    drop(cmd); // the parent's copies of the write end
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(reader)
            .read_line(&mut line)
            .map(|_| line)
        // the reader (the pipe's only read end) is dropped here: `head` has exited
    })
    .await
    .expect("reader thread")
    .expect("read the first line");
    assert!(!first.is_empty(), "the run printed nothing");
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .expect("the run ends")
        .expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "no panic (101) on a closed pipe; first line: {first}"
    );
    assert_eq!(
        env.dataset().len(),
        6,
        "every item done and the dataset written"
    );
    assert_eq!(server.stats().completed, 6);

    // The store is complete: a rerun sends nothing.
    server.reset_stats();
    let mut again = env.command(bin(), &config);
    again.arg("-q");
    run(again, RUN_TIMEOUT).await.assert_code(0);
    assert_eq!(
        server.stats().requests,
        0,
        "nothing was lost: the rerun re-requests nothing"
    );
}

#[tokio::test]
async fn the_example_needs_only_the_small_engines_keys() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(2);
    let yaml: String = Config::new(server.base_url())
        .to_yaml()
        .lines()
        .filter(|l| !l.trim_start().starts_with("large_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = env.root().join("small_only.yaml");
    std::fs::write(
        &config,
        yaml.replace("  small_model:", "  large_mode: api\n  small_model:"),
    )
    .unwrap();
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(env.dataset().len(), 2);
    assert!(
        !out.stderr.contains("large"),
        "nothing about the unused large engine\n{out}"
    );
}

#[tokio::test]
async fn status_after_kill_9_says_the_run_was_killed() {
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(100))).await;
    let env = Env::new();
    env.write_docs(8);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = 2;
    let config = env.write_config(&config);
    let running = Running::spawn(env.command(bin(), &config));
    let reached = server.wait_until(RUN_TIMEOUT, |s| s.completed >= 2).await;
    let out = running.kill().await;
    assert!(reached.is_some(), "the run never got going\n{out}");
    assert!(
        env.output().join("status.json").is_file(),
        "the run wrote its snapshot\n{out}"
    );

    let status = atk_cli::status::read_status(&env.output()).expect("status of the killed run");
    let text = status.render();
    assert_eq!(status.state, atk_cli::status::RunState::Killed, "{text}");
    assert!(
        text.contains(": killed (last seen") && text.contains("the run is not running"),
        "{text}"
    );
    assert!(!text.contains("requests in flight"), "{text}");
}
