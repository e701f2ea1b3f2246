//! The config and the chain, in that order: the chain is built from the config, and the
//! engines its steps call decide which engine settings the config must give.

use atk_step::Chain;

use super::Pipeline;
use crate::config::{self, EnginesUsed, Loaded, Overrides};
use crate::error::RunError;
use crate::flags::CommonFlags;

/// Loads the config, builds and checks the pipeline's chain, and loads the config again
/// requiring the settings of exactly the engines the chain calls (a config file is small: two
/// reads cost nothing next to a run).
pub(super) fn config_and_chain<P: Pipeline>(
    pipeline: &P,
    flags: &CommonFlags,
) -> Result<(Loaded<P::Config>, Chain), RunError> {
    let overrides = Overrides {
        set: flags.set.clone(),
        json: flags.override_json.clone(),
    };
    let load = |used: EnginesUsed| {
        if flags.dry_run {
            config::load_for_dry_run::<P::Config>(&flags.config, &overrides, used)
        } else {
            config::load_for::<P::Config>(&flags.config, &overrides, used)
        }
        .map_err(|e| RunError::Config(e.to_string()))
    };
    let none = EnginesUsed {
        small: false,
        large: false,
    };
    let first = load(none)?;
    let chain = pipeline.chain(&first.custom);
    chain.check()?;
    let (small, large) = chain.engines_used();
    let used = EnginesUsed { small, large };
    let loaded = if used == none { first } else { load(used)? };
    Ok((loaded, chain))
}
