//! Token and cost accounting: the server's usage is what gets counted and priced; without it
//! (llama.cpp style) tokens are estimated and said to be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use atk_e2e::{Config, Env, POEM_TEMPLATE, run};
use atk_testkit::{ReplyMode, ServerConfig, prompt_text, render_template};
use serde_json::Value;

use crate::{RUN_TIMEOUT, bin, poem_server};

/// Runs 4 documents and returns (small engine's token_counts.json entry, prompt words sent,
/// reply words received) — the server's usage counts whitespace words.
async fn run_counting(usage_in_stream: bool) -> (Value, u64, u64) {
    let (server, _) =
        poem_server(ServerConfig::default().with_usage_in_stream(usage_in_stream)).await;
    let words = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sums = words.clone();
    server.set_reply(ReplyMode::func(move |body| {
        let reply = render_template(POEM_TEMPLATE, body);
        sums.0.fetch_add(
            prompt_text(body).split_whitespace().count() as u64,
            Ordering::SeqCst,
        );
        sums.1
            .fetch_add(reply.split_whitespace().count() as u64, Ordering::SeqCst);
        reply
    }));
    let env = Env::new();
    env.write_docs(4);
    let config = Config::new(server.base_url())
        .set("cost_per_million_small_input", "2.0")
        .set("cost_per_million_small_output", "4.0");
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    let counts = std::fs::read_to_string(env.output().join("token_counts.json"))
        .unwrap_or_else(|e| panic!("token_counts.json: {e}\n{out}"));
    let counts: Value = serde_json::from_str(&counts).expect("token_counts.json is JSON");
    assert_eq!(counts["small"]["requests"], 4, "{counts}");
    (
        counts["small"].clone(),
        words.0.load(Ordering::SeqCst),
        words.1.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn the_servers_usage_is_counted_and_priced() {
    let (small, prompt, completion) = run_counting(true).await;
    assert_eq!(small["prompt_tokens"], prompt, "{small}");
    assert_eq!(small["completion_tokens"], completion, "{small}");
    assert_eq!(small["estimated_replies"], 0, "{small}");
    let cost = small["cost_usd"].as_f64().expect("cost_usd");
    let expected = (prompt as f64 * 2.0 + completion as f64 * 4.0) / 1e6;
    assert!(
        (cost - expected).abs() < 1e-12,
        "cost {cost}, expected {expected}"
    );
}

#[tokio::test]
async fn without_usage_tokens_are_estimated_and_marked() {
    let (small, _, _) = run_counting(false).await;
    assert_eq!(small["estimated_replies"], 4, "{small}");
    assert!(small["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{small}");
    assert!(
        small["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{small}"
    );
}

#[tokio::test]
async fn a_killed_runs_saved_cost_includes_every_reply_whose_result_was_stored() {
    for backend in ["sled", "redb"] {
        killed_then_counted(backend).await;
    }
}

async fn killed_then_counted(backend: &str) {
    // Fast replies, many in flight: a second of them is a hundred results.
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(std::time::Duration::from_millis(5)))
            .await;
    let env = Env::new();
    env.write_docs(300);
    let mut config = Config::new(server.base_url())
        .set("cost_per_million_small_input", "2.0")
        .set("cost_per_million_small_output", "4.0")
        .set("store_backend", backend);
    config.concurrency_limit = 8;
    let config = env.write_config(&config);
    let running = atk_e2e::Running::spawn(env.command(bin(), &config));
    server
        .wait_until(RUN_TIMEOUT, |s| s.completed >= 80)
        .await
        .expect("the run gets going");
    let out = running.kill().await;
    assert_eq!(out.code, None, "killed, not exited\n{out}");
    // What a resumed run would start from: the results in the store, the cost saved beside.
    use atk_state::Store;
    let store = atk_state::SledStore::try_open_read(&atk_cli::store_dir(&env.output()))
        .expect("the killed run's store opens");
    let stored = store.count_results("write_poem").unwrap();
    let saved = store
        .meta(atk_cli::layout::COST_META_KEY)
        .unwrap()
        .unwrap_or_default();
    let (requests, cost) = (
        saved["small"]["requests"].as_u64().unwrap_or(0),
        saved["small"]["cost_usd"].as_f64().unwrap_or(0.0),
    );
    assert!(
        stored > 0 && stored < 300,
        "{backend}: killed mid-run: {stored} stored"
    );
    // Every stored result came from one reply: each is in the saved count and cost.
    assert!(
        requests >= stored && cost > 0.0,
        "{backend}: saved cost counts {requests} replies (${cost}), the store holds {stored} results"
    );
}
