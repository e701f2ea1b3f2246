#![doc = include_str!("../README.md")]

mod progress;

pub use progress::{NullSink, ProgressEvent, ProgressSink};
