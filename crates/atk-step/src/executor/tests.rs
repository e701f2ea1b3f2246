//! Tests of `executor.rs`: one file (about 1000 lines) because every case runs the whole
//! run loop over the same fixtures (test steps, stores, progress sinks) defined at the top;
//! split by topic, each file would repeat them.

use std::time::Duration;

use super::*;
use crate::fan_out::{FanOutStep, child_id};
use crate::filter::FilterStep;
use crate::prompt::PromptLibrary;
use crate::prompt_step::PromptStep;
use crate::step::Engines;
use crate::testing::{MemStore, ScriptedEngine, last_text, reply};
use crate::{Chain, collect_final};
use atk_state::Fields;
use atk_state::{ItemRecord, Outcome, RECORD_VERSION};
use serde_json::{Value, json};

const PROMPTS: &[(&str, &str)] = &[
    ("one.yaml", "- role: user\n  content: \"one: {text}\"\n"),
    ("two.yaml", "- role: user\n  content: \"two: {first}\"\n"),
    ("judge.yaml", "- role: user\n  content: \"judge: {text}\"\n"),
];

fn items(n: usize) -> Vec<ItemRecord> {
    (0..n)
        .map(|i| {
            let mut fields = Fields::new();
            fields.insert("text".into(), json!(format!("t{i}")));
            ItemRecord {
                v: RECORD_VERSION,
                id: format!("id{i:04}"),
                parent: None,
                order: vec![i as u64],
                fields,
            }
        })
        .collect()
}

async fn store_with(n: usize) -> Arc<MemStore> {
    let store = Arc::new(MemStore::new());
    store.put_items(items(n)).await.unwrap();
    store
}

/// An engine answering `re:<last message>`.
fn echo() -> Arc<ScriptedEngine> {
    Arc::new(ScriptedEngine::new("e").with_fallback(|r| Ok(reply(format!("re:{}", last_text(r))))))
}

