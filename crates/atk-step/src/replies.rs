//! Reply types that schema steps of many pipelines share ([`PromptStep::json`]): a passage
//! judge's verdict, a yes/no vote, a list of questions. Each puts its `reason` before the
//! `verdict` it leads to, and each `verdict` is one of the words [`default_judge`] reads, so a
//! [`FilterStep`] or a [`VoteStep`] over such a step needs no reader of its own.
//!
//! [`PromptStep::json`]: crate::PromptStep::json
//! [`default_judge`]: crate::default_judge
//! [`FilterStep`]: crate::FilterStep
//! [`VoteStep`]: crate::VoteStep

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A passage judge's verdict word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Suitability {
    /// Facts in sentences a reader could be asked about.
    Suitable,
    /// Contents, index, licence, bare lists, near-empty or garbled text.
    Unsuitable,
}

/// A passage judge's reply: why, then the verdict (`FilterStep` keeps `suitable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Judgement {
    /// One short sentence of reasoning.
    pub reason: String,
    /// Whether the passage is worth asking questions about.
    pub verdict: Suitability,
}

/// A vote's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// The check passes.
    Yes,
    /// It does not.
    No,
}

/// A check's reply: why, then the vote (`VoteStep` counts `yes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Vote {
    /// One or two sentences of reasoning.
    pub reason: String,
    /// Yes when everything the prompt asks to check holds.
    pub verdict: YesNo,
}

/// A list of questions (split into one child item each with [`list_children`]).
///
/// [`list_children`]: crate::list_children
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Questions {
    /// The questions, as many as asked for.
    pub questions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{default_judge, read_json};

    #[test]
    fn verdicts_read_by_the_default_judge() {
        let judged = read_json::<Judgement>(r#"{"reason": "Facts.", "verdict": "suitable"}"#);
        assert_eq!(
            default_judge(&judged.unwrap()).unwrap(),
            (true, "Facts.".into())
        );
        let vote = json!(Vote {
            reason: "Unsupported.".into(),
            verdict: YesNo::No
        });
        assert_eq!(
            default_judge(&vote).unwrap(),
            (false, "Unsupported.".into())
        );
        assert!(read_json::<Vote>(r#"{"reason": "r", "verdict": "maybe"}"#).is_err());
    }
}
