//! Structured output against atk-testkit: the schema goes in the form the endpoint takes
//! (OpenAI `response_format`, llama-cpp-python's `json_object` + `schema`, llama.cpp's
//! completion `json_schema`, Anthropic's forced tool), a refusal moves the endpoint on to the
//! next form once (never retried as a fault), with one warning, down to the schema stated in
//! the prompt; batch lines carry the schema too. One test binary of its own: it captures logs.

use crate::common;

use std::time::Duration;

use atk_engine::{BatchConfig, Dialect, Mode, Request, build_engine};
use atk_testkit::{SchemaSupport, TestServer};
use common::schema::{VERDICT, all_answered, ask, schema, server_with};
use common::{KEY, engine_cfg, ms};
use serde_json::Value;

#[tokio::test]
async fn completion_mode_sends_llama_cpp_s_json_schema_field_or_states_it() {
    let full = TestServer::start(server_with(SchemaSupport::All))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&full).with_api_key(KEY), vec![]).unwrap();
    let request = Request::completion("Is it right?\n").with_schema(schema());
    assert_eq!(engine.call(request.clone()).await.unwrap().text, VERDICT);
    assert_eq!(full.stats().schema_form_count("completion_json_schema"), 1);

    let none = TestServer::start(server_with(SchemaSupport::Refused))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&none).with_api_key(KEY), vec![]).unwrap();
    assert_eq!(engine.call(request.clone()).await.unwrap().text, VERDICT);
    assert_eq!(engine.call(request).await.unwrap().text, VERDICT);
    let stats = none.stats();
    assert_eq!((stats.schema_refused, stats.requests), (1, 3));
}

#[tokio::test]
async fn schemas_off_state_the_schema_in_the_prompt_without_asking_the_server() {
    let full = TestServer::start(server_with(SchemaSupport::All))
        .await
        .unwrap();
    let cfg = engine_cfg(&full)
        .with_api_key(KEY)
        .with_structured_output(false);
    let engine = build_engine(cfg, vec![]).unwrap();
    all_answered(engine.as_ref(), 2).await;
    assert!(full.stats().schema_forms.is_empty());
}

#[tokio::test]
async fn anthropic_gets_a_forced_tool_and_its_input_is_the_reply() {
    let server = TestServer::start(server_with(SchemaSupport::All))
        .await
        .unwrap();
    for stream in [true, false] {
        let cfg = engine_cfg(&server)
            .with_dialect(Dialect::Anthropic)
            .with_api_key(KEY)
            .with_stream(stream);
        let engine = build_engine(cfg, vec![]).unwrap();
        let reply = engine.call(ask(1)).await.unwrap();
        let parsed: Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_str::<Value>(VERDICT).unwrap(),
            "stream={stream}"
        );
        assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
    }
    assert_eq!(server.stats().schema_form_count("tool"), 2);

    // A Messages server without tools: the prompt states the schema.
    let none = TestServer::start(server_with(SchemaSupport::Refused))
        .await
        .unwrap();
    let cfg = engine_cfg(&none)
        .with_dialect(Dialect::Anthropic)
        .with_api_key(KEY);
    let engine = build_engine(cfg, vec![]).unwrap();
    assert_eq!(engine.call(ask(2)).await.unwrap().text, VERDICT);
    assert_eq!(none.stats().schema_refused, 1);
}

#[tokio::test]
async fn batch_lines_carry_the_schema() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(SchemaSupport::All))
            .await
            .unwrap();
        let cfg = engine_cfg(&server)
            .with_mode(Mode::Batch)
            .with_dialect(dialect)
            .with_api_key(KEY)
            .with_concurrency_limit(10usize)
            .with_batch(BatchConfig {
                size: 10,
                max_wait: ms(20),
                poll_first: ms(20),
                poll_max: Duration::from_millis(200),
                tag: "schema".into(),
                journal: None,
                ..Default::default()
            });
        let engine = build_engine(cfg, vec![]).unwrap();
        let calls = (0..3).map(|i| engine.call(ask(i)));
        for reply in futures_util::future::join_all(calls).await {
            let reply = reply.unwrap_or_else(|e| panic!("{dialect}: {e}"));
            let parsed: Value = serde_json::from_str(&reply.text).unwrap();
            assert_eq!(parsed["verdict"], "yes", "{dialect}");
        }
    }
}
