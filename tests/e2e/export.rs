//! `atk export`: a folder holding only what is publishable, and a held-out split that keeps
//! every source document in one split.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use atk_e2e::{Config, Env, count_files, files_containing, run};
use atk_testkit::ServerConfig;

use crate::{RUN_TIMEOUT, bin, poem_server};

fn atk() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_e2e-atk"))
}

/// The document number of a row: its passage carries document I's `Chronicle number I` or
/// `(entry I.K)` markers.
fn doc_of(row: &serde_json::Value) -> u64 {
    let human = atk_e2e::conversation_value(row, "human");
    // A chunk may start or end inside a marker: the first whole one counts.
    let number = |marker: &str, end: char| {
        human.match_indices(marker).find_map(|(at, _)| {
            let rest = &human[at + marker.len()..];
            rest.split(end).next()?.parse::<u64>().ok()
        })
    };
    number("(entry ", '.')
        .or_else(|| number("Chronicle number ", ' '))
        .unwrap_or_else(|| panic!("no document marker in {human}"))
}

#[tokio::test]
async fn export_keeps_only_datasets_and_card_and_splits_by_document() {
    let (server, _) = poem_server(ServerConfig::default()).await;
    let env = Env::new();
    env.write_docs(12);
    let mut config = Config::new(server.base_url());
    config.chunk_size = 50; // several chunks per document
    let config = env.write_config(&config);
    run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let rows = env.dataset();
    let per_doc: BTreeMap<u64, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(doc_of(r)).or_default() += 1;
        m
    });
    assert!(per_doc.values().all(|&n| n >= 2), "{per_doc:?}");

    let dest = env.root().join("export");
    let mut cmd = tokio::process::Command::new(atk());
    cmd.arg("export")
        .arg(env.output())
        .arg(&dest)
        .args(["--test-fraction", "0.3"]);
    let out = run(cmd, RUN_TIMEOUT).await;
    out.assert_code(0);
    assert!(out.stderr.contains("hf upload REPO"), "{out}");
    let read = |split: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dest.join(format!("sharegpt_format/{split}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (train, test) = (read("train"), read("test"));
    assert_eq!(train.len() + test.len(), rows.len());
    assert!(!train.is_empty() && !test.is_empty(), "{out}");
    let docs = |rows: &[serde_json::Value]| -> BTreeSet<u64> { rows.iter().map(doc_of).collect() };
    assert!(
        docs(&train).is_disjoint(&docs(&test)),
        "a document in both splits: {:?} / {:?}",
        docs(&train),
        docs(&test)
    );
    assert_eq!(
        count_files(&dest),
        3,
        "two splits and the card, nothing else"
    );
    let root = env.root().to_string_lossy().into_owned();
    assert!(
        files_containing(&dest, root.as_bytes()).is_empty(),
        "no absolute path in the export"
    );
}