fn executor(store: Arc<dyn Store>, engine: Arc<ScriptedEngine>, cfg: ExecutorConfig) -> Executor {
    let ctx = StepContext::new(
        Engines::single(engine),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    Executor::new(store, ctx, Arc::new(crate::NullSink), cfg)
}

fn two_steps() -> Vec<Arc<dyn Step>> {
    vec![
        Arc::new(PromptStep::new("first").prompt("one")),
        Arc::new(PromptStep::new("second").prompt("two")),
    ]
}

/// A sink that keeps every event.
#[derive(Default)]
struct Log(Mutex<Vec<ProgressEvent>>);

impl ProgressSink for Log {
    fn event(&self, event: ProgressEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn sent(engine: &ScriptedEngine) -> Vec<String> {
    engine
        .requests()
        .iter()
        .map(|r| last_text(r).to_string())
        .collect()
}

#[tokio::test]
async fn runs_depth_first_and_feeds_results_to_later_steps() {
    let store = store_with(3).await;
    let engine = echo();
    let report = executor(
        store.clone(),
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(1),
    )
    .run(&two_steps())
    .await
    .unwrap();
    assert_eq!(
        sent(&engine),
        [
            "one: t0",
            "two: re:one: t0",
            "one: t1",
            "two: re:one: t1",
            "one: t2",
            "two: re:one: t2"
        ],
        "item 1 reaches step 2 before item 2 starts step 1"
    );
    assert_eq!(
        (report.steps[1].done, report.failed(), report.cancelled),
        (3, 0, false)
    );
    let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &two_steps())
        .map(Result::unwrap)
        .collect();
    assert_eq!(finals.len(), 3);
    assert_eq!(finals[2].fields["second"], json!("re:two: re:one: t2"));
    assert_eq!(finals[2].fields["first"], json!("re:one: t2"));
}

#[tokio::test]
async fn a_second_run_sends_nothing_for_stored_results() {
    let store = store_with(5).await;
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    let engine = echo();
    let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!(engine.calls(), 0);
    assert_eq!(
        (
            report.steps[0].skipped,
            report.steps[1].skipped,
            report.steps[1].done
        ),
        (5, 5, 0)
    );
}

#[tokio::test]
async fn a_resumed_run_over_finished_items_reads_no_item_record() {
    let store = store_with(10).await;
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    let before = store.records_read();
    let engine = echo();
    let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!((engine.calls(), report.steps[1].skipped), (0, 10));
    assert_eq!(
        store.records_read() - before,
        0,
        "ids and result keys are enough to skip finished items"
    );
    // An unfinished item is still read, once.
    store.put_items(items(11)[10..].to_vec()).await.unwrap();
    let before = store.records_read();
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!(store.records_read() - before, 1);
}

#[tokio::test]
async fn partial_results_resume_at_the_missing_step_with_earlier_outputs() {
    let store = store_with(2).await;
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps()[..1])
        .await
        .unwrap();
    let engine = echo();
    executor(
        store.clone(),
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(1),
    )
    .run(&two_steps())
    .await
    .unwrap();
    assert_eq!(sent(&engine), ["two: re:one: t0", "two: re:one: t1"]);
}

struct DoneCounter(tokio::sync::watch::Sender<u64>);

impl ProgressSink for DoneCounter {
    fn event(&self, event: ProgressEvent) {
        if let ProgressEvent::ItemDone { .. } = event {
            self.0.send_modify(|n| *n += 1);
        }
    }
}

async fn crash_after(store: Arc<dyn Store>, answered: u64, bound: usize) -> u64 {
    let engine = Arc::new(ScriptedEngine::new("e").hang_after(answered));
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let ctx = StepContext::new(
        Engines::single(engine.clone()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    let exec = Executor::new(
        store,
        ctx,
        Arc::new(DoneCounter(tx)),
        ExecutorConfig::default().with_max_in_flight(bound),
    );
    let run = tokio::spawn(async move { exec.run(&two_steps()).await });
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n >= answered))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.calls() < answered + bound as u64 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    run.abort(); // the simulated crash: the executor and its tasks are dropped mid-request
    assert!(run.await.unwrap_err().is_cancelled());
    engine.calls()
}

#[tokio::test]
async fn a_crash_loses_only_in_flight_requests() {
    let (n, bound) = (30usize, 4usize);
    let store = store_with(n).await;
    let first_calls = crash_after(store.clone(), 17, bound).await;
    let stored = (store.result_count("first") + store.result_count("second")) as u64;
    assert_eq!(stored, 17, "every answered request was stored");
    assert!(
        first_calls - stored <= bound as u64,
        "lost {} requests with a bound of {bound}",
        first_calls - stored
    );
    let engine = echo();
    let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!(
        engine.calls(),
        2 * n as u64 - stored,
        "the rerun sends exactly the missing work"
    );
    assert_eq!(
        (store.result_count("first"), store.result_count("second")),
        (n, n)
    );
    assert_eq!(report.steps[0].skipped + report.steps[0].done, n as u64);
}

/// Opens a sled store, waiting (bounded) for the previous opener's aborted tasks to let go.
async fn reopen(dir: &std::path::Path) -> Arc<atk_state::SledStore> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match atk_state::SledStore::open(dir) {
            Ok(store) => return Arc::new(store),
            Err(atk_state::Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_crash_on_the_sled_store_resumes_with_the_missing_work_only() {
    let (n, bound) = (24usize, 3usize);
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path()).await;
    store.put_items(items(n)).await.unwrap();
    let first_calls = crash_after(store.clone(), 11, bound).await;
    drop(store);

    let store = reopen(dir.path()).await;
    let stored = (store.results("first").count() + store.results("second").count()) as u64;
    assert_eq!(stored, 11, "every answered request survived the crash");
    assert!(first_calls - stored <= bound as u64);
    let engine = echo();
    executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!(engine.calls(), 2 * n as u64 - stored);
    let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &two_steps())
        .map(Result::unwrap)
        .collect();
    assert_eq!(finals.len(), n);
    assert_eq!(
        finals[n - 1].fields["second"],
        json!(format!("re:two: re:one: t{}", n - 1))
    );
}

#[tokio::test]
async fn cancelling_starts_no_new_requests() {
    let store = store_with(4).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let engine = echo();
    let report = executor(
        store,
        engine.clone(),
        ExecutorConfig::default().with_cancel(cancel),
    )
    .run(&two_steps())
    .await
    .unwrap();
    assert!(report.cancelled);
    assert_eq!(engine.calls(), 0);
    assert!(report.summary().contains("cancelled"));
}

fn picky() -> Vec<Arc<dyn Step>> {
    let validate = |out: &Value, _: &crate::Item| match out.as_str() {
        Some(s) if s.contains("t1") => Ok(()),
        Some(s) if s.contains("t2") => Err("too short".to_string()),
        _ => Err("no rhyme".to_string()),
    };
    vec![
        Arc::new(
            PromptStep::new("first")
                .prompt("one")
                .max_retries(1)
                .validator(validate),
        ),
        Arc::new(PromptStep::new("second").prompt("two")),
    ]
}

#[tokio::test]
async fn failures_are_grouped_recorded_and_retried_next_run() {
    let store = store_with(5).await;
    let report = executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&picky())
        .await
        .unwrap();
    let first = &report.steps[0];
    assert_eq!((first.done, first.failed), (1, 4));
    assert_eq!(first.failures_by_reason[0].reason, "no rhyme");
    assert_eq!(first.failures_by_reason[0].count, 3);
    assert_eq!(
        first.failures_by_reason[0].sample_output.as_deref(),
        Some("re:one: t0")
    );
    assert_eq!(first.failures_by_reason[1].count, 1);
    assert!(!report.all_failed(), "one item made it through");
    let summary = report.summary();
    assert!(
        summary.contains("3 x validation: no rhyme")
            && summary.contains("sample raw output:\nre:one: t0"),
        "{summary}"
    );
    let failures: Vec<_> = store.failures("first").map(Result::unwrap).collect();
    assert_eq!(failures.len(), 4);
    assert_eq!(
        (failures[0].1.attempts, failures[0].1.kind.as_str()),
        (2, "validation")
    );
    assert_eq!(
        report.steps[1].done, 1,
        "failed items are left out of later steps"
    );

    // The next run retries exactly the failed items (a stored failure does not block).
    let engine = echo();
    executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    assert_eq!(engine.calls(), 8);
    assert_eq!(
        store.failures("first").count(),
        0,
        "a stored result clears the failure"
    );
}

