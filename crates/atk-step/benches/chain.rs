//! 100 000 items through a two-step chain with the mock engine at zero latency on the real sled store:
//! throughput (and its ratio to bare store writes at the same concurrency), a resumed run over
//! the finished items (beside a bare decode-every-item scan + lookup, and the ids-only scan +
//! lookup the executor does), and peak RSS at 10 000 vs 100 000 items (each size in a fresh process,
//! so the peaks do not mix). Run: `cargo bench -p atk-step --bench chain`.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use atk_engine::{Engine, MockConfig, MockEngine};
use atk_state::{
    FailureRecord, Fields, ItemRecord, RECORD_VERSION, Records, ResultRecord, SledStore, Store,
    StoreOptions,
};
use atk_step::{
    Engines, Executor, ExecutorConfig, NullSink, PromptLibrary, PromptStep, Step, StepContext,
};
use futures_util::StreamExt;
use serde_json::json;

const IN_FLIGHT: usize = 128;
const PROMPTS: &[(&str, &str)] = &[
    (
        "one.yaml",
        "- role: system\n  content: You write short poems.\n- role: user\n  content: \"Text: {text}\"\n",
    ),
    (
        "two.yaml",
        "- role: system\n  content: You rate poems.\n- role: user\n  content: \"Poem: {poem}\"\n",
    ),
];

/// atk's mock engine at zero latency (it hashes each prompt and fills the reply template).
fn mock() -> Arc<dyn Engine> {
    Arc::new(MockEngine::new("small", "mock", MockConfig::default()))
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn item(i: usize) -> ItemRecord {
    let mut fields = Fields::new();
    let text = format!("Chunk {i}: ").repeat(60); // ~600-700 bytes, a small chunk
    fields.insert("text".into(), json!(text));
    fields.insert("metadata".into(), json!(format!("doc{}.txt", i / 100)));
    ItemRecord {
        v: RECORD_VERSION,
        id: format!("{i:016x}"),
        parent: None,
        order: vec![i as u64],
        fields,
    }
}

async fn seed(store: &SledStore, n: usize) {
    for start in (0..n).step_by(1000) {
        store
            .put_items((start..(start + 1000).min(n)).map(item).collect())
            .await
            .unwrap();
    }
}

fn chain() -> Vec<Arc<dyn Step>> {
    vec![
        Arc::new(
            PromptStep::new("write_poem")
                .prompt("one")
                .result_key("poem")
                .mock_reply("<poem>\n{lines}\n</poem>"),
        ),
        Arc::new(
            PromptStep::new("rate_poem")
                .prompt("two")
                .output_processor(|raw| Ok(json!(raw.len()))),
        ),
    ]
}

fn open(path: &std::path::Path) -> SledStore {
    let mut options = StoreOptions::default();
    if let Ok(mb) = std::env::var("ATK_STEP_BENCH_CACHE_MB") {
        options = options.with_cache_capacity(mb.parse::<u64>().unwrap() * 1024 * 1024);
    }
    SledStore::open_with(path, options).unwrap()
}

/// A store that makes its items up on the fly and forgets every result: isolates the
/// executor's own memory from the store's.
struct Generated(usize);

#[async_trait]
impl Store for Generated {
    async fn put_items(&self, _: Vec<ItemRecord>) -> Result<(), atk_state::Error> {
        Ok(())
    }
    fn item(&self, id: &str) -> Result<Option<ItemRecord>, atk_state::Error> {
        Ok(usize::from_str_radix(id, 16)
            .ok()
            .filter(|&i| i < self.0)
            .map(item))
    }
    fn items(&self) -> Records<'_, ItemRecord> {
        Box::new((0..self.0).map(|i| Ok(item(i))))
    }
    async fn put_result(&self, _: &str, _: &str, _: ResultRecord) -> Result<(), atk_state::Error> {
        tokio::task::yield_now().await;
        Ok(())
    }
    fn result(&self, _: &str, _: &str) -> Result<Option<ResultRecord>, atk_state::Error> {
        Ok(None)
    }
    fn has_result(&self, _: &str, _: &str) -> Result<bool, atk_state::Error> {
        Ok(false)
    }
    fn results(&self, _: &str) -> Records<'_, (String, ResultRecord)> {
        Box::new(std::iter::empty())
    }
    async fn put_failure(
        &self,
        _: &str,
        _: &str,
        _: FailureRecord,
    ) -> Result<(), atk_state::Error> {
        Ok(())
    }
    fn failures(&self, _: &str) -> Records<'_, (String, FailureRecord)> {
        Box::new(std::iter::empty())
    }
    fn meta(&self, _: &str) -> Result<Option<serde_json::Value>, atk_state::Error> {
        Ok(None)
    }
    async fn put_meta(&self, _: &str, _: serde_json::Value) -> Result<(), atk_state::Error> {
        Ok(())
    }
    async fn flush(&self) -> Result<(), atk_state::Error> {
        Ok(())
    }
}

