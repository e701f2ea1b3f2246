//! Store benchmark: durable `put_result` under 200 concurrent writers versus bare sled
//! inserts (no durability) in the same run, then reopen + iterate.
//!
//! `cargo bench -p atk-state --bench store` (set `ATK_BENCH_RECORDS` for another count).
//! Prints ratios measured in this run; absolute figures depend on the machine.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atk_state::{Fields, ItemRecord, RECORD_VERSION, ResultRecord, SledStore, Store};

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
        ..ResultRecord::new(serde_json::Value::Null)
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
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `records` writes spread over [`WRITERS`] tasks, timing each `put`; with `pace`, each
/// task writes once per period instead of as fast as it can.
async fn write_phase<F, Fut>(records: usize, pace: Option<Duration>, put: F) -> Phase
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
                let mut ticks = pace.map(|period| {
                    // Spread the tasks over the period so the load is even.
                    let offset = period * task as u32 / WRITERS as u32;
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period)
                });
                for i in (task..records).step_by(WRITERS) {
                    if let Some(ticks) = &mut ticks {
                        ticks.tick().await;
                    }
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
    Phase {
        rate: records as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        rss_mb: memory_mb().0,
    }
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

/// Durable `put_result` into a fresh store in `dir`; returns the phase and its group commits.
fn ours_phase(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    records: usize,
    pace: Option<Duration>,
) -> (Phase, u64) {
    let store = Arc::new(SledStore::open(dir).unwrap());
    let s = Arc::clone(&store);
    let phase = runtime.block_on(write_phase(records, pace, move |i| {
        let s = Arc::clone(&s);
        async move {
            s.put_result(STEP, &format!("item-{i:08}"), record(i))
                .await
                .unwrap()
        }
    }));
    let commits = store.commit_count();
    (phase, commits)
}

/// The same records inserted into bare sled in `dir`: no flush, no waiting.
fn base_phase(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    records: usize,
    pace: Option<Duration>,
) -> Phase {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 << 20)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let tree = db.open_tree("results").unwrap();
    let phase = runtime.block_on(write_phase(records, pace, move |i| {
        let tree = tree.clone();
        async move {
            let mut key = STEP.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(format!("item-{i:08}").as_bytes());
            tree.insert(key, serde_json::to_vec(&record(i)).unwrap())
                .unwrap();
        }
    }));
    db.flush().unwrap();
    phase
}

