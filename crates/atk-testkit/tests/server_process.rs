//! The `atk-testkit-server` binary: one ready line, serves, stops when stdin closes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn binary_prints_its_url_serves_stats_and_stops_when_stdin_closes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atk-testkit-server"))
        .args([
            "--port",
            "0",
            "--latency-ms",
            "1",
            "--api-key",
            "k",
            "--script",
            "server_error",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("ready line")
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{line}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats: serde_json::Value = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let chat = format!("{url}/chat/completions");
        let first = client
            .post(&chat)
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 500);
        let second = client
            .post(&chat)
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 200);
        let stats_url = format!("{}/stats", url.trim_end_matches("/v1"));
        client
            .get(stats_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["completed"], 1);
    assert_eq!(stats["statuses"]["500"], 1);

    drop(child.stdin.take());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
    });
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server stops when stdin closes");
    assert!(status.unwrap().success());
}
