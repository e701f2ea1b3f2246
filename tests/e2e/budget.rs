//! `max_cost`: a run stops at the cap having spent at most the cap, says how far it got, and
//! a rerun with a higher cap completes without paying for anything twice.

use atk_e2e::{Config, Env, run};
use atk_testkit::ServerConfig;
use serde_json::Value;

use crate::{RUN_TIMEOUT, bin, poem_server};

const DOCS: usize = 24;

/// What the output dir's runs spent, from `token_counts.json`.
fn spent(env: &Env) -> f64 {
    let text =
        std::fs::read_to_string(env.output().join("token_counts.json")).expect("token_counts.json");
    let counts: Value = serde_json::from_str(&text).expect("JSON");
    counts
        .as_object()
        .expect("an object per engine")
        .values()
        .filter_map(|e| e["cost_usd"].as_f64())
        .sum()
}

/// Prices high enough that a few requests cost cents.
fn priced(base_url: String) -> Config {
    Config::new(base_url)
        .set("cost_per_million_small_input", "100.0")
        .set("cost_per_million_small_output", "100.0")
        .set("cost_per_million_large_input", "100.0")
        .set("cost_per_million_large_output", "100.0")
}

#[tokio::test]
async fn a_run_stops_at_max_cost_and_a_rerun_with_more_completes_paying_nothing_twice() {
    // The projected cost: the same work, uncapped.
    let (reference_server, _) = poem_server(ServerConfig::default()).await;
    let reference = Env::new();
    reference.write_docs(DOCS);
    let config = reference.write_config(&priced(reference_server.base_url()));
    run(reference.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let projected = spent(&reference);
    assert!(projected > 0.0);

    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(DOCS);
    let cap = projected / 2.0;
    let config = env.write_config(&priced(server.base_url()).set("max_cost", &format!("{cap:.6}")));
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(
        out.stderr.contains("budget reached: $")
            && out
                .stderr
                .contains("items pending — raise max_cost and rerun to go on"),
        "{out}"
    );
    let first = server.stats().requests;
    assert!(first > 0 && first < DOCS as u64, "{first} requests\n{out}");
    let spent_first = spent(&env);
    assert!(
        spent_first <= cap + 1e-12,
        "spent ${spent_first} with a cap of ${cap}\n{out}"
    );
    assert!(
        env.dataset_bytes().is_none(),
        "no dataset from a run that stopped\n{out}"
    );
    let status = std::fs::read_to_string(env.output().join("status.json")).expect("status.json");
    let status: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status["budget"]["reached"], true, "{status}");

    // The same cap again: it stays within it (a smaller item may still fit).
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(spent(&env) <= cap + 1e-12, "{out}");

    let config = env.write_config(
        &priced(server.base_url()).set("max_cost", &format!("{:.6}", projected * 2.0)),
    );
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(
        server.stats().requests,
        DOCS as u64,
        "every item paid once over the two runs\n{out}"
    );
    assert_eq!(
        env.dataset_bytes(),
        reference.dataset_bytes(),
        "the same dataset as an uncapped run\n{out}"
    );
}

#[tokio::test]
async fn a_dry_run_warns_when_its_estimate_passes_max_cost() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(4);
    let config = env.write_config(&priced(server.base_url()).set("max_cost", "0.000001"));
    let mut cmd = env.command(bin(), &config);
    cmd.arg("--dry-run");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(out.stdout.contains("WARNING: max_cost is $0.0000"), "{out}");
    assert_eq!(server.stats().requests, 0);

    // A cap with no prices can never trigger: said before anything is sent.
    let config = env.write_config(&Config::new(server.base_url()).set("max_cost", "5"));
    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(out.stderr.contains("can never be reached"), "{out}");
}
