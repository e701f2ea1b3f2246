//! `atk export OUTPUT_DIR DEST [--test-fraction F] [--seed S]`: a folder ready for the
//! Hugging Face CLI (`hf upload REPO DEST --repo-type dataset`) holding the datasets, the meta
//! datasets and the card of the last completed run, and nothing else (no store, no cache, no
//! status or summary with absolute paths).
//!
//! The datasets are the ones the card lists (a run writes its card only when it completed, so
//! they are the last complete ones). With `--test-fraction`, each dataset is split into
//! `NAME/train.jsonl` and `NAME/test.jsonl` by a seeded hash of each row's source document
//! (its path relative to `input_dir`, from the sidecar the run keeps beside the dataset): all
//! rows of one document land in the same split. Rows whose source was not recorded (meta
//! datasets, output dirs made before sources were kept) are split by a hash of the row itself,
//! and the export says how many.

use std::io::{BufRead, Write};
use std::path::{Component, Path, PathBuf};

use serde_yaml::Value as Yaml;
use sha2::{Digest, Sha256};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    /// OUTPUT_DIR holds no card: no run completed there.
    #[error(
        "{}: no dataset card (README.md): no run has completed in this folder (a run writes its datasets and card when it exits 0)",
        .0.display()
    )]
    NoCard(PathBuf),
    /// The card's header could not be read.
    #[error("{}: {message}", path.display())]
    BadCard {
        /// The card.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// DEST is not empty.
    #[error("{}: already exists and is not empty; export into a new or empty folder", .0.display())]
    DestNotEmpty(PathBuf),
    /// A bad `--test-fraction`.
    #[error("--test-fraction must be above 0 and below 1, got {0}")]
    BadFraction(f64),
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ExportError {
    /// 2 for bad input, 1 when writing failed.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Io { .. } => 1,
            _ => 2,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Default)]
pub(crate) struct ExportReport {
    /// Each file written under DEST (relative) with its rows.
    pub(crate) files: Vec<(String, u64)>,
    /// Rows split by their own hash because their source document was not recorded.
    pub(crate) unsourced_rows: u64,
}

impl ExportReport {
    /// The lines `atk export` prints.
    pub(crate) fn render(&self, dest: &Path) -> String {
        let mut s = String::new();
        for (file, rows) in &self.files {
            s.push_str(&format!(
                "exported {file} ({rows} {})\n",
                if *rows == 1 { "row" } else { "rows" }
            ));
        }
        s.push_str("exported README.md (the dataset card)\n");
        if self.unsourced_rows > 0 {
            s.push_str(&format!(
                "note: {} rows had no recorded source document (meta datasets, or a run made before sources were kept) and were split row by row\n",
                self.unsourced_rows
            ));
        }
        s.push_str(&format!(
            "next: hf upload REPO {} --repo-type dataset\n",
            dest.display()
        ));
        s
    }
}

/// Exports `output_dir` into `dest` (see the module doc).
pub(crate) fn export(
    output_dir: &Path,
    dest: &Path,
    test_fraction: Option<f64>,
    seed: u64,
) -> Result<ExportReport, ExportError> {
    if let Some(f) = test_fraction
        && !(f > 0.0 && f < 1.0)
    {
        return Err(ExportError::BadFraction(f));
    }
    let card_path = output_dir.join("README.md");
    let card = match std::fs::read_to_string(&card_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExportError::NoCard(output_dir.to_path_buf()));
        }
        Err(e) => {
            return Err(ExportError::Io {
                path: card_path,
                source: e,
            });
        }
    };
    let (mut header, body) = split_card(&card).map_err(|e| ExportError::BadCard {
        path: card_path.clone(),
        message: e,
    })?;
    let datasets = dataset_paths(&header).map_err(|e| ExportError::BadCard {
        path: card_path.clone(),
        message: e,
    })?;
    if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ExportError::DestNotEmpty(dest.to_path_buf()));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ExportError::Io { path: p, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;

    let mut report = ExportReport::default();
    let mut configs = Vec::new();
    for rel in &datasets {
        let from = output_dir.join(rel);
        let name = config_name(rel);
        match test_fraction {
            None => {
                let to = dest.join(rel);
                if let Some(dir) = to.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                std::fs::copy(&from, &to).map_err(io(&from))?;
                report.files.push((rel.clone(), count_lines(&to)?));
                configs.push((name, vec![("train", rel.clone())]));
            }
            Some(fraction) => {
                let stem = rel.strip_suffix(".jsonl").unwrap_or(rel);
                let train = format!("{stem}/train.jsonl");
                let test = format!("{stem}/test.jsonl");
                let (n_train, n_test, unsourced) =
                    split_file(&from, &dest.join(&train), &dest.join(&test), fraction, seed)?;
                report.unsourced_rows += unsourced;
                report.files.push((train.clone(), n_train));
                report.files.push((test.clone(), n_test));
                configs.push((name, vec![("train", train), ("test", test)]));
            }
        }
    }
    set_configs(&mut header, &configs);
    let header_text = serde_yaml::to_string(&header).map_err(|e| ExportError::BadCard {
        path: card_path.clone(),
        message: e.to_string(),
    })?;
    let mut text = format!("---\n{header_text}---\n{body}");
    if let Some(fraction) = test_fraction {
        text.push_str(&format!(
            "\n## Splits\n\n`test` holds about {:.0} % of the source documents, picked by a hash of each \
             row's source document (seed {seed}), so no document has rows in both splits.\n",
            fraction * 100.0
        ));
        if report.unsourced_rows > 0 {
            text.push_str(&format!(
                "{} rows had no recorded source document and were split row by row.\n",
                report.unsourced_rows
            ));
        }
    }
    let card_out = dest.join("README.md");
    std::fs::write(&card_out, text).map_err(io(&card_out))?;
    Ok(report)
}

