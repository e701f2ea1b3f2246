//! Store benchmark: durable `put_result` under 200 concurrent writers versus bare sled
//! inserts (no durability) in the same run, then reopen + iterate.
//!
//! `cargo bench -p atk-state --bench store` (set `ATK_BENCH_RECORDS` for another count).
//! Prints ratios measured in this run; absolute figures depend on the machine.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atk_state::{RECORD_VERSION, ResultRecord, SledStore, StoreOptions, Store};

/// Concurrent writer tasks.
const WRITERS: usize = 200;
/// The step results are stored under.
const STEP: &str = "bench";

/// A ~1 KB result record.
fn record(i: usize) -> ResultRecord {
    ResultRecord {
        v: RECORD_VERSION,
        output: serde_json::json!({"question": format!("question {i}"), "answer": "y".repeat(900)}),
        details: None,
        attempts: 1,
        prompt_tokens: 300,
        completion_tokens: 250,
        elapsed_ms: 800,
        stored_at_ms: 1_700_000_000_000,
    }
}

/// Figures of one write phase.
struct Phase {
    /// Records per second.
    rate: f64,
    /// Median put latency.
    p50: Duration,
    /// 99th percentile put latency.
    p99: Duration,
    /// RSS after the phase, MB.
    rss_mb: f64,
}

/// Resident and peak memory of this process, MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `records` writes spread over [`WRITERS`] tasks, timing each with `put`.
async fn write_phase<F, Fut>(records: usize, put: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let put = Arc::new(put);
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|task| {
            let put = Arc::clone(&put);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(records / WRITERS + 1);
                for i in (task..records).step_by(WRITERS) {
                    let at = Instant::now();
                    put(i).await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(records);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Phase { rate: records as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99), rss_mb: memory_mb().0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reopens the store and walks every result (decoding) and every key; returns both times.
fn reopen_and_iterate(dir: &Path, records: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let store = SledStore::open(dir).unwrap();
    let open = started.elapsed();
    let mut n = 0;
    for result in store.results(STEP) {
        result.unwrap();
        n += 1;
    }
    assert_eq!(n, records);
    let walk = started.elapsed() - open;
    assert_eq!(store.count_results(STEP).unwrap(), records as u64);
    (open, walk)
}

fn main() {
    let records: usize = std::env::var("ATK_BENCH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let ours_dir = tempfile::tempdir().unwrap();
    let base_dir = tempfile::tempdir().unwrap();
    println!("atk-state store bench: {records} put_result of ~1 KB from {WRITERS} tasks");

    // Ours: durable put_result (group commit).
    let store = Arc::new(SledStore::open(ours_dir.path()).unwrap());
    let s = Arc::clone(&store);
    let ours = runtime.block_on(write_phase(records, move |i| {
        let s = Arc::clone(&s);
        async move { s.put_result(STEP, &format!("item-{i:08}"), record(i)).await.unwrap() }
    }));
    let commits = store.commit_count();
    let disk_mb = store.size_on_disk().unwrap() as f64 / 1e6;
    drop(store);

    // Baseline: the same records inserted into bare sled, no flush, no waiting.
    let db = sled::Config::new()
        .path(base_dir.path())
        .cache_capacity(StoreOptions::default().cache_capacity)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let tree = db.open_tree("results").unwrap();
    let base = runtime.block_on(write_phase(records, move |i| {
        let tree = tree.clone();
        async move {
            let mut key = STEP.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(format!("item-{i:08}").as_bytes());
            tree.insert(key, serde_json::to_vec(&record(i)).unwrap()).unwrap();
        }
    }));
    db.flush().unwrap();
    drop(db);
    let (_, peak_mb) = memory_mb();

    let (open, walk) = reopen_and_iterate(ours_dir.path(), records);
    let base_walk = {
        let started = Instant::now();
        let db = sled::Config::new().path(base_dir.path()).open().unwrap();
        let n = db.open_tree("results").unwrap().iter().keys().count();
        assert_eq!(n, records);
        started.elapsed()
    };

    println!();
    println!("                      durable (ours)   sled insert only   ratio");
    println!("records/s             {:>14.0}   {:>16.0}   {:.2}", ours.rate, base.rate, ours.rate / base.rate);
    println!("p50 put latency ms    {:>14.3}   {:>16.3}", ms(ours.p50), ms(base.p50));
    println!("p99 put latency ms    {:>14.3}   {:>16.3}", ms(ours.p99), ms(base.p99));
    println!("RSS after phase MB    {:>14.1}   {:>16.1}", ours.rss_mb, base.rss_mb);
    println!();
    println!("group commits: {commits} ({:.1} records per flush); store on disk {disk_mb:.0} MB; peak RSS {peak_mb:.1} MB", records as f64 / commits.max(1) as f64);
    println!(
        "reopen {:.0} ms + decode-iterate {records} results {:.0} ms (bare sled reopen + key walk {:.0} ms, ratio {:.2})",
        ms(open),
        ms(walk),
        ms(base_walk),
        (open + walk).as_secs_f64() / base_walk.as_secs_f64()
    );
}
