//! The README's first command: the demo config on the mock engine writes a well-formed,
//! reproducible ShareGPT dataset.

use std::path::Path;
use std::process::Command;

fn run_demo(out: &Path) -> String {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.yaml");
    let run = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .args([
            "--config",
            demo.to_str().unwrap(),
            "--set",
            &format!("output_dir={}", out.display()),
        ])
        .args(["--set", "mock_latency_ms=0", "-q"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out.join("sharegpt_format.jsonl")).unwrap()
}

#[test]
fn the_demo_dataset_is_well_formed_and_byte_identical_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_demo(&dir.path().join("a"));
    let second = run_demo(&dir.path().join("b"));
    assert_eq!(first, second, "same inputs and replies give the same bytes");
    let lines: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "one line per chunk of the bundled inputs");
    for line in &lines {
        let turns = line["conversations"].as_array().unwrap();
        assert_eq!(turns[0]["from"], "human");
        assert_eq!(turns[1]["from"], "gpt");
        let poem = turns[1]["value"].as_str().unwrap();
        assert!(
            !poem.contains("<poem>") && poem.lines().count() >= 3,
            "the poem is extracted: {poem:?}"
        );
    }
    // Input order: files sorted by path (bread.md first), chunks in reading order.
    assert!(
        lines[0]["conversations"][0]["value"]
            .as_str()
            .unwrap()
            .contains("Notes on a first loaf")
    );
    // A rerun on the same output dir sends nothing and rewrites the same file.
    assert_eq!(run_demo(&dir.path().join("a")), first);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("a/run_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["engines"][0]["requests"], 0,
        "resume re-requests nothing"
    );
    assert_eq!(summary["steps"][0]["already_done"], 5);
}
