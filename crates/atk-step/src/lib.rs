#![doc = include_str!("../README.md")]

mod barrier;
mod chain;
mod check;
mod dedup;
mod drive;
mod error;
mod executor;
mod extract;
mod fan_in;
mod fan_out;
mod filter;
mod final_items;
mod fingerprint;
mod item;
mod json;
mod map_step;
mod passages;
mod progress;
mod prompt;
mod prompt_step;
mod replies;
mod report;
mod rework;
mod step;
mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod vote;
mod wrap;

pub use barrier::{Barrier, BarrierPass, BarrierStep, Survivor, Verdict};
pub use chain::Chain;
pub use check::{PromptWarning, check_prompt_names};
pub use dedup::{DedupState, dedup_verdicts};
pub use error::{ItemFailure, StepError};
pub use executor::{Executor, ExecutorConfig};
pub use extract::{
    labelled_line, line_children, list_children, qa_children, qa_pairs, tag_text, tagged_turns,
    verdict,
};
pub use fan_in::{FanInStep, NO_KEPT_CHILDREN};
pub use fan_out::{FanOutStep, child_id, make_children};
pub use filter::{FilterStep, default_judge};
pub use final_items::{FinalItems, collect_final, reached_end};
pub use fingerprint::{
    Fingerprint, FingerprintCounts, Part, changed_parts, count_fingerprints, with_version_of,
};
pub use item::Item;
pub use json::{read_json, schema_of};
pub use map_step::MapStep;
pub use passages::{cited_passage, passages};
pub use progress::{NullSink, ProgressEvent, ProgressSink};
pub use prompt::{PromptLibrary, PromptSource, PromptTemplate};
pub use prompt_step::{LENGTH_CUT_REASON, MOCK_RETRY_CALL, OVER_CONTEXT, PromptStep};
pub use replies::{Judgement, Questions, Suitability, Vote, YesNo};
pub use report::{FailureGroup, RunReport, StepReport};
pub use rework::{Rework, ReworkCounts, ReworkMode};
pub use step::{EngineChoice, Engines, Shape, Step, StepContext, StepOutput};
pub use template::{render_template, template_names};
pub use vote::VoteStep;
