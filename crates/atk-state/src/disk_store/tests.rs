//! The store's tests, each run on both backends.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::{Details, RECORD_VERSION};
use layout::is_root_encoded;

/// Opens the store in `dir` on `backend`.
fn open(backend: Backend, dir: &Path) -> Result<DiskStore, Error> {
    DiskStore::open_with(dir, StoreOptions::default().with_backend(backend))
}

/// Writes raw bytes past the store's checks (to build damaged states, as another process or
/// a crash leaves them: ids this handle did not write are looked up from then on).
async fn raw(store: &DiskStore, ops: Vec<Op>) {
    store.forget_known_ids();
    store.kv.write(ops, false, true).await.unwrap();
}

/// Runs each named `async fn(Backend)` once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sled).await
            })*
        }
        mod redb_backend {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Redb).await
            })*
        }
    };
}

fn item(id: &str, order: &[u64]) -> ItemRecord {
    let mut fields = crate::Fields::new();
    fields.insert("text".into(), json!(format!("text of {id}")));
    ItemRecord {
        v: RECORD_VERSION,
        id: id.into(),
        parent: None,
        order: order.to_vec(),
        fields,
    }
}

fn result(output: &str) -> ResultRecord {
    ResultRecord {
        v: RECORD_VERSION,
        output: json!(output),
        details: Some(Details {
            messages: vec![json!({"role": "user", "content": "hi {x}"})],
            prompt: None,
            reply: output.into(),
            finish_reason: Some("stop".into()),
            model: "mock".into(),
        }),
        attempts: 2,
        prompt_tokens: 10,
        completion_tokens: 5,
        elapsed_ms: 7,
        stored_at_ms: 1,
        ..ResultRecord::new(serde_json::Value::Null)
    }
}

fn failure(reason: &str) -> FailureRecord {
    FailureRecord {
        v: RECORD_VERSION,
        kind: "validation".into(),
        reason: reason.into(),
        last_output: Some("nope".into()),
        last_prompt: None,
        attempts: 3,
        stored_at_ms: 2,
    }
}

fn ids(store: &DiskStore) -> Vec<String> {
    store.items().map(|r| r.unwrap().id).collect()
}

async fn records_round_trip(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    store
        .put_items(vec![item("a", &[0]), item("b", &[1])])
        .await
        .unwrap();
    store.put_result("qa", "a", result("answer")).await.unwrap();
    store
        .put_failure("qa", "b", failure("no JSON"))
        .await
        .unwrap();
    store
        .put_meta("run", json!({"pipeline": "poems"}))
        .await
        .unwrap();

    assert_eq!(store.item("a").unwrap(), Some(item("a", &[0])));
    assert_eq!(store.item("missing").unwrap(), None);
    assert_eq!(store.result("qa", "a").unwrap(), Some(result("answer")));
    assert_eq!(store.result("other", "a").unwrap(), None);
    assert!(store.has_result("qa", "a").unwrap());
    assert!(!store.has_result("qa", "b").unwrap());
    let results: Vec<_> = store.results("qa").map(Result::unwrap).collect();
    assert_eq!(results, vec![("a".to_owned(), result("answer"))]);
    let failures: Vec<_> = store.failures("qa").map(Result::unwrap).collect();
    assert_eq!(failures, vec![("b".to_owned(), failure("no JSON"))]);
    assert_eq!(
        store.meta("run").unwrap(),
        Some(json!({"pipeline": "poems"}))
    );
    assert_eq!(store.meta("absent").unwrap(), None);
    assert_eq!(
        (
            store.count_results("qa").unwrap(),
            store.count_failures("qa").unwrap()
        ),
        (1, 1)
    );
    assert_eq!(store.count_results("other").unwrap(), 0);
}

async fn steps_do_not_see_each_others_records(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    // "qa" is a prefix of "qa2": the NUL separator keeps them apart.
    store.put_result("qa", "x", result("1")).await.unwrap();
    store.put_result("qa2", "y", result("2")).await.unwrap();
    let ids: Vec<_> = store.results("qa").map(|r| r.unwrap().0).collect();
    assert_eq!(ids, ["x"]);
    assert!(matches!(
        store.put_result("bad\0step", "x", result("1")).await,
        Err(Error::InvalidStep { .. })
    ));
    assert!(matches!(
        store.results("").next(),
        Some(Err(Error::InvalidStep { .. }))
    ));
}

