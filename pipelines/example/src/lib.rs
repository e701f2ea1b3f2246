//! The example pipeline: one poem inspired by each chunk of the input documents, written as a
//! ShareGPT dataset. The seed's poem pipeline as a thin composition over atk's crates; copy
//! this crate (or run `cargo xtask new-pipeline NAME`) to start your own.

use std::collections::BTreeMap;
use std::process::ExitCode;

use atk_cli::atk_state::ItemRecord;
use atk_cli::dataset::sharegpt_pair;
use atk_cli::{Pipeline, RunContext, RunError, async_trait};
use atk_step::{Chain, PromptStep};
use serde_json::Value;

/// The pipeline's own config keys (the common ones come from `atk_cli`).
#[derive(Debug, Clone, serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
pub struct ExampleConfig {
    /// A `no_flatten` section kept as a map: each entry is passed to the prompt as `{key}`.
    #[serde(default)]
    pub example_heading: BTreeMap<String, Value>,
    /// Flattened from `example_heading_2`: the request put before each passage in the dataset.
    pub key3: String,
}

/// Prompts compiled into the binary; a config's `prompts` folder overrides them file by file.
pub const PROMPTS: &[(&str, &str)] = &[
    (
        "write_poem.yaml",
        include_str!("../prompts/write_poem.yaml"),
    ),
    ("write_poem.txt", include_str!("../prompts/write_poem.txt")),
];

/// Keeps the text of the last `<poem>…</poem>` in a reply (models sometimes draft first). In
/// completion mode the prompt ends with `<poem>`, so a reply may start inside the poem.
pub fn extract_poem(reply: &str) -> Result<Value, String> {
    atk_step::tag_text(reply, "poem").map(Value::String)
}

/// A poem is accepted when it has at least three non-empty lines.
pub fn validate_poem(poem: &Value, _item: &ItemRecord) -> Result<(), String> {
    let lines = poem
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if lines < 3 {
        Err(format!(
            "a poem needs at least 3 lines, this one has {lines}"
        ))
    } else {
        Ok(())
    }
}

/// The one step: write a poem inspired by the item's `text`.
pub fn write_poem_step(config: &ExampleConfig) -> PromptStep {
    let mut step = PromptStep::new("write_poem", "write_poem")
        .param("temperature", 0.8)
        .param("max_tokens", 800)
        .output_processor(extract_poem)
        .validator(validate_poem)
        .result_key("poetry")
        .details_key("poetry_details")
        .max_retries(3)
        .mock_reply("Here is my poem.\n<poem>\n{lines}\n</poem>");
    for (key, value) in &config.example_heading {
        step = step.arg(key, value.clone());
    }
    step
}

/// The example pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExamplePipeline;

#[async_trait]
impl Pipeline for ExamplePipeline {
    type Config = ExampleConfig;

    fn name(&self) -> &'static str {
        "example-pipeline"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    fn engines_used(&self) -> atk_cli::config::EnginesUsed {
        // The one step calls the small engine: the large one's model and endpoint are not required.
        atk_cli::config::EnginesUsed::SMALL
    }

    async fn run(&self, ctx: &mut RunContext<ExampleConfig>) -> Result<(), RunError> {
        ctx.set_progress(0.1, "writing a poem for each chunk");
        let chain = Chain::new().then(write_poem_step(&ctx.config));
        ctx.run_chain(&chain).await?;

        ctx.set_progress(0.9, "writing the dataset");
        let request = ctx.config.key3.trim_end();
        let conversations = ctx.final_items(&chain).map(|item| {
            let item = item?;
            Ok::<_, RunError>(sharegpt_pair(
                format!("{request}\n\n{}", item.text("text")?),
                item.text("poetry")?,
            ))
        });
        ctx.write_sharegpt("sharegpt_format.jsonl", conversations)?;
        ctx.write_meta_datasets(&chain)?;
        ctx.set_progress(1.0, "pipeline complete");
        Ok(())
    }
}

/// The binary's entry point (also called by end-to-end tests from their own binaries).
pub fn main() -> ExitCode {
    atk_cli::main(ExamplePipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_poem_and_rejects_short_ones() {
        let reply = "Draft:\n<poem>\nno\n</poem>\nFinal:\n<poem>\n  salt on the sill\ntide in the hall\nmoon on the wall\n</poem>";
        let poem = extract_poem(reply).unwrap();
        assert_eq!(poem, "salt on the sill\ntide in the hall\nmoon on the wall");
        let item = ItemRecord {
            v: 1,
            id: "x".into(),
            parent: None,
            order: vec![0],
            fields: Default::default(),
        };
        assert!(validate_poem(&poem, &item).is_ok());
        assert!(validate_poem(&Value::String("one line".into()), &item).is_err());
        assert!(extract_poem("<poem>never closed").is_err());
        assert!(extract_poem("plain prose").is_err());
        assert_eq!(
            extract_poem("a\nb\nc\n</poem>").unwrap(),
            "a\nb\nc",
            "completion mode starts inside the poem"
        );
    }
}
