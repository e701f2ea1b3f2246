//! factual-qa (filter → fan-out → vote → fan-in) against the loopback server: killed three
//! times then resumed gives the uninterrupted run's datasets byte for byte, and random
//! transport faults change nothing in them.

use std::path::Path;
use std::time::Duration;

use atk_e2e::{API_KEY, Config, Env, Running, run};
use atk_testkit::{Fault, Faults, ReplyMode, ServerConfig, TestServer, prompt_hash, prompt_text};

use crate::RUN_TIMEOUT;

const DOCS: usize = 12;
const LIMIT: usize = 4;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-factual-qa"))
}

/// Answers each of factual-qa's four prompts the way a model would, deterministically per
/// prompt: about one chunk in six is judged unsuitable, one pair in four fails its check. The
/// four schema steps get JSON; a repair turn gets the reply its original prompt gets.
fn reply(body: &serde_json::Value) -> String {
    let body = &without_repair_turn(body);
    let (prompt, hash) = (prompt_text(body), prompt_hash(body));
    let nibble = u8::from_str_radix(&hash[..1], 16).unwrap_or(0);
    if prompt.contains("You sort passages") {
        let verdict = if nibble < 3 { "unsuitable" } else { "suitable" };
        serde_json::json!({"reason": "Judged.", "verdict": verdict}).to_string()
    } else if prompt.contains("exam-style questions") {
        let pairs: Vec<_> = (1..=3)
            .map(|i| {
                serde_json::json!({
                    "question": format!("What does entry {i} of record {} say?", &hash[..6]),
                    "answer": format!("It says {}.", &hash[i..i + 8]),
                })
            })
            .collect();
        serde_json::json!({ "pairs": pairs }).to_string()
    } else if prompt.contains("You check one question") {
        let verdict = if nibble < 4 { "no" } else { "yes" };
        serde_json::json!({"reason": "Checked.", "verdict": verdict}).to_string()
    } else {
        let last = prompt.rsplit("user: ").next().unwrap_or_default();
        // Without the schema instruction a server that enforces none gets appended.
        let last = last
            .split("\n\nReply with only one JSON")
            .next()
            .unwrap_or_default();
        let turns: Vec<_> = last
            .trim_end()
            .split("\n\n")
            .map(|block| {
                let (q, a) = block.split_once("\nAnswer: ").unwrap_or((block, ""));
                serde_json::json!({"user": q.trim_start_matches("Question: "), "assistant": a})
            })
            .collect();
        serde_json::json!({ "turns": turns }).to_string()
    }
}

/// The request as it was before a repair turn (the rejected reply and the request to correct
/// it) was added.
fn without_repair_turn(body: &serde_json::Value) -> serde_json::Value {
    let mut body = body.clone();
    if let Some(messages) = body.get_mut("messages").and_then(|m| m.as_array_mut()) {
        let last = messages
            .last()
            .map(|m| prompt_text(&serde_json::json!({"messages": [m]})));
        if last.is_some_and(|t| t.contains("Your reply could not be used")) && messages.len() > 2 {
            messages.truncate(messages.len() - 2);
        }
    }
    body
}

async fn server(config: ServerConfig) -> TestServer {
    TestServer::start(
        config
            .with_api_key(API_KEY)
            .with_reply(ReplyMode::func(reply)),
    )
    .await
    .expect("test server starts")
}

fn setup(server: &TestServer) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    config.tail = "factual_qa:\n  pairs_per_chunk: 3\n  votes: 3\n".to_owned();
    let config = env.write_config(&config);
    (env, config)
}

