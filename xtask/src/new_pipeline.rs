//! `cargo xtask new-pipeline NAME`: a new pipeline crate under `pipelines/NAME`, rendered
//! from `xtask/templates/` (compiled into xtask), that builds and passes its test as is.
//!
//! The templates mirror `pipelines/example`; placeholders are plain `__WORD__` markers
//! replaced by string substitution (a template engine would be one more dependency for
//! xtask to compile, and the templates themselves contain `{...}` prompt placeholders and
//! Rust braces that must pass through untouched).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::manifest;

/// Every file of a new pipeline: path inside `pipelines/NAME`, template source.
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/Cargo.toml.tmpl")),
    ("README.md", include_str!("../templates/README.md.tmpl")),
    ("src/lib.rs", include_str!("../templates/lib.rs.tmpl")),
    ("src/main.rs", include_str!("../templates/main.rs.tmpl")),
    ("config.yaml", include_str!("../templates/config.yaml.tmpl")),
    ("demo.yaml", include_str!("../templates/demo.yaml.tmpl")),
    (
        "prompts/generate.yaml",
        include_str!("../templates/generate.yaml.tmpl"),
    ),
    (
        "prompts/generate.txt",
        include_str!("../templates/generate.txt.tmpl"),
    ),
    (
        "inputs/sample.txt",
        include_str!("../templates/sample.txt.tmpl"),
    ),
    ("tests/smoke.rs", include_str!("../templates/smoke.rs.tmpl")),
];

