//! `cargo xtask tidy`: repository checks that clippy and rustc do not make, also run as a
//! `#[test]` so `cargo test --workspace` enforces them.
//!
//! - every crate under `crates/` has a `README.md` with a ```` ```rust ```` example (it is
//!   the crate doc, so the example runs as a doctest);
//! - no library source file calls `println!`/`eprintln!` (binaries print; libraries report
//!   through `tracing` or a sink). `src/main.rs`, `src/bin/`, comments, and a file that
//!   opts out explicitly with `allow(clippy::print_stdout)` / `allow(clippy::print_stderr)`
//!   (the same opt-out clippy honours) are exempt.

use std::path::{Path, PathBuf};

/// Every problem found, one readable line each.
pub(crate) fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    for dir in &crates {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match std::fs::read_to_string(dir.join("README.md")) {
            Err(_) => problems.push(format!("crates/{name}: no README.md")),
            Ok(readme) if !readme.contains("```rust") => {
                problems.push(format!("crates/{name}/README.md: no ```rust example"));
            }
            Ok(_) => {}
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            let rel = file.strip_prefix(dir).unwrap_or(&file);
            if rel == Path::new("src/main.rs") || rel.starts_with("src/bin") {
                continue;
            }
            let text = std::fs::read_to_string(&file)?;
            for (line_no, what) in stray_prints(&text) {
                problems.push(format!(
                    "crates/{name}/{}:{line_no}: {what} in a library",
                    rel.display()
                ));
            }
        }
    }
    Ok(problems)
}

/// `(line, macro)` for each `println!`/`eprintln!` in code that has not opted out.
fn stray_prints(text: &str) -> Vec<(usize, &'static str)> {
    let allow_out = text.contains("allow(clippy::print_stdout");
    let allow_err = text.contains("allow(clippy::print_stderr");
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        // `eprintln!` contains `println!`; look at it first.
        if code.contains("eprintln!") {
            if !allow_err {
                found.push((i + 1, "eprintln!"));
            }
        } else if code.contains("println!") && !allow_out {
            found.push((i + 1, "println!"));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_is_tidy() {
        let problems = check(&crate::repo_root()).unwrap();
        assert!(
            problems.is_empty(),
            "cargo xtask tidy found:\n  {}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn prints_are_found_except_in_comments_and_opted_out_files() {
        assert_eq!(
            stray_prints("fn f() {\n    println!(\"x\");\n}\n"),
            [(2, "println!")]
        );
        assert_eq!(
            stray_prints("let _ = 1; eprintln!(\"x\");"),
            [(1, "eprintln!")]
        );
        assert!(stray_prints("/// println!(\"in a doc\")\n// eprintln!\n").is_empty());
        assert!(
            stray_prints("#[allow(clippy::print_stderr)]\nfn report() { eprintln!(\"x\"); }")
                .is_empty()
        );
        assert_eq!(
            stray_prints("#[allow(clippy::print_stderr)]\nfn f() { println!(\"x\"); }"),
            [(2, "println!")]
        );
    }
}