/// The three datasets' bytes.
fn datasets(env: &Env) -> Vec<Vec<u8>> {
    [
        "sharegpt_format.jsonl",
        "openai_messages.jsonl",
        "qa_pairs.jsonl",
    ]
    .iter()
    .map(|f| std::fs::read(env.output().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
    .collect()
}

async fn reference() -> (Vec<Vec<u8>>, u64) {
    let server = server(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    (datasets(&env), server.stats().completed)
}

#[tokio::test]
async fn factual_qa_killed_three_times_then_resumed_writes_the_uninterrupted_datasets() {
    let (expected, reference_requests) = reference().await;
    let lines = String::from_utf8_lossy(&expected[0]).lines().count();
    assert!(
        lines > 0 && lines < DOCS,
        "some chunks are dropped, the rest give a conversation each: {lines}"
    );

    let server = server(ServerConfig::default().with_latency(Duration::from_millis(80))).await;
    let (env, config) = setup(&server);
    let mut completed_at_kill = Vec::new();
    for at in [10_u64, 30, 50] {
        let running = Running::spawn(env.command(bin(), &config));
        let reached = server.wait_until(RUN_TIMEOUT, |s| s.completed >= at).await;
        let out = running.kill().await;
        assert!(
            reached.is_some(),
            "the run never reached {at} replies\n{out}"
        );
        assert_eq!(out.code, None, "killed by a signal, not exited\n{out}");
        completed_at_kill.push(server.stats().completed);
    }
    assert!(
        server.stats().completed < reference_requests,
        "the kills came before the end"
    );
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(datasets(&env), expected, "resumed datasets differ\n{out}");
    let extra = server.stats().completed - reference_requests;
    assert!(
        extra <= 3 * 2 * LIMIT as u64,
        "{extra} requests sent again over 3 kills (bound {})",
        3 * 2 * LIMIT
    );
    // A rerun sends nothing and rewrites the same bytes.
    let before = server.stats().completed;
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    assert_eq!(server.stats().completed, before);
    assert_eq!(datasets(&env), expected);
}

/// A `--shard` run on an unsharded output dir retires the chunks of the other shard with
/// their question/answer items; the next unsharded run seeds them again and makes those items
/// again from the stored replies: nothing is asked again, no pair or conversation is lost.
#[tokio::test]
async fn a_shard_run_on_an_unsharded_dir_loses_no_item_for_the_next_full_run() {
    let server = server(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let (expected, paid) = (datasets(&env), server.stats().completed);
    let mut shard = env.command(bin(), &config);
    shard.args(["--shard", "1/2"]);
    let out = run(shard, RUN_TIMEOUT).await;
    assert!(out.stderr.contains("retired items"), "{out}");
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(server.stats().completed, paid, "nothing asked again\n{out}");
    assert_eq!(datasets(&env), expected, "the same datasets\n{out}");
    assert!(!out.stderr.contains("no child item was kept"), "{out}");
}

#[tokio::test]
async fn factual_qa_under_random_faults_writes_the_same_datasets() {
    let (expected, _) = reference().await;
    let faults = Faults::none()
        .with_rate(Fault::RateLimit, 0.1)
        .with_rate(Fault::ServerError, 0.05)
        .with_rate(Fault::ResetMidStream, 0.03)
        .with_rate(Fault::CutBeforeDone, 0.03)
        .with_retry_after(Duration::from_millis(50));
    let server = server(ServerConfig::default().with_faults(faults).with_seed(7)).await;
    let (env, config) = setup(&server);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        datasets(&env),
        expected,
        "faults changed the datasets\n{out}"
    );
}

#[tokio::test]
async fn factual_qa_in_batch_mode_writes_the_online_datasets() {
    // Both engines through each provider's batch API, 5 % of lines errored and 5 % expired:
    // the datasets of the online run, and not one online request.
    let (expected, _) = reference().await;
    for dialect in ["openai", "anthropic"] {
        let batch = atk_testkit::BatchBehaviour {
            latency: Duration::from_millis(200),
            errored: 0.05,
            expired: 0.05,
            ..Default::default()
        };
        let server = server(ServerConfig::default().with_batch(batch).with_seed(4)).await;
        let (env, config) = setup(&server);
        let sets = [
            format!("small_api={dialect}"),
            format!("large_api={dialect}"),
            "small_mode=batch".to_string(),
            "large_mode=batch".to_string(),
            "batch_max_wait=0.2".to_string(),
        ];
        let out = run(env.command_with(bin(), &config, &sets), RUN_TIMEOUT).await;
        out.assert_code(0);
        assert_eq!(
            datasets(&env),
            expected,
            "{dialect}: batch changed the datasets\n{out}"
        );
        let stats = server.stats();
        assert_eq!(stats.requests, 0, "{dialect}: no online request: {stats:?}");
        let repeats: u64 = stats.batch_per_prompt.values().map(|n| n - 1).sum();
        assert!(
            stats.batch_lines > repeats && stats.batches_created >= 4,
            "{dialect}: a batch per step at least: {stats:?}"
        );
    }
}

/// factual-qa's schema steps on servers that differ: OpenAI's `json_schema` form (the
/// reference run), llama-cpp-python's (`json_schema` refused with a 500, `json_object` +
/// `schema` taken), Anthropic's forced tool, and the first replies broken JSON (repaired): the
/// same datasets each time. A server taking no schema form: one warning, the schema stated in
/// the prompt, a completed run with a dataset.
#[tokio::test]
async fn factual_qa_on_schemas_writes_the_same_datasets_whatever_form_the_server_takes() {
    use atk_testkit::SchemaSupport;
    let (expected, _) = reference().await;
    assert!(!expected[0].is_empty());
    let cases = [
        ("openai", SchemaSupport::LlamaCppPython, 0, "json_object"),
        ("anthropic", SchemaSupport::All, 0, "tool"),
        ("openai", SchemaSupport::All, 3, "json_schema"),
    ];
    for (dialect, support, broken, form) in cases {
        let config = ServerConfig::default()
            .with_schema(support)
            .with_broken_first(broken);
        let server = server(config).await;
        let (env, config) = setup(&server);
        let sets = [
            format!("small_api={dialect}"),
            format!("large_api={dialect}"),
        ];
        let out = run(env.command_with(bin(), &config, &sets), RUN_TIMEOUT).await;
        out.assert_code(0);
        let case = format!("{dialect} {support:?} broken {broken}");
        assert_eq!(datasets(&env), expected, "{case}: datasets differ\n{out}");
        let stats = server.stats();
        assert!(stats.schema_form_count(form) > 0, "{case}: {stats:?}");
        assert_eq!(stats.broken_replies, u64::from(broken), "{case}");
        if support == SchemaSupport::LlamaCppPython {
            let refused = stats.schema_form_count("json_schema");
            assert!(
                (1..=2 * LIMIT as u64).contains(&refused) && stats.status_count(500) == refused,
                "{case}: json_schema refused once per request in flight, never retried: {stats:?}"
            );
        }
    }

    let server = server(ServerConfig::default().with_schema(SchemaSupport::Refused)).await;
    let (env, config) = setup(&server);
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    let conversations =
        std::fs::read_to_string(env.output().join("sharegpt_format.jsonl")).unwrap_or_default();
    assert!(conversations.lines().count() > 0, "{out}");
    let warned = out
        .stderr
        .matches("the schema is stated in the prompt")
        .count();
    assert_eq!(warned, 2, "one warning per engine (small, large)\n{out}");
}

#[tokio::test]
async fn factual_qa_with_no_wait_goes_a_step_per_run_and_ends_with_the_online_datasets() {
    // `--no-wait` submits what is ready (a step's batch needs the step before's results) and
    // leaves; each later `--no-wait` run collects what ended and submits the next step.
    let (expected, _) = reference().await;
    let batch = atk_testkit::BatchBehaviour {
        latency: Duration::from_millis(200),
        ..Default::default()
    };
    let server = server(ServerConfig::default().with_batch(batch)).await;
    let (env, config) = setup(&server);
    let mut runs = 0;
    loop {
        let sets = ["small_mode=batch", "large_mode=batch", "batch_max_wait=0.1"];
        let mut cmd = env.command_with(bin(), &config, &sets);
        cmd.arg("--no-wait");
        let out = run(cmd, RUN_TIMEOUT).await;
        out.assert_code(0);
        runs += 1;
        let status: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.output().join("status.json")).expect("status.json"),
        )
        .expect("status.json is JSON");
        if status["state"] == "finished" {
            break;
        }
        assert_eq!(status["state"], "waiting_for_batches", "{out}");
        assert!(out.stderr.contains("collect them with: "), "{out}");
        assert!(runs < 20, "the chain goes on run after run\n{out}");
    }
    assert!(
        runs >= 3,
        "a run per step at least (judge, generate, check): {runs}"
    );
    assert_eq!(datasets(&env), expected);
    assert_eq!(server.stats().requests, 0, "no online request");
}

/// `--preview 5` runs the chain for real on 5 chunks and prints per step the pass rate and
/// each drop or failure reason with a raw reply, writing no dataset; the full run after it
/// pays nothing again for those 5 (the two together send what one full run sends).
#[tokio::test]
async fn a_preview_shows_pass_rates_reasons_and_replies_and_the_full_run_reuses_it() {
    let (expected, reference_requests) = reference().await;

    let server = server(ServerConfig::default()).await;
    let (env, config) = setup(&server);
    let mut cmd = env.command(bin(), &config);
    cmd.args(["--preview", "5"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    let preview_requests = server.stats().completed;
    assert!(
        preview_requests > 0 && preview_requests < reference_requests,
        "{preview_requests} of {reference_requests}\n{out}"
    );
    assert!(
        out.stdout
            .contains("preview: the chain ran for real on 5 chunks"),
        "{out}"
    );
    for step in ["judge_chunk", "generate_qa", "check_answer"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{step}: ")) && l.contains("passed")),
            "a pass rate for {step}\n{out}"
        );
    }
    assert!(
        out.stdout.contains(" x dropped: ") && out.stdout.contains("raw reply: "),
        "drop reasons with a raw reply each\n{out}"
    );
    assert!(
        !env.output().join("sharegpt_format.jsonl").exists()
            && !env.output().join("README.md").exists(),
        "no dataset or card from a preview\n{out}"
    );
    let status = std::fs::read_to_string(env.output().join("status.json")).expect("status.json");
    assert!(status.contains("\"reasons\""), "{status}");

    // The same preview again: the same chunks, all stored, nothing sent.
    let mut cmd = env.command(bin(), &config);
    cmd.args(["--preview", "5"]);
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    assert_eq!(server.stats().completed, preview_requests);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        server.stats().completed,
        reference_requests,
        "preview + full run send what one full run sends\n{out}"
    );
    assert_eq!(datasets(&env), expected, "{out}");
}

#[tokio::test]
async fn each_step_shows_its_own_cost_and_a_rerun_shows_the_true_totals() {
    let server = server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let mut config = Config::new(server.base_url())
        .set("cost_per_million_small_input", "2.0")
        .set("cost_per_million_small_output", "4.0")
        .set("cost_per_million_large_input", "3.0")
        .set("cost_per_million_large_output", "6.0");
    config.concurrency_limit = LIMIT;
    config.tail = "factual_qa:\n  pairs_per_chunk: 3\n  votes: 3\n".to_owned();
    let config = env.write_config(&config);
    let first = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    first.assert_code(0);
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.output().join("status.json")).unwrap()).unwrap();
    let run_cost = status["run_cost_usd"].as_f64().unwrap();
    let steps = status["steps"].as_array().unwrap();
    let costs: Vec<f64> = steps
        .iter()
        .map(|s| s["cost_usd"].as_f64().unwrap())
        .collect();
    assert!(run_cost > 0.0, "{status}");
    assert!(
        costs.iter().all(|&c| c > 0.0 && c < run_cost),
        "every step's own cost, not the run's: {costs:?} of {run_cost}"
    );
    let sum: f64 = costs.iter().sum();
    assert!(
        (sum - run_cost).abs() < 1e-9 * run_cost.max(1.0),
        "the steps' costs add up to the run's: {sum} vs {run_cost}"
    );
    // The progress line of a step shows that step's cost, then the whole run's.
    let check = steps
        .iter()
        .position(|s| s["step"] == "check_answer")
        .unwrap();
    let line = first
        .stderr
        .lines()
        .rfind(|l| l.starts_with("check_answer: ") && l.contains(" done"))
        .unwrap_or_else(|| panic!("no progress line for check_answer:\n{first}"));
    assert!(
        line.contains(&format!("${:.4} (all steps ${run_cost:.4})", costs[check])),
        "{line}"
    );

    // A rerun over finished work: `atk status` shows every step's true totals.
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-atk"))
        .arg("status")
        .arg(env.output())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "judge_chunk",
        "generate_qa",
        "check_answer",
        "write_conversation",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(step))
            .unwrap_or_else(|| panic!("{step} missing:\n{text}"));
        assert!(
            line.contains(" 0 pending") && !line.contains("(of 0)"),
            "{line}\n{text}"
        );
    }
}
