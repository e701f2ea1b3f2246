//! A wrong API key: exit 1 within seconds, saying so, after few requests.

use std::time::Duration;

use atk_e2e::{Config, Env, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn wrong_key_exits_1_fast_with_few_requests() {
    const LIMIT: usize = 4;
    let (server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(20))).await;
    let env = Env::new();
    env.write_docs(30);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = LIMIT;
    config.api_key = "\"sk-e2e-wrong-key-000\"".to_owned();
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(1);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}\n{out}",
        out.elapsed
    );
    let stderr = out.stderr.to_lowercase();
    assert!(
        stderr.contains("key")
            && (stderr.contains("refused")
                || stderr.contains("rejected")
                || stderr.contains("invalid")),
        "stderr must say the key was refused\n{out}"
    );
    assert!(
        !out.stderr.contains("sk-e2e-wrong-key-000")
            && !out.stdout.contains("sk-e2e-wrong-key-000")
    );
    let stats = server.stats();
    assert!(
        stats.requests <= 2 * LIMIT as u64 + 1,
        "{} requests sent with a refused key",
        stats.requests
    );
    assert_eq!(stats.completed, 0);
}
