//! The runner every pipeline binary calls, its progress display and the output dir's layout.
#![doc = include_str!("../README.md")]
// What is public is re-exported here or sits in a `pub mod`; everything else says pub(crate).
#![warn(unreachable_pub)]

/// The allocator of every binary that links atk-cli (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod card;
pub use atk_config as config;
mod damage;
pub mod dataset;
mod dry_run;
mod ending;
mod error;
mod flags;
pub mod layout;
mod logging;
mod out;
mod overlay;
mod preflight;
mod preview;
mod progress;
mod redo;
pub mod rows;

/// Terminal output shared with the `atk` tool: the log subscriber and stderr lines that survive
/// a closed pipe.
pub mod term {
    pub use crate::logging::init as init_logging;
    pub use crate::out::always;
}
mod runner;
mod settings;
pub mod status;
mod store_advice;
mod summary;
mod unused;

pub use dataset::DatasetWriter;
pub use error::RunError;
pub use flags::{CommonFlags, Shard};
pub use layout::store_dir;
pub use progress::ProgressMode;
pub use runner::{Dataset, Pipeline, RunContext, RunOutcome, main, main_with_args, run};

/// Everything a pipeline crate uses, in one import: `use atk_cli::prelude::*;`.
pub mod prelude {
    pub use crate::dataset::{Conversation, sharegpt_pair};
    pub use crate::{Dataset, Pipeline, RunContext, RunError, async_trait};
    pub use atk_state::{Corpus, CorpusChunk, Fields, ItemRng};
    pub use atk_step::{
        BarrierStep, Chain, EngineChoice, FanInStep, FanOutStep, FilterStep, Item, Judgement,
        MapStep, PromptStep, Questions, StepContext, Suitability, Survivor, Verdict, Vote,
        VoteStep, YesNo, cited_passage, default_judge, labelled_line, line_children, list_children,
        passages, prompts, qa_children, qa_pairs, tag_text, tagged_turns, verdict,
    };
    pub use serde_json::{Value, json};
}

/// Re-exports pipelines need without naming the crates themselves.
pub use {async_trait::async_trait, atk_state, atk_step};
