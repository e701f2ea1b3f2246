//! Config loading, the runner every pipeline binary calls, progress display and the `atk` tool.
#![doc = include_str!("../README.md")]
// What is public is re-exported here or sits in a `pub mod`; everything else says pub(crate).
#![warn(unreachable_pub)]

/// The allocator of every binary that links atk-cli (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod card;
pub mod config;
mod damage;
pub mod dataset;
mod dry_run;
mod error;
mod flags;
mod gc;
mod logging;
mod merge;
mod out;
mod overlay;
mod preflight;
mod progress;
mod redo;
pub mod rows;
mod runner;
mod settings;
pub mod status;
mod summary;
pub mod tool;
mod unused;

pub use dataset::DatasetWriter;
pub use error::RunError;
pub use flags::{CommonFlags, Shard};
pub use progress::ProgressMode;
pub use runner::{Pipeline, RunContext, main, main_with_args, run, store_dir};

/// Re-exports pipelines need without naming the crates themselves.
pub use {async_trait::async_trait, atk_state, atk_step};
