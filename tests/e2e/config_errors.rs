//! Config and input errors: exit 2 with a message naming what is wrong, nothing sent.

use atk_e2e::{Config, Env, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

#[tokio::test]
async fn a_placeholder_left_exits_2_naming_the_key() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(2);
    let mut config = Config::new(server.base_url());
    config.api_key = "!!PLACEHOLDER!!".to_owned();
    let config = env.write_config(&config);

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("small_api_key"),
        "stderr must name the key\n{out}"
    );
    assert!(
        out.stderr.contains("large_api_key"),
        "stderr must list every placeholder\n{out}"
    );
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn an_empty_input_dir_exits_2() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    let config = env.write_config(&Config::new(server.base_url()));

    let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("input"),
        "stderr must say the input dir is the problem\n{out}"
    );
    assert_eq!(server.stats().requests, 0);
}
