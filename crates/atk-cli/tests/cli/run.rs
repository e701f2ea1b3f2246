//! The runner, driven the way a pipeline binary drives it.

use std::path::{Path, PathBuf};

use atk_cli::CommonFlags;
use atk_cli::config::NoExtra;
use atk_cli::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A one-step pipeline over the fixture inputs.
struct PoemTest;

static PROMPTS: &[(&str, &str)] = &[("write.yaml", include_str!("../fixtures/prompts_write.yaml"))];

#[async_trait]
impl Pipeline for PoemTest {
    type Config = NoExtra;
    fn name(&self) -> &'static str {
        "poem-test"
    }
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }
    fn chain(&self, _: &NoExtra) -> Chain {
        Chain::new().then(PromptStep::new("write").param("max_tokens", 300))
    }
    fn write_datasets(&self, _: &RunContext<NoExtra>, _: &Chain) -> Result<(), RunError> {
        unreachable!("a dry run writes no dataset");
    }
}

#[tokio::test]
async fn dry_run_estimates_the_whole_chain_and_writes_nothing() {
    let flags = CommonFlags {
        config: fixtures().join("dry_run.yaml"),
        dry_run: true,
        verbose: 1,
        ..CommonFlags::default()
    };
    let outcome = atk_cli::run(PoemTest, flags).await;
    let Ok(atk_cli::RunOutcome::DryRun(estimate)) = outcome else {
        panic!("expected a dry-run estimate, got {outcome:?}")
    };
    insta::assert_snapshot!("dry_run_estimate", estimate);
    assert!(
        !fixtures().join("never_written").exists(),
        "a dry run writes nothing to output_dir"
    );
}

/// A pipeline whose every reply fails validation.
struct AlwaysRejected;

#[async_trait]
impl Pipeline for AlwaysRejected {
    type Config = NoExtra;
    fn name(&self) -> &'static str {
        "always-rejected"
    }
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }
    fn chain(&self, _: &NoExtra) -> Chain {
        Chain::new().then(
            PromptStep::new("write")
                .max_retries(1)
                .mock_reply("not a poem {hash}")
                .validator(|_, _| Err("no <poem> tag".to_string())),
        )
    }
    fn write_datasets(&self, ctx: &RunContext<NoExtra>, chain: &Chain) -> Result<(), RunError> {
        let lines = ctx
            .final_items(chain)
            .map(|item| item.map(|_| sharegpt_pair("", "")));
        ctx.write_sharegpt("sharegpt_format.jsonl", lines)?;
        Ok(())
    }
}

#[tokio::test]
async fn a_run_where_every_item_fails_exits_1_with_the_reasons_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let inputs = fixtures().join("inputs");
    std::fs::write(
        &config,
        format!("api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: {}\n  output_dir: ./out\n", inputs.display()),
    )
    .unwrap();
    let flags = CommonFlags {
        config,
        quiet: true,
        ..CommonFlags::default()
    };
    let outcome = atk_cli::run(AlwaysRejected, flags).await;
    assert!(matches!(outcome, Err(RunError::AllFailed)), "{outcome:?}");
    assert_eq!(outcome.unwrap_err().exit_code(), 1);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/run_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["all_failed"], true);
    let step = &summary["steps"][0];
    assert_eq!(step["failed"], 3);
    assert_eq!(step["failures"][0]["reason"], "no <poem> tag");
    assert!(
        step["failures"][0]["sample_output"]
            .as_str()
            .unwrap()
            .starts_with("not a poem")
    );
    // Two attempts per item (max_retries 1), all on the small engine.
    assert_eq!(summary["engines"][0]["requests"], 6);
    let status = atk_cli::status::read_status(&dir.path().join("out")).unwrap();
    assert_eq!((status.steps[0].failed, status.steps[0].pending), (3, 0));
    // status.json counts this run's failures by reason (what `atk serve` shows live).
    let written = atk_cli::status::StatusSnapshot::read(&dir.path().join("out")).unwrap();
    assert_eq!(
        written.steps[0]
            .reasons
            .get("failed: validation: no <poem> tag"),
        Some(&3),
        "{:?}",
        written.steps[0].reasons
    );
}

#[tokio::test]
async fn an_output_dir_in_use_by_another_run_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let inputs = fixtures().join("inputs");
    std::fs::write(
        &config,
        format!("api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: {}\n  output_dir: ./out\n", inputs.display()),
    )
    .unwrap();
    let _held = atk_state::SledStore::open(&atk_cli::store_dir(&dir.path().join("out"))).unwrap();
    let flags = CommonFlags {
        config,
        quiet: true,
        ..CommonFlags::default()
    };
    let outcome = atk_cli::run(AlwaysRejected, flags).await;
    let Err(e) = outcome else {
        panic!("a held store must stop the run")
    };
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
}

#[tokio::test]
async fn check_config_refuses_a_bad_config_as_a_run_would_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let inputs = fixtures().join("inputs");
    let good = format!(
        "api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: {}\n  output_dir: ./out\n",
        inputs.display()
    );
    std::fs::write(&config, &good).unwrap();
    let check = |set: Vec<String>| CommonFlags {
        config: config.clone(),
        check_config: true,
        quiet: true,
        set,
        ..CommonFlags::default()
    };
    atk_cli::run(PoemTest, check(vec![]))
        .await
        .expect("a good config passes --check-config");
    // A bad value: exit 2, the message names the file, the key and where it came from.
    let err = atk_cli::run(PoemTest, check(vec!["chunk_size=0".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let message = err.to_string();
    assert!(
        message.contains("config.yaml") && message.contains("chunk_size"),
        "{message}"
    );
    // A placeholder: named with its line, as a run names it.
    std::fs::write(
        &config,
        good.replace(
            "  large_mode: mock\n",
            "  large_mode: mock\n  small_model: !!PLACEHOLDER!!\n",
        ),
    )
    .unwrap();
    let err = atk_cli::run(PoemTest, check(vec![])).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("small_model (line 4)"), "{err}");
    // A missing input folder is an input error, as in a run.
    std::fs::write(
        &config,
        good.replace(&inputs.display().to_string(), "./nowhere"),
    )
    .unwrap();
    let err = atk_cli::run(PoemTest, check(vec![])).await.unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "--check-config creates no output dir"
    );
}

#[test]
fn describe_config_is_json_with_every_key_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "api:\n  small_api_key: sk-very-secret-value\n  large_api_key: !!PLACEHOLDER!!\n  small_model: !!PLACEHOLDER!!\n",
    )
    .unwrap();
    let keys = atk_cli::config::describe_file::<NoExtra>(
        &config,
        &atk_cli::config::Overrides::default(),
        |_| None,
    )
    .unwrap();
    let json = serde_json::to_string(&keys).unwrap();
    assert!(
        !json.contains("sk-very-secret"),
        "a key's value leaked: {json}"
    );
    let key = |name: &str| keys.iter().find(|k| k.key == name).unwrap();
    assert_eq!(key("small_api_key").value, Some("set".into()));
    assert_eq!(key("large_api_key").value, Some("placeholder".into()));
    assert!(key("small_model").placeholder && key("small_model").line == Some(4));
    assert_eq!(key("concurrency_limit").default, 50);
    assert_eq!(key("request_timeout").default, 1800.0);
    assert_eq!(key("small_mode").ty, "api | batch | mock");
    assert!(key("input_dir").required);
    for name in atk_cli::config::CommonConfig::keys() {
        assert!(!key(name).doc.is_empty(), "{name} has no doc line");
    }
}
