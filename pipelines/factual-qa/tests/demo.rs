//! The demo on the mock engines: multi-turn conversations offline, a drop and split votes,
//! a rerun that sends nothing and rewrites the same bytes, a dry run that estimates every
//! step, and a run that keeps nothing exits 1 with the reasons.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.yaml");
    Command::new(env!("CARGO_BIN_EXE_factual-qa"))
        .args([
            "--config",
            demo.to_str().unwrap(),
            "--set",
            "mock_latency_ms=0",
            "--progress",
            "plain",
        ])
        .args(args)
        .output()
        .unwrap()
}

fn files(out: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "sharegpt_format.jsonl",
        "openai_messages.jsonl",
        "qa_pairs.jsonl",
        "README.md",
        "meta_datagen/check_details_sharegpt.jsonl",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")),
        )
    })
    .collect()
}

#[test]
fn the_demo_writes_verified_conversations_and_a_rerun_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let set = format!("output_dir={}", out.display());
    let first = run(&["--set", &set]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 x dropped: A list of titles and page numbers."),
        "the contents page is dropped: {stderr}"
    );
    assert!(
        stderr.contains("x dropped: failed the vote"),
        "some pairs fail their vote: {stderr}"
    );
    let written = files(&out);
    let sharegpt = String::from_utf8(written[0].1.clone()).unwrap();
    assert_eq!(
        sharegpt.lines().count(),
        3,
        "one conversation per kept chunk"
    );
    for line in sharegpt.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let turns = line["conversations"].as_array().unwrap();
        assert!(turns.len() >= 2 && turns.len().is_multiple_of(2), "{line}");
        assert_eq!(
            (turns[0]["from"].as_str(), turns[1]["from"].as_str()),
            (Some("human"), Some("gpt"))
        );
    }
    let openai = String::from_utf8(written[1].1.clone()).unwrap();
    assert!(
        openai.starts_with(r#"{"messages":[{"content":"#)
            || openai.starts_with(r#"{"messages":[{"role":"user""#),
        "{openai}"
    );
    let pair: serde_json::Value = serde_json::from_str(
        std::str::from_utf8(&written[2].1)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        pair["question"].is_string()
            && pair["source"] == "01_salt_pans.md"
            && pair["chunk_id"].is_string(),
        "{pair}"
    );
    let card = String::from_utf8_lossy(&written[3].1);
    assert!(
        card.starts_with("---\nlicense: cc-by-4.0\n") && card.contains("path: qa_pairs.jsonl"),
        "{card}"
    );

    let again = run(&["--set", &set]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains("engine small (mock-small, mock): this run 0 requests")
            && stderr.contains("engine large (mock-large, mock): this run 0 requests"),
        "{stderr}"
    );
    assert_eq!(
        files(&out),
        written,
        "a rerun rewrites byte-identical files"
    );
}

#[test]
fn a_dry_run_estimates_every_step_including_the_large_engines_votes() {
    let dir = tempfile::tempdir().unwrap();
    let set = format!("output_dir={}", dir.path().join("never").display());
    let out = run(&["--set", &set, "--dry-run"]);
    // The estimate is the dry run's result: stdout.
    let stderr = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ESTIMATE") && stderr.contains("the whole chain ran on 4 of 4 chunks"),
        "{stderr}"
    );
    let large = stderr
        .lines()
        .find(|l| l.contains("large engine"))
        .unwrap_or_default();
    assert!(
        !large.contains(": 0 requests"),
        "the votes run on the large engine: {stderr}"
    );
    assert!(
        !dir.path().join("never").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn a_run_where_every_chunk_is_dropped_exits_1_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let contents = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inputs/00_contents.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("in/contents.txt"), contents).unwrap();
    let (input, output) = (
        format!("input_dir={}", dir.path().join("in").display()),
        format!("output_dir={}", dir.path().join("out").display()),
    );
    let out = run(&["--set", &input, "--set", &output]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 x dropped: A list of titles and page numbers."),
        "{stderr}"
    );
    assert!(
        stderr.contains("no item reached the end of the chain (1 dropped, 0 failed)"),
        "{stderr}"
    );
}

