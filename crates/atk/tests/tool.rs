//! The `atk` binary, driven the way a user drives it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn atk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_atk"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("atk runs")
}
#[test]
fn atk_chunk_prints_one_json_object_per_chunk_in_source_order() {
    let dir = fixtures().join("inputs");
    let out = atk(&["chunk", dir.to_str().unwrap(), "--chunk-size", "500"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sources: Vec<&str> = lines
        .iter()
        .map(|l| l["metadata"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["a_river.txt", "b_notes.md", "c_lines.jsonl"]);
    for l in &lines {
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "metadata", "text", "tokens"], "{l}");
        assert_eq!(l["id"].as_str().unwrap().len(), 32);
        assert!(l["tokens"].as_u64().unwrap() > 10);
    }
    assert!(
        lines[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("The river was low")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 files") || stderr.contains("3 chunks"),
        "summary on stderr: {stderr}"
    );
}

#[test]
fn atk_chunk_on_a_missing_or_empty_dir_exits_2() {
    let out = atk(&["chunk", "/definitely/not/here", "--chunk-size", "100"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/definitely/not/here"));
    let empty = tempfile::tempdir().unwrap();
    let out = atk(&[
        "chunk",
        empty.path().to_str().unwrap(),
        "--chunk-size",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn atk_status_without_a_run_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let out = atk(&["status", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no atk run"));
}
#[test]
fn atk_on_a_closed_pipe_ends_quietly() {
    // `atk chunk DIR 2>&1 | head -0`: the reader is gone before atk writes a byte.
    let dir = fixtures().join("inputs");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(env!("CARGO_BIN_EXE_atk"))
        .args(["chunk", dir.to_str().unwrap(), "--chunk-size", "500"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .env_remove("RUST_LOG")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "no panic (101) on a closed pipe");
}
