//! `cargo xtask bench [engine|chunk|state|step|pipeline|all]`: builds the test server in
//! release, then runs each crate's bench targets with `ATK_TESTKIT_SERVER` pointing at it,
//! and the whole-pipeline benchmark ([`crate::bench_pipeline`]). Benches print ratios.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::{cargo, manifest, status, target_dir};

const ALL: &[&str] = &["engine", "chunk", "state", "step", "pipeline"];

/// Runs the selected benchmarks; with `all`, runs every one and reports those that failed.
pub(crate) fn run(root: &Path, what: &str) -> anyhow::Result<()> {
    if what == "scale" {
        // Not in `all`: at 1 M items it runs for tens of minutes.
        println!("== bench scale ==");
        return crate::bench_scale::run(root);
    }
    let selected: Vec<&str> = match what {
        "all" => ALL.to_vec(),
        one if ALL.contains(&one) => vec![one],
        other => bail!(
            "unknown bench `{other}`; choose one of {} or all",
            ALL.join(", ")
        ),
    };
    let server = build_testkit_server(root)?;
    let mut failed = Vec::new();
    for bench in selected {
        println!("== bench {bench} ==");
        let result = if bench == "pipeline" {
            crate::bench_pipeline::run(root, &server)
        } else {
            crate_benches(root, bench, &server)
        };
        if let Err(e) = result {
            eprintln!("bench {bench} failed: {e:#}");
            failed.push(bench);
        }
    }
    if !failed.is_empty() {
        bail!("bench(es) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Builds `atk-testkit-server` in release; returns the binary's path.
pub(crate) fn build_testkit_server(root: &Path) -> anyhow::Result<PathBuf> {
    status(cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "atk-testkit",
        "--bin",
        "atk-testkit-server",
    ]))?;
    Ok(target_dir(root).join("release").join(format!(
        "atk-testkit-server{}",
        std::env::consts::EXE_SUFFIX
    )))
}

/// `cargo bench -p atk-NAME --bench ...` for every bench target of the crate.
fn crate_benches(root: &Path, name: &str, server: &Path) -> anyhow::Result<()> {
    let package = format!("atk-{name}");
    let targets = manifest::bench_targets(&root.join("crates").join(&package));
    if targets.is_empty() {
        println!("{package} has no bench target; skipped");
        return Ok(());
    }
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["bench", "-p", &package])
        .env("ATK_TESTKIT_SERVER", server);
    for target in &targets {
        cmd.args(["--bench", target]);
    }
    status(&mut cmd)
}