/// Names cargo or rustc refuse for a package or binary, or that shadow a built-in crate.
const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "proc_macro",
    "proc-macro",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Checks that `name` is usable as a crate, binary and directory name.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("the name is empty".to_owned());
    };
    if !first.is_ascii_lowercase() {
        return Err(format!("`{name}` must start with a lowercase letter (a-z)"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{name}` contains `{bad}`; use lowercase letters, digits, '-' and '_'"
        ));
    }
    if name.len() > 64 {
        return Err(format!("`{name}` is longer than 64 characters"));
    }
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is reserved by Rust or cargo"));
    }
    Ok(())
}

/// Checks that no pipeline directory and no workspace package, lib or binary uses `name`
/// (comparing with `-` and `_` treated alike, as crate names are).
pub(crate) fn check_free(root: &Path, name: &str) -> Result<(), String> {
    let dir = root.join("pipelines").join(name);
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let norm = |s: &str| s.replace('-', "_");
    for manifest_path in manifest::member_manifests(root) {
        let text = std::fs::read_to_string(&manifest_path).unwrap_or_default();
        if let Some(taken) = manifest::declared_names(&text)
            .into_iter()
            .find(|n| norm(n) == norm(name))
        {
            return Err(format!(
                "`{taken}` is already declared by {}",
                manifest_path.display()
            ));
        }
    }
    Ok(())
}

/// Fills the placeholders of one template: `__NAME__` (package and binary name), `__CRATE__`
/// (the library's path, `-` as `_`) and `__TYPE__` (CamelCase, for type names).
fn render(source: &str, name: &str) -> String {
    source
        .replace("__NAME__", name)
        .replace("__CRATE__", &name.replace('-', "_"))
        .replace("__TYPE__", &camel_case(name))
}

/// `my-qa_pipe2` -> `MyQaPipe2`.
fn camel_case(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect::<String>()
        })
        .collect()
}

/// Writes `pipelines/NAME` (all files or none: it is assembled in a temp dir beside it and
/// renamed into place). Returns the new directory.
pub(crate) fn scaffold(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    validate_name(name).map_err(|e| anyhow::anyhow!("invalid pipeline name: {e}"))?;
    check_free(root, name).map_err(|e| anyhow::anyhow!("name `{name}` is taken: {e}"))?;
    let pipelines = root.join("pipelines");
    std::fs::create_dir_all(&pipelines)
        .with_context(|| format!("creating {}", pipelines.display()))?;
    // The temp dir starts with '.', which the `pipelines/*` members glob of cargo ignores.
    let staging = tempfile::Builder::new()
        .prefix(".new-pipeline-")
        .tempdir_in(&pipelines)?;
    for (path, source) in TEMPLATES {
        let dest = staging.path().join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, render(source, name))
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    let dir = pipelines.join(name);
    std::fs::rename(staging.keep(), &dir)
        .with_context(|| format!("moving the new pipeline to {}", dir.display()))?;
    Ok(dir)
}

/// The `new-pipeline` task: scaffold, then (unless `build` is false) build and test it.
pub(crate) fn run(root: &Path, name: &str, build: bool) -> anyhow::Result<()> {
    let dir = scaffold(root, name)?;
    println!("created {}:", dir.display());
    for (path, _) in TEMPLATES {
        println!("  {path}");
    }
    if build {
        println!("building and testing `{name}`...");
        crate::status(crate::cargo().current_dir(root).args(["build", "-p", name]))?;
        crate::status(crate::cargo().current_dir(root).args(["test", "-p", name]))?;
    }
    println!();
    println!("next:");
    println!(
        "  cargo run -p {name} -- --config pipelines/{name}/demo.yaml    # offline, mock engine"
    );
    println!(
        "  then edit pipelines/{name}/src/lib.rs and prompts/, fill in config.yaml, and run it with --config config.yaml"
    );
    if !build {
        println!("  (not built yet: `cargo test -p {name}` checks it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn names_must_be_valid_crate_names() {
        for good in ["poems", "qa-gen", "rp_2", "a"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Poems", "lowercase letter"),
            ("2fast", "lowercase letter"),
            ("-x", "lowercase letter"),
            ("my pipeline", "contains ` `"),
            ("qa.gen", "contains `.`"),
            ("café", "contains `é`"),
            ("test", "reserved"),
            ("fn", "reserved"),
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn taken_names_are_refused_in_this_workspace() {
        // Read-only: an existing pipeline directory, package names, the same with '_'.
        let root = crate::repo_root();
        for taken in [
            "example",
            "example-pipeline",
            "atk-cli",
            "atk_state",
            "xtask",
        ] {
            assert!(check_free(&root, taken).is_err(), "{taken} should be taken");
        }
        assert_eq!(check_free(&root, "surely-not-a-pipeline-yet"), Ok(()));
    }

    #[test]
    fn refused_names_write_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pipelines/poems")).unwrap();
        std::fs::create_dir_all(root.path().join("crates/atk-x")).unwrap();
        std::fs::write(
            root.path().join("crates/atk-x/Cargo.toml"),
            "[package]\nname = \"atk-x\"\n",
        )
        .unwrap();
        for (name, why) in [
            ("poems", "is taken"),
            ("atk_x", "is taken"),
            ("Bad Name", "invalid pipeline name"),
        ] {
            let err = scaffold(root.path(), name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        let entries: Vec<_> = std::fs::read_dir(root.path().join("pipelines"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["poems"]);
        assert!(
            std::fs::read_dir(root.path().join("pipelines/poems"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn templates_leave_no_placeholder_behind() {
        for (path, source) in TEMPLATES {
            let out = render(source, "my-pipe");
            assert!(
                !out.contains("__NAME__")
                    && !out.contains("__CRATE__")
                    && !out.contains("__TYPE__"),
                "{path}"
            );
        }
        assert_eq!(camel_case("my-qa_pipe2"), "MyQaPipe2");
        assert_eq!(camel_case("a"), "A");
        assert!(
            render(include_str!("../templates/Cargo.toml.tmpl"), "my-pipe")
                .contains("name = \"my-pipe\"")
        );
    }

    /// Copies the parts of the workspace a pipeline build needs (no `target/`, no `.git`).
    fn copy_workspace(from: &Path, to: &Path) {
        fn copy_dir(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name();
                // Build output, history, and the pipelines' demo runs are not needed.
                let in_pipeline = from.parent().is_some_and(|p| p.ends_with("pipelines"));
                if name == "target" || name == ".git" || (name == "output" && in_pipeline) {
                    continue;
                }
                let (src, dst) = (entry.path(), to.join(&name));
                if entry.file_type().unwrap().is_dir() {
                    copy_dir(&src, &dst);
                } else {
                    std::fs::copy(&src, &dst).unwrap();
                }
            }
        }
        for file in ["Cargo.toml", "Cargo.lock"] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
        for dir in [
            ".cargo",
            "crates",
            "pipelines",
            "xtask",
            "tests",
            "prompts",
        ] {
            if from.join(dir).exists() {
                copy_dir(&from.join(dir), &to.join(dir));
            }
        }
    }

    /// A target dir of its own for the scaffolded copy, inside this build's target dir
    /// (`<target>/scaffold-check`), so `cargo clean` removes it and reruns reuse it.
    ///
    /// It must not be this build's own target dir: the copy's workspace members get the same
    /// file names as the real ones (cargo's file-name hash leaves the path out) but other
    /// `-C metadata`, so building them there overwrites the real `libatk_*.rlib` files and
    /// breaks later doctests of the real workspace with E0460 ("possibly newer version").
    fn scaffold_target_dir() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let target = exe
            .ancestors()
            .nth(3)
            .expect("test binary lives in <target>/<profile>/deps");
        target.join("scaffold-check")
    }

    /// Scaffolds into a temporary copy of the workspace and tests the new crate there,
    /// offline (`cargo test` builds its library, binary and smoke test).
    #[test]
    fn a_scaffolded_pipeline_builds_and_passes_its_test() {
        let copy = tempfile::tempdir().unwrap();
        copy_workspace(&crate::repo_root(), copy.path());
        let dir = scaffold(copy.path(), "scaffold-check").unwrap();
        assert!(dir.join("src/lib.rs").is_file() && dir.join("prompts/generate.yaml").is_file());
        let started = std::time::Instant::now();
        let cargo = || {
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.current_dir(copy.path())
                .env("CARGO_TARGET_DIR", scaffold_target_dir());
            cmd
        };
        let args = ["test", "-p", "scaffold-check", "--offline"];
        let out = cargo().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} failed in the scaffolded copy:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("scaffold test took {:.0?}", started.elapsed());
    }
}