async fn items_iterate_in_order_and_replacing_moves_them(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    let batch = vec![
        item("c", &[10]),
        item("b", &[1, 5]),
        item("a", &[2]),
        item("d", &[1]),
        item("e", &[1, 0]),
    ];
    store.put_items(batch).await.unwrap();
    assert_eq!(ids(&store), ["d", "e", "b", "a", "c"]);
    // Re-seeding an item with a new order moves it instead of duplicating it.
    store.put_items(vec![item("c", &[0])]).await.unwrap();
    assert_eq!(ids(&store), ["c", "d", "e", "b", "a"]);
    assert_eq!(store.item("c").unwrap().unwrap().order, [0]);
}

async fn reseeding_the_same_items_writes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    store
        .put_items(vec![item("a", &[0]), item("b", &[1])])
        .await
        .unwrap();
    let commits = store.commit_count();
    store
        .put_items(vec![item("a", &[0]), item("b", &[1])])
        .await
        .unwrap();
    assert_eq!(
        store.commit_count(),
        commits,
        "an unchanged re-seed needs no commit"
    );
    let mut changed = item("b", &[1]);
    changed.fields.insert("text".into(), json!("edited"));
    store
        .put_items(vec![item("a", &[0]), changed.clone()])
        .await
        .unwrap();
    assert_eq!(store.item("b").unwrap(), Some(changed));
    assert_eq!(ids(&store), ["a", "b"]);
}

async fn a_crash_between_the_item_batches_heals_on_reseed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    store.put_items(vec![item("a", &[5])]).await.unwrap();
    // What survives a crash after the items batch of a re-seed at order [0]: the id
    // index still points at the old key.
    raw(
        &store,
        vec![
            Op::Remove(Tree::Items, item_key(&[5], "a")),
            Op::Put(Tree::Items, item_key(&[0], "a"), encode(item("a", &[0]))),
        ],
    )
    .await;
    assert!(matches!(store.item("a"), Err(Error::Corrupt { .. })));
    store.put_items(vec![item("a", &[0])]).await.unwrap();
    assert_eq!(ids(&store), ["a"]);
    assert_eq!(store.item("a").unwrap().unwrap().order, [0]);
}

async fn an_id_repeated_in_one_call_keeps_the_last(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    store
        .put_items(vec![item("a", &[5]), item("b", &[1]), item("a", &[0])])
        .await
        .unwrap();
    assert_eq!(ids(&store), ["a", "b"]);
    assert_eq!(store.item("a").unwrap().unwrap().order, [0]);
}

async fn many_items_span_several_batches(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    let n = ITEMS_PER_BATCH as u64 * 2 + 7;
    store
        .put_items((0..n).rev().map(|i| item(&format!("i{i}"), &[i])).collect())
        .await
        .unwrap();
    let orders: Vec<u64> = store.items().map(|r| r.unwrap().order[0]).collect();
    assert_eq!(orders, (0..n).collect::<Vec<_>>());
}

