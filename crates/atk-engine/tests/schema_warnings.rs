//! A refused schema form is said once per endpoint: the move from `json_schema` to
//! `json_object` + `schema` (llama-cpp-python's 500 naming `response_format`, not retried as a
//! fault), and the fallback to the schema stated in the prompt, naming the endpoint. A binary
//! of its own: a thread-local subscriber must not race other tests over tracing's callsite
//! cache.

mod common;

use atk_engine::build_engine;
use atk_testkit::{CapturedLogs, SchemaSupport, TestServer};
use common::schema::{all_answered, server_with};
use common::{KEY, engine_cfg};

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

    let logs = logs.text();
    let moved = logs.matches("refuses response_format json_schema").count();
    assert_eq!(
        moved, 2,
        "one warning per endpoint that refused it:\n{logs}"
    );
    let prompt = logs.matches("the schema is stated in the prompt").count();
    assert_eq!(prompt, 1, "one warning for the fallback:\n{logs}");
    assert!(
        logs.contains(&none.base_url()),
        "the warning names the endpoint"
    );
}
