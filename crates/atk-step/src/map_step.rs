//! `MapStep`: a one-to-one step without a model call — build a context, pick distractors,
//! reshape a result — stored and resumed like every step, and free to redo.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{ItemRecord, Outcome, ResultRecord};
use serde_json::Value;

use crate::error::StepError;
use crate::item::Item;
use crate::step::{Step, StepContext, StepOutput};

type MapFn = Arc<dyn Fn(&Item, &StepContext) -> Result<Value, String> + Send + Sync>;

/// A function step: its result (any JSON value) is stored under its key like a prompt step's,
/// so later prompts read it as `{key}` / `{key.field}` and a rerun does not call it again.
/// `Err(reason)` drops the item with that reason (stored: a function that refuses an item
/// refuses it the same way next time). Its fingerprint is its [`version`](Self::version):
/// bump it when the function changes, and `--redo STEP` remakes its results (no request is
/// sent for it; the steps after it are asked again only where its result changed them).
pub struct MapStep {
    name: String,
    f: MapFn,
    version: String,
    result_key: Option<String>,
}

impl std::fmt::Debug for MapStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStep")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl MapStep {
    /// A function step named `name` (keys its stored results) computing `f(item)`.
    pub fn from_fn(
        name: impl Into<String>,
        f: impl Fn(&Item) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_context(name, move |item, _| f(item))
    }

    /// [`from_fn`](Self::from_fn) for a function that also reads the step context (the
    /// corpus, the run's arguments).
    pub fn with_context(
        name: impl Into<String>,
        f: impl Fn(&Item, &StepContext) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            f: Arc::new(f),
            version: "1".to_string(),
            result_key: None,
        }
    }

    /// The function's version (default `"1"`), its whole fingerprint: bump it when the
    /// function changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Field the result is merged under (default: the step name).
    pub fn result_key(mut self, key: impl Into<String>) -> Self {
        self.result_key = Some(key.into());
        self
    }
}

#[async_trait]
impl Step for MapStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn result_key(&self) -> &str {
        self.result_key.as_deref().unwrap_or(&self.name)
    }

    fn fingerprint_parts(&self, _ctx: &StepContext) -> Option<crate::Fingerprint> {
        crate::fingerprint::of_function(Some(&self.version))
    }

    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError> {
        Ok(match (self.f)(Item::of(item), ctx) {
            Ok(value) => StepOutput::Result(ResultRecord::new(value)),
            Err(reason) => {
                let mut record = ResultRecord::new(Value::Null);
                record.outcome = Outcome::Dropped { reason };
                StepOutput::Drop(record)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedEngine;
    use crate::{Engines, PromptLibrary};

    fn ctx() -> StepContext {
        StepContext::new(
            Engines::single(Arc::new(ScriptedEngine::new("e"))),
            Arc::new(PromptLibrary::new(&[])),
        )
    }

    #[tokio::test]
    async fn a_function_step_stores_its_value_or_drops_with_its_reason() {
        let step = MapStep::from_fn("shout", |item| {
            let text = item.text("text").map_err(|e| e.to_string())?;
            if text.is_empty() {
                return Err("nothing to shout".into());
            }
            Ok(serde_json::json!({"loud": text.to_uppercase()}))
        });
        let item = Item::new("a").with("text", "hi");
        match step.run(item.record(), &ctx()).await.unwrap() {
            StepOutput::Result(r) => assert_eq!(r.output["loud"], "HI"),
            other => panic!("{other:?}"),
        }
        let empty = Item::new("b").with("text", "");
        match step.run(empty.record(), &ctx()).await.unwrap() {
            StepOutput::Drop(r) => assert_eq!(r.drop_reason(), Some("nothing to shout")),
            other => panic!("{other:?}"),
        }
        assert!(step.engines().is_empty(), "a function step calls no engine");
        assert_ne!(
            step.fingerprint(&ctx()),
            MapStep::from_fn("shout", |_| Ok(Value::Null))
                .version("2")
                .fingerprint(&ctx()),
            "a new version is a new fingerprint: --redo-changed remakes it"
        );
    }
}
