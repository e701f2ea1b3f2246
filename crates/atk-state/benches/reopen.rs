//! Reopen benchmark (redb): what the page check costs a store that was not closed cleanly
//! (a killed run, or a file changed since), against a reopen after a clean close, in one run.
//!
//! `cargo bench -p atk-state --bench reopen` (set `ATK_BENCH_RECORDS` for another count;
//! default 100 000 ~1 KB results). Prints ratios measured in this run.
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use atk_state::{Backend, DiskStore, ResultRecord, Store, StoreOptions};

/// Concurrent writer tasks while filling the store.
const WRITERS: usize = 200;
/// The mark a clean close leaves beside the database file (see `backend/redb.rs`).
const CLEAN_CLOSE_FILE: &str = "closed-cleanly";

/// A ~1 KB result record.
fn record(i: usize) -> ResultRecord {
    ResultRecord::new(
        serde_json::json!({"question": format!("question {i}"), "answer": "y".repeat(900)}),
    )
}

/// Time to open the store in `dir` and drop it again.
fn reopen(dir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let store = DiskStore::open_with(dir, StoreOptions::default().with_backend(Backend::Redb))
        .expect("reopen");
    let took = started.elapsed();
    drop(store);
    took
}

fn main() {
    let records: usize = std::env::var("ATK_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fill = Instant::now();
    runtime.block_on(async {
        let store = Arc::new(
            DiskStore::open_with(
                dir.path(),
                StoreOptions::default().with_backend(Backend::Redb),
            )
            .expect("open"),
        );
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..records).step_by(WRITERS) {
                    store
                        .put_result("bench", &format!("item{i:08}"), record(i))
                        .await
                        .expect("put");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let size = std::fs::metadata(dir.path().join("store.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{records} results written in {:.1} s; file {:.0} MB",
        fill.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    // The first open after filling may still find the file as the fill left it: reopen
    // twice so both figures are of a store closed cleanly by a reopen.
    reopen(dir.path());
    let clean = (0..3).map(|_| reopen(dir.path())).min().unwrap_or_default();
    let checked = (0..3)
        .map(|_| {
            let mark = dir.path().join(CLEAN_CLOSE_FILE);
            assert!(mark.is_file(), "a clean close leaves {CLEAN_CLOSE_FILE}");
            std::fs::remove_file(mark).expect("remove the mark");
            reopen(dir.path())
        })
        .min()
        .unwrap_or_default();
    println!(
        "reopen after a clean close: {:.3} s; not closed cleanly (every page checked): {:.3} s; {:.1}x",
        clean.as_secs_f64(),
        checked.as_secs_f64(),
        checked.as_secs_f64() / clean.as_secs_f64().max(1e-9)
    );
}