fn main() {
    let records: usize = std::env::var("ATK_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "atk-state store bench: {records} put_result of ~1 KB from {WRITERS} tasks, saturated"
    );
    println!(
        "(two rounds, ours first then baseline first; the machine is shared, so compare within a round)"
    );
    println!();
    println!("round  store            records/s   p50 ms   p99 ms   RSS after MB");
    let row = |round: usize, name: &str, p: &Phase| {
        println!(
            "{round:>5}  {name:<15} {:>10.0} {:>8.3} {:>8.3} {:>14.1}",
            p.rate,
            ms(p.p50),
            ms(p.p99),
            p.rss_mb
        );
    };
    let mut last_ours = None;
    let mut ratios = Vec::new();
    for round in 1..=2 {
        let ours_dir = tempfile::tempdir().unwrap();
        let base_dir = tempfile::tempdir().unwrap();
        let (ours, base, commits) = if round == 1 {
            let (ours, commits) = ours_phase(&runtime, ours_dir.path(), records, None);
            (
                ours,
                base_phase(&runtime, base_dir.path(), records, None),
                commits,
            )
        } else {
            let base = base_phase(&runtime, base_dir.path(), records, None);
            let (ours, commits) = ours_phase(&runtime, ours_dir.path(), records, None);
            (ours, base, commits)
        };
        row(round, "durable (ours)", &ours);
        row(round, "sled insert", &base);
        println!(
            "       -> throughput ratio ours/insert-only {:.2}; {:.1} records per group commit",
            ours.rate / base.rate,
            records as f64 / commits.max(1) as f64
        );
        ratios.push(ours.rate / base.rate);
        last_ours = Some((ours_dir, base_dir));
    }

    // Paced: what a run at a realistic rate pays per write.
    let per_task = Duration::from_millis(100); // 200 tasks x 10/s = 2 000 records/s
    let paced = (records / 10).clamp(1_000, 6_000);
    let ours_dir = tempfile::tempdir().unwrap();
    let base_dir = tempfile::tempdir().unwrap();
    let (ours, commits) = ours_phase(&runtime, ours_dir.path(), paced, Some(per_task));
    let base = base_phase(&runtime, base_dir.path(), paced, Some(per_task));
    println!();
    println!(
        "paced at ~2 000 records/s ({paced} records): durable p50 {:.3} ms, p99 {:.3} ms; insert-only p50 {:.3} ms, p99 {:.3} ms; added p99 {:.3} ms; {:.1} records per group commit",
        ms(ours.p50),
        ms(ours.p99),
        ms(base.p50),
        ms(base.p99),
        ms(ours.p99.saturating_sub(base.p99)),
        paced as f64 / commits.max(1) as f64
    );

    let (ours_dir, base_dir) = last_ours.unwrap();
    let (open, walk) = reopen_and_iterate(ours_dir.path(), records);
    let base_walk = {
        let started = Instant::now();
        let db = sled::Config::new().path(base_dir.path()).open().unwrap();
        let n = db.open_tree("results").unwrap().iter().keys().count();
        assert_eq!(n, records);
        started.elapsed()
    };
    println!(
        "reopen {:.0} ms + decode-iterate {records} results {:.0} ms (bare sled reopen + key walk {:.0} ms; ratio {:.2})",
        ms(open),
        ms(walk),
        ms(base_walk),
        (open + walk).as_secs_f64() / base_walk.as_secs_f64()
    );
    let store = SledStore::open(ours_dir.path()).unwrap();
    let started = Instant::now();
    let found = (0..records)
        .filter(|i| store.has_result(STEP, &format!("item-{i:08}")).unwrap())
        .count();
    assert_eq!(found, records);
    println!(
        "resume check: has_result for {records} done items {:.0} ms",
        ms(started.elapsed())
    );
    drop(store);

    // Seeding: items in batches of 1 000 (one durable put_items each) vs bare inserts.
    let item = |i: usize| {
        let mut fields = Fields::new();
        fields.insert("text".into(), serde_json::json!("z".repeat(1000)));
        ItemRecord {
            v: RECORD_VERSION,
            id: format!("chunk-{i:08}"),
            parent: None,
            order: vec![i as u64],
            fields,
        }
    };
    let seed_dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(seed_dir.path()).unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        for start in (0..records).step_by(1_000) {
            store
                .put_items((start..(start + 1_000).min(records)).map(item).collect())
                .await
                .unwrap();
        }
    });
    let seed = started.elapsed();
    let started = Instant::now();
    runtime.block_on(async {
        for start in (0..records).step_by(1_000) {
            store
                .put_items((start..(start + 1_000).min(records)).map(item).collect())
                .await
                .unwrap();
        }
    });
    let reseed = started.elapsed();
    drop(store);
    let seed_base_dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(seed_base_dir.path())
        .flush_every_ms(None)
        .open()
        .unwrap();
    let tree = db.open_tree("items").unwrap();
    let started = Instant::now();
    for i in 0..records {
        tree.insert(
            format!("chunk-{i:08}"),
            serde_json::to_vec(&item(i)).unwrap(),
        )
        .unwrap();
    }
    let seed_base = started.elapsed();
    println!(
        "seeding {records} items: {:.0} ms durable with id index vs {:.0} ms bare inserts (ratio {:.2})",
        ms(seed),
        ms(seed_base),
        seed.as_secs_f64() / seed_base.as_secs_f64()
    );
    println!(
        "re-seeding the same {records} items (a resumed run): {:.0} ms",
        ms(reseed)
    );
    println!("peak RSS of the whole bench {:.1} MB", memory_mb().1);
}
