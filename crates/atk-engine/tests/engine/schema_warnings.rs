//! A refused schema form is said once per endpoint: the move from `json_schema` to
//! `json_object` + `schema` (llama-cpp-python's 500 naming `response_format`, not retried as a
//! fault), and the fallback to the schema stated in the prompt, naming the endpoint; the same
//! for a refusal that comes back as a batch's errored line (asked again in the next form). A binary
//! of its own: a thread-local subscriber must not race other tests over tracing's callsite
//! cache.

use crate::common;

use std::time::Duration;

use atk_engine::{BatchConfig, Dialect, EngineConfig, Mode, build_engine};
use atk_testkit::{CapturedLogs, SchemaSupport, TestServer};
use common::schema::{all_answered, server_with};
use common::{KEY, engine_cfg, ms};

/// An engine of `batch` mode on `server` whose batches go when `size` requests are in.
fn batch(server: &TestServer, dialect: Dialect, size: usize) -> EngineConfig {
    engine_cfg(server)
        .with_mode(Mode::Batch)
        .with_dialect(dialect)
        .with_api_key(KEY)
        .with_batch(BatchConfig {
            size,
            max_wait: Duration::from_secs(30),
            poll_first: ms(10),
            poll_max: Duration::from_millis(50),
            tag: "schema-test".into(),
            journal: None,
            no_wait: false,
        })
}

#[tokio::test]
async fn each_server_gets_the_form_it_takes_and_refusals_move_on_once_with_one_warning() {
    let logs = CapturedLogs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::INFO));

    // A server that takes every form: OpenAI's json_schema form, strict.
    let full = TestServer::start(server_with(SchemaSupport::All))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&full).with_api_key(KEY), vec![]).unwrap();
    all_answered(engine.as_ref(), 3).await;
    let stats = full.stats();
    assert_eq!(stats.schema_form_count("json_schema"), 3);
    assert_eq!((stats.requests, stats.schema_refused), (3, 0));

    // llama-cpp-python: json_schema answered with a 500 naming response_format. Four requests
    // at once meet the refusal; the endpoint moves to json_object + schema once, and nothing
    // is retried as a server fault.
    let llama = TestServer::start(server_with(SchemaSupport::LlamaCppPython))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&llama).with_api_key(KEY), vec![]).unwrap();
    all_answered(engine.as_ref(), 4).await;
    all_answered(engine.as_ref(), 4).await;
    let stats = llama.stats();
    let refused = stats.schema_form_count("json_schema");
    assert!((1..=4).contains(&refused), "{stats:?}");
    assert_eq!(
        stats.status_count(500),
        refused,
        "each refused once, never retried"
    );
    assert_eq!(stats.schema_form_count("json_object"), 8);
    assert_eq!(stats.requests, 8 + refused);

    // A server that takes no form: the schema stated in the prompt, after one more warning.
    let none = TestServer::start(server_with(SchemaSupport::Refused))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&none).with_api_key(KEY), vec![]).unwrap();
    all_answered(engine.as_ref(), 3).await;
    all_answered(engine.as_ref(), 2).await;
    let stats = none.stats();
    let refused = stats.schema_refused;
    assert!(
        refused >= 2,
        "json_schema then json_object refused: {stats:?}"
    );
    assert_eq!(stats.status_count(400), refused);
    assert_eq!(stats.requests, 5 + refused);

    // Batch mode: llama-cpp-python's refusal comes back as an errored line of the batch. The
    // endpoint moves on once (one more warning) and those requests go again, in a batch of
    // their own, in json_object + schema; later batches carry that form from the start.
    let llama = TestServer::start(server_with(SchemaSupport::LlamaCppPython))
        .await
        .unwrap();
    let engine = build_engine(batch(&llama, Dialect::OpenAi, 4), vec![]).unwrap();
    all_answered(engine.as_ref(), 4).await;
    all_answered(engine.as_ref(), 4).await;
    let stats = llama.stats();
    assert_eq!(stats.requests, 0, "nothing went online: {stats:?}");
    assert_eq!(
        (
            stats.schema_form_count("json_schema"),
            stats.schema_refused,
            stats.schema_form_count("json_object")
        ),
        (4, 4, 8),
        "the refused lines once, then every request in the form taken: {stats:?}"
    );
    assert_eq!((stats.batches_created, stats.batch_lines), (3, 12));
    // Anthropic's batches, no forced tool taken: the schema stated in the prompt.
    let none = TestServer::start(server_with(SchemaSupport::Refused))
        .await
        .unwrap();
    let engine = build_engine(batch(&none, Dialect::Anthropic, 3), vec![]).unwrap();
    all_answered(engine.as_ref(), 3).await;
    let stats = none.stats();
    assert_eq!(
        (stats.schema_form_count("tool"), stats.schema_refused),
        (3, 3)
    );
    assert_eq!((stats.batches_created, stats.batch_lines), (2, 6));

    let logs = logs.text();
    let moved = logs.matches("refuses response_format json_schema").count();
    assert_eq!(
        moved, 3,
        "one warning per endpoint that refused it, online or in a batch:\n{logs}"
    );
    let prompt = logs.matches("the schema is stated in the prompt").count();
    assert_eq!(prompt, 2, "one warning per fallback:\n{logs}");
    assert_eq!(logs.matches("refuses a forced tool").count(), 1, "{logs}");
    assert!(
        logs.contains(&none.base_url()),
        "the warning names the endpoint"
    );
}
