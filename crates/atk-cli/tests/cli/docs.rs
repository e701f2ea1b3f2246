//! Docs that state what the code does: every list of readable formats in the user docs is
//! the readers' own list (`atk_chunk::READ_EXTENSIONS`), and says what happens to other files;
//! the config reference documents exactly the common keys, with their defaults.

use std::path::Path;

use atk_cli::config::CommonConfig;

/// The rows of the common-key tables in `docs/config.md`: `(key, default cell)`.
fn documented_keys() -> Vec<(String, String)> {
    let doc = include_str!("../../../../docs/config.md");
    let common = doc
        .split("## Common keys")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/config.md has a `## Common keys` section");
    common
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `")?.split(" | ");
            let key = cells.next()?.strip_suffix('`')?;
            Some((key.to_string(), cells.next()?.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_config_reference_documents_every_common_key_and_no_other() {
    let mut documented: Vec<String> = documented_keys().into_iter().map(|(k, _)| k).collect();
    let mut keys: Vec<String> = CommonConfig::keys().iter().map(|k| k.to_string()).collect();
    documented.sort();
    keys.sort();
    assert_eq!(
        documented, keys,
        "docs/config.md's common keys and CommonConfig's keys differ"
    );
}

#[test]
fn each_common_keys_doc_line_is_the_start_of_its_meaning_in_the_config_reference() {
    // `--describe-config` (and `atk serve`) show the field's doc comment; the page says more.
    let doc = include_str!("../../../../docs/config.md");
    for key in atk_cli::config::describe::<atk_cli::config::NoExtra>() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", key.key)))
            .unwrap_or_else(|| panic!("{} has no row in docs/config.md", key.key));
        let meaning = row.split(" | ").nth(2).unwrap_or_default();
        assert!(
            !key.doc.is_empty() && meaning.starts_with(&key.doc),
            "{}: the doc line `{}` is not how docs/config.md starts its meaning: `{meaning}`",
            key.key,
            key.doc
        );
    }
}

#[test]
fn the_defaults_in_the_config_reference_are_the_defaults() {
    // Each default the page gives as one literal (`50`, `true`, `cl100k_base`, `[]`), read as
    // the file would be, must give the same config as no key at all.
    let mut map = serde_yaml::Mapping::new();
    for (key, default) in documented_keys() {
        let Some(literal) = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        let value: serde_yaml::Value = serde_yaml::from_str(literal).expect(literal);
        map.insert(key.into(), value);
    }
    assert!(map.len() > 20, "few literal defaults found: {map:?}");
    let from_doc: CommonConfig = serde_yaml::from_value(serde_yaml::Value::Mapping(map)).unwrap();
    assert_eq!(
        format!("{from_doc:?}"),
        format!("{:?}", CommonConfig::default())
    );
}

#[test]
fn the_docs_list_exactly_the_formats_the_readers_read() {
    let expected = atk_chunk::READ_EXTENSIONS.join(", ");
    let docs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"));
    let mut lists = 0;
    for name in ["config.md", "quickstart.md", "writing-a-pipeline.md"] {
        // Paragraphs joined into single lines: a list may wrap.
        let text = std::fs::read_to_string(docs.join(name))
            .unwrap()
            .replace("\n", " ");
        for (at, _) in text.match_indices("pdf, docx") {
            let window = &text[at.saturating_sub(200)..(at + 200).min(text.len())];
            assert!(
                window.contains(&expected),
                "docs/{name}: a format list that is not the readers' own ({expected}):\n{window}"
            );
            assert!(
                window.contains("any other file"),
                "docs/{name}: say what happens to other files:\n{window}"
            );
            lists += 1;
        }
    }
    assert!(
        lists >= 3,
        "config.md, quickstart.md and writing-a-pipeline.md each list the formats ({lists} found)"
    );
}
