//! docs/quickstart.md shows the demo's output; this keeps it the real output. The summary is
//! an insta snapshot of a real run, and the quickstart's block must match it line for line
//! (and show no line a run does not print).

use std::path::Path;
use std::process::Command;

/// The repository root.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Times vary; everything else must not.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| match (l.find("summary ("), l.rfind(" s) ==")) {
            (Some(a), Some(b)) if a < b => format!("{}summary ([TIME] s) ==", &l[..a]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ```text block of the quickstart that starts with the demo's first line.
fn quickstart_block() -> String {
    let doc = std::fs::read_to_string(root().join("docs/quickstart.md")).unwrap();
    let start = doc
        .find("```text\nread ")
        .expect("the quickstart shows the demo's output")
        + "```text\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].trim_end().to_string()
}

#[test]
fn the_quickstarts_sample_output_is_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_example-pipeline"))
        .current_dir(root())
        .args([
            "--config",
            "pipelines/example/demo.yaml",
            "--progress",
            "plain",
        ])
        .args([
            "--set",
            &format!("output_dir={}", out_dir.display()),
            "--set",
            "mock_latency_ms=0",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");
    // On a terminal stderr and stdout interleave; the dataset lines come last.
    let shown = normalize(&format!("{stderr}{stdout}").replace(
        &out_dir.display().to_string(),
        "pipelines/example/output/demo",
    ));
    let summary = &shown[shown
        .find("== example-pipeline summary")
        .expect("a summary")..];
    insta::assert_snapshot!("quickstart_summary", summary);

    let doc = normalize(&quickstart_block());
    let doc_summary = &doc[doc
        .find("== example-pipeline summary")
        .expect("the quickstart shows the summary")..];
    assert_eq!(
        doc_summary, summary,
        "docs/quickstart.md's summary differs from the real one"
    );
    let real: Vec<&str> = shown.lines().collect();
    for line in doc.lines() {
        assert!(
            real.contains(&line),
            "docs/quickstart.md shows a line the demo does not print: {line:?}\nreal output:\n{shown}"
        );
    }
}
