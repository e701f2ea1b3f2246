#![doc = include_str!("../README.md")]

mod config;
mod logs;
pub mod release;
mod reply;
mod server;
mod stats;

pub use config::{
    BatchBehaviour, Fault, Faults, RateLimit, ReplyFn, ReplyMode, SchemaSupport, ServerConfig,
    StatedLimit,
};
pub use logs::CapturedLogs;
pub use reply::{DEFAULT_TEMPLATE, prompt_hash, prompt_text, render_template};
pub use server::TestServer;
pub use stats::Stats;
