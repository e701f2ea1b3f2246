//! `--reprocess` and `--redo` through the runner, on the mock engine: a stricter validator
//! costs requests only for the replies that now fail; a raw-less store exits 2.

use std::path::{Path, PathBuf};

use atk_cli::CommonFlags;
use atk_cli::config::NoExtra;
use atk_cli::prelude::*;

static PROMPTS: &[(&str, &str)] = &[("write.yaml", include_str!("../fixtures/prompts_write.yaml"))];

/// One prompted step; with `strict`, the validator refuses the poem of the river passage.
struct Poems {
    strict: bool,
}

#[async_trait]
impl Pipeline for Poems {
    type Config = NoExtra;
    fn name(&self) -> &'static str {
        "poems"
    }
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }
    fn chain(&self, _: &NoExtra) -> Chain {
        let strict = self.strict;
        let step = PromptStep::new("write")
            .max_retries(0)
            .mock_reply("<poem>{excerpt}</poem>")
            .validator(move |_, item| {
                let text = item.text("text").unwrap_or_default();
                if strict && text.contains("river") {
                    Err("no rivers any more".to_string())
                } else {
                    Ok(())
                }
            });
        Chain::new().then(step)
    }
    fn write_datasets(&self, _: &RunContext<NoExtra>, _: &Chain) -> Result<(), RunError> {
        Ok(())
    }
}

fn config(dir: &Path) -> PathBuf {
    let config = dir.join("config.yaml");
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inputs");
    std::fs::write(
        &config,
        format!(
            "api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: {}\n  output_dir: ./out\n",
            inputs.display()
        ),
    )
    .unwrap();
    config
}

fn flags(config: &Path, reprocess: &[&str], only: bool) -> CommonFlags {
    CommonFlags {
        config: config.to_path_buf(),
        quiet: true,
        reprocess: reprocess.iter().map(|s| s.to_string()).collect(),
        reprocess_only: only,
        ..CommonFlags::default()
    }
}

/// Requests the last run sent (from its summary).
fn requests(dir: &Path) -> u64 {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/run_summary.json")).unwrap())
            .unwrap();
    summary["engines"][0]["requests"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_stricter_validator_costs_requests_only_for_the_replies_that_now_fail() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    atk_cli::run(Poems { strict: false }, flags(&config, &[], false))
        .await
        .unwrap();
    assert_eq!(requests(dir.path()), 3);

    // Only reported: nothing sent.
    atk_cli::run(Poems { strict: true }, flags(&config, &["write"], true))
        .await
        .unwrap();
    assert_eq!(requests(dir.path()), 0);

    // Requested again under the validation retries: the one reply that now fails, only.
    let outcome = atk_cli::run(Poems { strict: true }, flags(&config, &["write"], false)).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(requests(dir.path()), 1);
    let status = atk_cli::status::read_status(&dir.path().join("out")).unwrap();
    assert_eq!(status.steps[0].failed, 1, "the mock's reply fails again");
    assert_eq!(status.fingerprints["write"].current, 3);
}

#[tokio::test]
async fn reprocess_on_results_without_raw_replies_exits_2_naming_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    atk_cli::run(Poems { strict: false }, flags(&config, &[], false))
        .await
        .unwrap();
    {
        // As an older atk left it: no raw reply kept.
        let store =
            atk_state::SledStore::open(&atk_cli::store_dir(&dir.path().join("out"))).unwrap();
        use atk_state::Store;
        let all: Vec<_> = store.results("write").map(Result::unwrap).collect();
        for (id, mut r) in all {
            r.raw = None;
            store.put_result("write", &id, r).await.unwrap();
        }
    }
    let err = atk_cli::run(Poems { strict: true }, flags(&config, &["write"], false))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("3 of its 3 stored results have no raw reply") && msg.contains("--redo write"),
        "{msg}"
    );
    let err = atk_cli::run(Poems { strict: true }, flags(&config, &["wrote"], false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the steps are `write`"), "{err}");
    assert_eq!(err.exit_code(), 2);
}
