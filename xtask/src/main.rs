//! `cargo xtask`: project chores written in Rust, run by cargo alone.
//!
//! - `cargo xtask new-pipeline NAME [--from SOURCE] [--no-build]`: scaffold `pipelines/NAME`
//!   (from the templates, or a copy of `pipelines/SOURCE`), then build and test it.
//! - `cargo xtask bench [engine|chunk|state|step|pipeline|scale|all]`: run the benchmarks
//!   (`scale` is not part of `all`: it takes tens of minutes).
//! - `cargo xtask tidy`: repository checks (also run by `cargo test`).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a binary: printing is its job

mod bench;
mod bench_pipeline;
mod bench_scale;
mod manifest;
mod new_pipeline;
mod tidy;
mod timed;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  new-pipeline NAME [--from example|factual-qa|rag-data|rephrase] [--no-build]
                                   scaffold pipelines/NAME (default: the example
                                   templates; otherwise a renamed copy of that
                                   pipeline), then build and test it
  bench [engine|chunk|state|step|pipeline|all]
                                   run benchmarks (default: all)
  bench scale                      10 k / 100 k / 1 M items: time, peak RSS, store, rerun
  tidy                             check crate READMEs and stray prints";

fn main() -> std::process::ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    let root = workspace_of(&std::env::current_dir().context("reading the current directory")?)?;
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("new-pipeline") => {
            let (mut names, mut from, mut no_build) = (Vec::new(), None, false);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--no-build" => no_build = true,
                    "--help" | "-h" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    "--from" => {
                        from = Some(args.next().with_context(|| {
                            format!(
                                "--from takes a SOURCE ({})",
                                new_pipeline::SOURCES.join(", ")
                            )
                        })?)
                    }
                    _ if arg.starts_with("--from=") => {
                        from = Some(arg["--from=".len()..].to_owned())
                    }
                    _ if arg.starts_with("--") => bail!("unknown option {arg}\n\n{USAGE}"),
                    _ => names.push(arg),
                }
            }
            let [name] = names.as_slice() else {
                bail!("new-pipeline takes one NAME\n\n{USAGE}")
            };
            new_pipeline::run(&root, name, from.as_deref().unwrap_or("example"), !no_build)
        }
        Some("bench") => {
            let what = args.next().unwrap_or_else(|| "all".to_owned());
            bench::run(&root, &what)
        }
        Some("tidy") => {
            let problems = tidy::check(&root)?;
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                bail!(
                    "tidy found {} problem(s):\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                )
            }
        }
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// The atk workspace holding `dir`, found by `cargo locate-project --workspace`. Not the
/// checkout this binary was built from (`CARGO_MANIFEST_DIR`): with a shared
/// `CARGO_TARGET_DIR`, one xtask binary serves every checkout, and a scaffold would land in
/// whichever one built it last.
fn workspace_of(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = cargo()
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .output()
        .context("cannot run cargo locate-project")?;
    if !out.status.success() {
        bail!(
            "{}: not inside a cargo workspace ({}); run cargo xtask from an atk checkout",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let root = manifest
        .parent()
        .context("cargo locate-project gave no folder")?
        .to_path_buf();
    if !root.join("xtask").is_dir() {
        bail!(
            "{}: the workspace there ({}) is not atk's (no xtask/); run cargo xtask from an atk checkout",
            dir.display(),
            root.display()
        );
    }
    Ok(root)
}

/// The workspace the tests run in (their working directory is inside it).
#[cfg(test)]
fn repo_root() -> PathBuf {
    workspace_of(&std::env::current_dir().expect("a working directory")).expect("an atk checkout")
}

/// The cargo that runs us (`$CARGO`), or `cargo` from PATH.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command to completion, failing with its command line when it fails.
fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// The target directory cargo builds into for this workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_one_of_the_current_directory_not_of_the_build() {
        // Another checkout (as with a shared CARGO_TARGET_DIR, where this binary may have been
        // built from a different clone): its own root is found from inside it.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n",
        )
        .unwrap();
        std::fs::create_dir_all(other.path().join("xtask")).unwrap();
        std::fs::create_dir_all(other.path().join("pipelines/deep")).unwrap();
        let found = workspace_of(&other.path().join("pipelines/deep")).unwrap();
        assert_eq!(
            found.canonicalize().unwrap(),
            other.path().canonicalize().unwrap()
        );
        assert_ne!(
            found,
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
        );
        // A workspace that is not atk's is refused rather than written into.
        std::fs::remove_dir(other.path().join("xtask")).unwrap();
        let err = workspace_of(other.path()).unwrap_err().to_string();
        assert!(err.contains("is not atk's"), "{err}");
    }

    #[test]
    fn help_is_an_answer_not_an_error_for_every_task() {
        for args in [
            &["new-pipeline", "--help"][..],
            &["new-pipeline", "-h"],
            &["--help"],
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            assert!(super::run(args.clone()).is_ok(), "{args:?}");
        }
        let unknown = super::run(vec!["new-pipeline".into(), "--frm".into()]);
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown option --frm")
        );
    }
}
