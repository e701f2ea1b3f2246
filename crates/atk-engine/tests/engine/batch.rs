//! Batch mode against atk-testkit's OpenAI Files + Batches and Anthropic Message Batches:
//! every call gets the reply an online call gets, errored and expired lines go into later
//! batches, a failed batch or a vanished results file is asked again, and a journal lets a
//! new engine (a resumed run) poll the batch its requests are already in instead of paying
//! again, even when the batch's id was never learnt (OpenAI: found by its tag).

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atk_engine::{
    BatchConfig, BatchControl, BatchJournal, BatchProgress, CostCounter, Dialect, Engine,
    EngineConfig, Error, JournalEntry, Mode, Pricing, Request, build_engine,
};
use atk_testkit::{BatchBehaviour, ServerConfig, TestServer};
use common::{KEY, chat, engine_cfg, ms};
use tokio_util::sync::CancellationToken;

/// A journal in memory, shared by the "runs" of a test.
#[derive(Default)]
struct MemJournal {
    entries: Mutex<HashMap<String, JournalEntry>>,
    /// Every poll reported, in order.
    polls: Mutex<Vec<BatchProgress>>,
    /// Lines handed out.
    handed: Mutex<usize>,
}

#[async_trait]
impl BatchJournal for MemJournal {
    fn find(&self, custom_id: &str) -> Option<JournalEntry> {
        self.entries.lock().unwrap().get(custom_id).cloned()
    }
    async fn planned(&self, key: &str, custom_ids: &[String]) -> Result<(), String> {
        let mut e = self.entries.lock().unwrap();
        for id in custom_ids {
            e.insert(
                id.clone(),
                JournalEntry {
                    key: key.to_string(),
                    batch_id: None,
                },
            );
        }
        Ok(())
    }
    async fn created(&self, key: &str, batch_id: &str) -> Result<(), String> {
        for entry in self.entries.lock().unwrap().values_mut() {
            if entry.key == key {
                entry.batch_id = Some(batch_id.to_string());
            }
        }
        Ok(())
    }
    async fn polled(&self, _key: &str, _batch_id: &str, progress: &BatchProgress) {
        self.polls.lock().unwrap().push(progress.clone());
    }
    fn handed_out(&self, _key: &str, _custom_id: &str) {
        *self.handed.lock().unwrap() += 1;
    }
}

impl MemJournal {
    fn batch_id(&self) -> Option<String> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .find_map(|e| e.batch_id.clone())
    }
}

fn server_with(batch: BatchBehaviour) -> ServerConfig {
    // The default template: a reply of its own per prompt.
    ServerConfig::default().with_api_key(KEY).with_batch(batch)
}

fn batch_cfg(
    server: &TestServer,
    dialect: Dialect,
    journal: Option<Arc<MemJournal>>,
) -> EngineConfig {
    engine_cfg(server)
        .with_mode(Mode::Batch)
        .with_dialect(dialect)
        .with_api_key(KEY)
        .with_concurrency_limit(100usize)
        .with_batch(BatchConfig {
            size: 100,
            max_wait: ms(50),
            poll_first: ms(100),
            poll_max: Duration::from_secs(2),
            tag: "test-run".into(),
            journal: journal.map(|j| j as Arc<dyn BatchJournal>),
            no_wait: false,
        })
}

fn requests(n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| chat(&format!("item {i}")).with_param("max_tokens", 50))
        .collect()
}

