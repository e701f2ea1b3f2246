//! The API key never reaches logs (captured at TRACE), errors or debug files. Its own test
//! binary: a thread-local subscriber must not race other tests over tracing's callsite cache.

use crate::common;

use atk_engine::{Error, build_engine};
use atk_testkit::{CapturedLogs, Fault, Faults, TestServer};
use common::{KEY, TEXT, chat, engine_cfg, server_cfg};

#[tokio::test]
async fn the_key_never_reaches_logs_errors_or_debug_output() {
    let logs = CapturedLogs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::TRACE));
    let dir = tempfile::tempdir().unwrap();
    let debug = atk_engine::DebugObserver::new(dir.path().to_path_buf());

    // Right key, with retried faults (logged at WARN) ...
    let faults = Faults::scripted([Fault::ServerError, Fault::RateLimit, Fault::ErrorMidStream]);
    let server = TestServer::start(server_cfg().with_api_key(KEY).with_faults(faults))
        .await
        .unwrap();
    let cfg = engine_cfg(&server).with_api_key(KEY);
    assert!(!format!("{cfg:?}").contains(KEY));
    let engine = build_engine(cfg, vec![debug.clone()]).unwrap();
    assert_eq!(engine.call(chat("hello")).await.unwrap().text, TEXT);
    // ... and a refused key (the server answers 401 for a Bearer it does not know).
    let server = TestServer::start(server_cfg().with_api_key("sk-other"))
        .await
        .unwrap();
    let engine = build_engine(engine_cfg(&server).with_api_key(KEY), vec![debug]).unwrap();
    let err = engine.call(chat("hello")).await.unwrap_err();
    assert!(matches!(err, Error::AuthRefused { .. }));
    assert!(!format!("{err} {err:?}").contains(KEY));

    let logs = logs.text();
    assert!(logs.contains("retrying"), "retries are logged");
    assert!(!logs.contains(KEY), "key in logs");
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        assert!(
            !std::fs::read_to_string(entry.unwrap().path())
                .unwrap()
                .contains(KEY)
        );
        files += 1;
    }
    assert_eq!(files, 2);
}
