//! Every fenced `sh` block in README.md, docs/ and the pipelines' READMEs runs as written (in a
//! temp dir holding a copy of `pipelines/` and `prompts/`, with `cargo run -p NAME [--bin BIN] --` standing for
//! the installed binary `NAME`) and exits 0, unless it is marked `sh no-run` (it needs a real
//! API key, a cluster, or minutes). A doc line cannot silently go false.

use std::path::{Path, PathBuf};

use atk_e2e::run;

use crate::RUN_TIMEOUT;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The documents whose `sh` blocks are checked.
fn docs() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    for dir in ["docs", "pipelines"] {
        for entry in walkdir::WalkDir::new(repo().join(dir))
            .max_depth(2)
            .into_iter()
            .filter_map(Result::ok)
        {
            let p = entry.path();
            let in_pipeline = dir == "docs" || p.file_name().is_some_and(|n| n == "README.md");
            if in_pipeline && p.extension().is_some_and(|e| e == "md") {
                files.push(p.to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// `(info string, body)` of each fenced block starting with `sh`.
fn sh_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) if info.split_whitespace().next() == Some("sh") => {
                open = Some((info.to_string(), String::new()));
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The block with `cargo run [--release] -p NAME [--bin BIN] --` made `BIN` (or `NAME`).
fn as_installed(body: &str) -> Result<String, String> {
    let mut out = String::new();
    for line in body.lines() {
        let mut words: Vec<&str> = line.split(' ').collect();
        if let Some(at) = words.iter().position(|w| *w == "cargo") {
            let rest = &words[at + 1..];
            if rest.first() != Some(&"run") {
                return Err(format!("`{line}` needs cargo: mark the block `sh no-run`"));
            }
            let end = rest.iter().position(|w| *w == "--").ok_or(line)?;
            let flags = &rest[1..end];
            let name = flags
                .iter()
                .position(|w| *w == "--bin")
                .or_else(|| flags.iter().position(|w| *w == "-p"))
                .and_then(|i| flags.get(i + 1))
                .ok_or(line)?
                .to_string();
            let tail: Vec<&str> = rest[end + 1..].to_vec();
            words.truncate(at);
            words.push(&name);
            words.extend(tail);
            out.push_str(&words.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

#[tokio::test]
async fn every_sh_block_in_the_docs_runs_as_written_or_is_marked_no_run() {
    let bins = [
        ("atk", env!("CARGO_BIN_EXE_e2e-atk")),
        (
            "example-pipeline",
            env!("CARGO_BIN_EXE_e2e-example-pipeline"),
        ),
        ("factual-qa", env!("CARGO_BIN_EXE_e2e-factual-qa")),
        ("rag-data", env!("CARGO_BIN_EXE_e2e-rag-data")),
        ("rephrase", env!("CARGO_BIN_EXE_e2e-rephrase")),
    ];
    let mut checked = 0;
    for doc in docs() {
        let blocks = sh_blocks(&std::fs::read_to_string(&doc).unwrap());
        if blocks.iter().all(|(info, _)| info.contains("no-run")) {
            continue;
        }
        // Each document's blocks run in order in a fresh copy of the pipelines' folders.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, path) in bins {
            std::os::unix::fs::symlink(path, bin.join(name)).unwrap();
        }
        let sources = ["pipelines", "prompts"].map(|d| walkdir::WalkDir::new(repo().join(d)));
        for entry in sources
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| !e.path().components().any(|c| c.as_os_str() == "output"))
        {
            let rel = entry.path().strip_prefix(repo()).unwrap();
            let to = dir.path().join(rel);
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(entry.path(), &to).unwrap();
            }
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for (info, body) in blocks.iter().filter(|(i, _)| !i.contains("no-run")) {
            let script = as_installed(body)
                .unwrap_or_else(|e| panic!("{}: block `{info}`: {e}", doc.display()));
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-e", "-c", &script])
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("OPENAI_API_KEY")
                .env_remove("RUST_LOG");
            let out = run(cmd, RUN_TIMEOUT).await;
            assert_eq!(
                out.code,
                Some(0),
                "{}: this block does not run as written (mark it `sh no-run` if it is not meant to):\n{script}\n{out}",
                doc.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} blocks ran");
}