/// The card's YAML header and the text after it.
fn split_card(card: &str) -> Result<(Yaml, &str), String> {
    let rest = card
        .strip_prefix("---\n")
        .ok_or("the card has no YAML header")?;
    let end = rest
        .find("\n---\n")
        .ok_or("the card's YAML header is not closed")?;
    let header: Yaml =
        serde_yaml::from_str(&rest[..end]).map_err(|e| format!("the card's YAML header: {e}"))?;
    Ok((header, &rest[end + "\n---\n".len()..]))
}

/// The dataset files the card's `configs` list, relative to the output dir.
fn dataset_paths(header: &Yaml) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    let configs = header
        .get("configs")
        .and_then(Yaml::as_sequence)
        .cloned()
        .unwrap_or_default();
    for config in &configs {
        let files = config
            .get("data_files")
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default();
        for file in &files {
            let Some(path) = file.get("path").and_then(Yaml::as_str) else {
                continue;
            };
            let safe = Path::new(path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if !safe {
                return Err(format!(
                    "the card lists `{path}`, which is not a path inside the output dir"
                ));
            }
            if !paths.iter().any(|p| p == path) {
                paths.push(path.to_string());
            }
        }
    }
    if paths.is_empty() {
        return Err("the card lists no dataset file (`configs`)".into());
    }
    Ok(paths)
}

/// A config name from a dataset path (the card's own rule: `/` and `.` made `_`).
fn config_name(rel: &str) -> String {
    rel.strip_suffix(".jsonl")
        .unwrap_or(rel)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces the header's `configs` with one entry per dataset and its splits.
fn set_configs(header: &mut Yaml, configs: &[(String, Vec<(&str, String)>)]) {
    let list: Vec<Yaml> = configs
        .iter()
        .enumerate()
        .map(|(i, (name, files))| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("config_name".into(), name.clone().into());
            let files: Vec<Yaml> = files
                .iter()
                .map(|(split, path)| {
                    let mut f = serde_yaml::Mapping::new();
                    f.insert("split".into(), (*split).into());
                    f.insert("path".into(), path.clone().into());
                    Yaml::Mapping(f)
                })
                .collect();
            m.insert("data_files".into(), Yaml::Sequence(files));
            if i == 0 {
                m.insert("default".into(), true.into());
            }
            Yaml::Mapping(m)
        })
        .collect();
    if let Some(map) = header.as_mapping_mut() {
        map.insert("configs".into(), Yaml::Sequence(list));
    }
}

fn count_lines(path: &Path) -> Result<u64, ExportError> {
    let file = std::fs::File::open(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut n = 0;
    for line in std::io::BufReader::new(file).lines() {
        line.map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        n += 1;
    }
    Ok(n)
}

/// True when `key` falls in the test split: the first 8 bytes of SHA-256 over the seed and
/// the key, as a fraction of 2^64, below `fraction`.
fn in_test(key: &str, fraction: f64, seed: u64) -> bool {
    let digest = Sha256::new_with_prefix(format!("atk-split-v1\n{seed}\n"))
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 / 2f64.powi(64)) < fraction
}

