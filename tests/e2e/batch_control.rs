//! Batch mode's controls, end to end: `--no-wait` submits and leaves (state
//! `waiting_for_batches`, the command that collects), a later run collects; `atk status`
//! lists each batch; `--cancel-batches` cancels and the next run collects what the batch did
//! and sends the rest again; Ctrl-C leaves the batch running and says how to collect it; and
//! a run SIGKILLed while uploading or between creating a batch and storing its id is resumed
//! without paying twice (Anthropic's batches cannot be found by tag: that one is created
//! again, as the docs say).

use std::path::{Path, PathBuf};
use std::time::Duration;

use atk_e2e::{Config, Env, Running, run};
use atk_testkit::{BatchBehaviour, ServerConfig, TestServer};

use crate::{Poems, RUN_TIMEOUT, bin, poem_server};

fn atk() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-atk"))
}

/// A batch that takes an hour: it is still running whenever a test looks.
fn slow() -> BatchBehaviour {
    BatchBehaviour {
        latency: Duration::from_secs(3600),
        ..BatchBehaviour::default()
    }
}

/// The batch behaviour of the run that collects: batches end at once.
fn quick() -> BatchBehaviour {
    BatchBehaviour {
        latency: Duration::from_millis(100),
        ..BatchBehaviour::default()
    }
}

struct Setup {
    server: TestServer,
    poems: Poems,
    env: Env,
    config: PathBuf,
    sets: Vec<String>,
}

async fn setup(dialect: &str, batch: BatchBehaviour, docs: usize) -> Setup {
    let (server, poems) = poem_server(ServerConfig::default().with_batch(batch)).await;
    let env = Env::new();
    env.write_docs(docs);
    let config = env.write_config(&Config::new(server.base_url()));
    Setup {
        server,
        poems,
        env,
        config,
        sets: vec![
            format!("small_api={dialect}"),
            "small_mode=batch".into(),
            "batch_max_wait=0.2".into(),
        ],
    }
}

impl Setup {
    fn command(&self, extra: &[&str]) -> tokio::process::Command {
        let mut cmd = self.env.command_with(bin(), &self.config, &self.sets);
        cmd.args(extra);
        cmd
    }

    async fn status(&self) -> String {
        let mut cmd = tokio::process::Command::new(atk());
        cmd.arg("status").arg(self.env.output());
        let out = run(cmd, RUN_TIMEOUT).await;
        out.assert_code(0);
        out.stdout
    }

    async fn status_json(&self) -> serde_json::Value {
        let mut cmd = tokio::process::Command::new(atk());
        cmd.arg("status").arg(self.env.output()).arg("--json");
        let out = run(cmd, RUN_TIMEOUT).await;
        out.assert_code(0);
        serde_json::from_str(&out.stdout).expect("atk status --json prints JSON")
    }
}

