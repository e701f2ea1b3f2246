//! The example pipeline: one poem inspired by each chunk of the input documents, written as a
//! ShareGPT dataset. The seed's poem pipeline as a thin composition over atk's crates; copy
//! this crate (or run `cargo xtask new-pipeline NAME`) to start your own.

use std::collections::BTreeMap;
use std::process::ExitCode;

use atk_cli::prelude::*;

mod demo;

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
pub const PROMPTS: &[(&str, &str)] = prompts!("write_poem");

/// Keeps the text of the last `<poem>…</poem>` in a reply (models sometimes draft first). In
/// completion mode the prompt ends with `<poem>`, so a reply may start inside the poem.
pub fn extract_poem(reply: &str) -> Result<Value, String> {
    tag_text(reply, "poem").map(Value::String)
}

/// A poem is accepted when it has at least three non-empty lines.
pub fn validate_poem(poem: &Value, _item: &Item) -> Result<(), String> {
    let text = poem.as_str().unwrap_or_default();
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    if lines < 3 {
        return Err(format!(
            "a poem needs at least 3 lines, this one has {lines}"
        ));
    }
    Ok(())
}

/// The one step: write a poem inspired by the item's `text`.
pub fn write_poem_step(config: &ExampleConfig) -> PromptStep {
    let mut step = PromptStep::new("write_poem")
        .param("temperature", 0.8)
        .param("max_tokens", 800)
        .output_processor(extract_poem)
        .validator(validate_poem)
        .result_key("poetry")
        .details_key("poetry_details")
        .max_retries(3)
        .mock_reply(demo::POEM);
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

    // Poems come from each chunk alone: no step looks across the corpus, so no index of it is built.
    fn reads_corpus(&self) -> bool {
        false
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    fn chain(&self, config: &ExampleConfig) -> Chain {
        Chain::new().then(write_poem_step(config))
    }

    fn write_datasets(
        &self,
        ctx: &RunContext<ExampleConfig>,
        chain: &Chain,
    ) -> Result<(), RunError> {
        let request = ctx.config.key3.trim_end();
        let out = ctx.dataset("sharegpt_format.jsonl")?;
        for item in ctx.final_items(chain) {
            let item = item?;
            let passage = format!("{request}\n\n{}", item.text("text")?);
            out.write_sharegpt(&sharegpt_pair(passage, item.text("poetry")?))?;
        }
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
        let item = Item::new("x");
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
