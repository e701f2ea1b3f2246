//! rag-data (filter → barrier → fan-out → function → prompt → vote → dedup barrier) against
//! the loopback server: a rerun sends nothing and rewrites the same bytes; distractors come
//! only from other documents the judge kept; killed three times (before the first barrier,
//! between the barriers, before the last one) then resumed gives the uninterrupted datasets;
//! two shards + `atk merge` + a run on the merge give the unsharded datasets; changing
//! `distractors` and `--redo context` asks only the steps after the context again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atk_e2e::{API_KEY, Config, Env, Running, run};
use atk_testkit::{ReplyMode, ServerConfig, TestServer, prompt_hash, prompt_text};
use serde_json::Value;

use crate::RUN_TIMEOUT;

const DOCS: usize = 8;
const LIMIT: usize = 4;
const FILES: [&str; 3] = [
    "sharegpt_format.jsonl",
    "openai_messages.jsonl",
    "rag_qa.jsonl",
];

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-rag-data"))
}

fn atk() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-atk"))
}

/// What the server was asked, by step, and the judge prompts it answered UNSUITABLE.
#[derive(Clone, Default)]
struct Asked {
    by_step: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    dropped: Arc<Mutex<Vec<String>>>,
}

impl Asked {
    fn count(&self, step: &str) -> u64 {
        self.by_step.lock().unwrap().get(step).copied().unwrap_or(0)
    }

    /// Answers each of rag-data's prompts as a model would, deterministically per prompt:
    /// about one chunk in five is unsuitable, some chunks get the same stock question (so
    /// the dedup barrier has work), one answer in four fails its check.
    fn reply(&self, body: &Value) -> String {
        let (prompt, hash) = (prompt_text(body), prompt_hash(body));
        let nibble = u8::from_str_radix(&hash[..1], 16).unwrap_or(0);
        let step = if prompt.contains("You pick passages") {
            "judge"
        } else if prompt.contains("You write search questions") {
            "questions"
        } else if prompt.contains("You answer questions using only") {
            "answer"
        } else {
            "check"
        };
        *self.by_step.lock().unwrap().entry(step).or_default() += 1;
        let json = |v: Value| v.to_string();
        match step {
            "judge" if nibble < 3 => {
                self.dropped.lock().unwrap().push(prompt);
                json(serde_json::json!({"reason": "Titles only.", "verdict": "unsuitable"}))
            }
            "judge" => {
                json(serde_json::json!({"reason": "Facts in sentences.", "verdict": "suitable"}))
            }
            "questions" if nibble < 3 => json(serde_json::json!({"questions": [
                "What does the harbor chronicle record about the tide?",
                "Which entry names the keeper?"
            ]})),
            "questions" => json(serde_json::json!({"questions": [
                format!("What is written in record {}?", &hash[..8]),
                format!("Who is named in entry {}?", &hash[8..14])
            ]})),
            "answer" => json(serde_json::json!({
                "passage": 1,
                "answer": format!("It is recorded as {}.", &hash[..6])
            })),
            _ if nibble < 4 => json(serde_json::json!({"reason": "Unsupported.", "verdict": "no"})),
            _ => json(serde_json::json!({"reason": "Supported.", "verdict": "yes"})),
        }
    }
}

async fn start(config: ServerConfig) -> (TestServer, Asked) {
    let asked = Asked::default();
    let replier = asked.clone();
    let server = TestServer::start(
        config
            .with_api_key(API_KEY)
            .with_reply(ReplyMode::func(move |body| replier.reply(body))),
    )
    .await
    .expect("test server starts");
    (server, asked)
}

/// Docs of about two chunks each (a 40-token chunk size), so a chunk has same-document
/// neighbours that must never be its distractors.
fn setup(server: &TestServer) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    config.chunk_size = 40;
    config.tail = "rag_data:\n  distractors: 2\n  votes: 3\n".to_owned();
    let config = env.write_config(&config);
    (env, config)
}

