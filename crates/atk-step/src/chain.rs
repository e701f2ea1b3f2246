//! `Chain`: the steps of a pipeline, built once, checked once, passed to the executor and to
//! the dataset readers alike.

use std::sync::Arc;

use crate::error::StepError;
use crate::step::{EngineChoice, Shape, Step};

/// An ordered list of steps whose structure is checked: unique non-empty names, and every
/// fan-in closing an open fan-out. A fan-out left open runs its children to the end of the chain.
#[derive(Clone, Default)]
pub struct Chain {
    steps: Vec<Arc<dyn Step>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.name()))
            .finish()
    }
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step.
    #[allow(clippy::should_implement_trait)]
    pub fn then(mut self, step: impl Step + 'static) -> Self {
        self.steps.push(Arc::new(step));
        self
    }

    /// Appends a shared step.
    pub fn then_arc(mut self, step: Arc<dyn Step>) -> Self {
        self.steps.push(step);
        self
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Arc<dyn Step>] {
        &self.steps
    }

    /// The chain up to and including step `name`, e.g. to read the children that passed a vote
    /// before a later fan-in gathered them. `None` when no step has that name.
    pub fn up_to(&self, name: &str) -> Option<Chain> {
        let end = self.steps.iter().position(|s| s.name() == name)?;
        Some(Self {
            steps: self.steps[..=end].to_vec(),
        })
    }

    /// Checks the chain's structure (unique non-empty names, every fan-in closing a fan-out);
    /// the runner calls it as soon as the pipeline built the chain, before anything is read.
    pub fn check(&self) -> Result<(), StepError> {
        layout(&self.steps).map(|_| ())
    }

    /// Which engines the chain's steps call: (small, large).
    pub fn engines_used(&self) -> (bool, bool) {
        let used: Vec<EngineChoice> = self.steps.iter().flat_map(|s| s.engines()).collect();
        (
            used.contains(&EngineChoice::Small),
            used.contains(&EngineChoice::Large),
        )
    }

    /// Step names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name()).collect()
    }
}

impl std::ops::Deref for Chain {
    type Target = [Arc<dyn Step>];
    fn deref(&self) -> &Self::Target {
        &self.steps
    }
}

impl From<Vec<Arc<dyn Step>>> for Chain {
    fn from(steps: Vec<Arc<dyn Step>>) -> Self {
        Self { steps }
    }
}

/// The checked structure of a chain: where each item level starts and stops.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// For each step: true when it runs on children of a fan-out (not on root items).
    pub(crate) child_level: Vec<bool>,
    /// For a fan-out step: its closing fan-in, if any.
    pub(crate) closes: Vec<Option<usize>>,
    /// True when some step is a fan-in.
    pub(crate) has_fan_in: bool,
}

/// Checks a chain and lays out its levels.
pub(crate) fn layout(chain: &[Arc<dyn Step>]) -> Result<Layout, StepError> {
    if chain.is_empty() {
        return Err(StepError::Config("the chain has no steps".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for step in chain {
        if step.name().is_empty() {
            return Err(StepError::Config("a step has an empty name".into()));
        }
        if !seen.insert(step.name()) {
            return Err(StepError::Config(format!(
                "two steps are named `{}`; step names key stored results and must be unique",
                step.name()
            )));
        }
    }
    let n = chain.len();
    let mut closes = vec![None; n];
    let mut open: Vec<usize> = Vec::new();
    let mut level = vec![0usize; n];
    for (i, step) in chain.iter().enumerate() {
        level[i] = open.len();
        match step.shape() {
            Shape::FanOut => open.push(i),
            Shape::FanIn => {
                let Some(k) = open.pop() else {
                    return Err(StepError::Config(format!(
                        "fan-in step `{}` has no fan-out before it to gather; put a FanOutStep earlier in the chain",
                        step.name()
                    )));
                };
                closes[k] = Some(i);
                level[i] = open.len();
            }
            Shape::Barrier if open.len() > 1 => {
                return Err(StepError::Config(format!(
                    "barrier step `{}` sits inside fan-out `{}` nested in fan-out `{}`; put it where at most one fan-out is open",
                    step.name(),
                    chain[open[1]].name(),
                    chain[open[0]].name()
                )));
            }
            _ => {}
        }
    }
    if let Some(&inner) = open.get(1) {
        return Err(StepError::Config(format!(
            "fan-out step `{}` is nested in fan-out `{}` and needs its own fan-in before the end of the chain",
            chain[inner].name(),
            chain[open[0]].name()
        )));
    }
    Ok(Layout {
        child_level: level.iter().map(|&l| l > 0).collect(),
        closes,
        has_fan_in: chain.iter().any(|s| s.shape() == Shape::FanIn),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FanInStep, FanOutStep, PromptStep};

    fn split() -> FanOutStep {
        FanOutStep::from_fn("split", |_| Ok(vec![]))
    }

    fn join(name: &str) -> FanInStep {
        FanInStep::from_fn(name, |_, _| Ok(serde_json::Value::Null))
    }

    #[test]
    fn fan_ins_close_fan_outs_and_mark_child_levels() {
        let chain = Chain::new()
            .then(PromptStep::new("a"))
            .then(split())
            .then(PromptStep::new("b"))
            .then(join("j"))
            .then(PromptStep::new("c"));
        let l = layout(&chain).unwrap();
        assert_eq!(l.closes, [None, Some(3), None, None, None]);
        assert_eq!(l.child_level, [false, false, true, false, false]);
        assert!(l.has_fan_in);
        assert_eq!(chain.up_to("b").unwrap().names(), ["a", "split", "b"]);
        assert!(chain.up_to("nope").is_none());
    }

    #[test]
    fn malformed_chains_are_refused_with_the_step_named() {
        let err = layout(&Chain::new().then(join("gather"))).unwrap_err();
        assert!(err.to_string().contains("`gather` has no fan-out"), "{err}");
        let nested = Chain::new()
            .then(split())
            .then(FanOutStep::from_fn("inner", |_| Ok(vec![])));
        let err = layout(&nested).unwrap_err();
        assert!(
            err.to_string()
                .contains("`inner` is nested in fan-out `split`"),
            "{err}"
        );
        let open = Chain::new().then(split()).then(PromptStep::new("b"));
        assert_eq!(layout(&open).unwrap().child_level, [false, true]);
        let err = layout(
            &Chain::new()
                .then(PromptStep::new("a").prompt("x"))
                .then(PromptStep::new("a").prompt("y")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("two steps are named `a`"), "{err}");
        let nested_barrier = Chain::new()
            .then(split())
            .then(FanOutStep::from_fn("inner", |_| Ok(vec![])))
            .then(crate::BarrierStep::keep_all("all"))
            .then(join("j1"))
            .then(join("j2"));
        let err = layout(&nested_barrier).unwrap_err();
        assert!(
            err.to_string()
                .contains("barrier step `all` sits inside fan-out `inner`"),
            "{err}"
        );
        let barrier_on_children = Chain::new()
            .then(split())
            .then(crate::BarrierStep::keep_all("all"))
            .then(join("j"));
        assert_eq!(
            layout(&barrier_on_children).unwrap().child_level,
            [false, true, false]
        );
    }
}