#[tokio::test]
async fn a_run_where_every_item_fails_says_so() {
    let store = store_with(3).await;
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| Ok(reply("garbage"))));
    let chain: Vec<Arc<dyn Step>> = vec![Arc::new(
        PromptStep::new("first")
            .prompt("one")
            .max_retries(0)
            .validator(|_, _| Err("no <poem> tags".into())),
    )];
    let report = executor(store, engine, ExecutorConfig::default())
        .run(&chain)
        .await
        .unwrap();
    assert!(report.all_failed());
    let summary = report.summary();
    assert!(
        summary.contains("3 x validation: no <poem> tags"),
        "{summary}"
    );
    assert!(summary.contains("sample raw output:\ngarbage"), "{summary}");
    assert!(summary.contains("every attempted item failed"), "{summary}");
}

#[tokio::test]
async fn a_fatal_engine_error_stops_the_run() {
    let store = store_with(50).await;
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| {
        Err(atk_engine::Error::AuthRefused {
            engine: "e".into(),
            status: 401,
            message: "bad key".into(),
        })
    }));
    let err = executor(
        store.clone(),
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(4),
    )
    .run(&two_steps())
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StepError::Engine(atk_engine::Error::AuthRefused { .. })
        ),
        "{err:?}"
    );
    assert!(
        engine.calls() <= 4,
        "no new requests after the fatal error: {}",
        engine.calls()
    );
    assert_eq!(
        store.failures("first").count(),
        0,
        "a fatal error is not an item failure"
    );
}

