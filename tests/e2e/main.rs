//! End-to-end tests: the `example-pipeline` binary against a loopback test server.
//!
//! One test binary, a module per area; each test has its own temp dir ([`Env`]) and its own
//! [`TestServer`]. Runs are kept small (a few one-chunk documents, milliseconds of latency) so
//! the whole suite stays well under a minute on 2 cores in a debug build.

mod accounting;
mod auth;
mod batch_control;
mod budget;
mod cli;
mod config_errors;
mod conventions;
mod damage;
mod demo;
mod demos;
mod dialects;
mod doc_commands;
mod endings;
mod export;
mod factual_qa;
mod faults;
mod iterate;
mod rag_data;
mod resume;
mod run;
mod scale;
mod secrets;
mod serve;
mod validation;
mod warnings;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atk_e2e::{API_KEY, Env, POEM_TEMPLATE, poem_of};
use atk_testkit::{ReplyMode, ServerConfig, TestServer, render_template};

/// Longest any single pipeline run may take before the test fails.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// The pipeline binary under test.
pub(crate) fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-example-pipeline"))
}

/// Every poem the server handed out, to tell whole replies from cut ones.
#[derive(Clone, Default)]
pub(crate) struct Poems(Arc<Mutex<BTreeSet<String>>>);

impl Poems {
    /// A reply mode that answers with [`POEM_TEMPLATE`] and records each poem.
    pub(crate) fn reply(&self) -> ReplyMode {
        let poems = self.clone();
        ReplyMode::func(move |body| {
            let reply = render_template(POEM_TEMPLATE, body);
            if let Some(p) = poem_of(&reply) {
                poems.0.lock().unwrap().insert(p);
            }
            reply
        })
    }

    /// Panics unless every dataset reply is one whole poem the server sent.
    #[track_caller]
    pub(crate) fn assert_all_whole(&self, env: &Env) {
        let sent = self.0.lock().unwrap();
        for reply in env.dataset_replies() {
            let reply = poem_of(&reply).unwrap_or(reply);
            assert!(
                sent.contains(reply.trim()),
                "the dataset holds a reply the server never sent whole:\n{reply}"
            );
        }
    }
}

/// A server that wants [`API_KEY`] and answers poems (recorded in the returned [`Poems`]).
pub(crate) async fn poem_server(config: ServerConfig) -> (TestServer, Poems) {
    let poems = Poems::default();
    let server = TestServer::start(config.with_api_key(API_KEY).with_reply(poems.reply()))
        .await
        .expect("test server starts");
    (server, poems)
}
