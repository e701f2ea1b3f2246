//! Config loading, the runner every pipeline binary calls, progress display and the `atk` tool.
#![doc = include_str!("../README.md")]

pub mod config;
pub mod progress;
pub mod status;
