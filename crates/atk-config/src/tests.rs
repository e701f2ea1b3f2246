//! Tests of config loading: each writes a config into a temp dir and loads it with a fake
//! environment. Error and warning texts are snapshots with the temp dir shown as `[DIR]`.
//!
//! One file for one job (about 700 lines): every test goes through the same `Case` harness
//! and `BASE` config, and their insta snapshots are named after this module; splitting it
//! would scatter the harness and rename every snapshot for no gain in reading.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::*;

/// The example pipeline's own keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Example {
    example_heading: BTreeMap<String, serde_yaml::Value>,
    key3: String,
}

/// A complete config in the seed's shape; tests edit it with `replace`.
const BASE: &str = "\
api:
  small_model: small-model
  small_api_key: sk-from-config-1234
  small_base_url: http://127.0.0.1:9/v1
  small_mode: api
  large_model: large-model
  large_api_key:
  large_base_url: http://127.0.0.1:9/v1
  large_mode: api
path:
  input_dir: ./inputs
  output_dir: ./output
  prompts: ./prompts
  default_prompts: ./prompts
system:
  completion_mode: false
  use_stop: true
  concurrency_limit: 50
  chunk_size: 2000
  use_subset: false
  subset_size: 10
cost:
  cost_per_million_small_input: 0.15
  cost_per_million_small_output: 0.6
meta_datagen:
  do_meta_datagen: false
  meta_datagen_keys: [poem_details]
  meta_datagen_extras: [./extras/one.txt]
no_flatten:
  - example_heading
example_heading:
  key1: value1
  count: 3
example_heading_2:
  key3: value3
";

struct Case {
    dir: tempfile::TempDir,
    env: BTreeMap<&'static str, &'static str>,
    overrides: Overrides,
}

