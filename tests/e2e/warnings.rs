//! Nothing silently ignored: a misspelt prompt override file, a missing `prompts` folder and a
//! `{name}` nothing provides are warned about before anything is sent, and under `--dry-run`.

use atk_e2e::{Env, run};

use crate::{RUN_TIMEOUT, bin};

/// The demo config (mock engine) with its output in `env` and `prompts` set to `prompts`.
fn demo(env: &Env, prompts: &std::path::Path) -> tokio::process::Command {
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipelines/example/demo.yaml"
    );
    let mut cmd = env.command(bin(), demo.as_ref());
    cmd.arg("--set")
        .arg(format!("output_dir={}", env.output().display()));
    cmd.arg("--set")
        .arg(format!("prompts={}", prompts.display()));
    cmd.args(["--set", "mock_latency_ms=0"]);
    cmd
}

#[tokio::test]
async fn a_misspelt_override_and_an_unknown_name_are_warned_about_before_sending() {
    let env = Env::new();
    let prompts = env.root().join("my_prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(
        prompts.join("write_pome.yaml"),
        "- role: user\n  content: x\n",
    )
    .unwrap();
    std::fs::write(
        prompts.join("write_poem.txt"),
        "completion mode only\n", // a real prompt of the pipeline: no warning
    )
    .unwrap();
    std::fs::write(
        prompts.join("write_poem.yaml"),
        "- role: system\n  content: Write in {poem_style}.\n- role: user\n  content: \"{text} for {audiense}\"\n",
    )
    .unwrap();

    let out = run(demo(&env, &prompts), RUN_TIMEOUT).await;
    out.assert_code(0);
    let err = &out.stderr;
    let misspelt = format!(
        "warning: {}: matches no prompt of the pipeline",
        prompts.join("write_pome.yaml").display()
    );
    assert!(
        err.contains(&misspelt) && err.contains("did you mean `write_poem.yaml`?"),
        "{out}"
    );
    let unknown = format!(
        "warning: prompt {}, line 4: `{{audiense}}` is provided by no item field, step argument or config key",
        prompts.join("write_poem.yaml").display()
    );
    assert!(
        err.contains(&unknown) && err.contains("did you mean `{audience}`?"),
        "{out}"
    );
    // The config's `audience` now reaches no prompt (the edited one asks for `audiense`).
    assert!(
        err.contains(
            "warning: `audience` (from the config) is used by no prompt of step `write_poem` (write_poem), so it changes nothing"
        ),
        "{out}"
    );
    assert_eq!(
        err.matches("warning:").count(),
        3,
        "nothing else is warned about\n{out}"
    );
    let first_sent = err.find("write_poem: starting").expect("the step started");
    assert!(
        err.find(&unknown).is_some_and(|i| i < first_sent),
        "warned before anything was sent\n{out}"
    );

    let mut dry = demo(&env, &prompts);
    dry.arg("--dry-run");
    let out = run(dry, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains(&misspelt) && out.stderr.contains(&unknown),
        "--dry-run shows them too\n{out}"
    );
}

#[tokio::test]
async fn a_prompts_folder_that_does_not_exist_is_warned_about() {
    let env = Env::new();
    let missing = env.root().join("promtps");
    let mut cmd = demo(&env, &missing);
    cmd.arg("--dry-run");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    let expected = format!(
        "warning: `prompts` folder {} does not exist",
        missing.display()
    );
    assert!(out.stderr.contains(&expected), "{out}");
}

#[tokio::test]
async fn quiet_still_shows_a_warning_that_changes_what_runs() {
    let env = Env::new();
    let prompts = env.root().join("my_prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(
        prompts.join("write_pome.yaml"),
        "- role: user\n  content: x\n",
    )
    .unwrap();
    let mut cmd = demo(&env, &prompts);
    cmd.arg("-q");
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert_eq!(out.stdout, "", "no result line under -q\n{out}");
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "the override that overrides nothing, and nothing else\n{out}"
    );
    assert!(out.stderr.contains("matches no prompt"), "{out}");
}