async fn call_all(engine: &Arc<dyn Engine>, reqs: &[Request]) -> Vec<String> {
    let calls = reqs.iter().map(|r| {
        let engine = engine.clone();
        let r = r.clone();
        async move { engine.call(r).await }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every call ends with its reply").text)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_call_gets_the_online_reply_errored_and_expired_asked_again() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(BatchBehaviour {
            latency: Duration::from_secs(30),
            errored: 0.05,
            expired: 0.05,
            ..BatchBehaviour::default()
        }))
        .await
        .unwrap();
        let cost = CostCounter::new("t", Pricing::new(1.0, 1.0));
        let engine = build_engine(batch_cfg(&server, dialect, None), vec![cost.clone()]).unwrap();
        let reqs = requests(60);
        let batched = call_all(&engine, &reqs).await;
        let s = server.stats();
        assert_eq!(s.requests, 0, "{dialect}: no online request");
        assert!(
            s.batches_created >= 2,
            "{dialect}: failed lines went into a later batch"
        );
        // Only the failed lines were asked again: 60 prompts, repeats = lines beyond the first.
        let repeats: u64 = s.batch_per_prompt.values().map(|n| n - 1).sum();
        assert_eq!(s.batch_lines, 60 + repeats, "{dialect}");
        assert!(repeats > 0 && repeats < 20, "{dialect}: {repeats} repeats");
        assert_eq!(s.batch_completed, 60, "{dialect}");
        assert_eq!(cost.snapshot().requests, 60);
        // The same requests online get the same replies.
        let online = build_engine(
            engine_cfg(&server).with_dialect(dialect).with_api_key(KEY),
            vec![],
        )
        .unwrap();
        assert_eq!(call_all(&online, &reqs).await, batched, "{dialect}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_and_a_vanished_results_file_are_asked_again() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(BatchBehaviour {
            latency: Duration::from_secs(5),
            fail_first: 1,
            vanish_first: 1,
            ..BatchBehaviour::default()
        }))
        .await
        .unwrap();
        let engine = build_engine(batch_cfg(&server, dialect, None), vec![]).unwrap();
        let replies = call_all(&engine, &requests(10)).await;
        assert_eq!(replies.len(), 10);
        let s = server.stats();
        // OpenAI: one failed at validation (no results file), one answered whose results
        // vanished, one that came through. Anthropic has no validation failure: the first
        // batch's lines all errored, and it is its results that vanished.
        let expected = match dialect {
            Dialect::OpenAi => (3, 20),
            Dialect::Anthropic => (2, 10),
        };
        assert_eq!(
            (s.batches_created, s.batch_completed),
            expected,
            "{dialect}"
        );
        assert_eq!(s.requests, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_polls_the_batch_its_requests_are_in() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(BatchBehaviour {
            latency: Duration::from_secs(3600),
            ..BatchBehaviour::default()
        }))
        .await
        .unwrap();
        let journal = Arc::new(MemJournal::default());
        let reqs = requests(20);
        // The first run submits its batch and is stopped while polling.
        let stop = CancellationToken::new();
        let first = build_engine(
            batch_cfg(&server, dialect, Some(journal.clone())).with_cancel(stop.clone()),
            vec![],
        )
        .unwrap();
        let run = tokio::spawn({
            let reqs = reqs.clone();
            async move {
                let calls = reqs.into_iter().map(|r| first.call(r));
                futures_util::future::join_all(calls).await
            }
        });
        server
            .wait_until(Duration::from_secs(60), |s| s.batch_polls >= 2)
            .await
            .expect("the batch is being polled");
        stop.cancel();
        let stopped = run.await.unwrap();
        assert!(stopped.iter().all(|r| r.is_err()), "nothing answered yet");
        // The next run finds every request in the stored batch: no new batch.
        let second = build_engine(batch_cfg(&server, dialect, Some(journal)), vec![]).unwrap();
        let replies = call_all(&second, &reqs).await;
        assert_eq!(replies.len(), 20);
        let s = server.stats();
        assert_eq!((s.batches_created, s.batch_lines), (1, 20), "{dialect}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_id_was_lost_is_found_by_its_tag() {
    let server = TestServer::start(server_with(BatchBehaviour {
        latency: Duration::from_secs(10),
        lose_create_first: 1,
        ..BatchBehaviour::default()
    }))
    .await
    .unwrap();
    let journal = Arc::new(MemJournal::default());
    let engine = build_engine(
        batch_cfg(&server, Dialect::OpenAi, Some(journal.clone())),
        vec![],
    )
    .unwrap();
    call_all(&engine, &requests(10)).await;
    let s = server.stats();
    assert_eq!((s.batches_created, s.batch_lines), (1, 10));
    // A server whose batch list cannot be searched: the batch is created again (the docs say
    // so), and every call still gets its reply.
    let server = TestServer::start(server_with(BatchBehaviour {
        latency: Duration::from_secs(10),
        lose_create_first: 1,
        no_list: true,
        ..BatchBehaviour::default()
    }))
    .await
    .unwrap();
    let engine = build_engine(
        batch_cfg(
            &server,
            Dialect::OpenAi,
            Some(Arc::new(MemJournal::default())),
        ),
        vec![],
    )
    .unwrap();
    assert_eq!(call_all(&engine, &requests(10)).await.len(), 10);
    assert_eq!(server.stats().batches_created, 2);
}

