//! Config loading, the runner every pipeline binary calls, progress display and the `atk` tool.
#![doc = include_str!("../README.md")]

/// The allocator of every binary that links atk-cli (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod card;
pub mod config;
mod damage;
pub mod dataset;
pub mod dry_run;
mod error;
pub mod flags;
pub mod gc;
pub mod logging;
pub mod merge;
pub mod out;
mod overlay;
mod preflight;
pub mod progress;
pub mod redo;
pub mod rows;
mod runner;
mod settings;
pub mod status;
pub mod summary;
pub mod tool;
mod unused;

pub use error::{RunError, exit_code};
pub use overlay::OverlayStore;
pub use runner::{
    COST_META_KEY, CTRL_C_GRACE, INPUTS_META_KEY, InputsMeta, Pipeline, RUN_META_KEY, RunContext,
    chunk_item, main, main_with_args, run, store_dir,
};

/// Re-exports pipelines need without naming the crates themselves.
pub use dataset::DatasetWriter;
pub use {async_trait::async_trait, atk_state, atk_step};
