//! Just enough reading of `Cargo.toml` files for xtask: the names a manifest declares and
//! its bench targets. Hand-written (a dozen lines) instead of pulling a TOML parser into
//! xtask, which must stay quick to compile; it reads `key = "value"` lines per section.

use std::path::{Path, PathBuf};

/// `(section, key, value)` for every `key = "string"` line of a manifest.
fn string_entries(manifest: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if let Some(value) = value.strip_prefix('"').and_then(|v| v.split('"').next()) {
            out.push((section.clone(), key.trim().to_owned(), value.to_owned()));
        }
    }
    out
}

/// Package, lib and bin names a manifest declares.
pub(crate) fn declared_names(manifest: &str) -> Vec<String> {
    string_entries(manifest)
        .into_iter()
        .filter(|(section, key, _)| {
            key == "name" && matches!(section.as_str(), "package" | "lib" | "bin")
        })
        .map(|(_, _, value)| value)
        .collect()
}

/// The `[package]` name a manifest declares, if any.
pub(crate) fn package_name(manifest: &str) -> Option<String> {
    string_entries(manifest)
        .into_iter()
        .find(|(section, key, _)| section == "package" && key == "name")
        .map(|(_, _, value)| value)
}

/// Bench targets of the package in `dir`: `[[bench]]` names plus `benches/*.rs` stems.
pub(crate) fn bench_targets(dir: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let mut names: Vec<String> = string_entries(&manifest)
        .into_iter()
        .filter(|(section, key, _)| section == "bench" && key == "name")
        .map(|(_, _, value)| value)
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir.join("benches")) {
        for entry in entries.flatten() {
            let path = entry.path();
            let stem = if path.extension().is_some_and(|e| e == "rs") {
                path.file_stem().map(|s| s.to_string_lossy().into_owned())
            } else if path.join("main.rs").is_file() {
                path.file_name().map(|s| s.to_string_lossy().into_owned())
            } else {
                None
            };
            names.extend(stem);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Manifests of the workspace members: `crates/*`, `pipelines/*`, `xtask`, `tests`.
pub(crate) fn member_manifests(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["crates", "pipelines"] {
        if let Ok(entries) = std::fs::read_dir(root.join(group)) {
            for entry in entries.flatten() {
                out.push(entry.path().join("Cargo.toml"));
            }
        }
    }
    out.push(root.join("xtask/Cargo.toml"));
    out.push(root.join("tests/Cargo.toml"));
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_lib_and_bin_names_but_not_dependencies() {
        let manifest = r#"
[package]
name = "example-pipeline"
description = "x"

[dependencies]
name = "not-a-name"
atk-cli = { workspace = true }

[[bin]]
name = "example"
path = "src/main.rs"

[[bench]]
name = "chain"
"#;
        assert_eq!(declared_names(manifest), ["example-pipeline", "example"]);
    }
}