#[test]
fn a_dry_run_of_the_real_config_lists_the_unfilled_api_keys_and_sends_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inputs = format!("input_dir={}", root.join("inputs").display());
    let out = Command::new(env!("CARGO_BIN_EXE_factual-qa"))
        .args([
            "--config",
            root.join("config.yaml").to_str().unwrap(),
            "--dry-run",
        ])
        .args(["--set", &inputs, "--set", "dataset_license=cc-by-4.0"])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`small_api_key` is still !!PLACEHOLDER!!")
            && stderr.contains("`large_api_key` is still !!PLACEHOLDER!!"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("estimated cost of the whole chain"),
        "the estimate is on stdout: {stdout}"
    );
    // A real run still refuses to start.
    let real = Command::new(env!("CARGO_BIN_EXE_factual-qa"))
        .args([
            "--config",
            root.join("config.yaml").to_str().unwrap(),
            "--set",
            &inputs,
            "--set",
            "dataset_license=x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        real.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
}

/// The lines of `meta_datagen/<file>` as JSON.
fn meta_lines(out: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("meta_datagen").join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last turn (the raw reply) of a meta dataset's ShareGPT line.
fn reply(line: &serde_json::Value) -> String {
    let turns = line["conversations"].as_array().unwrap();
    turns.last().unwrap()["value"].as_str().unwrap().to_string()
}

#[test]
fn meta_datasets_hold_only_exchanges_whose_result_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, all) = (dir.path().join("kept"), dir.path().join("all"));
    let first = run(&["--set", &format!("output_dir={}", kept.display())]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let conversations = std::fs::read_to_string(kept.join("sharegpt_format.jsonl")).unwrap();
    let pairs = std::fs::read_to_string(kept.join("qa_pairs.jsonl")).unwrap();
    let (conversations, pairs) = (conversations.lines().count(), pairs.lines().count());

    let checks = meta_lines(&kept, "check_details_sharegpt.jsonl");
    assert_eq!(
        checks.len(),
        pairs,
        "one recorded vote per pair that passed"
    );
    assert!(
        checks
            .iter()
            .all(|l| !reply(l).contains(r#""verdict":"no""#)),
        "no vote that rejected its pair is training data"
    );
    let judged = meta_lines(&kept, "judge_details_sharegpt.jsonl");
    assert_eq!(
        judged.len(),
        conversations,
        "only chunks that reached the end"
    );
    assert!(judged.iter().all(|l| !reply(l).contains("unsuitable")));
    for file in [
        "generate_details_sharegpt.jsonl",
        "conversation_details_sharegpt.jsonl",
    ] {
        assert_eq!(meta_lines(&kept, file).len(), conversations, "{file}");
    }
    let card = std::fs::read_to_string(kept.join("README.md")).unwrap();
    assert!(
        card.contains("only the recorded exchanges of results that were kept"),
        "{card}"
    );

    // Asked for, every recorded exchange: the rejected votes and the dropped chunk too.
    let every = run(&[
        "--set",
        &format!("output_dir={}", all.display()),
        "--set",
        "meta_datagen_include_all=true",
    ]);
    assert!(
        every.status.success(),
        "{}",
        String::from_utf8_lossy(&every.stderr)
    );
    let checks = meta_lines(&all, "check_details_sharegpt.jsonl");
    assert!(
        checks.len() > pairs
            && checks
                .iter()
                .any(|l| reply(l).contains(r#""verdict":"no""#))
    );
    let judged = meta_lines(&all, "judge_details_sharegpt.jsonl");
    assert!(judged.iter().any(|l| reply(l).contains("unsuitable")));
    let card = std::fs::read_to_string(all.join("README.md")).unwrap();
    assert!(card.contains("`meta_datagen_include_all: true`"), "{card}");
}
