//! Warnings shown before a chain sends anything (and under `--dry-run`): prompt `{name}`s
//! that nothing provides. Config and prompt-folder warnings are shown by the runner as it
//! loads them.

use std::sync::Arc;

use atk_state::Store;
use atk_step::{Step, StepContext};

/// The fields of a chunk item (see `runner::seed::chunk_item`), assumed when the store is empty.
const CHUNK_FIELDS: [&str; 3] = ["text", "metadata", "tokens"];

/// Warns (once per process each) about `{name}`s in the chain's prompts that no item field,
/// step argument or run argument provides. Item fields are those of the first item in the
/// store (the chain's input), or a chunk's when there is none yet.
pub(crate) fn warn_prompt_names(store: &dyn Store, chain: &[Arc<dyn Step>], ctx: &StepContext) {
    let fields: Vec<String> = match store.items().next() {
        Some(Ok(item)) => item.fields.keys().cloned().collect(),
        _ => CHUNK_FIELDS.iter().map(|f| (*f).to_string()).collect(),
    };
    for w in atk_step::check_prompt_names(chain, ctx, &fields) {
        tracing::debug!(prompt = %w.prompt, name = %w.name, "unknown template name");
        crate::out::warn(&w.to_string());
    }
    for w in unused_args(chain, ctx) {
        crate::out::warn(&w);
    }
}

/// Step arguments (from the config, e.g. a `no_flatten` section's entries) that no prompt of
/// their step uses: setting them changes nothing, which is worth saying.
fn unused_args(chain: &[Arc<dyn Step>], ctx: &StepContext) -> Vec<String> {
    let mut warnings = Vec::new();
    for step in chain {
        let Some(args) = step.template_args() else {
            continue;
        };
        let mut used = std::collections::BTreeSet::new();
        let mut prompts = Vec::new();
        for prompt in step.prompt_names() {
            let Ok(template) = ctx.prompts.load(&prompt, ctx.completion_mode) else {
                // A prompt that does not load: the executor reports it; guess nothing.
                return warnings;
            };
            for (name, _) in template.names() {
                used.insert(name.split('.').next().unwrap_or_default().to_string());
            }
            prompts.push(prompt);
        }
        for arg in args.iter().filter(|a| !used.contains(a.as_str())) {
            warnings.push(format!(
                "`{arg}` (from the config) is used by no prompt of step `{}` ({}), so it changes nothing",
                step.name(),
                prompts.join(", ")
            ));
        }
    }
    warnings
}