impl Case {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), text).unwrap();
        Self {
            dir,
            env: BTreeMap::new(),
            overrides: Overrides::default(),
        }
    }
    fn env(mut self, name: &'static str, value: &'static str) -> Self {
        self.env.insert(name, value);
        self
    }
    fn set(mut self, kv: &str) -> Self {
        self.overrides.set.push(kv.to_string());
        self
    }
    fn json(mut self, json: &str) -> Self {
        self.overrides.json = Some(json.to_string());
        self
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }
    fn load<T: DeserializeOwned>(&self) -> Result<Loaded<T>, ConfigError> {
        load_with_env(&self.path(), &self.overrides, |name| {
            self.env.get(name).map(|v| (*v).to_string())
        })
    }
    fn ok(&self) -> Loaded<Example> {
        match self.load() {
            Ok(loaded) => loaded,
            Err(e) => panic!("expected the config to load, got: {e}"),
        }
    }
    /// The error message, with the temp dir shown as `[DIR]`.
    fn err(&self) -> String {
        match self.load::<Example>() {
            Ok(_) => panic!("expected an error"),
            Err(e) => self.shown(&e.to_string()),
        }
    }
    fn shown(&self, text: &str) -> String {
        text.replace(self.dir.path().to_str().unwrap(), "[DIR]")
    }
    fn warnings(&self, loaded: &Loaded<Example>) -> String {
        loaded
            .warnings
            .iter()
            .map(|w| self.shown(w))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn base_config_loads_with_sections_flattened() {
    let case = Case::new(BASE);
    let loaded = case.ok();
    let c = &loaded.common;
    assert_eq!(c.small_model, "small-model");
    assert_eq!(c.small_api_key.expose(), "sk-from-config-1234");
    assert_eq!(c.chunk_size, 2000);
    assert_eq!(c.subset_size, 10);
    assert_eq!(c.cost_per_million_small_output, 0.6);
    assert_eq!(c.seed, 11037, "default seed");
    assert_eq!(c.tokenizer, atk_tokens::Tokenizer::Cl100k);
    assert!(c.stream && !c.debug_outputs && c.read_files_manually);
    assert_eq!(c.meta_datagen_keys, vec!["poem_details".to_string()]);
    assert_eq!(
        loaded.custom.key3, "value3",
        "key3 flattened from example_heading_2"
    );
    assert!(
        loaded.warnings.iter().all(|w| !w.contains("unknown key")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn placeholders_in_both_forms_are_all_listed_with_sections() {
    let text = BASE
        .replace(
            "small_api_key: sk-from-config-1234",
            "small_api_key: !!PLACEHOLDER!!",
        )
        .replace("large_api_key:", "large_api_key: !!PLACEHOLDER!!")
        .replace("input_dir: ./inputs", "input_dir: ./inputs/!!PLACEHOLDER!!")
        .replace("[./extras/one.txt]", "[./extras/one.txt, !!PLACEHOLDER!!]")
        .replace("key1: value1", "key1: !!PLACEHOLDER!!");
    let case = Case::new(&text);
    insta::assert_snapshot!("placeholders_listed", case.err());
}

#[test]
fn placeholders_are_checked_after_overrides() {
    let text = BASE
        .replace(
            "small_api_key: sk-from-config-1234",
            "small_api_key: !!PLACEHOLDER!!",
        )
        .replace("input_dir: ./inputs", "input_dir: ./inputs/!!PLACEHOLDER!!")
        .replace("key1: value1", "key1: !!PLACEHOLDER!!");
    let case = Case::new(&text)
        .set("small_api_key=sk-given-on-cli")
        .set("example_heading.key1=filled");
    insta::assert_snapshot!("placeholder_left_after_set", case.err());
    let case = case.set("input_dir=/data/in");
    let loaded = case.ok();
    assert_eq!(loaded.common.small_api_key.expose(), "sk-given-on-cli");
    assert_eq!(loaded.common.input_dir, Path::new("/data/in"));
}

#[test]
fn a_top_level_placeholder_has_no_section() {
    let case = Case::new(&format!("{BASE}extra_flag: !!PLACEHOLDER!!\n"));
    let err = case.err();
    assert!(err.contains("  - extra_flag (line 36)"), "{err}");
}

#[test]
fn a_key_in_two_flattened_sections_is_a_conflict_naming_both() {
    let case = Case::new(&BASE.replace(
        "example_heading_2:\n  key3: value3\n",
        "example_heading_2:\n  key3: value3\n  chunk_size: 10\n",
    ));
    insta::assert_snapshot!("conflict_two_sections", case.err());
    let case = Case::new(
        &format!("seed: 5\n{BASE}").replace("subset_size: 10", "subset_size: 10\n  seed: 6"),
    );
    insta::assert_snapshot!("conflict_top_level_and_section", case.err());
}

#[test]
fn a_wrong_type_names_file_line_and_nested_key() {
    let case = Case::new(&BASE.replace("concurrency_limit: 50", "concurrency_limit: many"));
    insta::assert_snapshot!("type_error_common_key", case.err());
    let case = Case::new(&BASE.replace("count: 3", "count: [1, 2]"));
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Heading {
        key1: String,
        count: u32,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        example_heading: Heading,
    }
    let err = case.load::<Typed>().unwrap_err();
    insta::assert_snapshot!(
        "type_error_inside_no_flatten_map",
        case.shown(&err.to_string())
    );
    assert!(
        matches!(&err, ConfigError::Type { at, .. } if at.line() == Some(33) && at.key == "count")
    );
}

#[test]
fn a_wrong_type_from_set_says_so() {
    let case = Case::new(BASE).set("chunk_size=big");
    insta::assert_snapshot!("type_error_from_set", case.err());
}

#[test]
fn out_of_range_and_bad_enum_values_are_type_errors() {
    let case = Case::new(&BASE.replace("concurrency_limit: 50", "concurrency_limit: 0"));
    insta::assert_snapshot!("concurrency_zero", case.err());
    // One rule, one message: -5, 0 and 2.5 are told the same thing (not "0 or more" first).
    for bad in ["-5", "2.5", "0"] {
        let err = Case::new(&BASE.replace(
            "concurrency_limit: 50",
            &format!("concurrency_limit: {bad}"),
        ))
        .err();
        assert!(
            err.contains("expected a whole number of at least 1"),
            "{bad}: {err}"
        );
        assert!(!err.contains("0 or more"), "{bad}: {err}");
    }
    let case = Case::new(&BASE.replace("small_mode: api", "small_mode: offline"));
    insta::assert_snapshot!("bad_mode", case.err());
}

#[test]
fn unknown_keys_warn_with_a_suggestion() {
    let case = Case::new(&BASE.replace(
        "chunk_size: 2000",
        "chunk_size: 2000\n  concurency_limit: 9\n  banana: 1",
    ))
    .set("chunk_sise=5")
    .json(r#"{"small_modle": "x"}"#)
    .env("OPENAI_API_KEY", "sk-env-0000");
    let loaded = case.ok();
    insta::assert_snapshot!("unknown_keys", case.warnings(&loaded));
    assert_eq!(
        loaded.common.concurrency_limit, 50,
        "the misspelt key changed nothing"
    );
}

#[test]
fn unknown_keys_inside_a_typed_no_flatten_map_are_reported() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Heading {
        key1: String,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        example_heading: Heading,
        key3: String,
    }
    let case = Case::new(BASE).env("OPENAI_API_KEY", "sk-env");
    let loaded = case.load::<Typed>().unwrap();
    let warnings = loaded
        .warnings
        .iter()
        .map(|w| case.shown(w))
        .collect::<Vec<_>>();
    assert_eq!(
        warnings,
        vec!["[DIR]/config.yaml:33: unknown key `count` in `example_heading` is ignored"]
    );
}

#[test]
fn api_keys_fall_back_to_the_environment_in_order() {
    // (small_api_key in the file, ATK_SMALL_API_KEY, OPENAI_API_KEY) -> key used
    let cases = [
        ("sk-file", Some("sk-atk"), Some("sk-openai"), "sk-file"),
        ("", Some("sk-atk"), Some("sk-openai"), "sk-atk"),
        ("", None, Some("sk-openai"), "sk-openai"),
        ("\"\"", Some(""), Some("sk-openai"), "sk-openai"),
        ("${MY_KEY}", None, Some("sk-openai"), "sk-mine"),
        ("", None, None, ""),
    ];
    for (in_file, atk, openai, expected) in cases {
        let mut case = Case::new(&BASE.replace(
            "small_api_key: sk-from-config-1234",
            &format!("small_api_key: {in_file}"),
        ))
        .env("MY_KEY", "sk-mine");
        if let Some(v) = atk {
            case = case.env("ATK_SMALL_API_KEY", v);
        }
        if let Some(v) = openai {
            case = case.env("OPENAI_API_KEY", v);
        }
        let loaded = case.ok();
        assert_eq!(
            loaded.common.small_api_key.expose(),
            expected,
            "file {in_file:?}, ATK {atk:?}, OPENAI {openai:?}"
        );
        let warned = loaded
            .warnings
            .iter()
            .any(|w| w.contains("no API key for the small engine"));
        assert_eq!(warned, expected.is_empty(), "{:?}", loaded.warnings);
    }
    // The large key has its own variable first.
    let case = Case::new(BASE)
        .env("ATK_LARGE_API_KEY", "sk-large")
        .env("OPENAI_API_KEY", "sk-openai");
    assert_eq!(case.ok().common.large_api_key.expose(), "sk-large");
}

#[test]
fn mock_mode_needs_no_key_model_or_url() {
    let text = "small_mode: mock\nlarge_mode: mock\ninput_dir: in\noutput_dir: out\n";
    let case = Case::new(text);
    let loaded = case.load::<NoExtra>().unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(loaded.common.small_api_key.is_empty());
    assert_eq!(loaded.common.small_mode, atk_engine::Mode::Mock);
    assert_eq!(loaded.common.large_model, "mock");
}

#[test]
fn api_mode_requires_model_and_url() {
    let case = Case::new(&BASE.replace("  large_model: large-model\n", ""));
    insta::assert_snapshot!("missing_model", case.err());
    let case = Case::new(&BASE.replace("  key3: value3\n", "  other: 1\n"));
    insta::assert_snapshot!("missing_custom_key", case.err());
}

#[test]
fn env_vars_expand_and_a_missing_one_is_named() {
    let case = Case::new(
        &BASE
            .replace("small-model", "${MODEL_NAME}")
            .replace("./output", "${OUT_ROOT}/run1"),
    )
    .env("MODEL_NAME", "gpt-x")
    .env("OUT_ROOT", "/srv");
    let loaded = case.ok();
    assert_eq!(loaded.common.small_model, "gpt-x");
    assert_eq!(loaded.common.output_dir, Path::new("/srv/run1"));
    let case = Case::new(&BASE.replace("value1", "${NOT_SET_ANYWHERE}"));
    insta::assert_snapshot!("missing_env_var", case.err());
}

#[test]
fn paths_resolve_against_the_config_dir_and_overrides_against_the_cwd() {
    let case = Case::new(&BASE.replace("./inputs", "2024")).set("output_dir=rel/out");
    let loaded = case.ok();
    let dir = case.dir.path();
    let c = &loaded.common;
    assert_eq!(
        c.input_dir,
        dir.join("2024"),
        "a numeric folder name is a path too"
    );
    assert_eq!(c.prompts.as_deref(), Some(dir.join("prompts").as_path()));
    assert_eq!(c.meta_datagen_extras, vec![dir.join("extras/one.txt")]);
    assert_eq!(
        c.output_dir,
        std::env::current_dir().unwrap().join("rel/out")
    );
    assert_eq!(
        loaded.redacted["input_dir"],
        serde_json::json!(dir.join("2024").to_str().unwrap())
    );
}

#[test]
fn set_values_are_typed() {
    let case = Case::new(BASE)
        .set("concurrency_limit=200")
        .set("use_subset=true")
        .set("meta_datagen_keys=[a, b]")
        .set("key3=42");
    let loaded = case.ok();
    assert_eq!(loaded.common.concurrency_limit, 200);
    assert!(loaded.common.use_subset);
    assert_eq!(
        loaded.common.meta_datagen_keys,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(loaded.redacted["concurrency_limit"], serde_json::json!(200));
    assert_eq!(loaded.redacted["use_subset"], serde_json::json!(true));
    assert_eq!(
        loaded.custom.key3, "42",
        "a number given to a string key is the string typed"
    );
    let case = Case::new(BASE).set("api.small_model=via-section");
    let loaded = case.ok();
    assert_eq!(
        loaded.common.small_model, "via-section",
        "`section.key` works for flattened sections too"
    );
}

#[test]
fn override_json_applies_before_set() {
    let case = Case::new(BASE)
        .json(r#"{"chunk_size": 100, "use_subset": true, "example_heading": {"key1": "json"}}"#)
        .set("chunk_size=300");
    let loaded = case.ok();
    assert_eq!(
        loaded.common.chunk_size, 300,
        "--set wins over --override-json"
    );
    assert!(loaded.common.use_subset);
    assert_eq!(
        loaded.custom.example_heading.get("key1"),
        Some(&serde_yaml::Value::from("json"))
    );
    assert_eq!(
        loaded.custom.example_heading.get("count"),
        None,
        "the JSON replaced the whole map"
    );
}

#[test]
fn bad_overrides_are_refused_without_echoing_values() {
    let case = Case::new(BASE).set("small_api_key sk-typed-without-equals");
    let err = case.err();
    insta::assert_snapshot!("set_without_equals", err);
    assert!(!err.contains("sk-typed"));
    let case = Case::new(BASE).json("{\"small_api_key\": sk-oops}");
    let err = case.err();
    insta::assert_snapshot!("json_invalid", err);
    assert!(!err.contains("sk-oops"));
    insta::assert_snapshot!("json_not_object", Case::new(BASE).json("[1]").err());
}

#[test]
fn no_flatten_sections_stay_maps_and_take_dotted_sets() {
    let case = Case::new(BASE)
        .set("example_heading.key1=changed")
        .set("example_heading.new_key=7");
    let loaded = case.ok();
    let heading = &loaded.custom.example_heading;
    assert_eq!(
        heading.get("key1"),
        Some(&serde_yaml::Value::from("changed"))
    );
    assert_eq!(heading.get("count"), Some(&serde_yaml::Value::from(3)));
    assert_eq!(heading.get("new_key"), Some(&serde_yaml::Value::from(7)));
    assert_eq!(
        loaded.redacted["example_heading"]["key1"],
        serde_json::json!("changed")
    );
    assert!(
        loaded.redacted.get("key1").is_none(),
        "inner keys are not flattened"
    );
}

#[test]
fn no_flatten_naming_a_missing_section_warns() {
    let case = Case::new(&BASE.replace(
        "  - example_heading\n",
        "  - example_heading\n  - exmaple_heading\n",
    ))
    .env("OPENAI_API_KEY", "sk-env-0000");
    let loaded = case.ok();
    insta::assert_snapshot!("no_flatten_missing_section", case.warnings(&loaded));

    // The usual slip: the one entry misspelt, so the section meant is flattened.
    let text = BASE.replace("  - example_heading\n", "  - exmaple_heading\n");
    let (_, warnings) =
        super::flat::Flat::parse(std::path::Path::new("config.yaml"), &text).unwrap();
    let warnings = warnings.join("\n");
    assert!(
        warnings.contains("lists `exmaple_heading`")
            && warnings.contains("did you mean `example_heading`?"),
        "{warnings}"
    );
}

#[test]
fn invalid_yaml_names_line_and_column() {
    let case = Case::new(&BASE.replace("chunk_size: 2000", "chunk_size: [2000"));
    insta::assert_snapshot!("invalid_yaml", case.err());
    let case = Case::new(&BASE.replace("chunk_size: 2000", "chunk_size: 2000\n  chunk_size: 3"));
    insta::assert_snapshot!("duplicate_key", case.err());
}

#[test]
fn a_missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load::<NoExtra>(&dir.path().join("nope.yaml"), &Overrides::none()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("nope.yaml"));
}

#[test]
fn secrets_never_appear_in_warnings_errors_or_redacted() {
    let text = BASE.replace(
        "  key3: value3\n",
        "  key3: value3\n  hf_token: hf-secret-5678\n  unknown_thing: 1\n",
    );
    let case = Case::new(&text).env("ATK_LARGE_API_KEY", "sk-large-secret-9999");
    let loaded = case.ok();
    let shown = format!("{:?} {} {:?}", loaded.warnings, loaded.redacted, loaded);
    for secret in [
        "sk-from-config-1234",
        "sk-large-secret-9999",
        "hf-secret-5678",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert_eq!(
        loaded.redacted["small_api_key"],
        serde_json::json!("[redacted]")
    );
    assert_eq!(loaded.redacted["hf_token"], serde_json::json!("[redacted]"));
    // A secret given to a key of the wrong type is not echoed either.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        hf_token: u32,
    }
    let err = case.load::<Typed>().unwrap_err().to_string();
    assert!(!err.contains("hf-secret-5678"), "{err}");
    let err = Case::new(&BASE.replace(
        "small_api_key: sk-from-config-1234",
        "small_api_key: [sk-in-a-list-4321]",
    ))
    .err();
    assert!(!err.contains("sk-in-a-list"), "{err}");
}

#[test]
fn fingerprint_follows_settings_not_secrets() {
    let base = Case::new(BASE).ok().fingerprint;
    assert_eq!(base.len(), 64);
    let other_key = Case::new(&BASE.replace("sk-from-config-1234", "sk-another-key-0000")).ok();
    let other_setting = Case::new(BASE).set("chunk_size=10").ok();
    let same_dir = Case::new(BASE);
    let again = same_dir.ok().fingerprint;
    assert_eq!(again, same_dir.ok().fingerprint, "stable across loads");
    assert_ne!(base, other_setting.fingerprint);
    // Same dir (paths are part of the settings), different key: same fingerprint.
    let dir_case = Case::new(BASE);
    let first = dir_case.ok().fingerprint;
    std::fs::write(
        dir_case.path(),
        BASE.replace("sk-from-config-1234", "sk-another-key-0000"),
    )
    .unwrap();
    assert_eq!(first, dir_case.ok().fingerprint);
    assert_eq!(
        other_key.common.small_api_key.expose(),
        "sk-another-key-0000"
    );
}

#[test]
fn a_file_that_is_not_a_config_says_what_shape_is_expected() {
    insta::assert_snapshot!("shape_top_level_list", Case::new("- a\n- b\n").err());
    insta::assert_snapshot!(
        "shape_no_flatten_scalar",
        Case::new(&BASE.replace("no_flatten:\n  - example_heading", "no_flatten: 5")).err()
    );
    insta::assert_snapshot!(
        "shape_non_string_key",
        Case::new(&format!("{BASE}1: one\n")).err()
    );
}

#[test]
fn a_placeholder_given_on_the_command_line_is_still_unfilled() {
    let err = Case::new(BASE).set("small_model=!!PLACEHOLDER!!").err();
    assert!(err.contains("  - api.small_model (from --set)"), "{err}");
}

#[test]
fn an_empty_file_asks_for_the_required_keys() {
    insta::assert_snapshot!("empty_file", Case::new("").err());
}

#[test]
fn only_the_engines_a_pipeline_uses_are_required() {
    let text = "small_mode: api\nsmall_model: m\nsmall_base_url: http://127.0.0.1:1/v1\nlarge_mode: api\n\
                input_dir: in\noutput_dir: out\n";
    let case = Case::new(text);
    let loaded = super::load_with_env_for::<NoExtra>(
        &case.path(),
        &case.overrides,
        EnginesUsed::SMALL,
        |_| None,
    )
    .unwrap();
    assert_eq!(loaded.common.large_model, "");
    assert_eq!(
        loaded.warnings.len(),
        1,
        "only the small engine's missing key is worth a warning: {:?}",
        loaded.warnings
    );
    assert!(
        loaded.warnings[0].contains("small engine"),
        "{:?}",
        loaded.warnings
    );
    // A pipeline that uses both needs both, and hears of every missing key at once.
    let err = super::load_with_env::<NoExtra>(&case.path(), &case.overrides, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 required keys are missing")
            && err.contains("`large_model`")
            && err.contains("`large_base_url`"),
        "{err}"
    );
}

#[test]
fn a_base_url_may_be_a_list_of_endpoints() {
    let list = "small_base_url:\n    - http://10.0.0.1:8000/v1\n    - {url: http://10.0.0.2:8000/v1, api_key: sk-replica-two-5678, concurrency: 4}";
    let case = Case::new(&BASE.replace("small_base_url: http://127.0.0.1:9/v1", list));
    let loaded = case.ok();
    let c = &loaded.common;
    assert_eq!(c.small_base_url, "http://10.0.0.1:8000/v1");
    assert_eq!(c.small_endpoints.len(), 2);
    assert_eq!(c.small_endpoints[1].concurrency, Some(4));
    assert_eq!(
        c.small_endpoints[1]
            .api_key
            .as_ref()
            .map(|k| k.expose().to_string()),
        Some("sk-replica-two-5678".to_string())
    );
    assert!(c.small_endpoints[0].api_key.is_none() && c.large_endpoints.is_empty());
    // The entry's key is a secret like any other: never shown.
    assert!(!format!("{:?}", loaded.redacted).contains("sk-replica-two-5678"));
}

#[test]
fn a_malformed_endpoint_entry_names_the_entry_and_its_line() {
    for (entry, says) in [
        (
            "- {url: http://10.0.0.2:8000/v1, concurrency: 0}",
            "entry 2 of the list: `http://10.0.0.2:8000/v1`: concurrency must be at least 1",
        ),
        (
            "- not-a-url",
            "entry 2 of the list: `not-a-url` is not an http(s) URL",
        ),
    ] {
        let list = format!("small_base_url:\n    - http://10.0.0.1:8000/v1\n    {entry}");
        let case = Case::new(&BASE.replace("small_base_url: http://127.0.0.1:9/v1", &list));
        let err = case.err();
        assert!(
            err.contains(says) && err.contains("small_base_url"),
            "{err}"
        );
        assert!(err.contains(":4"), "the line of the key: {err}");
    }
}

#[test]
fn an_output_dir_inside_the_input_dir_is_refused() {
    let inside = BASE.replace("output_dir: ./output", "output_dir: ./inputs/out");
    let err = Case::new(&inside).err();
    assert!(err.contains("inside input_dir"), "{err}");
    let beside = BASE.replace("output_dir: ./output", "output_dir: ./input-out");
    Case::new(&beside).ok();
}

#[test]
fn a_common_key_written_empty_gets_its_default() {
    let text = BASE
        .replace("chunk_size: 2000", "chunk_size:")
        .replace("small_mode: api", "small_mode:")
        .replace("use_stop: true", "use_stop:");
    let loaded = Case::new(&text).ok();
    assert_eq!(loaded.common.chunk_size, 3000);
    assert_eq!(loaded.common.small_mode, atk_engine::Mode::Api);
    assert!(loaded.common.use_stop);
    assert!(loaded.warnings.iter().all(|w| !w.contains("unknown key")));
}

#[test]
fn dialects_caching_and_batch_keys_load_and_are_checked() {
    let case = Case::new(BASE)
        .set("large_api=anthropic")
        .set("large_prompt_cache=true")
        .set("large_mode=batch")
        .set("cost_per_million_large_cached_input=0.3")
        .set("batch_discount=0.5")
        .set("batch_size=200")
        .set("batch_max_wait=2")
        .env("ANTHROPIC_API_KEY", "sk-ant-env")
        .env("OPENAI_API_KEY", "sk-openai");
    let c = case.ok().common;
    assert_eq!(c.large_api, atk_engine::Dialect::Anthropic);
    assert_eq!(c.small_api, atk_engine::Dialect::OpenAi);
    assert!(c.large_prompt_cache && !c.small_prompt_cache);
    assert_eq!(c.large_mode, atk_engine::Mode::Batch);
    assert_eq!(c.cost_per_million_large_cached_input, Some(0.3));
    assert_eq!(c.cost_per_million_small_cached_input, None);
    assert_eq!((c.batch_size, c.batch_max_wait.as_secs()), (200, 2));
    // An anthropic engine falls back to ANTHROPIC_API_KEY, an openai one to OPENAI_API_KEY.
    let case = Case::new(&BASE.replace("small_api_key: sk-from-config-1234", "small_api_key:"))
        .set("small_api=anthropic")
        .env("ANTHROPIC_API_KEY", "sk-ant-env")
        .env("OPENAI_API_KEY", "sk-openai");
    assert_eq!(case.ok().common.small_api_key.expose(), "sk-ant-env");
    // Bad values name their key.
    for (set, words) in [
        ("small_api=claude", "expected `openai` or `anthropic`"),
        ("small_mode=later", "expected `api`, `batch` or `mock`"),
        ("batch_discount=0", "above 0 and at most 1"),
        ("batch_discount=1.5", "above 0 and at most 1"),
        (
            "cost_per_million_small_cached_input=-1",
            "price of 0 or more",
        ),
    ] {
        let err = Case::new(BASE).set(set).err();
        let key = set.split('=').next().unwrap();
        assert!(err.contains(key) && err.contains(words), "{set}: {err}");
    }
    // Completion mode has no anthropic or batch engine.
    let err = Case::new(BASE)
        .set("completion_mode=true")
        .set("small_api=anthropic")
        .err();
    assert!(
        err.contains("small_api") && err.contains("no completion mode"),
        "{err}"
    );
    let err = Case::new(BASE)
        .set("completion_mode=true")
        .set("large_mode=batch")
        .err();
    assert!(
        err.contains("large_mode") && err.contains("chat requests only"),
        "{err}"
    );
}
