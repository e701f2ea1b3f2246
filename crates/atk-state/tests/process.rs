//! Tests that need a second process: the store's lock, and SIGKILL during writes.
//!
//! No libtest harness (`harness = false`): this binary re-runs itself with
//! `ATK_STATE_TEST_MODE` set to play the other process (`writer` or `holder`), so no test
//! tool ships as a user-facing binary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use atk_state::{Backend, DiskStore, Error, RECORD_VERSION, ResultRecord, Store, StoreOptions};

/// Environment variable selecting the child's role.
const MODE: &str = "ATK_STATE_TEST_MODE";
/// Environment variable giving the child the store directory.
const DIR: &str = "ATK_STATE_TEST_DIR";
/// Environment variable naming the writer's store backend.
const BACKEND: &str = "ATK_STATE_TEST_BACKEND";
/// Environment variable giving the writer a tag for its ids.
const RUN: &str = "ATK_STATE_TEST_RUN";
/// The step the writer stores results for.
const STEP: &str = "write";
/// Concurrent writer tasks in the child.
const WRITERS: usize = 64;
/// Longest any wait on a child may take.
const PATIENCE: Duration = Duration::from_secs(8);

fn main() {
    match std::env::var(MODE).as_deref() {
        Ok("writer") => writer(&dir_from_env()),
        Ok("holder") => holder(&dir_from_env()),
        _ => {
            let started = Instant::now();
            run(
                "a second process is refused with the holder's pid",
                a_second_process_is_locked_out,
            );
            run("SIGKILL loses no acknowledged result (sled)", || {
                sigkill_loses_no_acknowledged_result(Backend::Sled)
            });
            run("SIGKILL loses no acknowledged result (redb)", || {
                sigkill_loses_no_acknowledged_result(Backend::Redb)
            });
            println!(
                "process tests passed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Runs one test, naming it.
fn run(name: &str, test: impl FnOnce()) {
    print!("test {name} ... ");
    let _ = std::io::stdout().flush();
    test();
    println!("ok");
}

fn dir_from_env() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR).expect("store dir in the environment"))
}

/// A child playing `mode` on the store in `dir`, with piped stdin and stdout.
fn spawn(mode: &str, dir: &Path, run: usize) -> Child {
    spawn_on(mode, dir, run, Backend::Sled)
}

/// [`spawn`] with the store on `backend`.
fn spawn_on(mode: &str, dir: &Path, run: usize, backend: Backend) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(MODE, mode)
        .env(BACKEND, backend.name())
        .env(DIR, dir)
        .env(RUN, run.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Forwards the child's stdout lines to a channel, so reads can have a deadline.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Child role: holds the store open until its stdin closes.
fn holder(dir: &Path) {
    let store = DiskStore::open(dir).unwrap();
    println!("open");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    drop(store);
}

fn a_second_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn("holder", dir.path(), 0);
    let rx = lines(&mut child);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "open");

    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Locked { pid: Some(pid), .. } if pid == child.id()),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("pid {}", child.id()))
            && message.contains("in use by another run"),
        "{message}"
    );
    assert!(matches!(
        DiskStore::try_open_read(dir.path()),
        Err(Error::Locked { .. })
    ));

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    DiskStore::open(dir.path()).expect("free again once the holder exits");
}

/// A ~1 KB result, like a short generated answer with its details off.
fn record(id: &str) -> ResultRecord {
    ResultRecord {
        v: RECORD_VERSION,
        output: serde_json::json!({"id": id, "text": "x".repeat(1000)}),
        details: None,
        attempts: 1,
        prompt_tokens: 100,
        completion_tokens: 250,
        elapsed_ms: 5,
        stored_at_ms: 0,
        ..ResultRecord::new(serde_json::Value::Null)
    }
}

/// Child role: stores results as fast as it can from many tasks and prints `ack <id>` for
/// each one after `put_result` returned. Never exits on its own.
fn writer(dir: &Path) {
    let run: usize = std::env::var(RUN).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend: Backend = std::env::var(BACKEND).unwrap().parse().unwrap();
        let options = StoreOptions::default().with_backend(backend);
        let store = std::sync::Arc::new(DiskStore::open_with(dir, options).unwrap());
        let tasks: Vec<_> = (0..WRITERS)
            .map(|task| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    for n in 0.. {
                        let id = format!("r{run}-t{task}-{n}");
                        store.put_result(STEP, &id, record(&id)).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {id}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

fn sigkill_loses_no_acknowledged_result(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<String> = Vec::new();
    // Kill after different numbers of acks so the kills land at different moments.
    for (run, kill_after) in [300, 1100, 2300].into_iter().enumerate() {
        let mut child = spawn_on("writer", dir.path(), run, backend);
        let rx = lines(&mut child);
        let deadline = Instant::now() + PATIENCE;
        let mut seen = 0;
        while seen < kill_after {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(wait)
                .unwrap_or_else(|_| panic!("writer {run} gave only {seen} acks"));
            acked.push(line.strip_prefix("ack ").unwrap().to_owned());
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let _ = child.wait().unwrap();
        // Acks printed before the kill but not read yet count too: they were acknowledged.
        acked.extend(
            rx.iter()
                .filter_map(|line| line.strip_prefix("ack ").map(str::to_owned)),
        );

        let store =
            DiskStore::open(dir.path()).expect("reopens after a kill (stale pid file, no lock)");
        assert_eq!(
            store.backend(),
            backend,
            "an existing store keeps its backend"
        );
        let lost: Vec<_> = acked
            .iter()
            .filter(|id| !store.has_result(STEP, id).unwrap())
            .collect();
        assert!(
            lost.is_empty(),
            "kill {run}: {} of {} acknowledged results lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        let sample = acked.last().unwrap();
        assert_eq!(
            store.result(STEP, sample).unwrap().unwrap().output["id"],
            serde_json::json!(sample)
        );
        let stored = store.count_results(STEP).unwrap();
        assert!(stored >= acked.len() as u64);
        print!("[kill {run}: {} acked, {stored} stored] ", acked.len());
    }
}
