#![doc = include_str!("../README.md")]

mod error;
mod extras;
mod jsonl;
mod sharegpt;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use atk_state::{ItemRecord, Store};

pub use error::Error;
pub use jsonl::JsonlFile;
pub use sharegpt::{Completion, Conversation, Turn};

use extras::Extras;

/// A step whose recorded details feed meta datagen: its name (which keys its stored
/// results) and the details key it records under (e.g. `poetry_details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSource {
    /// The step's name, as used in the store.
    pub step: String,
    /// The details key the step records under (what `meta_datagen_keys` lists).
    pub details_key: String,
}

impl MetaSource {
    /// A source for `step` recording under `details_key`.
    pub fn new(step: impl Into<String>, details_key: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            details_key: details_key.into(),
        }
    }
}

/// Which form a meta dataset takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatasetKind {
    /// ShareGPT conversations from recorded exchanges (`<key>_sharegpt.jsonl`).
    Chat,
    /// `{"text": prompt + reply}` lines from recorded exchanges (`<key>_completion.jsonl`).
    Completion,
    /// Conversations rendered from an extras template (`extra_<name>.jsonl`).
    Extra,
}

/// Items left out of a dataset for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipGroup {
    /// Why they were left out (e.g. "missing field `poetry`").
    pub reason: String,
    /// How many were left out for this reason.
    pub count: u64,
    /// The first item left out, to look at.
    pub first_item: String,
}

/// One dataset file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReport {
    /// Its form.
    pub kind: DatasetKind,
    /// The details key or extras template name it came from.
    pub source: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Lines written.
    pub lines: u64,
    /// Items left out, grouped by reason.
    pub skipped: Vec<SkipGroup>,
}

impl DatasetReport {
    /// Total items left out.
    pub fn skipped_count(&self) -> u64 {
        self.skipped.iter().map(|g| g.count).sum()
    }

    fn new(kind: DatasetKind, source: &str, path: PathBuf) -> Self {
        Self {
            kind,
            source: source.to_owned(),
            path,
            lines: 0,
            skipped: Vec::new(),
        }
    }

    fn skip(&mut self, item: &str, reason: String) {
        match self.skipped.iter_mut().find(|g| g.reason == reason) {
            Some(group) => group.count += 1,
            None => self.skipped.push(SkipGroup {
                reason,
                count: 1,
                first_item: item.to_owned(),
            }),
        }
    }
}

/// What [`write_meta_datasets`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaReport {
    /// One entry per file, keys first (chat then completion), then extras, in the order given.
    pub datasets: Vec<DatasetReport>,
}

impl MetaReport {
    /// A few readable lines for the end-of-run summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for d in &self.datasets {
            let _ = write!(out, "{}: {} line(s)", d.path.display(), d.lines);
            if !d.skipped.is_empty() {
                let reasons: Vec<String> = d
                    .skipped
                    .iter()
                    .map(|g| format!("{} x{} (first: {})", g.reason, g.count, g.first_item))
                    .collect();
                let _ = write!(
                    out,
                    ", {} skipped: {}",
                    d.skipped_count(),
                    reasons.join("; ")
                );
            }
            out.push('\n');
        }
        out
    }
}

/// True when `name` can be used as (part of) a dataset file name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Writes the meta datasets under `out_dir` (normally `<output_dir>/meta_datagen/`).
///
/// - For each key in `keys` (`meta_datagen_keys`): `<key>_sharegpt.jsonl` (the recorded
///   messages as ShareGPT turns, then the raw reply as the last `gpt` turn) and
///   `<key>_completion.jsonl` (`{"text": prompt + reply}`), one line per stored result that
///   kept its details, in store item order. A key no step records under, or whose results
///   all lack details (details were off), is an error naming the key.
/// - For each template in `extras` (`meta_datagen_extras`): `extra_<name>.jsonl`, one
///   conversation per item of `final_items` that renders; items that do not (a referenced
///   field is missing) are skipped and counted in the report.
///
/// Every file is written atomically and only after all of them rendered, so an error leaves
/// the previous files in place. Same store and items give byte-identical files.
pub fn write_meta_datasets(
    store: &dyn Store,
    sources: &[MetaSource],
    keys: &[String],
    extras: &[PathBuf],
    final_items: &mut dyn Iterator<Item = ItemRecord>,
    out_dir: &Path,
) -> Result<MetaReport, Error> {
    write_meta_datasets_of(store, sources, keys, extras, final_items, out_dir, None)
}

