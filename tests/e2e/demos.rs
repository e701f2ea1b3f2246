//! Every pipeline's demo, exported: a folder with the datasets and the card only (no store,
//! no sidecar, no absolute path), a card the Hub accepts (snapshot), and every dataset row
//! valid for its format (turns alternating from the user to the assistant).

use std::path::{Path, PathBuf};

use atk_e2e::{Env, files_containing, run};
use serde_json::Value;

use crate::RUN_TIMEOUT;

fn atk() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-atk"))
}

fn pipelines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines")
}

/// Runs `bin` on its demo into a temp dir, exports it, and returns the env and the export.
async fn run_and_export(bin: &Path, pipeline: &str) -> (Env, PathBuf) {
    let env = Env::new();
    let out = env.root().join("out");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config")
        .arg(pipelines().join(pipeline).join("demo.yaml"))
        .arg("--set")
        .arg(format!("output_dir={}", out.display()))
        .args(["--set", "mock_latency_ms=0", "-q"]);
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    let dest = env.root().join("export");
    let mut cmd = tokio::process::Command::new(atk());
    cmd.arg("export").arg(&out).arg(&dest);
    run(cmd, RUN_TIMEOUT).await.assert_code(0);
    (env, dest)
}

/// The speakers of a conversation row, or `None` for a row of another shape.
fn speakers(row: &Value) -> Option<Vec<String>> {
    let (list, key) = if let Some(l) = row.get("conversations") {
        (l, "from")
    } else {
        (row.get("messages")?, "role")
    };
    Some(
        list.as_array()
            .expect("a list of turns")
            .iter()
            .map(|t| {
                assert!(
                    t.get(if key == "from" { "value" } else { "content" })
                        .is_some_and(Value::is_string)
                );
                t[key]
                    .as_str()
                    .expect("a speaker")
                    .replace("human", "user")
                    .replace("gpt", "assistant")
            })
            .collect(),
    )
}

/// Checks the export: nothing but datasets and the card, and every row valid.
fn check_export(env: &Env, dest: &Path) -> String {
    let root = env.root().to_string_lossy().into_owned();
    assert!(
        files_containing(dest, root.as_bytes()).is_empty(),
        "no absolute path"
    );
    let repo = pipelines().canonicalize().unwrap();
    assert!(
        files_containing(dest, repo.to_string_lossy().as_bytes()).is_empty(),
        "no absolute path of the sources"
    );
    let mut rows = 0;
    for entry in walkdir::WalkDir::new(dest)
        .into_iter()
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_dir() {
            assert_ne!(name, "store");
            continue;
        }
        if name == "README.md" {
            continue;
        }
        assert!(
            name.ends_with(".jsonl"),
            "only datasets and the card: {name}"
        );
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let row: Value = serde_json::from_str(line).expect("every line is JSON");
            rows += 1;
            let Some(turns) = speakers(&row) else {
                continue;
            };
            let body: &[String] = match turns.first().map(String::as_str) {
                Some("system") => &turns[1..],
                _ => &turns,
            };
            assert!(
                body.len() >= 2 && body.len().is_multiple_of(2),
                "{name}: {line}"
            );
            for (i, s) in body.iter().enumerate() {
                let due = if i % 2 == 0 { "user" } else { "assistant" };
                assert_eq!(s, due, "{name}: turns alternate from the user: {line}");
            }
        }
    }
    assert!(rows > 0);
    let card = std::fs::read_to_string(dest.join("README.md")).unwrap();
    for key in [
        "license:",
        "language:",
        "task_categories:",
        "size_categories:",
        "configs:",
    ] {
        assert!(card.contains(key), "{key}\n{card}");
    }
    assert!(card.contains("### Fields of"), "{card}");
    assert!(card.contains("## Source documents"), "{card}");
    // The date of the newest result changes from run to run.
    let date = card.find("stored on ").map(|at| at + "stored on ".len());
    match date {
        Some(at) => format!("{}[date]{}", &card[..at], &card[at + 10..]),
        None => card,
    }
}

#[tokio::test]
async fn the_example_demo_exports_a_card_and_valid_rows() {
    let bin = Path::new(env!("CARGO_BIN_EXE_e2e-example-pipeline"));
    let (env, dest) = run_and_export(bin, "example").await;
    insta::assert_snapshot!("example_card", check_export(&env, &dest));
}

#[tokio::test]
async fn the_factual_qa_demo_exports_a_card_and_valid_rows() {
    let bin = Path::new(env!("CARGO_BIN_EXE_e2e-factual-qa"));
    let (env, dest) = run_and_export(bin, "factual-qa").await;
    insta::assert_snapshot!("factual_qa_card", check_export(&env, &dest));
}

#[tokio::test]
async fn the_rephrase_demo_exports_a_card_and_valid_rows() {
    let bin = Path::new(env!("CARGO_BIN_EXE_e2e-rephrase"));
    let (env, dest) = run_and_export(bin, "rephrase").await;
    let card = check_export(&env, &dest);
    assert!(!card.contains("chunk"), "rephrase does not chunk:\n{card}");
    insta::assert_snapshot!("rephrase_card", card);
}

#[tokio::test]
async fn the_rag_data_demo_exports_a_card_and_valid_rows() {
    let bin = Path::new(env!("CARGO_BIN_EXE_e2e-rag-data"));
    let (env, dest) = run_and_export(bin, "rag-data").await;
    let card = check_export(&env, &dest);
    assert!(card.contains("rag_qa.jsonl"), "{card}");
    assert!(
        !dest.join("corpus.redb").exists(),
        "the corpus index is not published"
    );
}
