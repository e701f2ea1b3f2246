//! Tests of the rework checks: warnings, flag checks, and what a scan of stored results costs.

use super::*;

#[test]
fn warnings_name_the_step_what_changed_and_what_to_do() {
    let mut other = BTreeMap::new();
    other.insert(vec![Part::Prompt], 5);
    other.insert(vec![Part::Params, Part::Model], 1);
    let write_poem = atk_step::PromptStep::new("write_poem");
    let w = warning(&write_poem, &other, &ReworkFlags::default());
    assert!(
        w.contains("step `write_poem`: 5 results were made with another prompt; 1 result was made with other sampling params and another model"),
        "{w}"
    );
    assert!(
        w.contains("--redo write_poem") && w.contains("--redo-changed"),
        "{w}"
    );
    let mut version = BTreeMap::new();
    version.insert(vec![Part::Version], 2);
    let w = warning(
        &atk_step::PromptStep::new("s"),
        &version,
        &ReworkFlags::default(),
    );
    assert!(w.contains("or `--reprocess s`"), "{w}");
    // A vote cannot be reprocessed (the run would refuse it): the warning does not offer it.
    let vote = atk_step::PromptStep::new("check").votes(3);
    let w = warning(&vote, &other, &ReworkFlags::default());
    assert!(
        w.contains("--redo check") && !w.contains("--reprocess"),
        "{w}"
    );
}

fn ctx() -> StepContext {
    const PROMPTS: &[(&str, &str)] = &[("p.yaml", "- role: user\n  content: \"{text}\"\n")];
    let engine = atk_engine::build_engine(
        atk_engine::EngineConfig::default()
            .with_mode(atk_engine::Mode::Mock)
            .with_mock(atk_engine::MockConfig::default()),
        Vec::new(),
    )
    .unwrap();
    StepContext::new(
        atk_step::Engines::single(engine),
        Arc::new(atk_step::PromptLibrary::new(PROMPTS)),
    )
}

