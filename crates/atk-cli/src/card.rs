//! The dataset card: `README.md` beside the datasets, with the YAML header a dataset hub reads
//! (licence, size category, one config per JSONL file), then what made the data: pipeline,
//! models, engine settings, counts, cost and the prompts' hashes. The output folder can then be
//! uploaded as it is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::summary::RunSummary;

/// File name of the dataset card in the output dir.
pub(crate) const CARD_FILE: &str = "README.md";

/// What the card is made from.
pub(crate) struct CardFacts<'a> {
    pub(crate) summary: &'a RunSummary,
    pub(crate) output_dir: &'a Path,
    pub(crate) license: &'a str,
    /// `(label, model, mode)` of each engine.
    pub(crate) engines: Vec<(String, String, String)>,
    pub(crate) concurrency_limit: usize,
    pub(crate) chunk_size: usize,
    /// `(file name, source, digest)` of each prompt used.
    pub(crate) prompts: Vec<(String, String, String)>,
    /// `meta_datagen_include_all`: which recorded exchanges the meta datasets hold.
    pub(crate) meta_include_all: bool,
}

/// The hub's size category for a number of rows.
fn size_category(rows: u64) -> &'static str {
    match rows {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        1_000_000..10_000_000 => "1M<n<10M",
        _ => "10M<n<100M",
    }
}

/// A config name from a dataset path: its path under the output dir, `/` and `.` made `_`.
fn config_name(rel: &Path) -> String {
    let stem = rel.with_extension("");
    stem.to_string_lossy()
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

/// Renders the card.
pub(crate) fn render(f: &CardFacts<'_>) -> String {
    let datasets: Vec<(PathBuf, u64)> = f
        .summary
        .datasets
        .iter()
        .filter_map(|(p, n)| {
            p.strip_prefix(f.output_dir)
                .ok()
                .map(|r| (r.to_path_buf(), *n))
        })
        .collect();
    let rows = datasets.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "---");
    let _ = writeln!(s, "license: {}", yaml_scalar(f.license));
    let _ = writeln!(
        s,
        "pretty_name: {}",
        yaml_scalar(&format!("{} output", f.summary.pipeline))
    );
    let _ = writeln!(s, "size_categories:\n- {}", size_category(rows));
    let _ = writeln!(
        s,
        "tags:\n- synthetic\n- atk\n- {}",
        yaml_scalar(&f.summary.pipeline)
    );
    if !datasets.is_empty() {
        let _ = writeln!(s, "configs:");
        for (i, (rel, _)) in datasets.iter().enumerate() {
            let _ = writeln!(s, "- config_name: {}", yaml_scalar(&config_name(rel)));
            let _ = writeln!(
                s,
                "  data_files:\n  - split: train\n    path: {}",
                yaml_scalar(&rel.to_string_lossy().replace('\\', "/"))
            );
            if i == 0 {
                let _ = writeln!(s, "  default: true");
            }
        }
    }
    let _ = writeln!(s, "---\n");
    let _ = writeln!(s, "# {} output\n", f.summary.pipeline);
    let _ = writeln!(
        s,
        "Synthetic data made by the atk pipeline `{}`.",
        f.summary.pipeline
    );
    if f.summary.engines.iter().any(|e| e.mock) {
        let _ = writeln!(
            s,
            "\n**Made with the MOCK engine: the replies are fake, deterministic text. This is a demo, not training data.**"
        );
    }
    let _ = writeln!(s, "\n## Files\n\n| file | rows |\n|---|---|");
    for (rel, n) in &datasets {
        let _ = writeln!(
            s,
            "| `{}` | {n} |",
            rel.to_string_lossy().replace('\\', "/")
        );
    }
    if datasets
        .iter()
        .any(|(rel, _)| rel.starts_with("meta_datagen"))
    {
        let which = if f.meta_include_all {
            "every recorded exchange, replies a validator, filter or vote rejected included \
             (`meta_datagen_include_all: true`)"
        } else {
            "only the recorded exchanges of results that were kept, of items that reached the \
             end of the chain (rejected and dropped replies are left out)"
        };
        let _ = writeln!(s, "\nThe meta datasets (`meta_datagen/`) hold {which}.");
    }
    let _ = writeln!(
        s,
        "\n## How it was made\n\n| engine | model | mode |\n|---|---|---|"
    );
    for (label, model, mode) in &f.engines {
        let _ = writeln!(s, "| {label} | `{model}` | {mode} |");
    }
    let _ = writeln!(
        s,
        "\nConcurrency limit {}, chunk size {} tokens.",
        f.concurrency_limit, f.chunk_size
    );
    let cost: f64 = f.summary.engines.iter().map(|e| e.cost_usd_all_runs).sum();
    let _ = writeln!(
        s,
        "Total cost over every run on this output folder: ${cost:.4} (from the configured prices)."
    );
    if !f.summary.steps.is_empty() {
        // Totals over every run on this folder, so a rerun that sends nothing writes the same card.
        let _ = writeln!(s, "\n| step | results stored |\n|---|---|");
        for st in &f.summary.steps {
            let _ = writeln!(
                s,
                "| {} | {} |",
                st.step,
                st.done + st.dropped + st.already_done
            );
        }
    }
    if !f.prompts.is_empty() {
        let _ = writeln!(
            s,
            "\n## Prompts\n\n| prompt | source | sha-256 (first 16 hex digits) |\n|---|---|---|"
        );
        for (name, source, digest) in &f.prompts {
            let _ = writeln!(s, "| `{name}` | {source} | `{digest}` |");
        }
    }
    s
}

/// A YAML scalar: plain when safe, double-quoted (JSON escaping) otherwise.
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '<' | ' '))
        && !text.starts_with([' ', '-', '<'])
        && !text.ends_with(' ');
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_header_snapshot() {
        let summary = RunSummary::new(
            "factual-qa",
            std::time::Duration::from_secs(2),
            &[],
            &[(
                "small".into(),
                "mock".into(),
                true,
                Default::default(),
                Default::default(),
            )],
            vec![
                ("/out/sharegpt_format.jsonl".into(), 1200),
                ("/out/meta_datagen/judge_details_sharegpt.jsonl".into(), 7),
            ],
            None,
        );
        let facts = CardFacts {
            summary: &summary,
            output_dir: Path::new("/out"),
            license: "cc-by-4.0",
            engines: vec![("small".into(), "mock".into(), "mock".into())],
            concurrency_limit: 8,
            chunk_size: 400,
            prompts: vec![(
                "judge.yaml".into(),
                "built-in:judge.yaml".into(),
                "0123456789abcdef".into(),
            )],
            meta_include_all: false,
        };
        let card = render(&facts);
        let header: String = card.split("---\n").nth(1).unwrap_or_default().to_string();
        insta::assert_snapshot!(header, @r"
        license: cc-by-4.0
        pretty_name: factual-qa output
        size_categories:
        - 1K<n<10K
        tags:
        - synthetic
        - atk
        - factual-qa
        configs:
        - config_name: sharegpt_format
          data_files:
          - split: train
            path: sharegpt_format.jsonl
          default: true
        - config_name: meta_datagen_judge_details_sharegpt
          data_files:
          - split: train
            path: meta_datagen/judge_details_sharegpt.jsonl
        ");
        assert!(card.contains("MOCK engine"), "{card}");
        assert!(
            card.contains("| `judge.yaml` | built-in:judge.yaml | `0123456789abcdef` |"),
            "{card}"
        );
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
    }
}
