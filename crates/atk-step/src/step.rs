//! The `Step` trait pipelines compose, and what a step sees while it runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use atk_engine::Engine;
use atk_state::{Corpus, CorpusError, ItemRecord, ItemRng, ResultRecord};
use tokio_util::sync::CancellationToken;

use crate::error::StepError;
use crate::fingerprint::Fingerprint;
use crate::prompt::PromptLibrary;

/// One stage of a pipeline, run by the [`Executor`](crate::Executor) for each item. Object safe.
#[async_trait]
pub trait Step: Send + Sync {
    /// Keys the step's stored results: explicit and stable across versions of a pipeline.
    fn name(&self) -> &str;
    /// Prompt names this step will load; the executor checks them all before the first request.
    fn prompt_names(&self) -> Vec<String> {
        vec![]
    }
    /// The engines this step calls (none for a function step); the runner requires the
    /// settings of exactly the engines a pipeline's chain calls.
    fn engines(&self) -> Vec<EngineChoice> {
        Vec::new()
    }
    /// Field under which this step's output is merged into the item for later steps and datasets.
    fn result_key(&self) -> &str {
        self.name()
    }
    /// Field under which the raw exchange ([`atk_state::Details`]) is merged, when details are kept.
    fn details_key(&self) -> Option<&str> {
        None
    }
    /// Template names the step supplies to its prompts beyond item fields (its arguments), for
    /// the pre-flight `{name}` check; `None` when it cannot say (an input processor may add any).
    fn template_args(&self) -> Option<Vec<String>> {
        Some(vec![])
    }
    /// Item fields the step adds for later steps (its result and details keys), for the
    /// pre-flight `{name}` check; `None` when it cannot say (a fan-out's children, a fan-in's
    /// merged item).
    fn adds_fields(&self) -> Option<Vec<String>> {
        if self.shape() != Shape::OneToOne {
            return None;
        }
        Some(
            std::iter::once(self.result_key())
                .chain(self.details_key())
                .map(str::to_string)
                .collect(),
        )
    }
    /// How the step maps items: one to one (the default), one to many, or many to one.
    fn shape(&self) -> Shape {
        Shape::OneToOne
    }
    /// Runs the step for one item. `Err(StepError::Failed)` fails this item only; other errors stop the run.
    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError>;
    /// What this step's results are made with (prompt file, params, model, version), when it
    /// says; stored in each result. The default: none (results are never called stale).
    fn fingerprint_parts(&self, ctx: &StepContext) -> Option<Fingerprint> {
        let _ = ctx;
        None
    }
    /// The fingerprint text stored in each result ([`ResultRecord::fingerprint`]).
    fn fingerprint(&self, ctx: &StepContext) -> Option<String> {
        self.fingerprint_parts(ctx).map(|f| f.text())
    }
    /// True when [`reprocess`](Self::reprocess) can rerun this step's output processor and
    /// validator over a stored raw reply.
    fn can_reprocess(&self) -> bool {
        false
    }
    /// Reruns the output processor and validator (and the step's own reading of the output:
    /// a judge, a split) over the raw reply stored in `stored`, sending nothing. `None`: the
    /// step cannot (no raw reply, no prompt); `Some(Ok(_))`: accepted, with the new result;
    /// `Some(Err(reason))`: the reply is now rejected.
    fn reprocess(
        &self,
        item: &ItemRecord,
        stored: &ResultRecord,
        ctx: &StepContext,
    ) -> Option<Result<StepOutput, String>> {
        let _ = (item, stored, ctx);
        None
    }
    /// For a [`Shape::Barrier`] step: the corpus-level pass the executor runs over the
    /// survivors of the steps before it. `None` for every other kind.
    fn barrier(&self) -> Option<&dyn crate::barrier::Barrier> {
        None
    }
    /// For a [`Shape::FanIn`] step: runs once for `parent` over its kept `children` (in order,
    /// each with the results of the steps since the fan-out merged). The default refuses.
    async fn gather(
        &self,
        parent: &ItemRecord,
        children: &[ItemRecord],
        ctx: &StepContext,
    ) -> Result<StepOutput, StepError> {
        let _ = (parent, children, ctx);
        Err(StepError::Config(format!(
            "step `{}` is not a fan-in step",
            self.name()
        )))
    }
}

/// How a step maps items; the [`Chain`](crate::Chain) checks that every fan-in closes a fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shape {
    /// One result per item (prompt steps, filters, votes).
    OneToOne,
    /// One item becomes child items ([`FanOutStep`](crate::FanOutStep)).
    FanOut,
    /// The kept children of the last open fan-out become one result on their parent
    /// ([`FanInStep`](crate::FanInStep)).
    FanIn,
    /// Runs once over every item that passed the steps before it, seeing them together
    /// ([`BarrierStep`](crate::BarrierStep)): one result (kept or dropped) per item.
    Barrier,
}