async fn ids_come_in_order_without_decoding_and_roots_leave_out_children(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        let mut child = item("kid \"quoted\"", &[1, 0]);
        child.parent = Some("b".into());
        store
            .put_items(vec![item("b", &[1]), child, item("a", &[2])])
            .await
            .unwrap();
        // A record no decoder accepts: ids never look at it.
        raw(
            &store,
            vec![
                Op::Put(Tree::Items, item_key(&[3], "junk"), b"{not json".to_vec()),
                Op::Put(Tree::ItemIds, b"junk".to_vec(), item_key(&[3], "junk")),
            ],
        )
        .await;
        let ids: Vec<String> = store.item_ids().map(Result::unwrap).collect();
        assert_eq!(ids, ["b", "kid \"quoted\"", "a", "junk"]);
        if backend == Backend::Sled {
            // No index on sled: roots are told from the records, and a bad one is an error.
            let roots: Vec<_> = store.root_ids().collect();
            assert_eq!(roots.len(), 3);
            assert_eq!(roots[0].as_ref().unwrap(), "b");
            assert_eq!(roots[1].as_ref().unwrap(), "a");
            assert!(matches!(roots[2], Err(Error::Corrupt { .. })));
            // The roots themselves, from the same scan: the same ones, as `item` reads them.
            let items: Vec<_> = store.root_items().collect();
            assert_eq!(items.len(), 3);
            for (got, id) in items.iter().zip(["b", "a"]) {
                assert_eq!(got.as_ref().unwrap(), &store.item(id).unwrap().unwrap());
            }
            assert!(matches!(items[2], Err(Error::Corrupt { .. })));
            return;
        }
        let roots: Vec<String> = store.root_ids().map(Result::unwrap).collect();
        assert_eq!(
            roots,
            ["b", "a"],
            "the roots index holds what put_items wrote"
        );
        let items: Vec<ItemRecord> = store.root_items().map(Result::unwrap).collect();
        assert_eq!(
            items,
            [
                store.item("b").unwrap().unwrap(),
                store.item("a").unwrap().unwrap()
            ]
        );
        // What a store made before the roots index looks like: no index, no marker.
        let mut forget: Vec<Op> = store
            .kv
            .scan(Tree::Roots, b"")
            .map(|e| Op::Remove(Tree::Roots, e.unwrap().0))
            .collect();
        forget.push(Op::Remove(Tree::Root, ROOTS_KEY.to_vec()));
        raw(&store, forget).await;
    }
    // Reopened, the index is built from the records; one that does not decode counts as a
    // root, so running it fails naming its key.
    let store = open(backend, dir.path()).unwrap();
    let roots: Vec<String> = store.root_ids().map(Result::unwrap).collect();
    assert_eq!(roots, ["b", "a", "junk"]);
    assert!(matches!(store.item("junk"), Err(Error::Corrupt { .. })));
    store.remove_items(vec!["b".into()]).await.unwrap();
    let roots: Vec<String> = store.root_ids().map(Result::unwrap).collect();
    assert_eq!(roots, ["a", "junk"], "a removed item leaves the index");
    let items: Vec<_> = store.root_items().collect();
    assert_eq!(items[0].as_ref().unwrap().id, "a");
    assert!(matches!(items[1], Err(Error::Corrupt { .. })), "{items:?}");
}

#[test]
fn roots_are_told_from_the_encoded_bytes_without_decoding() {
    for id in ["a1b2", "kid \"quoted\" \\ \u{1}", "日本"] {
        let root = item(id, &[1]);
        let mut child = item(id, &[1, 0]);
        child.parent = Some("p".into());
        assert_eq!(is_root_encoded(id, &encode(root)), Some(true), "{id}");
        assert_eq!(is_root_encoded(id, &encode(child)), Some(false), "{id}");
    }
    assert_eq!(
        is_root_encoded("a", br#"{"v":99,"id":"a","parent":null}"#),
        None,
        "another layout: decode"
    );
    assert_eq!(
        is_root_encoded("a", br#"{"v":1,"id":"b","parent":null}"#),
        None,
        "not this id: decode"
    );
}

async fn removed_items_go_but_their_results_stay(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        store
            .put_items(vec![item("a", &[0]), item("b", &[1]), item("c", &[2])])
            .await
            .unwrap();
        store.put_result("qa", "b", result("kept")).await.unwrap();
        store
            .put_failure("qa", "c", failure("kept too"))
            .await
            .unwrap();
        store
            .remove_items(vec!["b".into(), "c".into(), "never".into()])
            .await
            .unwrap();
        assert_eq!(ids(&store), ["a"]);
        assert_eq!(store.item("b").unwrap(), None);
    }
    let store = open(backend, dir.path()).unwrap();
    assert_eq!(ids(&store), ["a"], "the removal is durable");
    assert_eq!(store.result("qa", "b").unwrap(), Some(result("kept")));
    assert_eq!(store.count_failures("qa").unwrap(), 1);
    // Seeded again: back in place, and its result is still there to reuse.
    store.put_items(vec![item("b", &[1])]).await.unwrap();
    assert_eq!(ids(&store), ["a", "b"]);
    assert!(store.has_result("qa", "b").unwrap());
    let commits = store.commit_count();
    store.remove_items(vec!["gone".into()]).await.unwrap();
    assert_eq!(
        store.commit_count(),
        commits,
        "removing nothing needs no commit"
    );
}

async fn a_fresh_store_seeded_without_lookups_keeps_one_item_per_id_and_counts_them(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let walked = |store: &DiskStore| store.kv.len(Tree::ItemIds).unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        assert!(store.known_ids().is_some(), "a fresh store knows its ids");
        let n = ITEMS_PER_BATCH as u64 + 3;
        store
            .put_items_unsynced((0..n).map(|i| item(&format!("i{i}"), &[i])).collect())
            .await
            .unwrap();
        // Ids seeded by an earlier call come again, moved: replaced, not doubled.
        store
            .put_items_unsynced(vec![item("i0", &[n + 1]), item("new", &[n + 2])])
            .await
            .unwrap();
        assert_eq!(store.item_count(), n + 1);
        assert_eq!(store.item_count(), walked(&store));
        assert_eq!(store.item("i0").unwrap().unwrap().order, [n + 1]);
        assert_eq!(ids(&store).first().map(String::as_str), Some("i1"));
        store
            .remove_items(vec!["i1".into(), "new".into(), "never".into()])
            .await
            .unwrap();
        assert_eq!(store.item_count(), n - 1);
        assert_eq!(store.item_count(), walked(&store));
        let commits = store.commit_count();
        store.flush().await.unwrap();
        assert_eq!(
            store.commit_count(),
            commits + 1,
            "one commit makes them durable"
        );
    }
    let store = open(backend, dir.path()).unwrap();
    assert!(
        store.known_ids().is_none(),
        "a store with items looks ids up"
    );
    assert_eq!(store.item_count(), ITEMS_PER_BATCH as u64 + 2);
    store.put_items(vec![item("i3", &[0])]).await.unwrap();
    assert_eq!(ids(&store).first().map(String::as_str), Some("i3"));
    assert_eq!(store.item_count(), walked(&store), "still one item per id");
}