/// [`write_meta_datasets`] taking, with `only`, the recorded exchanges of kept results (not
/// dropped: by a filter, a vote, a function) of the items in `only` (those that reached the
/// end of the chain), so no rejected reply becomes training data; `None` takes every one.
pub fn write_meta_datasets_of(
    store: &dyn Store,
    sources: &[MetaSource],
    keys: &[String],
    extras: &[PathBuf],
    final_items: &mut dyn Iterator<Item = ItemRecord>,
    out_dir: &Path,
    only: Option<&HashSet<String>>,
) -> Result<MetaReport, Error> {
    // Check everything that can be checked before writing a byte.
    let mut key_steps: Vec<(&str, Vec<&str>)> = Vec::new();
    for key in keys {
        if key_steps.iter().any(|(k, _)| k == key) {
            continue;
        }
        if !valid_name(key) {
            return Err(Error::BadName { name: key.clone() });
        }
        let mut steps: Vec<&str> = Vec::new();
        for source in sources.iter().filter(|s| &s.details_key == key) {
            // A chain run twice registers its steps twice; each step's results count once.
            if !steps.contains(&source.step.as_str()) {
                steps.push(source.step.as_str());
            }
        }
        if steps.is_empty() {
            let mut known: Vec<&str> = sources.iter().map(|s| s.details_key.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(Error::UnknownKey {
                key: key.clone(),
                known,
            });
        }
        key_steps.push((key, steps));
    }
    let extras = Extras::load(extras)?;

    let mut planned: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut plan = |file: String, source: &str| -> Result<PathBuf, Error> {
        let path = out_dir.join(file);
        if let Some(first) = planned.insert(path.clone(), source.to_owned()) {
            return Err(Error::DuplicateOutput {
                path,
                first,
                second: source.to_owned(),
            });
        }
        Ok(path)
    };
    let mut key_paths = Vec::with_capacity(key_steps.len());
    for (key, _) in &key_steps {
        key_paths.push((
            plan(format!("{key}_sharegpt.jsonl"), key)?,
            plan(format!("{key}_completion.jsonl"), key)?,
        ));
    }
    let mut extra_paths = Vec::with_capacity(extras.templates.len());
    for t in &extras.templates {
        extra_paths.push(plan(
            format!("extra_{}.jsonl", t.name),
            &t.path.display().to_string(),
        )?);
    }

    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut pending: Vec<Pending> = Vec::new();

    for ((key, steps), (chat_path, completion_path)) in key_steps.iter().zip(key_paths) {
        let paths = (chat_path, completion_path);
        let (chat, completion) = write_key(store, key, steps, paths, only)?;
        pending.push(chat);
        pending.push(completion);
    }

    let mut extra_files: Vec<Pending> = Vec::with_capacity(extra_paths.len());
    for (t, path) in extras.templates.iter().zip(extra_paths) {
        extra_files.push((
            JsonlFile::create(&path)?,
            DatasetReport::new(DatasetKind::Extra, &t.name, path),
        ));
    }
    if !extra_files.is_empty() {
        for item in final_items {
            for (i, (file, report)) in extra_files.iter_mut().enumerate() {
                match extras.render(i, &item) {
                    Ok(conversation) => {
                        file.write(&conversation)?;
                        report.lines += 1;
                    }
                    Err(reason) => report.skip(&item.id, reason),
                }
            }
        }
    }
    pending.extend(extra_files);

    let mut report = MetaReport::default();
    for (file, dataset) in pending {
        file.commit()?;
        if dataset.skipped.is_empty() {
            tracing::info!(path = %dataset.path.display(), lines = dataset.lines, "meta dataset written");
        } else {
            tracing::warn!(
                path = %dataset.path.display(),
                lines = dataset.lines,
                skipped = dataset.skipped_count(),
                first_reason = %dataset.skipped[0].reason,
                "meta dataset written; some items were skipped"
            );
        }
        report.datasets.push(dataset);
    }
    Ok(report)
}

/// A dataset file written but not yet committed, with its report.
type Pending = (JsonlFile, DatasetReport);

/// Writes (uncommitted) the chat and completion files of one details key.
fn write_key(
    store: &dyn Store,
    key: &str,
    steps: &[&str],
    (chat_path, completion_path): (PathBuf, PathBuf),
    only: Option<&HashSet<String>>,
) -> Result<(Pending, Pending), Error> {
    let mut chat = (
        JsonlFile::create(&chat_path)?,
        DatasetReport::new(DatasetKind::Chat, key, chat_path),
    );
    let mut completion = (
        JsonlFile::create(&completion_path)?,
        DatasetReport::new(DatasetKind::Completion, key, completion_path),
    );
    let (mut results, mut without_details) = (0u64, 0u64);
    for item in store.items() {
        let item = item?;
        if only.is_some_and(|reached| !reached.contains(&item.id)) {
            continue;
        }
        for step in steps {
            let Some(result) = store.result(step, &item.id)? else {
                continue;
            };
            if only.is_some() && result.drop_reason().is_some() {
                continue;
            }
            results += 1;
            let Some(details) = &result.details else {
                without_details += 1;
                let reason = format!("result of step `{step}` stored without details");
                chat.1.skip(&item.id, reason.clone());
                completion.1.skip(&item.id, reason);
                continue;
            };
            let bad = |message: String| Error::BadDetails {
                key: key.to_owned(),
                item: item.id.clone(),
                message,
            };
            chat.0.write(&sharegpt::chat_line(details).map_err(bad)?)?;
            chat.1.lines += 1;
            completion
                .0
                .write(&sharegpt::completion_line(details).map_err(bad)?)?;
            completion.1.lines += 1;
        }
    }
    if results > 0 && results == without_details {
        return Err(Error::NoDetails {
            key: key.to_owned(),
            steps: steps.join(", "),
            results,
        });
    }
    if results == 0 {
        tracing::warn!(key, steps = %steps.join(", "), "meta datagen: no stored results for this key yet");
    }
    Ok((chat, completion))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_state::{Details, MemStore, ResultRecord};
    use serde_json::json;

    fn item(id: &str, order: u64, fields: serde_json::Value) -> ItemRecord {
        ItemRecord {
            v: 1,
            id: id.into(),
            parent: None,
            order: vec![order],
            fields: fields.as_object().unwrap().clone(),
        }
    }

    fn result(text: &str, details: bool) -> ResultRecord {
        ResultRecord {
            v: 1,
            output: json!(format!("poem about {text}")),
            details: details.then(|| Details {
                messages: vec![
                    json!({"role": "system", "content": "You write short poems."}),
                    json!({"role": "user", "content": format!("Passage: {text}")}),
                ],
                prompt: None,
                reply: format!("Thinking...\n<poem>poem about {text}</poem>"),
                finish_reason: Some("stop".into()),
                model: "mock".into(),
            }),
            attempts: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            elapsed_ms: 3,
            stored_at_ms: 1,
            ..ResultRecord::new(serde_json::Value::Null)
        }
    }

    /// Three items stored out of order; `b` has no result; `c` comes first by `order`.
    fn store(details: bool) -> MemStore {
        let store = MemStore::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            store
                .put_items(vec![
                    item("a", 1, json!({"text": "the sea"})),
                    item("b", 2, json!({"text": "a road"})),
                    item("c", 0, json!({"text": "snow"})),
                ])
                .await
                .unwrap();
            for (id, text) in [("a", "the sea"), ("c", "snow")] {
                store
                    .put_result("write_poem", id, result(text, details))
                    .await
                    .unwrap();
            }
        });
        store
    }

    fn final_items() -> Vec<ItemRecord> {
        vec![
            item("c", 0, json!({"text": "snow", "poetry": "poem about snow"})),
            item(
                "a",
                1,
                json!({"text": "the sea", "poetry": "poem about the sea"}),
            ),
            item("b", 2, json!({"text": "a road"})),
        ]
    }

    const EXTRA: &str = "name: poem_direct\nsystem: You are a poet.\nhuman: |\n  Write a poem inspired by:\n  {{ text }}\ngpt: '{{ poetry }}'\n";

    struct Run {
        dir: tempfile::TempDir,
        result: Result<MetaReport, Error>,
    }

    impl Run {
        fn read(&self, file: &str) -> String {
            std::fs::read_to_string(self.dir.path().join("meta_datagen").join(file)).unwrap()
        }
    }

    fn check(store: &MemStore, keys: &[&str], with_extra: bool) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let mut extras = Vec::new();
        if with_extra {
            let path = dir.path().join("poem_direct.yaml");
            std::fs::write(&path, EXTRA).unwrap();
            extras.push(path);
        }
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let sources = [MetaSource::new("write_poem", "poetry_details")];
        let result = write_meta_datasets(
            store,
            &sources,
            &keys,
            &extras,
            &mut final_items().into_iter(),
            &dir.path().join("meta_datagen"),
        );
        Run { dir, result }
    }

    #[test]
    fn details_become_chat_and_completion_lines_in_store_order() {
        let run = check(&store(true), &["poetry_details"], false);
        let report = run.result.as_ref().unwrap();
        assert_eq!(report.datasets.len(), 2);
        assert_eq!(report.datasets[0].lines, 2);
        insta::assert_snapshot!(run.read("poetry_details_sharegpt.jsonl"), @r#"
        {"conversations":[{"from":"system","value":"You write short poems."},{"from":"human","value":"Passage: snow"},{"from":"gpt","value":"Thinking...\n<poem>poem about snow</poem>"}]}
        {"conversations":[{"from":"system","value":"You write short poems."},{"from":"human","value":"Passage: the sea"},{"from":"gpt","value":"Thinking...\n<poem>poem about the sea</poem>"}]}
        "#);
        insta::assert_snapshot!(run.read("poetry_details_completion.jsonl"), @r#"
        {"text":"You write short poems.\n\nHuman: Passage: snow\n\nAI: Thinking...\n<poem>poem about snow</poem>"}
        {"text":"You write short poems.\n\nHuman: Passage: the sea\n\nAI: Thinking...\n<poem>poem about the sea</poem>"}
        "#);
    }

    #[test]
    fn a_source_listed_twice_gives_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = MetaSource::new("write_poem", "poetry_details");
        let report = write_meta_datasets(
            &store(true),
            &[source.clone(), source],
            &["poetry_details".to_owned(), "poetry_details".to_owned()],
            &[],
            &mut std::iter::empty(),
            dir.path(),
        )
        .unwrap();
        assert_eq!(report.datasets.len(), 2);
        assert_eq!(report.datasets[0].lines, 2);
    }

    #[test]
    fn identical_runs_give_identical_bytes() {
        let store = store(true);
        let (one, two) = (
            check(&store, &["poetry_details"], true),
            check(&store, &["poetry_details"], true),
        );
        for file in [
            "poetry_details_sharegpt.jsonl",
            "poetry_details_completion.jsonl",
            "extra_poem_direct.jsonl",
        ] {
            assert_eq!(one.read(file), two.read(file), "{file}");
        }
    }

    #[test]
    fn key_without_details_is_an_error_naming_it_and_writes_nothing() {
        let run = check(&store(false), &["poetry_details"], false);
        let msg = run.result.unwrap_err().to_string();
        assert!(msg.contains("`poetry_details`"), "{msg}");
        assert!(msg.contains("do_meta_datagen"), "{msg}");
        let files = std::fs::read_dir(run.dir.path().join("meta_datagen"))
            .unwrap()
            .count();
        assert_eq!(files, 0, "no dataset and no temp file left behind");
    }

    #[test]
    fn unknown_key_is_an_error_listing_the_known_ones() {
        let msg = check(&store(true), &["poem_details"], false)
            .result
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`poem_details`") && msg.contains("known details keys: poetry_details"),
            "{msg}"
        );
    }

    #[test]
    fn results_partly_without_details_are_counted_not_fatal() {
        let store = store(true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.put_result("write_poem", "b", result("a road", false)))
            .unwrap();
        let run = check(&store, &["poetry_details"], false);
        let chat = &run.result.as_ref().unwrap().datasets[0];
        assert_eq!((chat.lines, chat.skipped_count()), (2, 1));
        assert_eq!(chat.skipped[0].first_item, "b");
    }

    #[test]
    fn extras_render_each_final_item_and_count_missing_fields() {
        let run = check(&store(true), &[], true);
        let report = run.result.as_ref().unwrap();
        let extra = &report.datasets[0];
        assert_eq!((extra.kind, extra.lines), (DatasetKind::Extra, 2));
        assert_eq!(
            extra.skipped,
            vec![SkipGroup {
                reason: "missing field `poetry`".into(),
                count: 1,
                first_item: "b".into()
            }]
        );
        assert!(
            report
                .summary()
                .contains("1 skipped: missing field `poetry` x1 (first: b)"),
            "{}",
            report.summary()
        );
        insta::assert_snapshot!(run.read("extra_poem_direct.jsonl"), @r#"
        {"conversations":[{"from":"system","value":"You are a poet."},{"from":"human","value":"Write a poem inspired by:\nsnow"},{"from":"gpt","value":"poem about snow"}]}
        {"conversations":[{"from":"system","value":"You are a poet."},{"from":"human","value":"Write a poem inspired by:\nthe sea"},{"from":"gpt","value":"poem about the sea"}]}
        "#);
    }

    #[test]
    fn the_shipped_default_extras_template_renders_a_poem_item() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../prompts/meta_extras/poem_from_passage.yaml");
        let extras = Extras::load(&[path]).unwrap();
        let item = item(
            "x",
            0,
            json!({"text": "Frost on the window.", "metadata": "winter.txt", "poetry": "White ferns\ngrow"}),
        );
        let conv = extras.render(0, &item).unwrap();
        assert_eq!(
            conv.conversations.last().unwrap(),
            &Turn::new("gpt", "White ferns\ngrow")
        );
        assert!(
            conv.conversations
                .iter()
                .any(|t| t.value.contains("Frost on the window."))
        );
    }

    #[test]
    fn key_and_template_names_must_be_file_safe() {
        let msg = check(&store(true), &["../escape"], false)
            .result
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot name a dataset file"), "{msg}");
    }
}
