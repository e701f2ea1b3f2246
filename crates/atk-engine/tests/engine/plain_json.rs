//! A server that ignores `stream: true` and answers with one plain JSON body (a tiny axum route:
//! atk-testkit always honours the flag). A whole reply is accepted; one without `finish_reason`
//! is not taken as complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atk_engine::{EngineConfig, Error, Message, Request, RetryConfig, TransientKind, build_engine};
use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

/// Serves `body` as `application/json` for every POST to `/v1/chat/completions`, whatever the
/// request asked for; returns the base URL and a request counter.
async fn json_server(body: Value) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(request): Json<Value>| {
            let (body, counter) = (body.clone(), counter.clone());
            async move {
                assert_eq!(request["stream"], true, "the engine asked for a stream");
                counter.fetch_add(1, Ordering::SeqCst);
                Json(body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), hits)
}

fn engine_cfg(base_url: String) -> EngineConfig {
    EngineConfig::default()
        .with_label("t")
        .with_base_url(base_url)
        .with_model("m")
        .with_stream(true)
        .with_retry(
            RetryConfig::default()
                .with_max_attempts(2)
                .with_base_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(2)),
        )
}

fn chat() -> Request {
    Request::chat(vec![Message::new("user", "hi")])
}

#[tokio::test]
async fn a_whole_json_reply_is_accepted_in_place_of_a_stream() {
    let (url, hits) = json_server(json!({
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a whole answer"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3}
    }))
    .await;
    let engine = build_engine(engine_cfg(url), vec![]).unwrap();
    let reply = engine.call(chat()).await.unwrap();
    assert_eq!(reply.text, "a whole answer");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            reply.usage.estimated
        ),
        (9, 3, false)
    );
    assert_eq!(reply.model, "served-model");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_json_reply_without_finish_reason_is_not_taken_as_complete() {
    // Two shapes a broken proxy sends: a message with no finish_reason, one buffered stream chunk.
    for body in [
        json!({"choices": [{"index": 0, "message": {"content": "cut sho"}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "cut sho"}, "finish_reason": null}]}),
    ] {
        let (url, hits) = json_server(body.clone()).await;
        let engine = build_engine(engine_cfg(url), vec![]).unwrap();
        let err = engine.call(chat()).await.expect_err("no complete reply");
        let Error::RetriesExhausted { attempts, last, .. } = &err else {
            panic!("{body}: {err}");
        };
        assert_eq!(*attempts, 2, "{body}");
        assert!(
            matches!(
                **last,
                Error::Transient {
                    kind: TransientKind::CutStream,
                    ..
                }
            ),
            "{body}: {last}"
        );
        assert!(err.to_string().contains("finish_reason"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 2, "retried, then given up");
    }
}
