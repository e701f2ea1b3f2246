//! The dataset card: `README.md` beside the datasets, written only when a run completed, with
//! the YAML header the Hugging Face Hub reads (licence, language, task, size category, one
//! config per JSONL file), a fields table per dataset, how the data was made (pipeline, steps,
//! the models actually called, prompts by name and hash, the date of the last stored result),
//! the source documents and the known limitations. Nothing in it depends on the machine or the
//! moment of a rerun that sends nothing, so such a rerun writes the same bytes. `atk export`
//! copies it with the datasets into a folder ready to publish.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use atk_state::Store;

use crate::summary::RunSummary;

/// File name of the dataset card in the output dir.
pub(crate) const CARD_FILE: &str = "README.md";

/// Store meta key of the Unix time (ms) of the newest stored result the card names.
const LAST_RESULT_META_KEY: &str = "last_result_at_ms";

/// The dataset's licence as the Hub wants it.
#[derive(Debug, Clone, Default)]
pub(crate) struct License {
    /// A Hub licence id, or `other`.
    pub(crate) id: String,
    /// With `other`: the licence's name.
    pub(crate) name: String,
    /// With `other`: a link to its text.
    pub(crate) link: String,
}

/// The source documents the rows came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sources {
    /// Distinct documents.
    pub(crate) documents: u64,
    /// Documents per file extension.
    pub(crate) formats: BTreeMap<String, u64>,
    /// Rows whose source was not recorded.
    pub(crate) unrecorded_rows: u64,
}

/// What the card is made from.
#[derive(Debug, Clone, Default)]
pub(crate) struct CardFacts {
    /// Pipeline name.
    pub(crate) pipeline: String,
    /// Datasets (path relative to the output dir, rows, fields of the first row).
    pub(crate) datasets: Vec<(String, u64, Vec<Field>)>,
    pub(crate) license: License,
    /// Language codes.
    pub(crate) language: Vec<String>,
    /// The source documents' licence as the config states it (empty: not stated).
    pub(crate) source_license: String,
    /// `(label, model, mode)` of each engine that was called in some run.
    pub(crate) engines: Vec<(String, String, String)>,
    /// True when an engine called was the mock.
    pub(crate) mock: bool,
    /// Steps in chain order, with results stored (every run).
    pub(crate) steps: Vec<(String, u64)>,
    /// Chunk size in tokens, when the runner chunked the inputs.
    pub(crate) chunk_size: Option<usize>,
    /// `(file name, built-in or custom, digest)` of each prompt used.
    pub(crate) prompts: Vec<(String, &'static str, String)>,
    /// `YYYY-MM-DD` of the newest stored result.
    pub(crate) last_result: Option<String>,
    pub(crate) sources: Option<Sources>,
    /// Total cost over every run, USD.
    pub(crate) cost_usd: f64,
    /// Known limitations, one line each.
    pub(crate) limitations: Vec<String>,
    /// `meta_datagen_include_all`: which recorded exchanges the meta datasets hold.
    pub(crate) meta_include_all: bool,
}

/// One field of a dataset row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) description: String,
}

/// The warning for a card that would name no licence (`other` without a name), if so.
pub(crate) fn license_warning(common: &crate::config::CommonConfig) -> Option<String> {
    (common.dataset_license == "other" && common.dataset_license_name.trim().is_empty()).then(|| {
        "`dataset_license` is `other` and `dataset_license_name` is empty: the dataset card will name no licence \
         (the Hugging Face Hub asks for one); set `dataset_license` to a Hub licence id (e.g. cc-by-4.0) or name \
         yours in `dataset_license_name` (and `dataset_license_link`)"
            .to_string()
    })
}

