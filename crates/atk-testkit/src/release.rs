//! Checks that an output dir written by an earlier release resumes under this code: the
//! pipelines' `release_store` tests share it.

use std::path::Path;
use std::process::Command;

/// Copies the release fixture at `fixture` to `out` (the fixture is never written in place),
/// runs the pipeline binary `bin` with `config` on it (mock latency 0), and asserts that no
/// engine sent a request and that each of `datasets` is written as the release wrote it.
pub fn assert_release_dir_resumes(
    bin: &Path,
    config: &Path,
    fixture: &Path,
    out: &Path,
    datasets: &[&str],
) {
    copy_dir(fixture, out);
    let run = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["--set", &format!("output_dir={}", out.display())])
        .args(["--set", "mock_latency_ms=0", "--progress", "plain"])
        .output()
        .expect("the pipeline binary runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("run_summary.json")).expect("run_summary.json"),
    )
    .expect("run_summary.json is JSON");
    for engine in summary["engines"].as_array().expect("engines") {
        assert_eq!(engine["requests"], 0, "nothing is asked again: {stderr}");
    }
    for file in datasets {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).expect("a dataset"),
            std::fs::read_to_string(fixture.join(file)).expect("the fixture's dataset"),
            "{file} is written as the release wrote it"
        );
    }
}

/// Copies a folder tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a folder");
    for entry in std::fs::read_dir(from).expect("reading the fixture") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("its type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying a fixture file");
        }
    }
}
