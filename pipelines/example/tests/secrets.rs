//! An API key never leaves `Secret`: not in stdout, stderr (at -vv with RUST_LOG=trace), the
//! store, debug outputs, summaries or datasets.

use std::path::Path;
use std::process::Command;

const KEY: &str = "sk-test-SECRET-123";

fn files_containing(dir: &Path, needle: &[u8], hits: &mut Vec<String>) -> usize {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            seen += files_containing(&path, needle, hits);
        } else {
            seen += 1;
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    seen
}

#[test]
fn the_api_key_appears_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("inputs");
    let config = format!(
        "api:\n  small_model: mock-small\n  small_api_key: {KEY}\n  small_mode: mock\n  \
         large_model: mock-large\n  large_api_key: {KEY}\n  large_mode: mock\n\
         path:\n  input_dir: {}\n  output_dir: ./out\n\
         system:\n  concurrency_limit: 4\n  debug_outputs: true\n\
         meta_datagen:\n  do_meta_datagen: true\n  meta_datagen_keys: [poetry_details]\n\
         example_heading_2:\n  key3: Write a poem.\n",
        inputs.display()
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "-vv",
            "--progress",
            "json",
        ])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("MOCK ENGINE"), "the mock banner is shown");
    assert!(!stderr.contains(KEY), "key in stderr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(KEY), "key in stdout");
    // --progress json: stdout is JSON lines only, ending with the final milestone.
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "step_finished" && e["step"] == "write_poem" && e["done"] == 5),
        "{stdout}"
    );
    let milestone = events.iter().rev().find(|e| e["event"] == "milestone");
    assert_eq!(
        milestone.map(|e| e["message"].clone()),
        Some("pipeline complete".into())
    );
    // Where each dataset went ends the JSON lines, as events of their own.
    let written: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "dataset_written")
        .collect();
    assert_eq!(
        written.len(),
        3,
        "the dataset and two meta datasets: {stdout}"
    );
    assert!(
        written[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("sharegpt_format.jsonl"))
            && written[0]["lines"] == 5
    );
    let out_dir = dir.path().join("out");
    assert!(
        out_dir.join("debug_outputs").is_dir(),
        "debug outputs were written"
    );
    assert!(
        out_dir.join("meta_datagen").is_dir(),
        "meta datasets were written"
    );
    let mut hits = Vec::new();
    let seen = files_containing(&out_dir, KEY.as_bytes(), &mut hits);
    assert!(
        seen > 5,
        "the output dir has the store, datasets and debug files ({seen} files)"
    );
    assert!(hits.is_empty(), "the key leaked into {hits:?}");
}