async fn child(n: usize) {
    // First, in a fresh process: the executor alone (no store memory), for its peak RSS.
    let rss_start = vm_hwm_mb();
    let ctx = StepContext::new(
        Engines::single(mock()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    let cfg = ExecutorConfig::default().with_max_in_flight(IN_FLIGHT);
    let t = Instant::now();
    let report = Executor::new(Arc::new(Generated(n)), ctx, Arc::new(NullSink), cfg)
        .run(&chain())
        .await
        .unwrap();
    let executor_only_s = t.elapsed().as_secs_f64();
    assert_eq!(report.steps[1].done, n as u64);
    let rss_executor_only = vm_hwm_mb();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("store")));
    let t = Instant::now();
    seed(&store, n).await;
    let seed_s = t.elapsed().as_secs_f64();
    let rss_seeded = vm_hwm_mb();

    let ctx = StepContext::new(
        Engines::single(mock()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    let cfg = ExecutorConfig::default().with_max_in_flight(IN_FLIGHT);
    let executor = Executor::new(store.clone(), ctx.clone(), Arc::new(NullSink), cfg.clone());
    let t = Instant::now();
    let report = executor.run(&chain()).await.unwrap();
    let run_s = t.elapsed().as_secs_f64();
    assert_eq!(report.steps[1].done, n as u64);
    let rss_run = vm_hwm_mb();

    let t = Instant::now();
    let again = Executor::new(store.clone(), ctx.clone(), Arc::new(NullSink), cfg.clone())
        .run(&chain())
        .await
        .unwrap();
    let resume_s = t.elapsed().as_secs_f64();
    assert_eq!((again.steps[1].done, again.steps[1].skipped), (0, n as u64));
    let t = Instant::now();
    Executor::new(
        store.clone(),
        ctx,
        Arc::new(NullSink),
        cfg.with_count_first(false),
    )
    .run(&chain())
    .await
    .unwrap();
    let resume_nocount_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(store.items().count(), n);
    let iterate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0;
    for item in store.items() {
        found += usize::from(store.has_result("rate_poem", &item.unwrap().id).unwrap());
    }
    assert_eq!(found, n);
    let lookup_s = t.elapsed().as_secs_f64();
    // What the executor now does on resume: root ids (no record decoded) and one key lookup each.
    let t = Instant::now();
    let mut found = 0;
    for id in store.root_ids() {
        found += usize::from(store.has_result("rate_poem", &id.unwrap()).unwrap());
    }
    assert_eq!(found, n);
    let ids_lookup_s = t.elapsed().as_secs_f64();
    drop(executor);
    drop(store);

    // Baseline: the same 2n durable result writes at the same concurrency, no executor.
    let base_store = Arc::new(open(&dir.path().join("baseline")));
    seed(&base_store, n).await;
    let record = ResultRecord {
        v: RECORD_VERSION,
        output: json!(
            "Waves fold the dark light / salt wind keeps the harbour awake / a gull writes the dawn"
        ),
        details: None,
        attempts: 1,
        prompt_tokens: 120,
        completion_tokens: 20,
        elapsed_ms: 0,
        stored_at_ms: 0,
        ..ResultRecord::new(serde_json::Value::Null)
    };
    let t = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (store, record) = (base_store.clone(), record.clone());
            async move {
                let id = format!("{i:016x}");
                store
                    .put_result("write_poem", &id, record.clone())
                    .await
                    .unwrap();
                store.put_result("rate_poem", &id, record).await.unwrap();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let base_s = t.elapsed().as_secs_f64();

    println!(
        "{{\"items\":{n},\"seed_s\":{seed_s:.3},\"run_s\":{run_s:.3},\"items_per_s\":{:.0},\"baseline_items_per_s\":{:.0},\"resume_s\":{resume_s:.3},\"resume_nocount_s\":{resume_nocount_s:.3},\"iterate_s\":{iterate_s:.3},\"lookup_s\":{lookup_s:.3},\"ids_lookup_s\":{ids_lookup_s:.3},\"executor_only_items_per_s\":{:.0},\"rss_start_mb\":{rss_start:.1},\"rss_executor_only_mb\":{rss_executor_only:.1},\"rss_seeded_mb\":{rss_seeded:.1},\"rss_run_mb\":{rss_run:.1},\"rss_peak_mb\":{:.1}}}",
        n as f64 / run_s,
        n as f64 / base_s,
        n as f64 / executor_only_s,
        vm_hwm_mb()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(n) = std::env::var("ATK_STEP_BENCH_ITEMS") {
        runtime.block_on(child(n.parse().unwrap()));
        return;
    }
    let sizes: Vec<usize> = match std::env::var("ATK_STEP_BENCH_SIZES") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => vec![10_000, 100_000],
    };
    println!(
        "two-step chain, mock engine at zero latency, sled store, {IN_FLIGHT} items in flight"
    );
    let mut rows = Vec::new();
    for n in sizes {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("ATK_STEP_BENCH_ITEMS", n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        println!(
            "{n:>7} items: {:>6.0} items/s ({:.2}x bare store writes at the same concurrency), resumed run {:.2}s ({:.2}s without progress counts; bare store scan {:.2}s, scan + one lookup per item {:.2}s, root ids only + one lookup {:.2}s), peak RSS {:.0} MB (after seeding {:.0} MB)",
            v["items_per_s"].as_f64().unwrap(),
            v["items_per_s"].as_f64().unwrap() / v["baseline_items_per_s"].as_f64().unwrap(),
            v["resume_s"].as_f64().unwrap(),
            v["resume_nocount_s"].as_f64().unwrap(),
            v["iterate_s"].as_f64().unwrap(),
            v["lookup_s"].as_f64().unwrap(),
            v["ids_lookup_s"].as_f64().unwrap(),
            v["rss_run_mb"].as_f64().unwrap(),
            v["rss_seeded_mb"].as_f64().unwrap(),
        );
        println!(
            "         executor alone (store that keeps nothing): {:.0} items/s, peak RSS {:.1} MB (process start {:.1} MB)",
            v["executor_only_items_per_s"].as_f64().unwrap(),
            v["rss_executor_only_mb"].as_f64().unwrap(),
            v["rss_start_mb"].as_f64().unwrap(),
        );
        rows.push((n, v));
    }
    if let [(n0, a), .., (n1, b)] = rows.as_slice() {
        println!(
            "executor-alone peak RSS at {n1} vs {n0} items: {:.2}x for {:.0}x the items",
            b["rss_executor_only_mb"].as_f64().unwrap()
                / a["rss_executor_only_mb"].as_f64().unwrap(),
            *n1 as f64 / *n0 as f64
        );
        println!(
            "peak RSS of the run at {n1} vs {n0} items: {:.2}x for {:.0}x the items",
            b["rss_run_mb"].as_f64().unwrap() / a["rss_run_mb"].as_f64().unwrap(),
            *n1 as f64 / *n0 as f64
        );
    }
}
