//! The offline quickstart: `demo.yaml` on the mock engine, no server, says it is a demo.

use atk_e2e::{Env, run};

use crate::{RUN_TIMEOUT, bin};

#[tokio::test]
async fn the_offline_demo_writes_a_dataset_and_says_it_is_mock() {
    let env = Env::new();
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipelines/example/demo.yaml"
    );
    let mut cmd = env.command(bin(), demo.as_ref());
    cmd.arg("--set")
        .arg(format!("output_dir={}", env.output().display()));
    cmd.arg("--set").arg("mock_latency_ms=0");

    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    let lines = env.dataset();
    assert!(
        lines.len() >= 4,
        "one line per chunk of the shipped inputs\n{out}"
    );
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.to_lowercase().contains("mock"),
        "a mock run says so plainly\n{out}"
    );
    assert!(
        shown.contains("sharegpt_format.jsonl"),
        "it says where the dataset is\n{out}"
    );

    let first = env.dataset_bytes();
    let mut again = env.command(bin(), demo.as_ref());
    again
        .arg("--set")
        .arg(format!("output_dir={}", env.output().display()));
    run(again, RUN_TIMEOUT).await.assert_code(0);
    assert_eq!(
        env.dataset_bytes(),
        first,
        "the mock is deterministic and the rerun changes nothing"
    );
}