#[tokio::test]
async fn a_refused_key_is_logged_once_not_once_per_item_in_flight() {
    let logs = atk_testkit::CapturedLogs::default();
    // This test's runtime is single-threaded, so every task logs to this subscriber.
    let _guard = tracing::subscriber::set_default(logs.subscriber(tracing::Level::DEBUG));
    let store = store_with(20).await;
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| {
        Err(atk_engine::Error::AuthRefused {
            engine: "e".into(),
            status: 401,
            message: "bad key".into(),
        })
    }));
    executor(
        store,
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(5),
    )
    .run(&two_steps())
    .await
    .unwrap_err();
    assert_eq!(
        engine.calls(),
        5,
        "five items were in flight when the key was refused"
    );
    let text = logs.text();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("stopping the run"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("DEBUG") && l.contains("after the run was stopped"))
            .count(),
        4,
        "{text}"
    );
}

#[tokio::test]
async fn after_a_cancel_no_further_attempt_is_sent_and_nothing_is_recorded() {
    let store = store_with(10).await;
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    // The first reply to arrive comes with the Ctrl-C; every reply fails validation, so each
    // item in flight would otherwise go on to its next attempt.
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(move |_| {
        token.cancel();
        Ok(reply("not accepted"))
    }));
    let chain: Vec<Arc<dyn Step>> = vec![Arc::new(
        PromptStep::new("first")
            .prompt("one")
            .validator(|_, _| Err("never".into()))
            .max_retries(3),
    )];
    let cfg = ExecutorConfig::default()
        .with_cancel(cancel)
        .with_max_in_flight(3);
    let report = executor(store.clone(), engine.clone(), cfg)
        .run(&chain)
        .await
        .unwrap();
    assert_eq!(
        engine.calls(),
        3,
        "the three first attempts in flight were sent; no retry, no new item"
    );
    assert!(report.cancelled);
    assert_eq!((report.steps[0].done, report.steps[0].failed), (0, 0));
    assert_eq!(
        store.failures("first").count(),
        0,
        "a cancelled item is not a failure"
    );
}

#[tokio::test]
async fn prompt_errors_come_before_any_request() {
    let store = store_with(2).await;
    let engine = echo();
    let chain: Vec<Arc<dyn Step>> = vec![
        Arc::new(PromptStep::new("first").prompt("one")),
        Arc::new(PromptStep::new("x").prompt("missing")),
    ];
    let err = executor(store, engine.clone(), ExecutorConfig::default())
        .run(&chain)
        .await
        .unwrap_err();
    assert!(err.is_config_error());
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    assert_eq!(engine.calls(), 0);
}

#[tokio::test]
async fn duplicate_step_names_are_refused() {
    let chain: Vec<Arc<dyn Step>> = vec![
        Arc::new(PromptStep::new("a").prompt("one")),
        Arc::new(PromptStep::new("a").prompt("two")),
    ];
    let err = executor(store_with(1).await, echo(), ExecutorConfig::default())
        .run(&chain)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Config(ref m) if m.contains("`a`")),
        "{err}"
    );
}

fn fan_out_chain() -> Vec<Arc<dyn Step>> {
    let split = FanOutStep::from_fn("split", |item| {
        let text = item.fields()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((0..2)
            .map(|i| {
                let mut f = Fields::new();
                f.insert("text".into(), json!(format!("{text}.{i}")));
                f
            })
            .collect())
    });
    vec![
        Arc::new(PromptStep::new("first").prompt("one")),
        Arc::new(split),
        Arc::new(PromptStep::new("second").prompt("two")),
    ]
}

#[tokio::test]
async fn fan_out_children_get_stable_ids_and_go_on() {
    let store = store_with(2).await;
    let engine = echo();
    let report = executor(
        store.clone(),
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(1),
    )
    .run(&fan_out_chain())
    .await
    .unwrap();
    assert_eq!(report.steps[2].done, 4);
    assert_eq!(
        sent(&engine)[..3],
        ["one: t0", "two: re:one: t0", "two: re:one: t0"]
    );
    let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &fan_out_chain())
        .map(Result::unwrap)
        .collect();
    let ids: Vec<&str> = finals.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            child_id("id0000", 0),
            child_id("id0000", 1),
            child_id("id0001", 0),
            child_id("id0001", 1)
        ]
    );
    assert_eq!(finals[1].fields["text"], json!("t0.1"));
    assert_eq!(
        finals[1].fields["first"],
        json!("re:one: t0"),
        "children carry the parent's earlier results"
    );
    assert_eq!(finals[1].order, vec![0, 1]);

    let again = echo();
    executor(store.clone(), again.clone(), ExecutorConfig::default())
        .run(&fan_out_chain())
        .await
        .unwrap();
    assert_eq!(
        again.calls(),
        0,
        "a resumed run finds the children through the stored fan-out"
    );
}