#[tokio::test]
async fn reprocess_needs_stored_replies_and_a_step_that_has_one() {
    let store = atk_state::MemStore::default();
    let mut old = atk_state::ResultRecord::new("a poem".into());
    old.prompt_tokens = 10;
    store.put_result("write", "a", old).await.unwrap();
    let chain: Vec<Arc<dyn Step>> = vec![
        Arc::new(atk_step::PromptStep::new("write").prompt("p")),
        Arc::new(atk_step::PromptStep::new("judge").prompt("p").votes(3)),
    ];
    let flags = |step: &str| ReworkFlags {
        reprocess: [step.to_string()].into(),
        ..Default::default()
    };
    let err = prepare(&store, &chain, &ctx(), &flags("write"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("1 of its 1 stored results have no raw reply")
            && err.to_string().contains("write, judge"),
        "{err}"
    );
    let err = prepare(&store, &chain, &ctx(), &flags("judge"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use --redo judge"), "{err}");
    // With the raw reply stored, the rework is set up and its start kept in meta.
    let mut new = atk_state::ResultRecord::new("a poem".into());
    new.raw = Some("<poem>a poem</poem>".into());
    store.put_result("write", "a", new).await.unwrap();
    let p = prepare(&store, &chain, &ctx(), &flags("write"))
        .await
        .unwrap();
    let rework = p.rework.unwrap();
    assert_eq!(rework.mode("write"), Some(ReworkMode::Reprocess));
    assert_eq!(rework.mode("judge"), None);
    let marker = read_marker(&store).unwrap().unwrap();
    assert_eq!(marker.since_ms, rework.since_ms);
    // Rerun with the same flags: the same start (already remade results are kept).
    let again = prepare(&store, &chain, &ctx(), &flags("write"))
        .await
        .unwrap();
    assert_eq!(again.rework.unwrap().since_ms, marker.since_ms);
    finish(&store).await.unwrap();
    assert!(read_marker(&store).unwrap().is_none());
}

#[tokio::test]
async fn results_without_a_fingerprint_are_named_once_the_step_changes() {
    let store = atk_state::MemStore::default();
    store
        .put_result("write", "a", atk_state::ResultRecord::new("old".into()))
        .await
        .unwrap();
    let chain: Vec<Arc<dyn Step>> = vec![Arc::new(atk_step::PromptStep::new("write").prompt("p"))];
    let none = ReworkFlags::default();
    let first = prepare(&store, &chain, &ctx(), &none).await.unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let bumped: Vec<Arc<dyn Step>> = vec![Arc::new(
        atk_step::PromptStep::new("write").prompt("p").version("2"),
    )];
    let second = prepare(&store, &bumped, &ctx(), &none).await.unwrap();
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(
        second.warnings[0].contains("step `write` changed since the last run (version)")
            && second.warnings[0].contains("1 of its results were stored by an older atk"),
        "{:?}",
        second.warnings
    );
}

/// A store counting the result scans it serves.
#[derive(Default)]
struct Scans(atk_state::MemStore, std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl Store for Scans {
    async fn put_items(&self, items: Vec<atk_state::ItemRecord>) -> Result<(), atk_state::Error> {
        self.0.put_items(items).await
    }
    fn item(&self, id: &str) -> Result<Option<atk_state::ItemRecord>, atk_state::Error> {
        self.0.item(id)
    }
    fn items(&self) -> atk_state::Records<'_, atk_state::ItemRecord> {
        self.0.items()
    }
    async fn put_result(
        &self,
        step: &str,
        id: &str,
        r: atk_state::ResultRecord,
    ) -> Result<(), atk_state::Error> {
        self.0.put_result(step, id, r).await
    }
    fn result(
        &self,
        step: &str,
        id: &str,
    ) -> Result<Option<atk_state::ResultRecord>, atk_state::Error> {
        self.0.result(step, id)
    }
    fn has_result(&self, step: &str, id: &str) -> Result<bool, atk_state::Error> {
        self.0.has_result(step, id)
    }
    fn results(&self, step: &str) -> atk_state::Records<'_, (String, atk_state::ResultRecord)> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.results(step)
    }
    async fn put_failure(
        &self,
        step: &str,
        id: &str,
        r: atk_state::FailureRecord,
    ) -> Result<(), atk_state::Error> {
        self.0.put_failure(step, id, r).await
    }
    fn failures(&self, step: &str) -> atk_state::Records<'_, (String, atk_state::FailureRecord)> {
        self.0.failures(step)
    }
    fn meta(&self, key: &str) -> Result<Option<serde_json::Value>, atk_state::Error> {
        self.0.meta(key)
    }
    async fn put_meta(&self, key: &str, value: serde_json::Value) -> Result<(), atk_state::Error> {
        self.0.put_meta(key, value).await
    }
    async fn flush(&self) -> Result<(), atk_state::Error> {
        Ok(())
    }
}

#[tokio::test]
async fn an_unchanged_step_costs_no_scan_of_its_results_and_a_changed_one_is_counted() {
    let store = Scans::default();
    let chain = |v: &str| -> Vec<Arc<dyn Step>> {
        vec![Arc::new(
            atk_step::PromptStep::new("write").prompt("p").version(v),
        )]
    };
    let none = ReworkFlags::default();
    prepare(&store, &chain("1"), &ctx(), &none).await.unwrap();
    let mut r = atk_state::ResultRecord::new("x".into());
    r.fingerprint = chain("1")[0].fingerprint(&ctx());
    for id in ["a", "b"] {
        store.put_result("write", id, r.clone()).await.unwrap();
    }
    for _ in 0..3 {
        let p = prepare(&store, &chain("1"), &ctx(), &none).await.unwrap();
        assert!(p.warnings.is_empty());
    }
    assert_eq!(
        store.1.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no result read"
    );
    let p = prepare(&store, &chain("2"), &ctx(), &none).await.unwrap();
    assert!(
        p.warnings[0].contains("2 results were made with another version of the step"),
        "{:?}",
        p.warnings
    );
    // Shown again on every run while those results are there.
    let p = prepare(&store, &chain("2"), &ctx(), &none).await.unwrap();
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn the_request_is_stable_whatever_the_flag_order() {
    let a = ReworkFlags {
        redo: ["b".to_string(), "a".to_string()].into(),
        redo_changed: true,
        ..Default::default()
    };
    assert_eq!(a.request(), "--redo a --redo b --redo-changed");
}
