//! `cargo xtask new-pipeline NAME [--from SOURCE]`: a new pipeline crate under
//! `pipelines/NAME` that builds and passes its tests as is.
//!
//! `--from example` (the default) renders `xtask/templates/` (compiled into xtask). The
//! templates mirror `pipelines/example`; placeholders are plain `__WORD__` markers replaced by
//! string substitution (a template engine would be one more dependency for xtask to compile,
//! and the templates themselves contain `{...}` prompt placeholders and Rust braces that must
//! pass through untouched).
//!
//! `--from rephrase`, `--from factual-qa` (or any other `pipelines/SOURCE` with a manifest)
//! copy that pipeline's crate instead, renaming what names it: the package and binary name,
//! the crate path (`source::` in code), the `Source…` type prefix and `pipelines/SOURCE` paths.
//!
//! About 700 lines with its tests (from line ~420), which build and test every scaffold.

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

/// The sources `--from` is documented with; `example` means the built-in templates.
pub(crate) const SOURCES: &[&str] = &["example", "factual-qa", "rag-data", "rephrase"];

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

/// One renaming of a copied pipeline: `from` becomes `to` where it starts after a character
/// that is not ASCII alphanumeric and `next_ok` accepts the character after it; in Rust code
/// (outside strings and comments of a `.rs` file) it becomes `in_code` instead, when set.
struct Rule {
    from: String,
    to: String,
    in_code: Option<String>,
    next_ok: fn(Option<char>) -> bool,
}

/// Applies `rules` in one pass (a replacement is never matched again), first rule first.
/// `rust`: the text is Rust source, whose strings and `//` comments are told from code
/// line by line (good enough for a pipeline crate; raw strings are not special-cased).
fn rename(text: &str, rules: &[Rule], rust: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut i, mut in_string, mut in_comment, mut prev) = (0, false, false, None::<char>);
    'scan: while let Some(c) = text[i..].chars().next() {
        if !prev.is_some_and(|p| p.is_ascii_alphanumeric()) {
            for rule in rules {
                let end = i + rule.from.len();
                if text[i..].starts_with(&rule.from) && (rule.next_ok)(text[end..].chars().next()) {
                    let code = rust && !in_string && !in_comment;
                    out.push_str(rule.in_code.as_ref().filter(|_| code).unwrap_or(&rule.to));
                    prev = rule.from.chars().next_back();
                    i = end;
                    continue 'scan;
                }
            }
        }
        match c {
            '\n' => (in_string, in_comment) = (false, false),
            '"' if !in_comment && prev != Some('\\') && prev != Some('\'') => {
                in_string = !in_string
            }
            '/' if !in_string && prev == Some('/') => in_comment = true,
            _ => {}
        }
        out.push(c);
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

/// The renamings that turn pipeline `dir` (package `package`) into `name`.
fn rules(dir: &str, package: &str, name: &str) -> Vec<Rule> {
    let word_end: fn(Option<char>) -> bool = |c| !c.is_some_and(|c| c.is_ascii_alphanumeric());
    let crate_of = |n: &str| n.replace('-', "_");
    let mut rules = vec![
        Rule {
            from: format!("pipelines/{dir}"),
            to: format!("pipelines/{name}"),
            in_code: None,
            next_ok: word_end,
        },
        Rule {
            from: format!("{}::", crate_of(package)),
            to: format!("{}::", crate_of(name)),
            in_code: None,
            next_ok: |_| true,
        },
        // The package (and binary) name; in code, where it can only be the crate path.
        Rule {
            from: package.to_owned(),
            to: name.to_owned(),
            in_code: Some(crate_of(name)),
            next_ok: word_end,
        },
        Rule {
            from: crate_of(package),
            to: crate_of(name),
            in_code: None,
            next_ok: word_end,
        },
        // `RephraseConfig`, `FactualQaPipeline`: the type prefix (followed by a capital).
        Rule {
            from: camel_case(dir),
            to: camel_case(name),
            in_code: None,
            next_ok: |c| c.is_some_and(|c| c.is_ascii_uppercase()),
        },
    ];
    rules.dedup_by(|a, b| a.from == b.from);
    rules
}

