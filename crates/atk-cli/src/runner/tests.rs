//! Runner tests: whole runs of a small in-test pipeline over files in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use atk_state::ResultRecord;
use atk_step::{StepError, StepOutput};
use serde_json::json;

use super::engines::build_engines;
use super::status_loop::{StatusInputs, status_of};
use super::*;
use atk_state::ItemRecord;
use atk_step::{Step, StepContext};

/// What the test pipeline saw, shared across its runs.
#[derive(Default)]
struct Seen {
    /// Texts the step was called on ("requests"), all runs together.
    calls: Mutex<Vec<String>>,
    /// The last run's dataset: the text of each final item, in order.
    dataset: Mutex<Vec<String>>,
    /// With `read_files_manually: false`: the texts handed to `seed_texts`.
    texts: Mutex<Vec<(String, String)>>,
    /// How many times `write_datasets` ran, all runs together.
    dataset_passes: Mutex<u32>,
    /// The pipeline says it reads no corpus (`Pipeline::reads_corpus`).
    no_corpus: std::sync::atomic::AtomicBool,
    /// What `ctx.corpus()` gave in the last run's `seed`: its length, or the error.
    corpus_seen: Mutex<Option<Result<u64, String>>>,
}

/// A step standing in for a request: records the text, fails on texts containing "charlie".
struct Upper(Arc<Seen>);

#[async_trait]
impl Step for Upper {
    fn name(&self) -> &str {
        "upper"
    }

    async fn run(
        &self,
        item: &ItemRecord,
        _ctx: &StepContext,
    ) -> Result<atk_step::StepOutput, StepError> {
        let text = item
            .fields
            .get("text")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        self.0.calls.lock().unwrap().push(text.clone());
        if text.contains("charlie") {
            return Err(StepError::failed("validation", "charlie is refused"));
        }
        Ok(StepOutput::Result(ResultRecord {
            v: RECORD_VERSION,
            output: json!(text.to_uppercase()),
            details: None,
            attempts: 1,
            prompt_tokens: 1,
            completion_tokens: 1,
            elapsed_ms: 0,
            stored_at_ms: 0,
            ..ResultRecord::new(serde_json::Value::Null)
        }))
    }
}

#[derive(serde::Deserialize, crate::config::JsonSchema)]
#[schemars(crate = "crate::config::schemars")]
struct NoConfig {}

struct TestPipeline(Arc<Seen>);

#[async_trait]
impl Pipeline for TestPipeline {
    type Config = NoConfig;

    fn name(&self) -> &'static str {
        "runner-test"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn chain(&self, _: &NoConfig) -> Chain {
        Chain::new().then(Upper(self.0.clone()))
    }

    fn reads_corpus(&self) -> bool {
        !self.0.no_corpus.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn seed(&self, ctx: &mut RunContext<NoConfig>) -> Result<(), RunError> {
        *self.0.corpus_seen.lock().unwrap() =
            Some(ctx.corpus().map(|c| c.len()).map_err(|e| e.to_string()));
        let texts = self.0.texts.lock().unwrap().clone();
        if !texts.is_empty() {
            ctx.seed_texts(&texts).await?;
        }
        Ok(())
    }

    fn write_datasets(&self, ctx: &RunContext<NoConfig>, chain: &Chain) -> Result<(), RunError> {
        *self.0.dataset_passes.lock().unwrap() += 1;
        let lines: Vec<String> = ctx
            .final_items(chain)
            .map(|i| Ok::<_, RunError>(first_word(&i?.text("text")?)))
            .collect::<Result<_, _>>()?;
        ctx.write_jsonl(
            "lines.jsonl",
            lines
                .iter()
                .map(|l| Ok::<_, RunError>(json!({ "text": l }))),
        )?;
        *self.0.dataset.lock().unwrap() = lines;
        Ok(())
    }
}

/// Runs the pipeline once; returns the texts it sent requests for and the dataset lines.
async fn run_once(config: &Path, seen: &Arc<Seen>) -> (Vec<String>, Vec<String>) {
    run_shard(config, seen, None).await
}

/// [`run_once`] with `--shard`.
async fn run_shard(
    config: &Path,
    seen: &Arc<Seen>,
    shard: Option<crate::flags::Shard>,
) -> (Vec<String>, Vec<String>) {
    seen.calls.lock().unwrap().clear();
    let flags = CommonFlags {
        config: config.to_path_buf(),
        quiet: true,
        shard,
        ..CommonFlags::default()
    };
    run(TestPipeline(seen.clone()), flags).await.unwrap();
    let calls = seen
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|t| first_word(t))
        .collect();
    (calls, seen.dataset.lock().unwrap().clone())
}

