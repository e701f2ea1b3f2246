//! `mock_reply` precedence, as docs/config.md states it: a step's own mock reply wins; the
//! config's `mock_reply` answers for the steps that set none (and the built-in paragraph for
//! the rest).

use std::sync::{Arc, Mutex};

use atk_cli::CommonFlags;
use atk_cli::prelude::*;

const PROMPTS: &[(&str, &str)] = &[
    ("own.yaml", "- role: user\n  content: \"{text}\"\n"),
    ("none.yaml", "- role: user\n  content: \"{text}\"\n"),
];

#[derive(serde::Deserialize, atk_cli::config::JsonSchema)]
#[schemars(crate = "atk_cli::config::schemars")]
struct NoConfig {}

/// Two steps on the mock engine: `own` sets a mock reply, `none` does not.
struct TwoSteps(Arc<Mutex<Vec<(String, String)>>>);

#[async_trait]
impl Pipeline for TwoSteps {
    type Config = NoConfig;

    fn name(&self) -> &'static str {
        "mock-reply-test"
    }

    fn default_prompts(&self) -> &'static [(&'static str, &'static str)] {
        PROMPTS
    }

    fn chain(&self, _: &NoConfig) -> Chain {
        Chain::new()
            .then(PromptStep::new("own").mock_reply("from the step"))
            .then(PromptStep::new("none"))
    }

    fn write_datasets(&self, ctx: &RunContext<NoConfig>, chain: &Chain) -> Result<(), RunError> {
        for item in ctx.final_items(chain) {
            let item = item?;
            self.0
                .lock()
                .unwrap()
                .push((item.text("own")?, item.text("none")?));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_steps_own_mock_reply_wins_and_the_config_key_answers_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inputs")).unwrap();
    std::fs::write(
        dir.path().join("inputs/a.txt"),
        "a passage long enough to be kept as a chunk of its own. ".repeat(3),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "api:\n  small_mode: mock\n  large_mode: mock\npath:\n  input_dir: ./inputs\n  output_dir: ./output\n\
         system:\n  mock_reply: from the config\n",
    )
    .unwrap();
    let replies = Arc::new(Mutex::new(Vec::new()));
    let flags = CommonFlags {
        config,
        quiet: true,
        ..CommonFlags::default()
    };
    atk_cli::run(TwoSteps(replies.clone()), flags)
        .await
        .unwrap();
    let replies = replies.lock().unwrap();
    assert_eq!(
        replies.as_slice(),
        [("from the step".to_string(), "from the config".to_string())]
    );
}