/// The pipelines `--from` can copy: folders of `pipelines/` with a manifest, sorted.
fn copyable(root: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(root.join("pipelines"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// Writes `pipelines/NAME` from `from` (see the module doc), all files or none: it is
/// assembled in a temp dir beside it and renamed into place. Returns the new directory and
/// the files written (relative to it, sorted).
pub(crate) fn scaffold(
    root: &Path,
    name: &str,
    from: &str,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    validate_name(name).map_err(|e| anyhow::anyhow!("invalid pipeline name: {e}"))?;
    let source = root.join("pipelines").join(from);
    if from != "example" && !source.join("Cargo.toml").is_file() {
        let mut have = copyable(root);
        have.retain(|p| p != "example");
        let also = if have.is_empty() {
            String::new()
        } else {
            format!(", {}", have.join(", "))
        };
        let why = if from == "factual-qa" {
            "it is not in this checkout yet (it is being written on main; merge main first)"
                .to_owned()
        } else {
            format!("there is no {}", source.join("Cargo.toml").display())
        };
        anyhow::bail!(
            "cannot start from `{from}`: {why}; available: example (the templates){also}"
        );
    }
    check_free(root, name).map_err(|e| anyhow::anyhow!("name `{name}` is taken: {e}"))?;
    let pipelines = root.join("pipelines");
    std::fs::create_dir_all(&pipelines)
        .with_context(|| format!("creating {}", pipelines.display()))?;
    // The temp dir starts with '.', which the `pipelines/*` members glob of cargo ignores.
    let staging = tempfile::Builder::new()
        .prefix(".new-pipeline-")
        .tempdir_in(&pipelines)?;
    let mut files = Vec::new();
    if from == "example" {
        for (path, source) in TEMPLATES {
            write_file(&staging.path().join(path), render(source, name).as_bytes())?;
            files.push((*path).to_owned());
        }
    } else {
        files = copy_pipeline(&source, name, staging.path())?;
    }
    files.sort();
    let dir = pipelines.join(name);
    std::fs::rename(staging.keep(), &dir)
        .with_context(|| format!("moving the new pipeline to {}", dir.display()))?;
    Ok((dir, files))
}

/// Copies the pipeline crate in `source` to `to` as pipeline `name` (see the module doc).
/// Returns the files written, relative to `to`.
fn copy_pipeline(source: &Path, name: &str, to: &Path) -> anyhow::Result<Vec<String>> {
    let manifest_path = source.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let package = manifest::package_name(&manifest)
        .with_context(|| format!("{} names no package", manifest_path.display()))?;
    let dir = source.file_name().unwrap_or_default().to_string_lossy();
    let mut files = Vec::new();
    copy_renamed(source, source, to, &rules(&dir, &package, name), &mut files)?;
    Ok(files)
}

fn write_file(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))
}

/// Copies `dir` (inside pipeline folder `top`) to `to`, renaming inside text files; the
/// pipeline's `output/` and `target/` folders are left out.
fn copy_renamed(
    top: &Path,
    dir: &Path,
    to: &Path,
    rules: &[Rule],
    files: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(top).unwrap_or(&path);
        if entry.file_type()?.is_dir() {
            if rel != Path::new("output") && rel != Path::new("target") {
                copy_renamed(top, &path, &to.join(entry.file_name()), rules, files)?;
            }
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = match String::from_utf8(bytes) {
            Ok(text) => {
                let rust = path.extension().is_some_and(|e| e == "rs");
                rename(&text, rules, rust).into_bytes()
            }
            Err(e) => e.into_bytes(),
        };
        write_file(&to.join(entry.file_name()), &bytes)?;
        files.push(rel.to_string_lossy().replace('\\', "/"));
    }
    Ok(())
}

/// The `new-pipeline` task: scaffold, then (unless `build` is false) build and test it.
pub(crate) fn run(root: &Path, name: &str, from: &str, build: bool) -> anyhow::Result<()> {
    let (dir, files) = scaffold(root, name, from)?;
    println!("created {} (from {from}):", dir.display());
    for path in &files {
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
            let err = scaffold(root.path(), name, "example")
                .unwrap_err()
                .to_string();
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

    #[test]
    fn renaming_a_copy_touches_names_not_words() {
        let copy = rules("rephrase", "rephrase", "my-rephrase");
        let text = "//! `rephrase --config FILE`: see rephrase::main\n\
                    use rephrase::{RephraseConfig};\n\
                    fn rephrase(out: &Path) { rephrase::main() } // calls rephrase\n\
                    env!(\"CARGO_BIN_EXE_rephrase\") \"a \\\"rephrase\\\" run\" pipelines/rephrase/demo.yaml\n\
                    rephrased Rephrase. RephrasePipeline";
        assert_eq!(
            rename(text, &copy, true),
            "//! `my-rephrase --config FILE`: see my_rephrase::main\n\
             use my_rephrase::{MyRephraseConfig};\n\
             fn my_rephrase(out: &Path) { my_rephrase::main() } // calls my-rephrase\n\
             env!(\"CARGO_BIN_EXE_my-rephrase\") \"a \\\"my-rephrase\\\" run\" pipelines/my-rephrase/demo.yaml\n\
             rephrased Rephrase. MyRephrasePipeline",
            "one pass (a new name holding the old one is not renamed twice); crate path in code"
        );
        assert_eq!(
            rename("fn rephrase() {}", &copy, false),
            "fn my-rephrase() {}",
            "only .rs files have code"
        );
        let poems = rules("example", "example-pipeline", "poems");
        assert_eq!(
            rename(
                "example_pipeline::main() \"example-pipeline\" ExampleConfig pipelines/example/x example_heading an example",
                &poems,
                true
            ),
            "poems::main() \"poems\" PoemsConfig pipelines/poems/x example_heading an example"
        );
    }

    #[test]
    fn a_copy_of_the_example_names_itself_everywhere() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("my-copy");
        let example = crate::repo_root().join("pipelines/example");
        let files = copy_pipeline(&example, "my-copy", &dir).unwrap();
        for file in [
            "Cargo.toml",
            "src/lib.rs",
            "src/main.rs",
            "README.md",
            "tests/demo.rs",
        ] {
            assert!(files.contains(&file.to_owned()), "{file}: {files:?}");
        }
        assert!(!files.iter().any(|f| f.starts_with("output/")), "{files:?}");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(read("Cargo.toml").contains("name = \"my-copy\""));
        assert!(read("src/main.rs").contains("my_copy::main()"));
        let lib = read("src/lib.rs");
        assert!(lib.contains("pub struct MyCopyPipeline;") && lib.contains("\"my-copy\""));
        assert!(lib.contains("MyCopyConfig") && lib.contains("example_heading"));
        assert!(read("tests/demo.rs").contains("CARGO_BIN_EXE_my-copy"));
        assert!(read("README.md").contains("pipelines/my-copy/demo.yaml"));
        for f in &files {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            assert!(
                !text.contains("example-pipeline")
                    && !text.contains("example_pipeline")
                    && !text.contains("ExampleConfig")
                    && !text.contains("pipelines/example"),
                "{f} still names the example"
            );
        }
    }

    #[test]
    fn an_unknown_or_absent_source_is_refused_with_the_choices() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pipelines/rephrase")).unwrap();
        std::fs::write(
            root.path().join("pipelines/rephrase/Cargo.toml"),
            "[package]\nname = \"rephrase\"\n",
        )
        .unwrap();
        let err = scaffold(root.path(), "new-one", "factual-qa")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in this checkout yet"), "{err}");
        assert!(
            err.contains("available: example (the templates), rephrase"),
            "{err}"
        );
        let err = scaffold(root.path(), "new-one", "nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot start from `nope`"), "{err}");
        assert!(!root.path().join("pipelines/new-one").exists());
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
        for dir in [".cargo", "crates", "pipelines", "xtask", "tests", "prompts"] {
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

    /// The lines of a failed cargo run that say why: each `error` line with the lines after
    /// it up to the next blank line, or the last 30 lines when there is none.
    fn failure_summary(stderr: &str) -> String {
        let lines: Vec<&str> = stderr.lines().collect();
        let mut picked = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].starts_with("error") {
                while i < lines.len() && !lines[i].trim().is_empty() && picked.len() < 60 {
                    picked.push(lines[i]);
                    i += 1;
                }
                picked.push("");
            }
            i += 1;
        }
        if picked.is_empty() {
            picked = lines[lines.len().saturating_sub(30)..].to_vec();
        }
        picked.join("\n")
    }

    /// What `df` says of the file system holding `dir` (a full disk fails a build half-way).
    fn disk_space(dir: &Path) -> String {
        let probe = if dir.exists() { dir } else { Path::new(".") };
        match Command::new("df").arg("-h").arg(probe).output() {
            Ok(out) => format!(
                "df -h {}:\n{}",
                probe.display(),
                String::from_utf8_lossy(&out.stdout)
            ),
            Err(e) => format!("df could not run: {e}"),
        }
    }

    /// Scaffolds into a temporary copy of the workspace, from the templates and from copies of
    /// `rephrase` and `factual-qa`, and tests the three new crates there, offline (`cargo
    /// test` builds each library, binary and test).
    #[test]
    fn a_scaffolded_pipeline_builds_and_passes_its_test() {
        let copy = tempfile::tempdir().unwrap();
        copy_workspace(&crate::repo_root(), copy.path());
        let (dir, _) = scaffold(copy.path(), "scaffold-check", "example").unwrap();
        assert!(dir.join("src/lib.rs").is_file() && dir.join("prompts/generate.yaml").is_file());
        let (copied, files) = scaffold(copy.path(), "scaffold-copy", "rephrase").unwrap();
        assert!(files.contains(&"tests/demo.rs".to_owned()), "{files:?}");
        assert!(copied.join("src/lib.rs").is_file());
        let (qa, _) = scaffold(copy.path(), "scaffold-qa", "factual-qa").unwrap();
        let lib = std::fs::read_to_string(qa.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct ScaffoldQaPipeline;"));
        let started = std::time::Instant::now();
        let cargo = || {
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.current_dir(copy.path())
                .env("CARGO_TARGET_DIR", scaffold_target_dir())
                // The copy's build has only to pass, not to be debugged: without line tables
                // its binaries are smaller on disk and quicker to link.
                .env("CARGO_PROFILE_DEV_DEBUG", "false")
                .env("CARGO_PROFILE_TEST_DEBUG", "false");
            cmd
        };
        let args = [
            "test",
            "-p",
            "scaffold-check",
            "-p",
            "scaffold-copy",
            "-p",
            "scaffold-qa",
            "--offline",
        ];
        let out = cargo().args(args).output().unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // The cause first: a CI log shows the head and the tail of a long failure, and
            // the full build log puts the error in the middle.
            panic!(
                "cargo {args:?} failed in the scaffolded copy:\n{}\n{}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
                failure_summary(&stderr),
                disk_space(&scaffold_target_dir()),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        eprintln!("scaffold test took {:.0?}", started.elapsed());
    }
}