async fn a_result_clears_the_items_failure(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    store
        .put_failure("qa", "a", failure("no JSON"))
        .await
        .unwrap();
    store
        .put_failure("qa", "b", failure("no JSON"))
        .await
        .unwrap();
    store
        .put_failure("other", "a", failure("no JSON"))
        .await
        .unwrap();
    store.put_result("qa", "a", result("ok")).await.unwrap();
    let failed: Vec<_> = store.failures("qa").map(|r| r.unwrap().0).collect();
    assert_eq!(failed, ["b"], "a's failure went away, b's stays");
    assert_eq!(
        store.count_failures("other").unwrap(),
        1,
        "other steps keep theirs"
    );
}

async fn a_failure_found_on_open_is_cleared_by_a_result(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        store
            .put_failure("qa", "a", failure("no JSON"))
            .await
            .unwrap();
    }
    let store = open(backend, dir.path()).unwrap();
    store.put_result("qa", "a", result("ok")).await.unwrap();
    assert_eq!(
        store.count_failures("qa").unwrap(),
        0,
        "a failure stored by an earlier run is cleared by the result that replaces it"
    );
}

/// A staged source that counts how often the store read it.
struct Counted {
    value: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
}

impl crate::MetaSource for Counted {
    fn current(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::SeqCst;
        self.reads.fetch_add(1, SeqCst);
        json!(self.value.load(SeqCst))
    }
}

async fn a_staged_source_is_read_once_per_commit_and_reaches_disk_with_it(backend: Backend) {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let counted = std::sync::Arc::new(Counted {
        value: 0.into(),
        reads: 0.into(),
    });
    let source: std::sync::Arc<dyn crate::MetaSource> = counted.clone();
    {
        let store = open(backend, dir.path()).unwrap();
        for n in 1..=100 {
            counted.value.store(n, SeqCst);
            store.stage_meta_from("cost", &source).unwrap();
        }
        assert_eq!(counted.reads.load(SeqCst), 0, "staging reads nothing");
        store.put_result("qa", "a", result("ok")).await.unwrap();
        assert_eq!(
            counted.reads.load(SeqCst),
            1,
            "one read for the commit that took the result to disk"
        );
        assert_eq!(store.meta("cost").unwrap(), Some(json!(100)));
        store.put_result("qa", "b", result("ok")).await.unwrap();
        assert_eq!(counted.reads.load(SeqCst), 1, "not staged again: not read");
        // A plain value staged after the source replaces it under the same key, and the
        // source staged after that wins again.
        store.stage_meta("cost", &json!("plain")).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.meta("cost").unwrap(), Some(json!("plain")));
        counted.value.store(7, SeqCst);
        store.stage_meta_from("cost", &source).unwrap();
        // Closed with it staged and no write after: it goes to disk with the close.
    }
    let store = open(backend, dir.path()).unwrap();
    assert_eq!(store.meta("cost").unwrap(), Some(json!(7)));
}