#[tokio::test(start_paused = true)]
async fn identical_calls_are_separate_samples() {
    // A vote asks the same prompt several times: each call is a line of its own, at once or
    // one after the other, never the same line handed out twice.
    let server = TestServer::start(server_with(BatchBehaviour {
        latency: Duration::from_secs(1),
        ..BatchBehaviour::default()
    }))
    .await
    .unwrap();
    let journal = Arc::new(MemJournal::default());
    let engine = build_engine(batch_cfg(&server, Dialect::OpenAi, Some(journal)), vec![]).unwrap();
    let vote = chat("is it so?").with_param("max_tokens", 5);
    call_all(&engine, &vec![vote.clone(); 3]).await;
    let s = server.stats();
    assert_eq!((s.batches_created, s.batch_lines), (1, 3));
    engine.call(vote).await.unwrap();
    let s = server.stats();
    assert_eq!((s.batches_created, s.batch_lines), (2, 4));
}

#[tokio::test(start_paused = true)]
async fn no_wait_leaves_the_batch_and_a_later_engine_collects_it() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(BatchBehaviour {
            latency: Duration::from_secs(600),
            ..BatchBehaviour::default()
        }))
        .await
        .unwrap();
        let journal = Arc::new(MemJournal::default());
        let mut cfg = batch_cfg(&server, dialect, Some(journal.clone()));
        cfg.batch.no_wait = true;
        let leaving = build_engine(cfg, vec![]).unwrap();
        let reqs = requests(6);
        for r in futures_util::future::join_all(reqs.iter().map(|r| leaving.call(r.clone()))).await
        {
            // Left running: the call ends as a stopped one (its item stays pending).
            assert!(
                matches!(r, Err(Error::Cancelled { .. })),
                "{dialect}: {r:?}"
            );
        }
        let s = server.stats();
        assert_eq!(
            (s.batches_created, s.batch_polls),
            (1, 1),
            "{dialect}: one look"
        );
        let polls = journal.polls.lock().unwrap().clone();
        assert_eq!(polls.len(), 1, "{dialect}");
        assert!(
            !polls[0].ended && polls[0].total == 6,
            "{dialect}: {polls:?}"
        );
        assert_eq!(
            *journal.handed.lock().unwrap(),
            0,
            "{dialect}: nothing handed out"
        );
        // A later engine (the next run) waits for the same batch and reads it.
        let collecting =
            build_engine(batch_cfg(&server, dialect, Some(journal.clone())), vec![]).unwrap();
        assert_eq!(call_all(&collecting, &reqs).await.len(), 6);
        let s = server.stats();
        assert_eq!((s.batches_created, s.batch_lines), (1, 6), "{dialect}");
        let last = journal.polls.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (last.ended, last.done, last.total),
            (true, 6, 6),
            "{dialect}: the read batch is reported with its counts"
        );
        assert_eq!(*journal.handed.lock().unwrap(), 6, "{dialect}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_batch_keeps_what_it_did_and_the_rest_goes_in_a_new_batch() {
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let server = TestServer::start(server_with(BatchBehaviour {
            latency: Duration::from_secs(3600),
            cancel_done: 0.5,
            ..BatchBehaviour::default()
        }))
        .await
        .unwrap();
        let journal = Arc::new(MemJournal::default());
        let mut cfg = batch_cfg(&server, dialect, Some(journal.clone()));
        cfg.batch.no_wait = true;
        let reqs = requests(10);
        let leaving = build_engine(cfg.clone(), vec![]).unwrap();
        futures_util::future::join_all(reqs.iter().map(|r| leaving.call(r.clone()))).await;
        let id = journal.batch_id().expect("the batch's id is recorded");
        let cancelled = BatchControl::new(&cfg).unwrap().cancel(&id).await.unwrap();
        assert!(
            !cancelled.ended && cancelled.state.starts_with("cancel"),
            "{dialect}: {cancelled:?}"
        );
        assert_eq!(server.stats().batches_cancelled, 1);
        // The next run reads the five lines the batch did and sends the other five again.
        let collecting =
            build_engine(batch_cfg(&server, dialect, Some(journal.clone())), vec![]).unwrap();
        assert_eq!(call_all(&collecting, &reqs).await.len(), 10);
        let s = server.stats();
        assert_eq!(
            (s.batches_created, s.batch_lines, s.batch_completed),
            (2, 15, 10),
            "{dialect}: {s:?}"
        );
        let ended = journal
            .polls
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.ended)
            .cloned()
            .unwrap();
        assert_eq!((ended.done, ended.total), (5, 10), "{dialect}: {ended:?}");
    }
}
