//! Ctrl-C: the first one stops new requests, lets those in flight finish and be stored, and
//! exits 130; rerunning the same command finishes the job.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn first_ctrl_c_exits_130_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.yaml");
    let out = format!("output_dir={}", dir.path().join("out").display());
    let args = [
        "--config",
        demo.to_str().unwrap(),
        "--set",
        &out,
        "--set",
        "concurrency_limit=1",
        "--progress",
        "plain",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .args(args)
        .args(["--set", "mock_latency_ms=800"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Wait (event-driven: the child's own output) until the step has started.
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run ended before its step started:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains("write_poem: starting") {
            break;
        }
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("stopping: no new requests"), "{rest}");
    assert!(
        !dir.path().join("out/sharegpt_format.jsonl").exists(),
        "an interrupted run writes no dataset"
    );

    let rerun = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .args(args)
        .args(["-q"])
        .output()
        .unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let dataset = std::fs::read_to_string(dir.path().join("out/sharegpt_format.jsonl")).unwrap();
    assert_eq!(dataset.lines().count(), 5);
}