/// The first word of a text: each test input is one word repeated.
fn first_word(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An input text long enough to be kept by the chunker: `word` repeated.
fn body(word: &str) -> String {
    format!("{word} ").repeat(20)
}

fn config(dir: &Path, read_files_manually: bool) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::create_dir_all(dir.join("inputs")).unwrap();
    std::fs::write(
        &path,
        format!(
            "api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: ./inputs\n  output_dir: ./output\n\
             system:\n  read_files_manually: {read_files_manually}\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_inputs_leave_the_dataset_and_the_work_and_come_back_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), true);
    let input = |name: &str| dir.path().join("inputs").join(name);
    std::fs::write(input("a.txt"), body("alpha")).unwrap();
    std::fs::write(input("b.txt"), body("bravo")).unwrap();
    std::fs::write(input("c.txt"), body("charlie")).unwrap();
    let seen = Arc::new(Seen::default());

    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(
        (calls.len(), dataset),
        (3, vec!["alpha".to_owned(), "bravo".to_owned()])
    );

    // b (done) and c (failed, so a rerun would retry it) are removed.
    std::fs::remove_file(input("b.txt")).unwrap();
    std::fs::remove_file(input("c.txt")).unwrap();
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(calls, Vec::<String>::new(), "no request for a removed file");
    assert_eq!(dataset, ["alpha"], "no line from a removed file");

    // b comes back: its paid result is reused.
    std::fs::write(input("b.txt"), body("bravo")).unwrap();
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(
        calls,
        Vec::<String>::new(),
        "a returning file's results are reused"
    );
    assert_eq!(dataset, ["alpha", "bravo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_texts_follow_the_same_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), false);
    let seen = Arc::new(Seen::default());
    let text = |name: &str, body: &str| (name.to_owned(), body.to_owned());
    *seen.texts.lock().unwrap() = vec![
        text("a", &body("alpha")),
        text("b", &body("bravo")),
        text("c", &body("charlie")),
    ];
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(
        (calls.len(), dataset),
        (3, vec!["alpha".to_owned(), "bravo".to_owned()])
    );

    *seen.texts.lock().unwrap() = vec![text("a", &body("alpha"))];
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(dataset, ["alpha"]);

    *seen.texts.lock().unwrap() = vec![text("a", &body("alpha")), text("b", &body("bravo"))];
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(dataset, ["alpha", "bravo"]);
}

#[tokio::test(start_paused = true)]
async fn status_counts_requests_in_flight_as_the_engine_does() {
    // concurrency_limit 2, three calls started, each taking 10 s (paused clock): two hold a
    // slot, the third waits. `atk status` says 2 in flight (limit 2), not the items started.
    let mut common = crate::config::CommonConfig::default();
    common.concurrency_limit = 2;
    common.mock_latency = Duration::from_secs(10);
    common.input_dir = "/in".into();
    common.output_dir = "/out".into();
    common.small_mode = atk_engine::Mode::Mock;
    common.large_mode = atk_engine::Mode::Mock;
    let settings = Settings::new(&common, crate::config::EnginesUsed::BOTH);
    let store: std::sync::Arc<dyn atk_state::Store> =
        std::sync::Arc::new(atk_state::MemStore::default());
    let (engines, counters, limit) =
        build_engines(&settings, &store, &CancellationToken::new(), None, None).unwrap();
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let engine = engines.small.clone();
            tokio::spawn(async move {
                engine
                    .call(atk_engine::Request::chat(vec![atk_engine::Message::new(
                        "user",
                        format!("hi {i}"),
                    )]))
                    .await
            })
        })
        .collect();
    for _ in 0..1000 {
        if limit.in_flight() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let baselines = counters.iter().map(|c| c.snapshot()).collect();
    let inputs = StatusInputs {
        counters,
        engines,
        baselines,
        limit,
        stored: Arc::new(crate::damage::StoredCounts::empty()),
        batches: None,
        budget: None,
    };
    let s = status_of("p", &Progress::off(), &inputs);
    assert_eq!((s.requests_in_flight, s.request_limit), (2, 2));
    assert!(
        s.render().contains("requests in flight: 2 (limit 2)"),
        "{}",
        s.render()
    );
    for call in calls {
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_texts_are_kept_to_the_shard() {
    let words = [
        "alpha", "bravo", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    ];
    let texts: Vec<(String, String)> = words.iter().map(|w| ((*w).to_owned(), body(w))).collect();
    let mut union = Vec::new();
    for index in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), false);
        let seen = Arc::new(Seen::default());
        *seen.texts.lock().unwrap() = texts.clone();
        let shard = crate::flags::Shard::parse(&format!("{index}/2")).unwrap();
        let (calls, dataset) = run_shard(&config, &seen, Some(shard)).await;
        assert!(
            calls.len() < words.len(),
            "shard {index} took only its part: {calls:?}"
        );
        let mut sorted = calls.clone();
        sorted.sort();
        let mut lines = dataset.clone();
        lines.sort();
        assert_eq!(sorted, lines, "shard {index} writes what it worked on");
        union.extend(calls);
    }
    union.sort();
    assert_eq!(
        union, words,
        "the two shards together cover every text once"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_that_changes_nothing_leaves_the_dataset_and_card_untouched() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), true);
    let input = |name: &str| dir.path().join("inputs").join(name);
    std::fs::write(input("a.txt"), body("alpha")).unwrap();
    std::fs::write(input("b.txt"), body("bravo")).unwrap();
    let seen = Arc::new(Seen::default());
    run_once(&config, &seen).await;
    let out = dir.path().join("output");
    let files = [
        out.join("lines.jsonl"),
        out.join(".lines.jsonl.sources"),
        out.join(crate::card::CARD_FILE),
    ];
    let state = || {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).unwrap();
                (m.ino(), m.modified().unwrap(), std::fs::read(f).unwrap())
            })
            .collect::<Vec<_>>()
    };
    let first = state();
    assert_eq!(
        String::from_utf8_lossy(&first[0].2),
        "{\"text\":\"alpha\"}\n{\"text\":\"bravo\"}\n"
    );

    // Nothing to do: the dataset, its sources and the card are not written again (same inode,
    // same mtime, same bytes), and nothing is left staged; the dataset pass itself is skipped
    // (no item or result is read for it).
    let (calls, _) = run_once(&config, &seen).await;
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(state(), first);
    assert!(!crate::layout::staging_dir(&out).exists());
    assert_eq!(*seen.dataset_passes.lock().unwrap(), 1);
    let summary = std::fs::read_to_string(out.join(crate::summary::SUMMARY_FILE)).unwrap();
    assert!(summary.contains("lines.jsonl"), "still listed: {summary}");

    // A dataset changed by hand is written again (then compared row by row: only it is
    // staged); the card and the sidecar, unchanged, stay as they were.
    std::fs::write(&files[0], "edited\n").unwrap();
    run_once(&config, &seen).await;
    assert_eq!(*seen.dataset_passes.lock().unwrap(), 2);
    let restored = state();
    assert_eq!(restored[0].2, first[0].2);
    assert_eq!(restored[1..], first[1..]);
    let first = restored;

    // A changed result (a new input) does rewrite all three.
    std::fs::write(input("d.txt"), body("delta")).unwrap();
    let (calls, _) = run_once(&config, &seen).await;
    assert_eq!(calls, ["delta"]);
    let third = state();
    for (before, after) in first.iter().zip(&third) {
        assert_ne!(before.0, after.0, "a changed file is replaced");
        assert_ne!(before.2, after.2);
    }
    assert!(String::from_utf8_lossy(&third[0].2).ends_with("{\"text\":\"delta\"}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_past_the_threshold_is_told_once_how_to_move_to_redb() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), true);
    let input = |name: &str| dir.path().join("inputs").join(name);
    std::fs::write(input("a.txt"), body("alpha")).unwrap();
    let seen = Arc::new(Seen::default());
    let out = dir.path().join("output");
    let run_with = |threshold: u64| {
        let flags = CommonFlags {
            config: config.clone(),
            quiet: true,
            redb_advice_at: Some(threshold),
            ..CommonFlags::default()
        };
        run(TestPipeline(seen.clone()), flags)
    };
    let summary = || {
        let text = std::fs::read_to_string(out.join(crate::summary::SUMMARY_FILE)).unwrap();
        serde_json::from_str::<crate::summary::RunSummary>(&text)
            .unwrap()
            .store_advice
    };
    let status = || crate::status::StatusSnapshot::read(&out).unwrap();
    // One item, threshold 2: nothing said.
    run_with(2).await.unwrap();
    assert_eq!(summary(), None);
    assert_eq!(status().store_advice, None);
    // Two items: the summary and `atk status` say how to move, with what it saves.
    std::fs::write(input("b.txt"), body("bravo")).unwrap();
    run_with(2).await.unwrap();
    let advice = summary().expect("the summary tells");
    assert!(
        advice.contains("--into NEW_DIR --store-backend redb"),
        "{advice}"
    );
    assert!(advice.contains("98 MB at 100 k"), "{advice}");
    let shown = status().render();
    assert!(
        shown.contains("store: this output folder's sled store holds 2 items"),
        "{shown}"
    );
    // The next run's summary does not repeat it; status still shows it.
    run_with(2).await.unwrap();
    assert_eq!(summary(), None);
    assert!(status().store_advice.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_over_several_reader_batches_are_seeded_whole_in_order_and_indexed() {
    use atk_state::Corpus;
    // More files than one reader batch (256) and than one store slice (1024): every chunk
    // becomes an item in file order, and the corpus index (built on its own thread) holds all.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), true);
    let n = 1100;
    for i in 0..n {
        let path = dir.path().join("inputs").join(format!("f{i:04}.txt"));
        std::fs::write(path, body(&format!("w{i:04}"))).unwrap();
    }
    let seen = Arc::new(Seen::default());
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!(calls.len(), n);
    let expected: Vec<String> = (0..n).map(|i| format!("w{i:04}")).collect();
    assert_eq!(dataset, expected);
    let corpus =
        atk_state::CorpusIndex::open(&crate::layout::corpus_path(&dir.path().join("output")))
            .unwrap()
            .expect("the corpus index is in place");
    assert_eq!(corpus.len(), n as u64);
    assert_eq!(
        corpus.entry(n as u64 - 1).unwrap().map(|(_, doc)| doc),
        Some(format!("f{:04}.txt", n - 1))
    );
    // Resumed: nothing is sent again.
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!((calls.len(), dataset.len()), (0, n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_reads_no_corpus_builds_none_and_resumes_the_same() {
    // `reads_corpus() == false`: seeding builds no index, `ctx.corpus()` says why there is
    // none, and the runs are otherwise the same (every item sent once, the rerun sends nothing
    // and does not read the inputs again for want of an index).
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), true);
    for (i, word) in ["alpha", "bravo", "delta"].iter().enumerate() {
        let path = dir.path().join("inputs").join(format!("f{i}.txt"));
        std::fs::write(path, body(word)).unwrap();
    }
    let seen = Arc::new(Seen::default());
    seen.no_corpus
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!((calls.len(), dataset.len()), (3, 3));
    let corpus_file = crate::layout::corpus_path(&dir.path().join("output"));
    assert!(!corpus_file.exists(), "no corpus index is built");
    let seen_err = seen
        .corpus_seen
        .lock()
        .unwrap()
        .clone()
        .unwrap()
        .unwrap_err();
    assert!(seen_err.contains("reads_corpus()"), "{seen_err}");
    let (calls, dataset) = run_once(&config, &seen).await;
    assert_eq!((calls.len(), dataset.len()), (0, 3));
    assert!(!corpus_file.exists());
    // The same output dir with a pipeline that reads it: the index is built, every chunk in it.
    seen.no_corpus
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (calls, _) = run_once(&config, &seen).await;
    assert_eq!(calls.len(), 0, "nothing is sent again");
    assert_eq!(*seen.corpus_seen.lock().unwrap(), Some(Ok(3)));
}
