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
}
