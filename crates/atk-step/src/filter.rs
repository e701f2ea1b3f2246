//! `FilterStep`: a judge keeps or drops an item, recording why.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{ItemRecord, Outcome, ResultRecord};
use serde_json::{Value, json};

use crate::error::StepError;
use crate::item::Item;
use crate::prompt_step::PromptStep;
use crate::step::{Step, StepContext, StepOutput};

type Judge = Arc<dyn Fn(&Value) -> Result<(bool, String), String> + Send + Sync>;
type ItemJudge = Arc<dyn Fn(&Item) -> (bool, String) + Send + Sync>;

type Source = crate::wrap::Source<Judge, ItemJudge>;

/// A keep/drop step. A dropped item stops here; the drop and its reason are stored, so a
/// resumed run does not ask again.
pub struct FilterStep {
    name: String,
    source: Source,
    version: Option<String>,
}

impl std::fmt::Debug for FilterStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterStep")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The default verdict reader: the last non-empty line of the reply decides — `keep`, `yes`,
/// `pass` or `suitable` keep; `drop`, `no`, `reject` or `unsuitable` drop; anything else is
/// rejected (and retried). The reason is the whole reply, trimmed. A schema step's output with
/// a string `verdict` field is read by that field alone (one of the same words, any case), its
/// reason being its `reason` field when it has one.
pub fn default_judge(output: &Value) -> Result<(bool, String), String> {
    let keep = &["keep", "yes", "pass", "suitable"];
    let drop = &["drop", "no", "reject", "unsuitable"];
    if let Some(verdict) = output.get("verdict").and_then(Value::as_str) {
        let word = verdict.trim().to_ascii_lowercase();
        let reason = match output.get("reason").and_then(Value::as_str) {
            Some(reason) => reason.trim().to_string(),
            None => output.to_string(),
        };
        return if keep.contains(&word.as_str()) {
            Ok((true, reason))
        } else if drop.contains(&word.as_str()) {
            Ok((false, reason))
        } else {
            Err(format!("the verdict {verdict:?} is neither keep nor drop"))
        };
    }
    let text = match output {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match crate::extract::last_line_verdict(&text, keep, drop) {
        Some(keep) => Ok((keep, text.trim().to_string())),
        None => Err("no clear keep/drop verdict on the last line".to_string()),
    }
}

impl FilterStep {
    /// A judge prompt; the processed reply goes through [`default_judge`] unless [`judge`](Self::judge) is set.
    /// The step takes `inner`'s name.
    pub fn new(inner: PromptStep) -> Self {
        Self {
            name: inner.name().to_string(),
            source: Source::Prompt(Box::new(inner), Arc::new(default_judge)),
            version: None,
        }
    }

    /// Reads the verdict from the processed reply: `Ok((keep, reason))`, or `Err` to retry.
    pub fn judge(
        mut self,
        f: impl Fn(&Value) -> Result<(bool, String), String> + Send + Sync + 'static,
    ) -> Self {
        if let Source::Prompt(_, judge) = &mut self.source {
            *judge = Arc::new(f);
        }
        self
    }

    /// A filter without a model call: `f` returns `(keep, reason)`.
    pub fn from_fn(
        name: impl Into<String>,
        f: impl Fn(&Item) -> (bool, String) + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            source: Source::Function(Arc::new(f)),
            version: None,
        }
    }

    /// The step's version, part of its fingerprint (see [`PromptStep::version`]); for a
    /// `from_fn` filter, the whole fingerprint: bump it when the function changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.source.set_version(version.into(), &mut self.version);
        self
    }
}

#[async_trait]
impl Step for FilterStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_names(&self) -> Vec<String> {
        self.source.prompt_names()
    }

    fn engines(&self) -> Vec<crate::EngineChoice> {
        self.source.engines()
    }

    fn template_args(&self) -> Option<Vec<String>> {
        self.source.template_args()
    }

    fn result_key(&self) -> &str {
        self.source.result_key(&self.name)
    }

    fn details_key(&self) -> Option<&str> {
        self.source.details_key()
    }

    fn fingerprint_parts(&self, ctx: &StepContext) -> Option<crate::Fingerprint> {
        self.source.fingerprint(ctx, self.version.as_deref())
    }

    fn can_reprocess(&self) -> bool {
        self.source.inner().is_some()
    }

    fn reprocess(
        &self,
        item: &ItemRecord,
        stored: &ResultRecord,
        _ctx: &StepContext,
    ) -> Option<Result<StepOutput, String>> {
        let Source::Prompt(inner, judge) = &self.source else {
            return None;
        };
        let checked = inner.recheck(item, stored, &|out, _| judge(out))?;
        Some(checked.map(|((keep, reason), record)| verdict(keep, reason, record)))
    }

    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let ((keep, reason), record) = match &self.source {
            Source::Prompt(inner, judge) => inner.attempt(item, ctx, &|out, _| judge(out)).await?,
            Source::Function(f) => (f(Item::of(item)), ResultRecord::new(Value::Null)),
        };
        Ok(verdict(keep, reason, record))
    }
}

/// A filter's result from its verdict.
fn verdict(keep: bool, reason: String, mut record: ResultRecord) -> StepOutput {
    record.output = json!({"keep": keep, "reason": reason});
    if keep {
        record.outcome = Outcome::Kept;
        StepOutput::Keep(record)
    } else {
        record.outcome = Outcome::Dropped { reason };
        StepOutput::Drop(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_judge_reads_the_last_line() {
        let verdict = |s: &str| default_judge(&Value::String(s.into()));
        assert!(verdict("Reasoning...\nVerdict: KEEP").unwrap().0);
        assert!(!verdict("It is off-topic.\nDrop.\n\n").unwrap().0);
        assert_eq!(
            verdict("Looks fine.\nno").unwrap(),
            (false, "Looks fine.\nno".to_string())
        );
        assert!(verdict("I cannot decide").is_err());
        assert!(verdict("keep or drop?").is_err());
    }

    #[test]
    fn default_judge_reads_a_schema_step_s_verdict_field() {
        let judged = default_judge(&json!({"verdict": "Unsuitable", "reason": "an index"}));
        assert_eq!(judged.unwrap(), (false, "an index".to_string()));
        assert!(default_judge(&json!({"verdict": "yes"})).unwrap().0);
        assert!(default_judge(&json!({"verdict": "maybe", "reason": "?"})).is_err());
    }
}