async fn reopening_keeps_everything(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        store.put_items(vec![item("a", &[0])]).await.unwrap();
        store.put_result("qa", "a", result("kept")).await.unwrap();
        store
            .put_failure("qa", "z", failure("kept too"))
            .await
            .unwrap();
        store.put_meta("cost", json!(1.5)).await.unwrap();
        assert!(dir.path().join(PID_FILE).is_file());
    }
    assert!(
        !dir.path().join(PID_FILE).exists(),
        "a clean close removes the pid file"
    );
    let store = open(backend, dir.path()).unwrap();
    assert_eq!(ids(&store), ["a"]);
    assert_eq!(store.result("qa", "a").unwrap(), Some(result("kept")));
    assert_eq!(store.count_failures("qa").unwrap(), 1);
    assert_eq!(store.meta("cost").unwrap(), Some(json!(1.5)));
}

async fn a_second_open_is_locked_and_names_the_holder(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let first = open(backend, dir.path()).unwrap();
    let err = open(backend, dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Locked { pid: Some(pid), .. } if pid == std::process::id()),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "in use by another run (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    assert!(matches!(
        DiskStore::try_open_read(dir.path()),
        Err(Error::Locked { .. })
    ));
    drop(first);
    let reopened = DiskStore::try_open_read(dir.path()).unwrap();
    assert!(
        !dir.path().join(PID_FILE).exists(),
        "a read-open writes no pid file"
    );
    drop(reopened);
}

#[test]
fn reading_a_missing_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = DiskStore::try_open_read(&dir.path().join("nothing")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!dir.path().join("nothing").exists(), "nothing was created");
}

async fn a_store_of_another_format_is_refused_with_a_message(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        raw(
            &store,
            vec![Op::Put(Tree::Root, FORMAT_KEY.to_vec(), b"9".to_vec())],
        )
        .await;
    }
    let err = open(backend, dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Incompatible {
                found: 9,
                expected: STORE_FORMAT_VERSION,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("format version 9") && message.contains("fresh output_dir"),
        "{message}"
    );
}

async fn bad_records_are_errors_naming_their_key(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    raw(
        &store,
        vec![
            Op::Put(
                Tree::Results,
                step_key("qa", "junk").unwrap(),
                b"{not json".to_vec(),
            ),
            Op::Put(
                Tree::Results,
                step_key("qa", "newer").unwrap(),
                br#"{"v": 99, "output": 1}"#.to_vec(),
            ),
        ],
    )
    .await;
    let err = store.result("qa", "junk").unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key, .. } if key == "results:qa/junk"),
        "{err}"
    );
    let err = store.result("qa", "newer").unwrap_err();
    assert!(
        matches!(err, Error::Incompatible { found: 99, .. }),
        "{err}"
    );
    // Iteration reports each bad record and goes on.
    let all: Vec<_> = store.results("qa").collect();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(Result::is_err));
    raw(
        &store,
        vec![Op::Put(Tree::Items, item_key(&[4], "x"), b"[]".to_vec())],
    )
    .await;
    let err = store.items().next().unwrap().unwrap_err();
    assert!(err.to_string().contains("items:[4]/x"), "{err}");
}

fn big_result() -> ResultRecord {
    ResultRecord::new(json!("x".repeat(3000)))
}

async fn counts_follow_new_results_and_damage_shows_in_them(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(backend, dir.path()).unwrap();
        for i in 0..200 {
            store
                .put_result("write", &format!("item{i:03}"), big_result())
                .await
                .unwrap();
        }
        store
            .put_result("write", "item000", big_result())
            .await
            .unwrap();
        store
            .put_result("judge", "item000", big_result())
            .await
            .unwrap();
        let added = store.results_added();
        assert_eq!(
            added,
            BTreeMap::from([("judge".to_owned(), 1), ("write".to_owned(), 200)]),
            "a replaced result is not new"
        );
        assert_eq!(store.result_counts().unwrap(), added);
    }
    // 64 KiB of garbage in the middle of the data file: sled drops what follows it on
    // open, or meets a bad checksum when reading; either way the count shows it.
    let db = dir.path().join(match backend {
        Backend::Sled => crate::backend::sled::DATA_FILE,
        _ => crate::backend::redb::DATA_FILE,
    });
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    let end = (mid + 64 * 1024).min(bytes.len());
    bytes[mid..end]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i as u8).wrapping_mul(151).wrapping_add(7));
    std::fs::write(&db, bytes).unwrap();
    match open(backend, dir.path()).and_then(|store| store.result_counts()) {
        Ok(counts) => assert!(
            counts.get("write").copied().unwrap_or(0) < 200,
            "damage lost results: {counts:?}"
        ),
        Err(e) => assert!(matches!(e, Error::Damaged { .. }), "{e}"),
    }
}

