//! `FanOutStep`: one item yields several child items (e.g. one question per item), each
//! going on through the rest of the chain on its own.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{Fields, ItemRecord, RECORD_VERSION, ResultRecord};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::StepError;
use crate::item::Item;
use crate::prompt_step::PromptStep;
use crate::step::{Shape, Step, StepContext, StepOutput};

type Split = Arc<dyn Fn(&Value, &Item) -> Result<Vec<Fields>, String> + Send + Sync>;
type ItemSplit = Arc<dyn Fn(&Item) -> Result<Vec<Fields>, String> + Send + Sync>;

type Source = crate::wrap::Source<Split, ItemSplit>;

/// A one-to-many step. Children carry the parent's fields plus their own, ids from [`child_id`],
/// and `order` = the parent's order plus the child index.
pub struct FanOutStep {
    name: String,
    source: Source,
    version: Option<String>,
}

impl std::fmt::Debug for FanOutStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutStep")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A child's id: the first 32 hex digits of SHA-256(parent id, NUL, decimal index). Stable across runs.
pub fn child_id(parent_id: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(index.to_string().as_bytes());
    let mut id = hex::encode(hasher.finalize());
    id.truncate(32);
    id
}

/// Builds the child items of `parent` from each child's own fields.
pub fn make_children(parent: &ItemRecord, children: Vec<Fields>) -> Vec<ItemRecord> {
    children
        .into_iter()
        .enumerate()
        .map(|(index, own)| {
            let mut fields = parent.fields.clone();
            fields.extend(own);
            let mut order = parent.order.clone();
            order.push(index as u64);
            ItemRecord {
                v: RECORD_VERSION,
                id: child_id(&parent.id, index),
                parent: Some(parent.id.clone()),
                order,
                fields,
            }
        })
        .collect()
}

impl FanOutStep {
    /// An LLM fan-out: `inner` makes a reply (processed and validated as usual), then `split`
    /// turns the processed output into the children's fields; a split `Err(reason)` is retried
    /// like a validation failure. The step takes `inner`'s name.
    pub fn new(
        inner: PromptStep,
        split: impl Fn(&Value, &Item) -> Result<Vec<Fields>, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: inner.name().to_string(),
            source: Source::Prompt(Box::new(inner), Arc::new(split)),
            version: None,
        }
    }

    /// A fan-out without a model call (e.g. one child per element of a list field).
    pub fn from_fn(
        name: impl Into<String>,
        split: impl Fn(&Item) -> Result<Vec<Fields>, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            source: Source::Function(Arc::new(split)),
            version: None,
        }
    }

    /// The step's version, part of its fingerprint (see [`PromptStep::version`]); for a
    /// `from_fn` fan-out, the whole fingerprint: bump it when the function changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.source.set_version(version.into(), &mut self.version);
        self
    }
}

#[async_trait]
impl Step for FanOutStep {
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

    fn shape(&self) -> Shape {
        Shape::FanOut
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
        let Source::Prompt(inner, split) = &self.source else {
            return None;
        };
        let checked = inner.recheck(item, stored, &|out, it| split(out, Item::of(it)))?;
        Some(
            checked
                .map(|(fields, record)| StepOutput::Children(make_children(item, fields), record)),
        )
    }

    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let (fields, record) = match &self.source {
            Source::Prompt(inner, split) => {
                inner
                    .attempt(item, ctx, &|out, it| split(out, Item::of(it)))
                    .await?
            }
            Source::Function(split) => {
                let fields =
                    split(Item::of(item)).map_err(|reason| StepError::failed("fan_out", reason))?;
                (fields, ResultRecord::new(Value::Null))
            }
        };
        Ok(StepOutput::Children(make_children(item, fields), record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_stable_and_distinct() {
        // Pinned: stored children must keep their ids across atk versions.
        assert_eq!(child_id("parent", 0), child_id("parent", 0));
        assert_eq!(child_id("parent", 0).len(), 32);
        assert_ne!(child_id("parent", 0), child_id("parent", 1));
        assert_ne!(child_id("parent1", 0), child_id("parent", 10));
        insta::assert_snapshot!(child_id("abc", 0), @"e16f2935cab918f9b90988378ba435fe");
    }

    #[test]
    fn children_inherit_fields_and_extend_order() {
        let mut fields = Fields::new();
        fields.insert("text".into(), "parent text".into());
        let parent = ItemRecord {
            v: RECORD_VERSION,
            id: "p".into(),
            parent: None,
            order: vec![3],
            fields,
        };
        let mut own = Fields::new();
        own.insert("question".into(), "why?".into());
        let children = make_children(&parent, vec![own.clone(), own]);
        assert_eq!(children.len(), 2);
        assert_eq!(children[1].order, vec![3, 1]);
        assert_eq!(children[1].parent.as_deref(), Some("p"));
        assert_eq!(children[1].id, child_id("p", 1));
        assert_eq!(children[0].fields["text"], "parent text");
        assert_eq!(children[0].fields["question"], "why?");
    }
}
