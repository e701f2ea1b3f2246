//! How layers compose: each behaviour (observers, retry, outage guard, limit) is a [`Layer`]
//! that gets the request and the rest of the stack as [`Next`]; a [`Stack`] is a transport plus
//! its layers and is the one `Engine` impl among them, so the identity (`label`, `model`,
//! `is_mock`) is the transport's and is delegated here only.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Engine, Error, Reply, Request};

/// One behaviour wrapped around the rest of the stack.
#[async_trait]
pub(crate) trait Layer: Send + Sync {
    /// Handles one call; `next.call` sends it on (as often as the layer needs).
    /// The request is borrowed all the way down: no layer copies the prompt.
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error>;
}

/// The layers below the current one, then the transport.
#[derive(Clone, Copy)]
pub(crate) struct Next<'a> {
    layers: &'a [Box<dyn Layer>],
    transport: &'a dyn Engine,
}

impl<'a> Next<'a> {
    /// Sends the request through the rest of the stack.
    pub(crate) async fn call(self, request: &Request) -> Result<Reply, Error> {
        match self.layers.split_first() {
            Some((layer, layers)) => {
                let next = Next {
                    layers,
                    transport: self.transport,
                };
                layer.call(request, next).await
            }
            None => self.transport.call_ref(request).await,
        }
    }

    /// The engine's label, for logs and observers.
    pub(crate) fn label(&self) -> &'a str {
        self.transport.label()
    }
}

/// A transport wrapped in layers, outermost first.
pub(crate) struct Stack {
    layers: Box<[Box<dyn Layer>]>,
    transport: Arc<dyn Engine>,
}

impl Stack {
    pub(crate) fn new(transport: Arc<dyn Engine>, layers: Vec<Box<dyn Layer>>) -> Self {
        Self {
            layers: layers.into(),
            transport,
        }
    }
}

#[async_trait]
impl Engine for Stack {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        self.call_ref(&request).await
    }
    async fn call_ref(&self, request: &Request) -> Result<Reply, Error> {
        let next = Next {
            layers: &self.layers,
            transport: &*self.transport,
        };
        next.call(request).await
    }
    fn label(&self) -> &str {
        self.transport.label()
    }
    fn model(&self) -> &str {
        self.transport.model()
    }
    fn is_mock(&self) -> bool {
        self.transport.is_mock()
    }
}