async fn garbage_is_what_no_item_holds(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).unwrap();
    let item = |id: &str| ItemRecord {
        v: RECORD_VERSION,
        id: id.into(),
        parent: None,
        order: vec![0],
        fields: Default::default(),
    };
    store
        .put_items(vec![item("kept"), item("gone")])
        .await
        .unwrap();
    for id in ["kept", "gone", "never"] {
        store
            .put_result("s", id, ResultRecord::new(serde_json::json!(id)))
            .await
            .unwrap();
    }
    store.remove_items(vec!["gone".into()]).await.unwrap();
    let c = store.collect_garbage().await.unwrap();
    assert_eq!((c.results, c.failures), (2, 0));
    assert!(c.bytes > 0);
    assert!(store.has_result("s", "kept").unwrap());
    assert!(!store.has_result("s", "gone").unwrap());
    assert_eq!(store.collect_garbage().await.unwrap(), Collected::default());
}

on_both_backends!(
    a_store_of_another_format_is_refused_with_a_message,
    records_round_trip,
    steps_do_not_see_each_others_records,
    items_iterate_in_order_and_replacing_moves_them,
    reseeding_the_same_items_writes_nothing,
    a_crash_between_the_item_batches_heals_on_reseed,
    an_id_repeated_in_one_call_keeps_the_last,
    many_items_span_several_batches,
    ids_come_in_order_without_decoding_and_roots_leave_out_children,
    removed_items_go_but_their_results_stay,
    a_fresh_store_seeded_without_lookups_keeps_one_item_per_id_and_counts_them,
    a_result_clears_the_items_failure,
    a_failure_found_on_open_is_cleared_by_a_result,
    a_staged_source_is_read_once_per_commit_and_reaches_disk_with_it,
    reopening_keeps_everything,
    a_second_open_is_locked_and_names_the_holder,
    bad_records_are_errors_naming_their_key,
    counts_follow_new_results_and_damage_shows_in_them,
    garbage_is_what_no_item_holds
);

#[tokio::test]
async fn recorded_counts_are_trusted_only_where_the_total_vouches_for_them() {
    for backend in [Backend::Sled, Backend::Redb] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(backend, dir.path()).unwrap();
        for id in ["a", "b", "c"] {
            store.put_result("qa", id, result(id)).await.unwrap();
        }
        let counted = BTreeMap::from([("qa".to_owned(), 3)]);
        // Same total, split another way: redb takes the record, sled counts.
        let recorded = BTreeMap::from([("qa".to_owned(), 2), ("other".to_owned(), 1)]);
        let expected = match backend {
            Backend::Redb => recorded.clone(),
            _ => counted.clone(),
        };
        assert_eq!(
            store.result_counts_since(&recorded).unwrap(),
            expected,
            "{backend:?}"
        );
        // Another total, or nothing recorded: counted from the keys.
        let fewer = BTreeMap::from([("qa".to_owned(), 2)]);
        assert_eq!(
            store.result_counts_since(&fewer).unwrap(),
            counted,
            "{backend:?}"
        );
        assert_eq!(
            store.result_counts_since(&BTreeMap::new()).unwrap(),
            counted
        );
    }
}

/// A redb store closed cleanly reopens without a check; one changed since (64 KiB of garbage
/// in the middle of its file) is checked page by page on open, so the damage is found before
/// anything is read rather than as a panic deep inside a later read.
#[tokio::test]
async fn a_redb_store_changed_since_its_clean_close_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join(crate::backend::redb::CLEAN_CLOSE_FILE);
    {
        let store = open(Backend::Redb, dir.path()).unwrap();
        for i in 0..200 {
            store
                .put_result("write", &format!("item{i:03}"), big_result())
                .await
                .unwrap();
        }
        assert!(!mark.exists(), "no clean-close mark while open");
    }
    assert!(mark.exists(), "a clean close leaves its mark");
    drop(open(Backend::Redb, dir.path()).unwrap());
    assert!(mark.exists(), "and again after a clean reopen");

    let db = dir.path().join(crate::backend::redb::DATA_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    let end = (mid + 64 * 1024).min(bytes.len());
    bytes[mid..end]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i as u8).wrapping_mul(151).wrapping_add(7));
    std::fs::write(&db, bytes).unwrap();
    match open(Backend::Redb, dir.path()) {
        Err(e) => assert!(matches!(e, Error::Damaged { .. }), "{e}"),
        Ok(_) => panic!("the damaged store opened as if whole"),
    }
}
