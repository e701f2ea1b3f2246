//! The stand-in for an engine a pipeline declared it does not use
//! (no step of the chain calls it: `Step::engines`): its settings were not required, so it sends nothing and
//! any call is a clear, fatal error instead of a request to a half-configured endpoint.

use async_trait::async_trait;
use atk_engine::{Engine, Error, Reply, Request};

/// An engine that refuses every call, naming the declaration that made it unused.
#[derive(Debug)]
pub(crate) struct UnusedEngine {
    label: String,
    model: String,
}

impl UnusedEngine {
    /// The stand-in for engine `label` (`small`, `large`).
    pub(crate) fn new(label: &str, model: &str) -> Self {
        Self {
            label: label.to_string(),
            model: model.to_string(),
        }
    }
}

#[async_trait]
impl Engine for UnusedEngine {
    async fn call(&self, _request: Request) -> Result<Reply, Error> {
        Err(Error::Config(format!(
            "a step called the {} engine, but no step of the chain says it calls it (Step::engines), \
             so its settings were not required; return it from the step's `engines`",
            self.label
        )))
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn model(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_is_a_fatal_config_error_naming_the_engine() {
        let e = UnusedEngine::new("large", "");
        let err = e.call(Request::chat(vec![])).await.unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("large engine"), "{err}");
        assert!(!e.is_mock());
    }
}
