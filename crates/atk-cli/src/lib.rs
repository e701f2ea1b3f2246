//! Config loading, the runner every pipeline binary calls, progress display and the `atk` tool.
#![doc = include_str!("../README.md")]

pub mod config;
mod error;
pub mod flags;
pub mod logging;
pub mod progress;
pub mod status;

pub use error::{RunError, exit_code};
