//! A function step (`MapStep`) through the runner: it sends nothing, its value reaches the
//! next prompt as `{key.field}`, an item it refuses is dropped with its reason and never
//! asked about, and a rerun sends nothing.

use std::path::Path;

use atk_cli::CommonFlags;
use atk_cli::config::NoExtra;
use atk_cli::prelude::*;

const PROMPTS: &[(&str, &str)] = &[(
    "describe.yaml",
    "- role: user\n  content: \"In {shape.words} words: {text}\"\n",
)];

/// `shape` (a function) counts the words and refuses the river passage; `describe` asks.
struct Shaped;

#[async_trait]
impl Pipeline for Shaped {
    type Config = NoExtra;
    fn name(&self) -> &'static str {
        "shaped"
    }
    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }
    fn chain(&self, _: &NoExtra) -> Chain {
        let shape = MapStep::from_fn("shape", |item| {
            let text = item.text("text").map_err(|e| e.to_string())?;
            if text.contains("river") {
                return Err("a river passage".into());
            }
            Ok(json!({"words": text.split_whitespace().count()}))
        });
        Chain::new()
            .then(shape)
            .then(PromptStep::new("describe").max_retries(0))
    }
    fn write_datasets(&self, ctx: &RunContext<NoExtra>, chain: &Chain) -> Result<(), RunError> {
        let out = ctx.dataset("rows.jsonl")?;
        for item in ctx.final_items(chain) {
            let item = item?;
            out.write(&json!({"words": item.path("shape.words"), "id": item.id()}))?;
        }
        Ok(())
    }
}

fn run_in(dir: &Path) -> serde_json::Value {
    let config = dir.join("config.yaml");
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inputs");
    std::fs::write(
        &config,
        format!(
            "api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: {}\n  output_dir: ./out\n\
             system:\n  debug_outputs: true\n",
            inputs.display()
        ),
    )
    .unwrap();
    let flags = CommonFlags {
        config,
        quiet: true,
        ..CommonFlags::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(atk_cli::run(Shaped, flags)).unwrap();
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/run_summary.json")).unwrap())
        .unwrap()
}

#[test]
fn a_function_step_sends_nothing_fills_a_dotted_name_and_drops_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_in(dir.path());
    let shape = &summary["steps"][0];
    assert_eq!(
        (shape["step"].as_str(), shape["dropped"].as_u64()),
        (Some("shape"), Some(1))
    );
    assert!(summary.to_string().contains("a river passage"), "{summary}");
    // Only the two items the function kept were asked about, each once.
    assert_eq!(summary["engines"][0]["requests"], 2);
    let rows = std::fs::read_to_string(dir.path().join("out/rows.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 2, "{rows}");
    // The prompt read inside the function's result: `{shape.words}` became a number.
    let sent: String = std::fs::read_dir(dir.path().join("out/debug_outputs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        sent.contains(" words: ") && !sent.contains("{shape.words}"),
        "{sent}"
    );

    let again = run_in(dir.path());
    assert_eq!(again["engines"][0]["requests"], 0, "a rerun sends nothing");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/rows.jsonl")).unwrap(),
        rows
    );
}
