//! An output dir made by the previous release (`tests/fixtures/release-store`: the demo's
//! store, `status.json` and datasets, written by the release binary before the Pipeline API
//! changed) resumes under this code with 0 requests and writes the same datasets.

use std::path::Path;
use std::process::Command;

/// Copies a folder tree (the fixture is never written in place).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_release_output_dir_resumes_with_no_request_and_the_same_datasets() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = manifest.join("tests/fixtures/release-store");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    copy_dir(&fixture, &out);
    let run = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .args(["--config", manifest.join("demo.yaml").to_str().unwrap()])
        .args(["--set", &format!("output_dir={}", out.display())])
        .args(["--set", "mock_latency_ms=0", "--progress", "plain"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_summary.json")).unwrap())
            .unwrap();
    for engine in summary["engines"].as_array().unwrap() {
        assert_eq!(engine["requests"], 0, "nothing is asked again: {stderr}");
    }
    let datasets: &[&str] = &["sharegpt_format.jsonl"];
    for file in datasets {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            std::fs::read_to_string(fixture.join(file)).unwrap(),
            "{file} is written as the release wrote it"
        );
    }
}