/// Gathers the facts and writes the card (for a run that completed); never fails the run.
pub(crate) fn write(
    summary: &RunSummary,
    settings: &crate::settings::Settings,
    common: &crate::config::CommonConfig,
    prompts: Vec<(String, String, String)>,
    store: &dyn Store,
) {
    let output_dir = &settings.output_dir;
    let datasets: Vec<(String, u64, Vec<Field>)> = summary
        .datasets
        .iter()
        .filter_map(|(p, n)| {
            let rel = p.strip_prefix(output_dir).ok()?;
            Some((rel_string(rel), *n, fields_of(p)))
        })
        .collect();
    let called: Vec<&crate::summary::EngineSummary> = summary
        .engines
        .iter()
        .filter(|e| e.requests_all_runs > 0 || e.cost_usd_all_runs > 0.0)
        .collect();
    let engines = settings
        .engines
        .iter()
        .filter(|e| called.iter().any(|c| c.label == e.label))
        .map(|e| {
            (
                e.label.clone(),
                e.model.clone(),
                format!("{:?}", e.mode).to_lowercase(),
            )
        })
        .collect();
    let mut steps: Vec<(String, u64)> = Vec::new();
    for st in &summary.steps {
        if !steps.iter().any(|(s, _)| s == &st.step) {
            steps.push((st.step.clone(), st.done + st.dropped + st.already_done));
        }
    }
    let mut limitations = Vec::new();
    for st in &summary.steps {
        // Most common first; ties by reason, so the card does not depend on arrival order.
        let mut drops: Vec<&crate::summary::FailureSummary> = st.drops.iter().collect();
        drops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        let mut failures: Vec<&crate::summary::FailureSummary> = st.failures.iter().collect();
        failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        for d in drops {
            limitations.push(format!(
                "step `{}` dropped {} item{}: {}",
                st.step,
                d.count,
                plural(d.count),
                d.reason
            ));
        }
        for f in failures {
            limitations.push(format!(
                "step `{}`: {} item{} failed and are left out ({}: {})",
                st.step,
                f.count,
                plural(f.count),
                f.kind,
                f.reason
            ));
        }
    }
    for d in &summary.dropped_rows {
        let file = d
            .file
            .strip_prefix(output_dir)
            .map(rel_string)
            .unwrap_or_default();
        limitations.push(format!(
            "`{file}`: {} row{} left out: {}",
            d.count,
            plural(d.count),
            d.reason
        ));
    }
    let facts = CardFacts {
        pipeline: summary.pipeline.clone(),
        datasets,
        license: License {
            id: common.dataset_license.clone(),
            name: common.dataset_license_name.clone(),
            link: common.dataset_license_link.clone(),
        },
        language: common
            .dataset_language
            .split(',')
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        source_license: common.source_license.clone(),
        mock: called.iter().any(|e| e.mock),
        engines,
        steps,
        chunk_size: settings.read_files_manually.then_some(common.chunk_size),
        prompts: prompts
            .into_iter()
            .map(|(name, source, digest)| {
                let kind = if source.starts_with("built-in") {
                    "built-in"
                } else {
                    "custom file"
                };
                (name, kind, digest)
            })
            .collect(),
        last_result: last_result_date(store, summary),
        sources: sources_of(&summary.datasets),
        cost_usd: summary.engines.iter().map(|e| e.cost_usd_all_runs).sum(),
        limitations,
        meta_include_all: common.meta_datagen_include_all,
    };
    let card = render(&facts);
    // A rerun that changed nothing leaves the card as it was (same inode, same mtime).
    if let Err(e) =
        crate::dataset::write_text_if_changed(&output_dir.join(CARD_FILE), card.trim_end())
    {
        tracing::warn!(error = %e, "could not write the dataset card");
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn rel_string(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "/")
}

/// The date of the newest stored result: kept in store meta, moved to now when this run stored
/// results; a store from before the key is scanned once.
fn last_result_date(store: &dyn Store, summary: &RunSummary) -> Option<String> {
    let stored_now = summary.steps.iter().any(|s| s.done + s.dropped > 0);
    let recorded = store
        .meta(LAST_RESULT_META_KEY)
        .ok()
        .flatten()
        .and_then(|v| v.as_u64());
    let at = match (stored_now, recorded) {
        (true, _) => Some(atk_state::now_ms()),
        (false, Some(at)) => Some(at),
        (false, None) => summary
            .steps
            .iter()
            .flat_map(|s| store.results(&s.step))
            .filter_map(Result::ok)
            .map(|(_, r)| r.stored_at_ms)
            .max(),
    }?;
    if recorded != Some(at) {
        // Durable with the runner's flush after the card.
        let _ = store.stage_meta(LAST_RESULT_META_KEY, &at.into());
    }
    Some(civil_date(at))
}

/// `YYYY-MM-DD` (UTC) of a Unix time in ms. Hand-written (Howard Hinnant's days-to-civil) to
/// avoid a date crate for one line of the card.
pub(crate) fn civil_date(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The fields of a dataset's first row.
fn fields_of(path: &Path) -> Vec<Field> {
    let first = std::fs::File::open(path)
        .ok()
        .and_then(|f| std::io::BufReader::new(f).lines().next())
        .and_then(Result::ok)
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
    let Some(serde_json::Value::Object(row)) = first else {
        return Vec::new();
    };
    row.iter()
        .map(|(name, value)| {
            let (kind, description) = match name.as_str() {
                "conversations" => (
                    "list of {from, value}".to_string(),
                    "the conversation: an optional `system` turn, then `human` and `gpt` turns alternating, from `human` to `gpt`".to_string(),
                ),
                "messages" => (
                    "list of {role, content}".to_string(),
                    "the conversation: an optional `system` message, then `user` and `assistant` messages alternating, from `user` to `assistant`".to_string(),
                ),
                "text" => ("string".to_string(), "the text".to_string()),
                _ => (json_kind(value).to_string(), String::new()),
            };
            Field {
                name: name.clone(),
                kind,
                description,
            }
        })
        .collect()
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "object",
    }
}

/// The source documents named in the datasets' sidecars (`None` when no dataset has one).
/// Each sidecar is read whole and its lines kept as slices of it: most are a plain JSON string
/// or `null`, read without a JSON parser (a 100 k-row sidecar took ~80 ms through serde_json
/// per line, a tenth of a rerun with nothing to do).
fn sources_of(datasets: &[(PathBuf, u64)]) -> Option<Sources> {
    let texts: Vec<String> = datasets
        .iter()
        .filter_map(|(path, _)| std::fs::read_to_string(crate::layout::row_sources_path(path)).ok())
        .collect();
    if texts.is_empty() {
        return None;
    }
    let mut docs: std::collections::HashSet<std::borrow::Cow<'_, str>> =
        std::collections::HashSet::new();
    let mut unrecorded = 0u64;
    for line in texts.iter().flat_map(|t| t.lines()) {
        let plain = line
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .filter(|l| !l.contains(['\\', '"']));
        let doc = match plain {
            Some(doc) => Some(std::borrow::Cow::Borrowed(doc)),
            None => serde_json::from_str::<Option<String>>(line)
                .ok()
                .flatten()
                .map(std::borrow::Cow::Owned),
        };
        match doc {
            Some(doc) => {
                docs.insert(doc);
            }
            None => unrecorded += 1,
        }
    }
    let mut formats = BTreeMap::new();
    for doc in &docs {
        let ext = Path::new(doc.as_ref())
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "no extension".into());
        *formats.entry(ext).or_insert(0) += 1;
    }
    Some(Sources {
        documents: docs.len() as u64,
        formats,
        unrecorded_rows: unrecorded,
    })
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

/// Renders the card.
pub(crate) fn render(f: &CardFacts) -> String {
    let rows = f.datasets.iter().map(|(_, n, _)| *n).max().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "---");
    let _ = writeln!(s, "license: {}", yaml_scalar(&f.license.id));
    if f.license.id == "other" {
        if !f.license.name.is_empty() {
            let _ = writeln!(s, "license_name: {}", yaml_scalar(&f.license.name));
        }
        if !f.license.link.is_empty() {
            let _ = writeln!(s, "license_link: {}", yaml_scalar(&f.license.link));
        }
    }
    if !f.language.is_empty() {
        let _ = writeln!(s, "language:");
        for l in &f.language {
            let _ = writeln!(s, "- {}", yaml_scalar(l));
        }
    }
    let _ = writeln!(s, "task_categories:\n- text-generation");
    let _ = writeln!(
        s,
        "pretty_name: {}",
        yaml_scalar(&format!("{} output", f.pipeline))
    );
    let _ = writeln!(s, "size_categories:\n- {}", size_category(rows));
    let _ = writeln!(
        s,
        "tags:\n- synthetic\n- atk\n- {}",
        yaml_scalar(&f.pipeline)
    );
    if !f.datasets.is_empty() {
        let _ = writeln!(s, "configs:");
        for (i, (rel, _, _)) in f.datasets.iter().enumerate() {
            let _ = writeln!(s, "- config_name: {}", yaml_scalar(&config_name(rel)));
            let _ = writeln!(
                s,
                "  data_files:\n  - split: train\n    path: {}",
                yaml_scalar(rel)
            );
            if i == 0 {
                let _ = writeln!(s, "  default: true");
            }
        }
    }
    let _ = writeln!(s, "---\n");
    let _ = writeln!(s, "# {} output\n", f.pipeline);
    let _ = writeln!(
        s,
        "Synthetic data made by the atk pipeline `{}`.",
        f.pipeline
    );
    if f.mock {
        let _ = writeln!(
            s,
            "\n**Made with the MOCK engine: the replies are fake, deterministic text. This is a demo, not training data.**"
        );
    }

    let _ = writeln!(s, "\n## Files\n\n| file | rows |\n|---|---|");
    for (rel, n, _) in &f.datasets {
        let _ = writeln!(s, "| `{rel}` | {n} |");
    }
    for (rel, _, fields) in &f.datasets {
        if fields.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n### Fields of `{rel}`\n\n| field | type | description |\n|---|---|---|"
        );
        for field in fields {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                field.name, field.kind, field.description
            );
        }
    }

    if f.datasets
        .iter()
        .any(|(rel, _, _)| rel.starts_with("meta_datagen/"))
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

    let _ = writeln!(s, "\n## How it was made\n");
    let steps: Vec<String> = f.steps.iter().map(|(st, _)| format!("`{st}`")).collect();
    let _ = writeln!(
        s,
        "Pipeline `{}`{}.",
        f.pipeline,
        if steps.is_empty() {
            String::new()
        } else {
            format!(", steps {}", steps.join(" → "))
        }
    );
    if let Some(chunk) = f.chunk_size {
        let _ = writeln!(
            s,
            "The source documents were cut into chunks of at most {chunk} tokens."
        );
    }
    if let Some(date) = &f.last_result {
        let _ = writeln!(s, "The newest result was stored on {date}.");
    }
    if !f.engines.is_empty() {
        let _ = writeln!(s, "\n| engine | model | mode |\n|---|---|---|");
        for (label, model, mode) in &f.engines {
            let _ = writeln!(s, "| {label} | `{model}` | {mode} |");
        }
    }
    let _ = writeln!(
        s,
        "\nTotal cost over every run: ${:.4} (from the configured prices).",
        f.cost_usd
    );
    if !f.steps.is_empty() {
        let _ = writeln!(s, "\n| step | results stored |\n|---|---|");
        for (st, n) in &f.steps {
            let _ = writeln!(s, "| {st} | {n} |");
        }
    }
    if !f.prompts.is_empty() {
        let _ = writeln!(
            s,
            "\n| prompt | kind | sha-256 (first 16 hex digits) |\n|---|---|---|"
        );
        for (name, kind, digest) in &f.prompts {
            let _ = writeln!(s, "| `{name}` | {kind} | `{digest}` |");
        }
    }

    let _ = writeln!(s, "\n## Source documents\n");
    match &f.sources {
        Some(src) => {
            let formats: Vec<String> = src
                .formats
                .iter()
                .map(|(ext, n)| format!("{ext} ({n})"))
                .collect();
            let _ = writeln!(
                s,
                "The rows come from {} source document{}{}.",
                src.documents,
                plural(src.documents),
                if formats.is_empty() {
                    String::new()
                } else {
                    format!(": {}", formats.join(", "))
                }
            );
            if src.unrecorded_rows > 0 {
                let _ = writeln!(
                    s,
                    "{} rows have no recorded source document.",
                    src.unrecorded_rows
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "Which source document each row comes from was not recorded."
            );
        }
    }
    if f.source_license.is_empty() {
        let _ = writeln!(
            s,
            "The source documents' licence is not stated (config key `source_license`)."
        );
    } else {
        let _ = writeln!(s, "Licence of the source documents: {}.", f.source_license);
    }

    let mut limitations = f.limitations.clone();
    if f.mock {
        limitations.insert(
            0,
            "the replies come from the mock engine: fake text, not a model's".to_string(),
        );
    }
    let _ = writeln!(s, "\n## Known limitations\n");
    if limitations.is_empty() {
        let _ = writeln!(s, "None recorded.");
    }
    for l in &limitations {
        let _ = writeln!(s, "- {l}");
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
    fn sources_are_read_from_plain_escaped_and_null_sidecar_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(
            crate::layout::row_sources_path(&a),
            "\"x/one.txt\"\n\"x/one.txt\"\nnull\n\"we\\\"ird.md\"\n",
        )
        .unwrap();
        std::fs::write(crate::layout::row_sources_path(&b), "\"two.PDF\"\nnull\n").unwrap();
        let got = sources_of(&[(a, 4), (b, 2), (dir.path().join("none.jsonl"), 1)]).unwrap();
        assert_eq!(got.documents, 3);
        assert_eq!(got.unrecorded_rows, 2);
        let formats: Vec<(&str, u64)> = got.formats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(formats, [("md", 1), ("pdf", 1), ("txt", 1)]);
        assert!(sources_of(&[(dir.path().join("none.jsonl"), 1)]).is_none());
    }

    fn facts() -> CardFacts {
        CardFacts {
            pipeline: "factual-qa".into(),
            datasets: vec![
                (
                    "sharegpt_format.jsonl".into(),
                    1200,
                    vec![Field {
                        name: "conversations".into(),
                        kind: "list of {from, value}".into(),
                        description: "the conversation".into(),
                    }],
                ),
                (
                    "meta_datagen/judge_details_sharegpt.jsonl".into(),
                    7,
                    vec![],
                ),
            ],
            license: License {
                id: "other".into(),
                name: "demo-licence".into(),
                link: String::new(),
            },
            language: vec!["en".into()],
            engines: vec![("small".into(), "mock".into(), "mock".into())],
            mock: true,
            prompts: vec![("judge.yaml".into(), "built-in", "0123456789abcdef".into())],
            ..Default::default()
        }
    }

    #[test]
    fn card_header_snapshot() {
        let card = render(&facts());
        let header: String = card.split("---\n").nth(1).unwrap_or_default().to_string();
        insta::assert_snapshot!(header, @r#"
        license: other
        license_name: demo-licence
        language:
        - en
        task_categories:
        - text-generation
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
        "#);
        assert!(card.contains("MOCK engine"), "{card}");
        assert!(
            card.contains("| `judge.yaml` | built-in | `0123456789abcdef` |"),
            "{card}"
        );
        assert!(
            card.contains("### Fields of `sharegpt_format.jsonl`"),
            "{card}"
        );
        assert!(
            card.contains("- the replies come from the mock engine"),
            "{card}"
        );
        assert!(!card.contains("chunks of at most"), "no chunking: {card}");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400_000), "2000-02-29");
        assert_eq!(civil_date(1_796_083_200_000), "2026-12-01");
    }
}
