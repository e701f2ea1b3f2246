#![doc = include_str!("../README.md")]

mod check;
mod error;
mod executor;
mod fan_out;
mod filter;
mod progress;
mod prompt;
mod prompt_step;
mod step;
mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use check::{PromptWarning, check_prompt_names};
pub use error::{ItemFailure, StepError};
pub use executor::{Executor, ExecutorConfig, FailureGroup, RunReport, StepReport, collect_final};
pub use fan_out::{FanOutStep, child_id, make_children};
pub use filter::{FilterStep, default_judge};
pub use progress::{NullSink, ProgressEvent, ProgressSink};
pub use prompt::{PromptLibrary, PromptSource, PromptTemplate};
pub use prompt_step::{LENGTH_CUT_REASON, PromptStep};
pub use step::{EngineChoice, Engines, Step, StepContext, StepOutput};
pub use template::{render_template, template_names};