#[tokio::test]
async fn filter_drops_are_recorded_with_their_reason() {
    let store = store_with(4).await;
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|r| {
        let text = last_text(r);
        Ok(reply(if text.ends_with('1') || text.ends_with('3') {
            "off-topic\nDROP"
        } else {
            "fine\nKEEP"
        }))
    }));
    let chain = || -> Vec<Arc<dyn Step>> {
        vec![
            Arc::new(FilterStep::new(PromptStep::new("judge"))),
            Arc::new(PromptStep::new("first").prompt("one")),
        ]
    };
    let report = executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&chain())
        .await
        .unwrap();
    assert_eq!(
        (
            report.steps[0].done,
            report.steps[0].dropped,
            report.steps[1].done
        ),
        (2, 2, 2)
    );
    let dropped = store.result("judge", "id0001").unwrap().unwrap();
    assert_eq!(
        dropped.outcome,
        Outcome::Dropped {
            reason: "off-topic\nDROP".into()
        }
    );
    assert_eq!(
        dropped.output,
        json!({"keep": false, "reason": "off-topic\nDROP"})
    );
    let finals: Vec<String> = collect_final(store.as_ref(), &chain())
        .map(|i| i.unwrap().id)
        .collect();
    assert_eq!(finals, ["id0000", "id0002"]);
    let calls = engine.calls();
    executor(store, engine.clone(), ExecutorConfig::default())
        .run(&chain())
        .await
        .unwrap();
    assert_eq!(engine.calls(), calls, "drops are not asked again");
}

