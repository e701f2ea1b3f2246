//! What the wrapping step kinds (filter, fan-out, fan-in) share: either a prompted inner
//! step with the kind's own function, or the function alone. The step's prompts, keys and
//! fingerprint come from the inner step when there is one.

use crate::prompt_step::PromptStep;
use crate::step::{Step, StepContext};

/// A wrapper's source: a prompt step and what reads its reply, or a function alone.
pub(crate) enum Source<P, F> {
    /// A model call, then `P` over its processed reply.
    Prompt(Box<PromptStep>, P),
    /// No model call.
    Function(F),
}

impl<P, F> Source<P, F> {
    /// The inner prompt step, if any.
    pub(crate) fn inner(&self) -> Option<&PromptStep> {
        match self {
            Self::Prompt(inner, _) => Some(inner),
            Self::Function(_) => None,
        }
    }

    /// The engines called: the inner step's (a function calls none).
    pub(crate) fn engines(&self) -> Vec<crate::EngineChoice> {
        self.inner().map(Step::engines).unwrap_or_default()
    }

    /// Prompt names: the inner step's.
    pub(crate) fn prompt_names(&self) -> Vec<String> {
        self.inner().map(Step::prompt_names).unwrap_or_default()
    }

    /// Template arguments: the inner step's (a function has none).
    pub(crate) fn template_args(&self) -> Option<Vec<String>> {
        self.inner().map_or(Some(Vec::new()), Step::template_args)
    }

    /// The result key: the inner step's, else the wrapper's `name`.
    pub(crate) fn result_key<'a>(&'a self, name: &'a str) -> &'a str {
        self.inner().map_or(name, Step::result_key)
    }

    /// The details key: the inner step's (a function records no details).
    pub(crate) fn details_key(&self) -> Option<&str> {
        self.inner().and_then(Step::details_key)
    }

    /// Sets the version: the inner step's, else the wrapper's own (`own`).
    pub(crate) fn set_version(&mut self, version: String, own: &mut Option<String>) {
        match self {
            Self::Prompt(inner, _) => **inner = inner.as_ref().clone().version(version),
            Self::Function(_) => *own = Some(version),
        }
    }

    /// The fingerprint: the inner step's, or a function's own `version`.
    pub(crate) fn fingerprint(
        &self,
        ctx: &StepContext,
        version: Option<&str>,
    ) -> Option<crate::Fingerprint> {
        match self.inner() {
            Some(inner) => inner.fingerprint_of(ctx),
            None => crate::fingerprint::of_function(version),
        }
    }
}