fn datasets(env: &Env, dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(env.root().join(dir).join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

fn rows(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.output().join("rag_qa.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every chunk of the inputs, `id → (document, text)`, as `atk chunk` cuts them.
async fn chunks(env: &Env) -> HashMap<String, (String, String)> {
    let mut cmd = tokio::process::Command::new(atk());
    cmd.arg("chunk")
        .arg(env.inputs())
        .args(["--chunk-size", "40"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("id"), (s("metadata"), s("text")))
        })
        .collect()
}

#[tokio::test]
async fn rag_data_reruns_for_free_draws_honest_distractors_and_survives_kills() {
    let (server, asked) = start(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains("duplicate of"),
        "the dedup barrier dropped a repeated question naming its twin\n{out}"
    );
    let expected = datasets(&env, Path::new("output"));
    let reference_requests = server.stats().completed;

    // Distractors: never the source's document, never a chunk the judge dropped.
    let chunks = chunks(&env).await;
    assert!(chunks.len() > DOCS, "documents of several chunks");
    let dropped_prompts = asked.dropped.lock().unwrap().clone();
    let dropped: HashSet<&String> = chunks
        .iter()
        .filter(|(_, (_, text))| dropped_prompts.iter().any(|p| p.contains(text.trim())))
        .map(|(id, _)| id)
        .collect();
    assert!(!dropped.is_empty(), "the judge dropped some chunks");
    let rows = rows(&env);
    assert!(rows.len() > 4, "{} rows", rows.len());
    for row in &rows {
        let source = row["source_chunk_id"].as_str().unwrap();
        let source_doc = &chunks[source].0;
        let ids = row["distractor_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 2, "{row}");
        for id in ids {
            let id = id.as_str().unwrap().to_string();
            assert_ne!(
                &chunks[&id].0, source_doc,
                "a distractor of the same document: {row}"
            );
            assert!(
                !dropped.contains(&id),
                "a distractor the judge dropped: {row}"
            );
        }
    }

    // A rerun sends nothing and rewrites the same bytes.
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(server.stats().completed, reference_requests, "{out}");
    assert_eq!(datasets(&env, Path::new("output")), expected);

    // Killed before the first barrier (judging), between the barriers (questions, answers)
    // and before the last one (checks), then resumed: the uninterrupted datasets.
    let (slow, _) = start(ServerConfig::default().with_latency(Duration::from_millis(60))).await;
    let (env, config) = setup(&slow);
    for at in [6_u64, 30, 70] {
        let running = Running::spawn(env.command(bin(), &config));
        let reached = slow.wait_until(RUN_TIMEOUT, |s| s.completed >= at).await;
        let out = running.kill().await;
        assert!(
            reached.is_some(),
            "the run never reached {at} replies\n{out}"
        );
        assert_eq!(out.code, None, "killed by a signal, not exited\n{out}");
    }
    assert!(
        slow.stats().completed < reference_requests,
        "the kills came before the end"
    );
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        datasets(&env, Path::new("output")),
        expected,
        "resumed datasets differ\n{out}"
    );
    let extra = slow.stats().completed - reference_requests;
    assert!(
        extra <= 3 * 2 * LIMIT as u64,
        "{extra} requests sent again over 3 kills"
    );
}

#[tokio::test]
async fn rag_data_shards_stop_before_the_barrier_and_merged_give_the_unsharded_datasets() {
    let (server, _) = start(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let expected = datasets(&env, Path::new("output"));

    let (server, asked) = start(ServerConfig::default()).await;
    let (env, config) = setup(&server);
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
        assert!(
            out.stdout.contains("done up to barrier step `judged`")
                || out.stderr.contains("done up to barrier step `judged`"),
            "a shard says where it stopped and what to do\n{out}"
        );
        assert!(
            out.stderr.contains("atk merge") || out.stdout.contains("atk merge"),
            "{out}"
        );
        assert!(!env.root().join(format!("shard{i}/rag_qa.jsonl")).exists());
        assert!(
            env.root().join(format!("shard{i}/corpus.redb")).exists(),
            "each shard indexes the whole corpus"
        );
    }
    assert_eq!(
        asked.count("questions"),
        0,
        "the shards stopped at the barrier"
    );
    let judged = asked.count("judge");
    let mut merge = tokio::process::Command::new(atk());
    merge
        .current_dir(env.root())
        .args(["merge", "shard0", "shard1", "--into", "merged"]);
    run(merge, RUN_TIMEOUT).await.assert_code(0);
    let mut cmd = env.command(bin(), &config);
    cmd.args(["--set", "output_dir=./merged"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(asked.count("judge"), judged, "no chunk judged twice\n{out}");
    assert_eq!(
        datasets(&env, Path::new("merged")),
        expected,
        "two shards + merge + a run on the merge = the unsharded datasets\n{out}"
    );
}

#[tokio::test]
async fn changing_distractors_and_redoing_the_context_asks_only_the_later_steps() {
    let (server, asked) = start(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let before: BTreeMap<&str, u64> = asked.by_step.lock().unwrap().clone();
    let mut cmd = env.command(bin(), &config);
    cmd.args(["--set", "distractors=3", "--redo", "context"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    let after = asked.by_step.lock().unwrap().clone();
    assert_eq!(after["judge"], before["judge"], "no judge request\n{out}");
    assert_eq!(
        after["questions"], before["questions"],
        "no question request\n{out}"
    );
    assert!(
        after["answer"] > before["answer"],
        "the answers are asked again\n{out}"
    );
    assert!(after["check"] > before["check"], "and checked again\n{out}");
    let rows = rows(&env);
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(
            row["distractor_ids"].as_array().unwrap().len(),
            3,
            "no answer made from an old context reaches the dataset: {row}"
        );
    }
}

/// rag-data's four prompted steps are schema steps: llama-cpp-python's server (`json_schema`
/// refused with a 500, `json_object` + `schema` taken) and Anthropic's forced tool give the
/// datasets the OpenAI form gives.
#[tokio::test]
async fn rag_data_on_schemas_writes_the_same_datasets_whatever_form_the_server_takes() {
    use atk_testkit::SchemaSupport;
    let mut expected = None;
    let cases = [
        ("openai", SchemaSupport::All, "json_schema"),
        ("openai", SchemaSupport::LlamaCppPython, "json_object"),
        ("anthropic", SchemaSupport::All, "tool"),
    ];
    for (dialect, support, form) in cases {
        let (server, _) = start(ServerConfig::default().with_schema(support)).await;
        let (env, config) = setup(&server);
        let sets = [
            format!("small_api={dialect}"),
            format!("large_api={dialect}"),
        ];
        let out = run(env.command_with(bin(), &config, &sets), RUN_TIMEOUT).await;
        out.assert_code(0);
        let stats = server.stats();
        let case = format!("{dialect} {support:?}");
        assert_eq!(
            stats.schema_form_count(form),
            stats.completed,
            "{case}: every reply asked in {form}: {stats:?}"
        );
        let got = datasets(&env, Path::new("output"));
        assert!(!got[0].is_empty(), "{case}\n{out}");
        assert_eq!(
            &got,
            expected.get_or_insert_with(|| got.clone()),
            "{case}: datasets differ\n{out}"
        );
    }
}