#[tokio::test]
async fn no_wait_submits_and_leaves_and_a_later_run_collects() {
    for dialect in ["openai", "anthropic"] {
        let s = setup(dialect, slow(), 4).await;
        let out = run(s.command(&["--no-wait"]), RUN_TIMEOUT).await;
        out.assert_code(0);
        // It says how to collect: the same command without --no-wait.
        let collect = format!("collect them with: {}", bin().display());
        assert!(out.stderr.contains(&collect), "{dialect}\n{out}");
        assert!(
            !out.stderr.contains("--no-wait --") && out.stderr.contains("a chain's first step"),
            "{dialect}\n{out}"
        );
        assert!(s.env.dataset_bytes().is_none(), "{dialect}: no dataset yet");
        assert!(
            !out.stderr.contains("writing the datasets"),
            "{dialect}: the chain stops at the batches\n{out}"
        );
        let stats = s.server.stats();
        assert_eq!(
            (stats.batches_created, stats.batch_lines, stats.requests),
            (1, 4, 0),
            "{dialect}: {stats:?}"
        );
        // The run waits for its batches; `atk status` and status.json list the batch.
        let json = s.status_json().await;
        assert_eq!(json["state"], "waiting_for_batches", "{dialect}: {json}");
        let batch = &json["batches"][0];
        assert_eq!(
            (
                batch["provider"].as_str(),
                batch["total"].as_u64(),
                batch["engine"].as_str()
            ),
            (Some(dialect), Some(4), Some("small")),
            "{dialect}: {json}"
        );
        let id = batch["id"].as_str().expect("the batch's id is stored");
        let text = s.status().await;
        assert!(
            text.contains("waiting for batches")
                && text.contains(&format!("batch {id} (small, {dialect}): "))
                && text.contains("0 done 0 errored 0 expired of 4, created "),
            "{dialect}\n{text}"
        );
        // Another --no-wait run before the batch ends: it looks once and leaves it again.
        run(s.command(&["--no-wait"]), RUN_TIMEOUT)
            .await
            .assert_code(0);
        // The batch ends; the next run collects it and pays nothing again.
        s.server.set_batch(quick());
        let out = run(s.command(&[]), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(s.env.dataset().len(), 4, "{dialect}\n{out}");
        s.poems.assert_all_whole(&s.env);
        let stats = s.server.stats();
        assert_eq!(
            (stats.batches_created, stats.batch_lines, stats.requests),
            (1, 4, 0),
            "{dialect}: {stats:?}"
        );
        let json = s.status_json().await;
        assert_eq!(json["state"], "finished", "{dialect}: {json}");
        assert_eq!(
            json["batches"][0]["state"], "collected",
            "{dialect}: {json}"
        );
    }
}

#[tokio::test]
async fn cancel_batches_cancels_and_the_next_run_collects_what_was_done() {
    for dialect in ["openai", "anthropic"] {
        let batch = BatchBehaviour {
            cancel_done: 0.5,
            ..slow()
        };
        let s = setup(dialect, batch.clone(), 4).await;
        run(s.command(&["--no-wait"]), RUN_TIMEOUT)
            .await
            .assert_code(0);
        let out = run(s.command(&["--cancel-batches"]), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert!(
            out.stdout.contains("cancelled batch ") && out.stderr.contains("1 batch cancelled"),
            "{dialect}\n{out}"
        );
        assert_eq!(s.server.stats().batches_cancelled, 1, "{dialect}");
        let json = s.status_json().await;
        assert_eq!(json["batches"][0]["cancelled"], true, "{dialect}: {json}");
        // Nothing more to cancel.
        let again = run(s.command(&["--cancel-batches"]), RUN_TIMEOUT).await;
        again.assert_code(0);
        assert_eq!(s.server.stats().batches_cancelled, 1, "{dialect}\n{again}");
        // The next run reads what the cancelled batch did (half of it) and sends the rest in a
        // new batch: each request is answered once.
        s.server.set_batch(BatchBehaviour {
            cancel_done: 0.5,
            ..quick()
        });
        let out = run(s.command(&[]), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(s.env.dataset().len(), 4, "{dialect}\n{out}");
        s.poems.assert_all_whole(&s.env);
        let stats = s.server.stats();
        assert_eq!(
            (
                stats.batches_created,
                stats.batch_lines,
                stats.batch_completed
            ),
            (2, 6, 4),
            "{dialect}: two done in the cancelled batch, two sent again: {stats:?}"
        );
    }
}

#[tokio::test]
async fn ctrl_c_leaves_the_batch_running_and_says_how_to_collect_it() {
    let s = setup(
        "openai",
        BatchBehaviour {
            latency: Duration::from_secs(3600),
            ..BatchBehaviour::default()
        },
        3,
    )
    .await;
    let running = Running::spawn(s.command(&[]));
    // Polled twice: the status loop (once a second) has shown the wait by then.
    s.server
        .wait_until(Duration::from_secs(30), |st| st.batch_polls >= 2)
        .await
        .expect("the batch is created and polled");
    running.interrupt();
    let out = running.wait(RUN_TIMEOUT).await;
    out.assert_code(130);
    assert!(
        out.stderr.contains("waiting for batch (0 of 3 done)"),
        "progress shows the wait\n{out}"
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("left running at the provider"))
        .unwrap_or_else(|| panic!("the summary says the batch is left running\n{out}"));
    assert!(
        line.starts_with("1 batch (3 requests)")
            && line.contains(&format!("collect them with: {}", bin().display())),
        "{line}"
    );
    s.server.set_batch(quick());
    run(s.command(&[]), RUN_TIMEOUT).await.assert_code(0);
    assert_eq!(s.env.dataset().len(), 3);
    let stats = s.server.stats();
    assert_eq!((stats.batches_created, stats.batch_lines), (1, 3));
}

#[tokio::test]
async fn killed_while_uploading_the_rerun_sends_the_requests_once() {
    for dialect in ["openai", "anthropic"] {
        // The first upload (OpenAI's file, Anthropic's creation carrying the requests) never
        // completes: the run is killed while it is under way.
        let s = setup(
            dialect,
            BatchBehaviour {
                hold_uploads: 1,
                ..quick()
            },
            4,
        )
        .await;
        let running = Running::spawn(s.command(&[]));
        s.server
            .wait_until(Duration::from_secs(30), |st| st.batch_held >= 1)
            .await
            .expect("the upload starts");
        let killed = running.kill().await;
        assert_eq!(
            killed.code, None,
            "{dialect}: killed while uploading\n{killed}"
        );
        let out = run(s.command(&[]), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(s.env.dataset().len(), 4, "{dialect}\n{out}");
        s.poems.assert_all_whole(&s.env);
        let stats = s.server.stats();
        assert_eq!(
            (stats.batches_created, stats.batch_lines, stats.requests),
            (1, 4, 0),
            "{dialect}: one batch, each request once: {stats:?}"
        );
    }
}

#[tokio::test]
async fn killed_between_creating_a_batch_and_storing_its_id() {
    for dialect in ["openai", "anthropic"] {
        // The provider creates the batch but its answer (the id) never arrives.
        let s = setup(
            dialect,
            BatchBehaviour {
                hold_created: 1,
                ..quick()
            },
            4,
        )
        .await;
        let running = Running::spawn(s.command(&[]));
        s.server
            .wait_until(Duration::from_secs(30), |st| st.batch_held >= 1)
            .await
            .expect("the batch is created");
        let killed = running.kill().await;
        assert_eq!(killed.code, None, "{dialect}\n{killed}");
        let out = run(s.command(&[]), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(s.env.dataset().len(), 4, "{dialect}\n{out}");
        s.poems.assert_all_whole(&s.env);
        let stats = s.server.stats();
        // OpenAI: the rerun finds the batch by its metadata tag and polls it. Anthropic's
        // batches carry no tag: the docs say that batch is created again.
        let expected = match dialect {
            "openai" => (1, 4),
            _ => (2, 8),
        };
        assert_eq!(
            (stats.batches_created, stats.batch_lines),
            expected,
            "{dialect}: {stats:?}"
        );
        assert_eq!(stats.requests, 0, "{dialect}");
    }
}
