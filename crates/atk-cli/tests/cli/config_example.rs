//! The example pipeline's shipped configs load the way its README says: the real-API template
//! refuses to start until both keys are given, the demo loads offline with no warnings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atk_cli::config::{ConfigError, Overrides, load_with_env};

/// The example pipeline's own keys (kept in step with `pipelines/example/src/lib.rs`).
#[derive(Debug, serde::Deserialize)]
struct Example {
    example_heading: BTreeMap<String, serde_yaml::Value>,
    key3: String,
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/example")
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_real_api_template_lists_both_unfilled_keys() {
    let err = load_with_env::<Example>(
        &example_dir().join("config.yaml"),
        &Overrides::default(),
        no_env,
    )
    .unwrap_err();
    let ConfigError::Placeholders { keys, .. } = &err else {
        panic!("expected placeholders, got {err}")
    };
    let named: Vec<String> = keys.iter().map(|k| k.dotted()).collect();
    assert_eq!(named, ["api.small_api_key", "api.large_api_key"], "{err}");
}

#[test]
fn the_template_loads_once_the_keys_are_given() {
    let overrides = Overrides {
        set: vec![
            "small_api_key=sk-test-small-1111".into(),
            "large_api_key=sk-test-large-2222".into(),
        ],
        json: None,
    };
    let loaded =
        load_with_env::<Example>(&example_dir().join("config.yaml"), &overrides, no_env).unwrap();
    assert_eq!(loaded.common.small_api_key.expose(), "sk-test-small-1111");
    assert!(
        loaded.common.input_dir.is_absolute()
            && loaded
                .common
                .input_dir
                .ends_with("pipelines/example/inputs")
    );
    assert!(!loaded.custom.key3.is_empty());
    assert!(!loaded.custom.example_heading.is_empty());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let shown = loaded.redacted.to_string();
    assert!(!shown.contains("sk-test"), "{shown}");
}

#[test]
fn the_demo_loads_offline_without_warnings() {
    let loaded = load_with_env::<Example>(
        &example_dir().join("demo.yaml"),
        &Overrides::default(),
        no_env,
    )
    .unwrap();
    assert_eq!(loaded.common.small_mode, atk_engine::Mode::Mock);
    assert_eq!(loaded.common.large_mode, atk_engine::Mode::Mock);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}
