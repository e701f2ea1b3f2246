//! An output dir made by the previous release (`tests/fixtures/release-store`: the demo's
//! store, `status.json` and datasets, written by the release binary before the Pipeline API
//! changed) resumes under this code with 0 requests and writes the same datasets.

use std::path::Path;

#[test]
fn a_release_output_dir_resumes_with_no_request_and_the_same_datasets() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    atk_testkit::release::assert_release_dir_resumes(
        Path::new(env!("CARGO_BIN_EXE_factual-qa")),
        &manifest.join("demo.yaml"),
        &manifest.join("tests/fixtures/release-store"),
        &dir.path().join("out"),
        &[
            "sharegpt_format.jsonl",
            "openai_messages.jsonl",
            "qa_pairs.jsonl",
        ],
    );
}