#[tokio::test]
async fn progress_events_announce_counts_and_items() {
    let store = store_with(3).await;
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps()[..1])
        .await
        .unwrap();
    let log = Arc::new(Log::default());
    let ctx = StepContext::new(
        Engines::single(echo()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    Executor::new(store, ctx, log.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    let events = log.0.lock().unwrap().clone();
    assert_eq!(
        events[0],
        ProgressEvent::StepStarted {
            step: "first".into(),
            total: 3,
            already_done: 3
        }
    );
    assert_eq!(
        events[1],
        ProgressEvent::StepStarted {
            step: "second".into(),
            total: 3,
            already_done: 0
        }
    );
    let done = events.iter().filter(|e| matches!(e, ProgressEvent::ItemDone { step, prompt_tokens: 10, .. } if step == "second")).count();
    assert_eq!(done, 3);
    assert!(matches!(
        events.last(),
        Some(ProgressEvent::StepFinished { .. })
    ));

    // Everything finished: the counts come from the skipping pass itself.
    log.0.lock().unwrap().clear();
    let ctx = StepContext::new(
        Engines::single(echo()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    let store = store_with(3).await;
    executor(store.clone(), echo(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    Executor::new(store, ctx, log.clone(), ExecutorConfig::default())
        .run(&two_steps())
        .await
        .unwrap();
    let events = log.0.lock().unwrap().clone();
    assert_eq!(
        events[0],
        ProgressEvent::StepStarted {
            step: "first".into(),
            total: 3,
            already_done: 3
        }
    );
    assert_eq!(
        events[1],
        ProgressEvent::StepStarted {
            step: "second".into(),
            total: 3,
            already_done: 3
        }
    );
    assert_eq!(events.len(), 4, "{events:?}");
}

/// judge (filter) → split into 3 children → check (vote of 3) → join (fan-in) → polish.
fn qa_chain() -> Chain {
    const VOTES: u32 = 3;
    let split = FanOutStep::from_fn("split", |item| {
        let text = item.fields()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((0..3)
            .map(|i| Fields::from_iter([("text".to_string(), json!(format!("{text}.{i}")))]))
            .collect())
    });
    let join = crate::FanInStep::from_fn("join", |parent, children| {
        Ok(json!(format!(
            "{}:{}",
            parent.id(),
            children
                .iter()
                .map(|c| c.fields()["text"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        )))
    });
    Chain::new()
        .then(FilterStep::new(PromptStep::new("judge")))
        .then(split)
        .then(PromptStep::new("check").prompt("one").votes(VOTES))
        .then(join)
        .then(PromptStep::new("polish").prompt("two").result_key("first"))
}

/// Judges drop t1; checks say no to children ending in `.1`; everything else passes.
fn qa_reply(request: &atk_engine::Request) -> atk_engine::Reply {
    let text = last_text(request);
    reply(if text.starts_with("judge: t1") {
        "a table of contents\nDROP"
    } else if text.starts_with("judge") {
        "KEEP"
    } else if text.ends_with(".1") {
        "no"
    } else {
        "yes"
    })
}

fn qa_engine() -> Arc<ScriptedEngine> {
    Arc::new(ScriptedEngine::new("e").with_fallback(|r| Ok(qa_reply(r))))
}

#[tokio::test]
async fn a_fan_in_gathers_the_kept_children_once_per_parent() {
    let store = store_with(3).await;
    let engine = qa_engine();
    let report = executor(
        store.clone(),
        engine.clone(),
        ExecutorConfig::default().with_max_in_flight(4),
    )
    .run(&qa_chain())
    .await
    .unwrap();
    let by = |name: &str| {
        report
            .steps
            .iter()
            .find(|s| s.step == name)
            .unwrap()
            .clone()
    };
    assert_eq!((by("judge").done, by("judge").dropped), (2, 1));
    assert_eq!(by("check").done, 4, "two kept parents x two children pass");
    assert_eq!(by("check").dropped, 2);
    assert_eq!(by("join").done, 2);
    assert_eq!(report.finished, 2);
    assert_eq!(
        by("judge").drops_by_reason[0].reason,
        "a table of contents [...]"
    );
    // 3 judges, 6 children x 2 calls (a 2-0 vote stops early), 2 polishes.
    assert_eq!(engine.calls(), 3 + 12 + 2);
    let finals: Vec<ItemRecord> = collect_final(store.as_ref(), &qa_chain())
        .map(Result::unwrap)
        .collect();
    let ids: Vec<&str> = finals.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["id0000", "id0002"],
        "the parents come out, not the children"
    );
    assert_eq!(finals[0].fields["join"], json!("id0000:t0.0,t0.2"));
    assert_eq!(
        finals[0].fields["first"],
        json!("yes"),
        "polish ran on the parent: {:?}",
        finals[0].fields
    );
    let checked: Vec<ItemRecord> =
        collect_final(store.as_ref(), &qa_chain().up_to("check").unwrap())
            .map(Result::unwrap)
            .collect();
    assert_eq!(checked.len(), 4, "the children that passed the vote");
    assert_eq!(checked[0].fields["check"]["yes"], json!(2));

    // A rerun sends nothing and reuses every fan-in.
    let again = qa_engine();
    let report = executor(store.clone(), again.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    assert_eq!(again.calls(), 0);
    assert_eq!(report.finished, 2);
    assert_eq!(report.steps[3].skipped, 2);
    assert_eq!(
        report.steps[0].drops_by_reason[0].count, 1,
        "stored drops are listed again"
    );
}

#[tokio::test]
async fn a_fan_in_is_redone_when_its_kept_children_change_and_only_then() {
    let store = store_with(1).await;
    // First run: the check of child .2 fails for good (unreadable votes).
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|r| {
        let text = last_text(r);
        Ok(reply(if text.starts_with("judge") {
            "KEEP"
        } else if text.ends_with(".2") {
            "hmm"
        } else {
            "yes"
        }))
    }));
    let report = executor(store.clone(), engine, ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    assert_eq!(report.steps[2].failed, 1);
    assert_eq!(
        store.result("join", "id0000").unwrap().unwrap().output,
        json!("id0000:t0.0,t0.1")
    );
    // Second run: the failed child is tried again, passes, and the fan-in is redone with it.
    let engine = qa_engine();
    executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    assert_eq!(
        store.result("join", "id0000").unwrap().unwrap().output,
        json!("id0000:t0.0,t0.1,t0.2")
    );
    assert_eq!(
        engine.calls(),
        2 + 1,
        "two votes for the retried child, and polish again: its input changed"
    );
    let again = qa_engine();
    executor(store.clone(), again.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    assert_eq!(again.calls(), 0, "the same kept set: nothing is redone");
}

#[tokio::test]
async fn a_parent_with_no_kept_child_is_dropped_at_the_fan_in() {
    let store = store_with(1).await;
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|r| {
        Ok(reply(if last_text(r).starts_with("judge") {
            "KEEP"
        } else {
            "no"
        }))
    }));
    let report = executor(store.clone(), engine, ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    assert_eq!(report.steps[3].dropped, 1);
    assert_eq!(
        report.steps[3].drops_by_reason[0].reason,
        crate::NO_KEPT_CHILDREN
    );
    assert!(report.nothing_kept());
    assert!(
        report.summary().contains("every one was dropped or failed"),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn progress_counts_children_as_children() {
    let store = store_with(2).await;
    let log = Arc::new(Log::default());
    let ctx = StepContext::new(
        Engines::single(qa_engine()),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    Executor::new(store, ctx, log.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    let events = log.0.lock().unwrap().clone();
    let arrived = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::ItemArrived { step, .. } if step == "check"))
        .count();
    let done = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::ItemDone { step, .. } if step == "check"))
        .count();
    assert_eq!(
        (arrived, done),
        (3, 2),
        "one kept parent's three children arrive; two pass the vote"
    );
    assert!(events.contains(&ProgressEvent::StepStarted {
        step: "check".into(),
        total: 0,
        already_done: 0
    }));
    assert!(events.contains(&ProgressEvent::StepStarted {
        step: "judge".into(),
        total: 2,
        already_done: 0
    }));
}

#[tokio::test]
async fn a_crash_mid_chain_with_fan_out_vote_and_fan_in_resumes_to_the_same_result() {
    let n = 6usize;
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path()).await;
    store.put_items(items(n)).await.unwrap();
    // The engine stalls after 9 calls; the run is abandoned with those in flight.
    let engine = Arc::new(
        ScriptedEngine::new("e")
            .with_fallback(|r| Ok(qa_reply(r)))
            .hang_after(9),
    );
    let cfg = ExecutorConfig::default().with_max_in_flight(3);
    let run = executor(store.clone(), engine.clone(), cfg);
    let run = tokio::spawn(async move { run.run(&qa_chain()).await });
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.calls() < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    run.abort(); // the simulated crash, with calls in flight
    assert!(run.await.unwrap_err().is_cancelled());
    drop(store);
    let store = reopen(dir.path()).await;
    let engine = qa_engine();
    executor(store.clone(), engine.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    let resumed: Vec<ItemRecord> = collect_final(store.as_ref(), &qa_chain())
        .map(Result::unwrap)
        .collect();

    let fresh = store_with(n).await;
    let full = qa_engine();
    executor(fresh.clone(), full.clone(), ExecutorConfig::default())
        .run(&qa_chain())
        .await
        .unwrap();
    let expected: Vec<ItemRecord> = collect_final(fresh.as_ref(), &qa_chain())
        .map(Result::unwrap)
        .collect();
    let strip = |items: Vec<ItemRecord>| {
        items
            .into_iter()
            .map(|i| (i.id, i.fields))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(resumed), strip(expected));
    assert!(
        engine.calls() + 9 <= full.calls() + 2 * 3,
        "resent at most 2 x in-flight: {} + 9 vs {}",
        engine.calls(),
        full.calls()
    );
}