/// What a step made of an item.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// A result; the item goes on to the next step.
    Result(ResultRecord),
    /// Child items (ids from [`child_id`](crate::child_id)) that go on to the next step instead of this one.
    Children(Vec<ItemRecord>, ResultRecord),
    /// A filter kept the item; it goes on.
    Keep(ResultRecord),
    /// A filter dropped the item; it stops here. The record's outcome holds the reason
    /// ([`atk_state::Outcome::Dropped`]; when left `Kept`, the output's text is the reason).
    Drop(ResultRecord),
}

/// Which engine a step talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// The small (cheap) model.
    #[default]
    Small,
    /// The large model.
    Large,
}

/// The run's two engines (they may be the same one).
#[derive(Clone)]
pub struct Engines {
    /// The small model.
    pub small: Arc<dyn Engine>,
    /// The large model.
    pub large: Arc<dyn Engine>,
}

impl Engines {
    /// Both roles served by one engine.
    pub fn single(engine: Arc<dyn Engine>) -> Self {
        Self {
            small: engine.clone(),
            large: engine,
        }
    }

    /// The engine for a choice.
    pub fn get(&self, choice: EngineChoice) -> &Arc<dyn Engine> {
        match choice {
            EngineChoice::Small => &self.small,
            EngineChoice::Large => &self.large,
        }
    }
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field("small", &self.small.label())
            .field("large", &self.large.label())
            .finish()
    }
}

/// Everything a step needs besides the item: engines, prompts and run-wide settings.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The engines.
    pub engines: Engines,
    /// Prompt files.
    pub prompts: Arc<PromptLibrary>,
    /// Run-wide template arguments (looked up after item fields and step arguments).
    pub run_args: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Completion mode: `.txt` prompts sent to `/completions`.
    pub completion_mode: bool,
    /// When false, `stop` is removed from every step's sampling params.
    pub use_stop: bool,
    /// Keep the messages sent and the raw reply in each result ([`atk_state::Details`]).
    pub include_details: bool,
    /// Once cancelled, a step sends no further engine call (checked right before each attempt)
    /// and returns [`StepError::Cancelled`]. The [`Executor`](crate::Executor) sets it to its
    /// own stop token (the run's cancel token, or a fatal error).
    pub cancel: CancellationToken,
    /// The whole input, read-only (set by the runner when the run reads `input_dir`).
    pub corpus: Option<Arc<dyn Corpus>>,
    /// The config's `seed`: what [`rng`](Self::rng) draws from.
    pub seed: u64,
    /// The ids each barrier step kept, by step name, once it ran (see [`kept_by`](Self::kept_by)).
    kept: Arc<RwLock<HashMap<String, Arc<HashSet<String>>>>>,
}

impl StepContext {
    /// A context with chat mode, `use_stop` on, no details and no run arguments.
    pub fn new(engines: Engines, prompts: Arc<PromptLibrary>) -> Self {
        Self {
            engines,
            prompts,
            run_args: Arc::default(),
            completion_mode: false,
            use_stop: true,
            include_details: false,
            cancel: CancellationToken::new(),
            corpus: None,
            seed: 0,
            kept: Arc::default(),
        }
    }

    /// The whole input, read-only: every chunk by id, by document and by position, the same
    /// on every shard. An error when the run has none (its pipeline brings its own items).
    pub fn corpus(&self) -> Result<&dyn Corpus, CorpusError> {
        self.corpus.as_deref().ok_or(CorpusError::Missing)
    }

    /// A deterministic random source for `item_id`: the same on every run and shard for the
    /// same config `seed`, item and `salt` (use one salt per purpose).
    pub fn rng(&self, item_id: &str, salt: &str) -> ItemRng {
        ItemRng::new(self.seed, item_id, salt)
    }

    /// The ids of the items barrier step `step` kept, once it has run in this run (a step
    /// after the barrier always sees it). `None` before, or for a step that is no barrier.
    pub fn kept_by(&self, step: &str) -> Option<Arc<HashSet<String>>> {
        self.kept
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(step)
            .cloned()
    }

    /// Records what a barrier kept (the executor, after the barrier's pass).
    pub(crate) fn set_kept(&self, step: &str, ids: HashSet<String>) {
        self.kept
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(step.to_string(), Arc::new(ids));
    }
}
