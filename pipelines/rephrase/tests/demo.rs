//! The README's first command: the demo config on the mock engine turns the bundled JSONL and
//! ShareGPT files into a reproducible ShareGPT dataset, offline; a rerun sends nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rephrase(out: &Path, extra: &[&str]) -> Output {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.yaml");
    Command::new(env!("CARGO_BIN_EXE_rephrase"))
        .args(["--config", demo.to_str().unwrap(), "--set"])
        .arg(format!("output_dir={}", out.display()))
        .args(["--set", "mock_latency_ms=0"])
        .args(extra)
        .output()
        .unwrap()
}

fn run_demo(out: &Path) -> String {
    let run = rephrase(out, &["-q"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    std::fs::read_to_string(out.join("sharegpt_format.jsonl")).unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("run_summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_demo_rewrites_both_files_and_a_rerun_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b): (PathBuf, PathBuf) = (dir.path().join("a"), dir.path().join("b"));
    let first = run_demo(&a);
    assert_eq!(
        run_demo(&b),
        first,
        "same rows and replies give the same bytes"
    );
    let lines: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        7,
        "5 JSONL rows + 3 ShareGPT conversations, less the row with no question"
    );
    // Input order: garden_faq.jsonl, then workshop_chats.json.
    let first_turns = &lines[0]["conversations"];
    assert_eq!(
        first_turns[0]["value"], "Why do tomato leaves curl upward on hot days?",
        "questions are kept verbatim"
    );
    let last = lines[6]["conversations"].as_array().unwrap();
    assert_eq!(
        last.len(),
        4,
        "a two-answer conversation keeps its four turns"
    );
    for line in &lines {
        for turn in line["conversations"].as_array().unwrap() {
            let value = turn["value"].as_str().unwrap();
            if turn["from"] == "gpt" {
                let (why, answer) = value.split_once("</reasoning>\n").unwrap();
                assert!(
                    why.starts_with("<reasoning>") && !answer.is_empty(),
                    "{value}"
                );
                assert!(
                    !answer.contains("<answer>"),
                    "the tags are taken off: {value}"
                );
            }
        }
    }
    // The two conversations with two answers were first answered for one only: rejected by
    // validation, then accepted on the retry (8 items, 10 requests, nothing failed).
    let s = summary(&a);
    assert_eq!(s["steps"][0]["done"], 8);
    assert_eq!(s["steps"][0]["failed"], 0);
    assert_eq!(s["engines"][0]["requests"], 10);
    // The JSONL row with no question would be a ShareGPT row with no human turn: left out and
    // counted, not written.
    assert_eq!(s["dropped_rows"][0]["count"], 1, "{s}");
    assert_eq!(
        s["dropped_rows"][0]["reason"],
        "ShareGPT row: the first turn is `gpt`, not `human`"
    );

    // A rerun on the same output dir sends nothing and rewrites the same bytes.
    assert_eq!(run_demo(&a), first);
    let s = summary(&a);
    assert_eq!(s["engines"][0]["requests"], 0, "resume re-requests nothing");
    assert_eq!(s["steps"][0]["already_done"], 8);
}

#[test]
fn the_rejected_replies_are_visible_with_verbose_logging() {
    let dir = tempfile::tempdir().unwrap();
    let run = rephrase(&dir.path().join("out"), &["-v", "--progress", "plain"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("reason=1 answers rewritten, the conversation has 2")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn bad_rows_are_reported_with_file_and_line_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("more")).unwrap();
    std::fs::write(
        input.join("rows.jsonl"),
        "{\"question\": \"Q1?\", \"text\": \"An answer that is long enough.\"}\n\
         {\"question\": \"Q2?\", \"text\": \n\
         \n\
         {\"question\": \"Q3?\", \"body\": \"no text field\"}\n\
         {\"conversations\": [{\"from\": \"human\", \"value\": \"Hi?\"}, {\"from\": \"gpt\", \"value\": \"Hello there.\"}]}\n",
    )
    .unwrap();
    // A line that is not UTF-8 is one bad row; the lines after it are still read.
    let mut bytes = b"{\"text\": \"caf\xe9\"}\n".to_vec();
    bytes
        .extend_from_slice(b"{\"question\": \"Last?\", \"text\": \"The last row is read too.\"}\n");
    std::fs::write(input.join("more/latin1.jsonl"), bytes).unwrap();
    std::fs::write(
        input.join("more/chats.json"),
        "[{\"conversations\": [{\"from\": \"human\", \"value\": \"only a question\"}]}]",
    )
    .unwrap();
    std::fs::write(input.join("notes.txt"), "not a dataset file: ignored").unwrap();
    let out = dir.path().join("out");
    let set_input = format!("input_dir={}", input.display());
    let run = rephrase(&out, &["--set", &set_input]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("rows.jsonl:2: not JSON"), "{stderr}");
    assert!(
        stderr.contains("rows.jsonl:4: no text in field `text`; row skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("more/chats.json:1: no gpt turn"),
        "{stderr}"
    );
    let dataset = std::fs::read_to_string(out.join("sharegpt_format.jsonl")).unwrap();
    assert_eq!(dataset.lines().count(), 3, "{dataset}");
    assert!(
        dataset.contains("\"Q1?\"") && dataset.contains("\"Hi?\"") && dataset.contains("\"Last?\"")
    );
}

#[test]
fn a_file_that_cannot_be_read_stops_the_run_with_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("broken.json"), "{\"conversations\": ").unwrap();
    for (path, expected) in [
        (input.clone(), "broken.json: not a JSON array"),
        (dir.path().join("missing.jsonl"), "missing.jsonl"),
    ] {
        let set_input = format!("input_dir={}", path.display());
        let run = rephrase(&dir.path().join("out"), &["--set", &set_input]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn a_row_added_to_the_dataset_is_the_only_one_requested_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("inputs");
    for file in ["garden_faq.jsonl", "workshop_chats.json"] {
        std::fs::copy(bundled.join(file), input.join(file)).unwrap();
    }
    let (out, set_input) = (
        dir.path().join("out"),
        format!("input_dir={}", input.display()),
    );
    let run = || {
        let run = rephrase(&out, &["-q", "--set", &set_input]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read_to_string(out.join("sharegpt_format.jsonl")).unwrap()
    };
    let before = run();
    let mut faq = std::fs::read_to_string(input.join("garden_faq.jsonl")).unwrap();
    faq.insert_str(0, "{\"question\": \"When do I sow peas?\", \"text\": \"As soon as the soil can be worked in spring.\"}\n");
    std::fs::write(input.join("garden_faq.jsonl"), faq).unwrap();
    let after = run();
    assert_eq!(
        summary(&out)["engines"][0]["requests"],
        1,
        "rows keep their ids when another row is added before them"
    );
    let (first, rest) = after.split_once('\n').unwrap();
    assert!(first.contains("When do I sow peas?"), "{first}");
    assert_eq!(rest, before, "the other rows are written as before");
}
