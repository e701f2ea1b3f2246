//! `FanInStep`: many to one. Runs once per parent, after every child of the last open fan-out
//! is through the steps in between, over the children that were kept, in order.
//!
//! The executor stores its result with a hash of the kept children (ids and results): when a
//! later run keeps another set (a failed child now passes, a vote comes out otherwise), the
//! fan-in is redone; with the same set it is skipped.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{Fields, ItemRecord, Outcome, ResultRecord};
use serde_json::Value;

use crate::error::StepError;
use crate::item::Item;
use crate::prompt_step::PromptStep;
use crate::step::{Shape, Step, StepContext, StepOutput};

type Gather = Arc<dyn Fn(&Item, &[Item]) -> Result<Fields, String> + Send + Sync>;
type Combine = Arc<dyn Fn(&Item, &[Item]) -> Result<Value, String> + Send + Sync>;

type Source = crate::wrap::Source<Gather, Combine>;

/// The reason a parent is dropped when none of its children was kept.
pub const NO_KEPT_CHILDREN: &str = "no child item was kept";

/// A many-to-one step: its output is merged into the parent, which then goes on through the
/// rest of the chain. A parent none of whose children was kept is dropped ([`NO_KEPT_CHILDREN`]).
pub struct FanInStep {
    name: String,
    source: Source,
    version: Option<String>,
}

impl std::fmt::Debug for FanInStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanInStep")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FanInStep {
    /// A prompted fan-in: `gather(parent, kept_children)` returns extra fields for the parent
    /// (e.g. the children's pairs as one `{qa_pairs}` text), then `inner` runs on the parent
    /// with those fields, processed and validated as usual. Takes `inner`'s name. A `gather`
    /// error fails the parent (kind `fan_in`).
    pub fn new(
        inner: PromptStep,
        gather: impl Fn(&Item, &[Item]) -> Result<Fields, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: inner.name().to_string(),
            source: Source::Prompt(Box::new(inner), Arc::new(gather)),
            version: None,
        }
    }

    /// A fan-in without a model call: `combine(parent, kept_children)` is the output.
    pub fn from_fn(
        name: impl Into<String>,
        combine: impl Fn(&Item, &[Item]) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            source: Source::Function(Arc::new(combine)),
            version: None,
        }
    }

    /// The step's version, part of its fingerprint (see [`PromptStep::version`]); for a
    /// `from_fn` fan-in, the whole fingerprint: bump it when the function changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.source.set_version(version.into(), &mut self.version);
        self
    }
}

#[async_trait]
impl Step for FanInStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_names(&self) -> Vec<String> {
        self.source.prompt_names()
    }

    fn engines(&self) -> Vec<crate::EngineChoice> {
        self.source.engines()
    }

    fn result_key(&self) -> &str {
        self.source.result_key(&self.name)
    }

    fn details_key(&self) -> Option<&str> {
        self.source.details_key()
    }

    fn shape(&self) -> Shape {
        Shape::FanIn
    }

    fn fingerprint_parts(&self, ctx: &StepContext) -> Option<crate::Fingerprint> {
        self.source.fingerprint(ctx, self.version.as_deref())
    }

    async fn run(&self, _item: &ItemRecord, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        Err(StepError::Config(format!(
            "fan-in step `{}` runs over a parent's children; put it after a fan-out in a Chain",
            self.name
        )))
    }

    async fn gather(
        &self,
        parent: &ItemRecord,
        children: &[ItemRecord],
        ctx: &StepContext,
    ) -> Result<StepOutput, StepError> {
        if children.is_empty() {
            let mut record = ResultRecord::new(Value::Null);
            record.outcome = Outcome::Dropped {
                reason: NO_KEPT_CHILDREN.to_string(),
            };
            return Ok(StepOutput::Drop(record));
        }
        // Views of the kept children (a fan-in runs once per parent: the copy is small).
        let children: Vec<Item> = children.iter().cloned().map(Item::from_record).collect();
        match &self.source {
            Source::Prompt(inner, gather) => {
                let fields = gather(Item::of(parent), &children)
                    .map_err(|reason| StepError::failed("fan_in", reason))?;
                let mut view = parent.clone();
                view.fields.extend(fields);
                let ((), record) = inner.attempt(&view, ctx, &|_, _| Ok(())).await?;
                Ok(StepOutput::Result(record))
            }
            Source::Function(combine) => {
                let value = combine(Item::of(parent), &children)
                    .map_err(|reason| StepError::failed("fan_in", reason))?;
                Ok(StepOutput::Result(ResultRecord::new(value)))
            }
        }
    }
}