/// Splits one dataset by its rows' sources; returns (train rows, test rows, rows without a
/// recorded source).
fn split_file(
    from: &Path,
    train: &Path,
    test: &Path,
    fraction: f64,
    seed: u64,
) -> Result<(u64, u64, u64), ExportError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ExportError::Io { path: p, source }
    };
    let rows = std::io::BufReader::new(std::fs::File::open(from).map_err(io(from))?);
    let sidecar = atk_cli::layout::row_sources_path(from);
    let mut sources = std::fs::File::open(&sidecar)
        .ok()
        .map(|f| std::io::BufReader::new(f).lines());
    let mut outs = Vec::new();
    for path in [train, test] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        outs.push(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(io(path))?,
        ));
    }
    let (mut counts, mut unsourced) = ([0u64; 2], 0u64);
    for row in rows.lines() {
        let row = row.map_err(io(from))?;
        let source = sources
            .as_mut()
            .and_then(Iterator::next)
            .and_then(Result::ok)
            .and_then(|line| serde_json::from_str::<Option<String>>(&line).ok().flatten());
        let key = match &source {
            Some(doc) => format!("doc\n{doc}"),
            None => {
                unsourced += 1;
                format!("row\n{row}")
            }
        };
        let which = usize::from(in_test(&key, fraction, seed));
        writeln!(outs[which], "{row}").map_err(io(if which == 0 { train } else { test }))?;
        counts[which] += 1;
    }
    for (out, path) in outs.into_iter().zip([train, test]) {
        out.into_inner()
            .map_err(|e| ExportError::Io {
                path: path.to_path_buf(),
                source: e.into_error(),
            })?
            .sync_all()
            .map_err(io(path))?;
    }
    Ok((counts[0], counts[1], unsourced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_dir(rows: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let card = "---\nlicense: cc-by-4.0\nconfigs:\n- config_name: sharegpt_format\n  data_files:\n  - split: train\n    path: sharegpt_format.jsonl\n  default: true\n---\n\n# card\n";
        std::fs::write(dir.path().join("README.md"), card).unwrap();
        let data: String = rows.iter().map(|(r, _)| format!("{r}\n")).collect();
        let path = dir.path().join("sharegpt_format.jsonl");
        std::fs::write(&path, data).unwrap();
        let sources: String = rows
            .iter()
            .map(|(_, s)| format!("{}\n", serde_json::to_string(s).unwrap()))
            .collect();
        std::fs::write(atk_cli::layout::row_sources_path(&path), sources).unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("status.json"), "{}").unwrap();
        dir
    }

    #[test]
    fn a_document_never_lands_in_both_splits() {
        let rows: Vec<(String, Option<String>)> = (0..200)
            .map(|i| (format!("{{\"n\":{i}}}"), Some(format!("doc{}.txt", i / 4))))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = rows
            .iter()
            .map(|(r, s)| (r.as_str(), s.as_deref()))
            .collect();
        let src = output_dir(&refs);
        let dest = tempfile::tempdir().unwrap();
        let report = export(src.path(), dest.path(), Some(0.25), 7).unwrap();
        assert_eq!(report.unsourced_rows, 0);
        let read = |split: &str| -> Vec<u64> {
            std::fs::read_to_string(dest.path().join(format!("sharegpt_format/{split}.jsonl")))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        let (train, test) = (read("train"), read("test"));
        assert_eq!(train.len() + test.len(), 200);
        assert!(
            (20..=80).contains(&test.len()),
            "about a quarter of the documents: {}",
            test.len()
        );
        let docs = |rows: &[u64]| -> std::collections::BTreeSet<u64> {
            rows.iter().map(|n| n / 4).collect()
        };
        assert!(docs(&train).is_disjoint(&docs(&test)));
        // Only the datasets and the card: no store, no status.
        let mut names: Vec<String> = std::fs::read_dir(dest.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["README.md", "sharegpt_format"]);
        let card = std::fs::read_to_string(dest.path().join("README.md")).unwrap();
        assert!(card.contains("path: sharegpt_format/test.jsonl"), "{card}");
        assert!(card.contains("split: test"), "{card}");
        // The same seed gives the same split.
        let again = tempfile::tempdir().unwrap();
        export(src.path(), again.path(), Some(0.25), 7).unwrap();
        assert_eq!(
            std::fs::read(again.path().join("sharegpt_format/test.jsonl")).unwrap(),
            std::fs::read(dest.path().join("sharegpt_format/test.jsonl")).unwrap()
        );
    }

    #[test]
    fn without_a_split_the_files_are_copied_and_a_folder_with_no_card_is_refused() {
        let src = output_dir(&[("{\"a\":1}", None)]);
        let dest = tempfile::tempdir().unwrap();
        let out = dest.path().join("export");
        let report = export(src.path(), &out, None, 0).unwrap();
        assert_eq!(report.files, [("sharegpt_format.jsonl".to_string(), 1)]);
        assert!(!out.join(".sharegpt_format.jsonl.sources").exists());
        let err = export(src.path(), &out, None, 0).unwrap_err();
        assert!(matches!(err, ExportError::DestNotEmpty(_)), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = export(empty.path(), &dest.path().join("x"), None, 0).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no run has completed"), "{err}");
        assert!(matches!(
            export(src.path(), &dest.path().join("y"), Some(1.5), 0),
            Err(ExportError::BadFraction(_))
        ));
    }
}
