//! Reading a run's status without disturbing it: the running run's `status.json`, or, when no
//! run holds the store, counts from the store itself.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    FingerprintStatus, RunState, STATUS_FILE, STATUS_META_KEY, StatusError, StatusSnapshot,
};

/// A running run rewrites its snapshot about once a second; one older than this is not trusted
/// to describe a live run on its own.
const HEARTBEAT_STALE_MS: u64 = 30_000;

fn pid_alive(pid: u32) -> bool {
    // Linux and most Unixes expose live processes under /proc; elsewhere assume alive, which
    // only means `atk status` reads the snapshot instead of opening the store.
    let proc_dir = Path::new("/proc");
    !proc_dir.is_dir() || proc_dir.join(pid.to_string()).exists()
}

/// The status of the run in `output_dir`, without disturbing it: while a run holds the store
/// (its snapshot names a live pid, or the store is locked) the run's `status.json` is read;
/// otherwise the store is opened and done/failed are counted from it.
pub fn read_status(output_dir: &Path) -> Result<StatusSnapshot, StatusError> {
    let snapshot = match StatusSnapshot::read(output_dir) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StatusError::Read(format!(
                "{}: {e}",
                output_dir.join(STATUS_FILE).display()
            )));
        }
    };
    // A live pid with a fresh heartbeat is the run itself; otherwise (the pid is gone, or was
    // reused by another process and the heartbeat stopped) the store's lock tells the truth.
    let fresh = |s: &StatusSnapshot| {
        atk_state::now_ms().saturating_sub(s.updated_at_ms) < HEARTBEAT_STALE_MS
    };
    if let Some(s) = &snapshot
        && s.is_running()
        && s.pid != std::process::id()
        && pid_alive(s.pid)
        && fresh(s)
    {
        return Ok(s.clone());
    }
    let store = match atk_state::SledStore::try_open_read(&crate::runner::store_dir(output_dir)) {
        Ok(store) => store,
        Err(atk_state::Error::Locked { .. }) => {
            return snapshot
                .map(|s| StatusSnapshot {
                    state: RunState::Running,
                    ..s
                })
                .ok_or_else(|| {
                    StatusError::Read(format!(
                        "a run holds {} and has not written status.json yet",
                        output_dir.display()
                    ))
                });
        }
        Err(atk_state::Error::NotFound { .. }) => {
            return snapshot
                .map(settle)
                .ok_or_else(|| StatusError::NoRun(output_dir.to_path_buf()));
        }
        Err(e) => return Err(StatusError::Read(e.to_string())),
    };
    from_store(&store, snapshot).map_err(|e| StatusError::Read(e.to_string()))
}

/// A snapshot read while no run holds the store: one that says running is `killed` (its
/// process died without writing its last snapshot); nothing is in flight.
fn settle(mut s: StatusSnapshot) -> StatusSnapshot {
    if s.is_running() {
        s.state = RunState::Killed;
    }
    s.requests_in_flight = 0;
    s
}

/// Counts done and failed per step in a store no run holds. Step names and totals come from
/// the last snapshot the run saved (in the store, else `status.json`).
fn from_store(
    store: &dyn atk_state::Store,
    file_snapshot: Option<StatusSnapshot>,
) -> Result<StatusSnapshot, atk_state::Error> {
    let saved = store
        .meta(STATUS_META_KEY)?
        .and_then(|v| serde_json::from_value::<StatusSnapshot>(v).ok());
    // The counts kept outside sled are the ones to trust: the copy in the store may be gone too.
    let recorded = file_snapshot
        .as_ref()
        .map(|f| f.stored_results.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| saved.as_ref().map(|s| s.stored_results.clone()))
        .unwrap_or_default();
    // The newer of the two: after a kill, status.json is fresher than what the store kept from
    // the last clean end.
    let newest = match (saved, file_snapshot) {
        (Some(a), Some(b)) if b.updated_at_ms > a.updated_at_ms => Some(b),
        (a, b) => a.or(b),
    };
    let mut s = settle(newest.unwrap_or_default());
    // The first step runs on root items (a fan-out's children are counted by their own steps);
    // ids are read without decoding records.
    let items = store.root_ids().try_fold(0u64, |n, r| r.map(|_| n + 1))?;
    let fingerprints = store
        .meta(crate::redo::FINGERPRINT_META_KEY)?
        .and_then(|v| {
            serde_json::from_value::<
                    std::collections::BTreeMap<String, crate::redo::StepFingerprint>,
                >(v)
                .ok()
        })
        .unwrap_or_default();
    let mut found = BTreeMap::new();
    for step in recorded.keys() {
        found.insert(step.clone(), store.count_results(step)?);
    }
    s.damage = crate::damage::find_missing(&recorded, &found);
    let mut engines: Vec<&str> = s.engines.iter().map(|e| e.label.as_str()).collect();
    if engines.is_empty() {
        engines = vec!["small", "large"];
    }
    s.batches = super::read_batches(store, &engines)?;
    s.stored_results = recorded;
    for (i, st) in s.steps.iter_mut().enumerate() {
        if let Some(fp) = fingerprints.get(&st.step) {
            // Reads every result of the step: `atk status` is run now and then, not in a loop.
            let counts = atk_step::count_fingerprints(store, &st.step, &fp.current)?;
            s.fingerprints.insert(
                st.step.clone(),
                FingerprintStatus {
                    current: counts.current,
                    older: counts.older(),
                },
            );
        }
        st.done = store.count_results(&st.step)?;
        st.failed = store.count_failures(&st.step)?;
        st.in_flight = 0;
        if i == 0 {
            st.total = st.total.max(items);
        }
        // A step sees at least what it settled: the last run may have counted fewer (a preview
        // of a few items, a run that stopped before its chain started: "4 done (of 0)").
        st.total = st.total.max(st.done + st.failed);
        st.pending = st.total.saturating_sub(st.done + st.failed);
    }
    if let Some(costs) = store
        .meta(crate::runner::COST_META_KEY)?
        .and_then(|v| v.as_object().cloned())
    {
        for e in &mut s.engines {
            if let Some(t) = costs
                .get(&e.label)
                .and_then(|v| serde_json::from_value::<atk_engine::CostTotals>(v.clone()).ok())
            {
                e.requests = t.requests;
                e.prompt_tokens = t.prompt_tokens;
                e.completion_tokens = t.completion_tokens;
                e.cost_usd = t.cost_usd;
            }
        }
        s.cost_usd = s.engines.iter().map(|e| e.cost_usd).sum();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use atk_state::{FailureRecord, ItemRecord, ResultRecord, SledStore, Store};

    use super::super::{EngineStatus, MissingResults, StepStatus};
    use super::*;

    fn item(id: &str, n: u64) -> ItemRecord {
        ItemRecord {
            v: 1,
            id: id.into(),
            parent: None,
            order: vec![n, 0],
            fields: Default::default(),
        }
    }

    #[tokio::test]
    async fn status_of_a_finished_run_counts_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(&crate::runner::store_dir(dir.path())).unwrap();
            store
                .put_items(vec![item("a", 0), item("b", 1), item("c", 2), item("d", 3)])
                .await
                .unwrap();
            let r = ResultRecord {
                v: 1,
                output: "poem".into(),
                details: None,
                attempts: 1,
                prompt_tokens: 1,
                completion_tokens: 1,
                elapsed_ms: 1,
                stored_at_ms: 1,
                ..ResultRecord::new(serde_json::Value::Null)
            };
            store
                .put_result("write_poem", "a", r.clone())
                .await
                .unwrap();
            store.put_result("write_poem", "b", r).await.unwrap();
            let f = FailureRecord {
                v: 1,
                kind: "validation".into(),
                reason: "short".into(),
                last_output: None,
                last_prompt: None,
                attempts: 4,
                stored_at_ms: 1,
            };
            store.put_failure("write_poem", "c", f).await.unwrap();
            let last = StatusSnapshot {
                pipeline: "example-pipeline".into(),
                state: RunState::Finished, // as a run saves it at its end
                pid: 1,
                elapsed_ms: 12_300,
                steps: vec![StepStatus {
                    step: "write_poem".into(),
                    total: 4,
                    ..Default::default()
                }],
                engines: vec![EngineStatus {
                    label: "small".into(),
                    model: "gpt-4o-mini".into(),
                    ..Default::default()
                }],
                milestone: Some((1.0, "pipeline complete".into())),
                ..Default::default()
            };
            store
                .put_meta(STATUS_META_KEY, serde_json::to_value(&last).unwrap())
                .await
                .unwrap();
            let costs = serde_json::json!({"small": {"requests": 7, "failed_requests": 0, "prompt_tokens": 7000, "completion_tokens": 1400, "estimated_replies": 0, "cost_usd": 0.00189, "retries": {}}});
            store
                .put_meta(crate::runner::COST_META_KEY, costs)
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let s = read_status(dir.path()).unwrap();
        insta::assert_snapshot!("status_finished_run", s.render_at(0));
        let st = &s.steps[0];
        assert_eq!((st.done, st.failed, st.pending), (2, 1, 1));
        assert_eq!(s.state, RunState::Finished);
    }

    #[tokio::test]
    async fn status_reports_results_missing_from_a_damaged_store() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = crate::runner::store_dir(dir.path());
        {
            let store = SledStore::open(&store_dir).unwrap();
            let r = ResultRecord::new("x".repeat(3000).into());
            for i in 0..200 {
                store
                    .put_result("write_poem", &format!("item{i:03}"), r.clone())
                    .await
                    .unwrap();
            }
            let last = StatusSnapshot {
                steps: vec![StepStatus {
                    step: "write_poem".into(),
                    total: 200,
                    done: 200,
                    ..Default::default()
                }],
                stored_results: store.result_counts().unwrap(),
                ..Default::default()
            };
            atk_state::write_status_snapshot(dir.path(), &serde_json::to_value(&last).unwrap())
                .unwrap();
        }
        assert!(
            read_status(dir.path()).unwrap().damage.is_empty(),
            "an intact store has no damage"
        );
        // The last run counted none (it stopped before its chain started): the totals shown are
        // still what the store holds, never "200 done (of 0)".
        let mut none = StatusSnapshot::read(dir.path()).unwrap();
        none.steps[0].total = 0;
        atk_state::write_status_snapshot(dir.path(), &serde_json::to_value(&none).unwrap())
            .unwrap();
        let s = read_status(dir.path()).unwrap();
        assert_eq!((s.steps[0].total, s.steps[0].pending), (200, 0));
        assert!(!s.render().contains("(of 0)"), "{}", s.render());
        // A store that comes back with fewer results than recorded (replaced by an older copy).
        let mut more = StatusSnapshot::read(dir.path()).unwrap();
        more.stored_results.insert("write_poem".into(), 250);
        atk_state::write_status_snapshot(dir.path(), &serde_json::to_value(&more).unwrap())
            .unwrap();
        let s = read_status(dir.path()).unwrap();
        assert_eq!(
            s.damage,
            [MissingResults {
                step: "write_poem".into(),
                recorded: 250,
                found: 200
            }]
        );
        assert!(
            s.render()
                .contains("STORE DAMAGED: 50 stored results missing"),
            "{}",
            s.render()
        );

        let db = store_dir.join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2;
        let end = (mid + 64 * 1024).min(bytes.len());
        bytes[mid..end]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8).wrapping_mul(151).wrapping_add(7));
        std::fs::write(&db, bytes).unwrap();
        // Depending on where the garbage lands, sled drops what follows it on open, or meets
        // a bad checksum when reading: both are reported.
        match read_status(dir.path()) {
            Ok(s) => {
                let m = &s.damage[0];
                assert!(m.found < 200, "{m:?}");
                assert!(
                    s.render().contains(&format!("{} missing", m.missing())),
                    "{}",
                    s.render()
                );
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("is damaged") && text.contains("cp -a"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn status_of_a_running_run_reads_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = StatusSnapshot {
            pipeline: "p".into(),
            state: RunState::Running,
            pid: 1, // pid 1 is always alive
            updated_at_ms: atk_state::now_ms(),
            steps: vec![StepStatus {
                step: "s".into(),
                total: 10,
                done: 3,
                in_flight: 12,
                pending: 7,
                ..Default::default()
            }],
            requests_in_flight: 8,
            request_limit: 8,
            ..Default::default()
        };
        atk_state::write_status_snapshot(dir.path(), &serde_json::to_value(&s).unwrap()).unwrap();
        let read = read_status(dir.path()).unwrap();
        assert_eq!(read, s);
        let text = read.render();
        assert!(text.contains("running (pid 1)"), "{text}");
        // Requests in flight are the engine's count, never above the limit; items started and
        // waiting for a slot are "in progress".
        assert!(
            text.contains("requests in flight: 8 (limit 8)") && text.contains("12 in progress"),
            "{text}"
        );
    }

    /// A pid no process has (above any kernel's pid_max; spawning one to reap would race the
    /// other tests' store locks through fork).
    fn dead_pid() -> u32 {
        u32::MAX - 1
    }

    #[tokio::test]
    async fn a_snapshot_from_a_killed_run_reads_as_killed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(&crate::runner::store_dir(dir.path())).unwrap();
            store
                .put_items(vec![item("a", 0), item("b", 1)])
                .await
                .unwrap();
            // An earlier run's clean end, older than the killed run's last heartbeat.
            let old = StatusSnapshot {
                pipeline: "p".into(),
                updated_at_ms: 1_000,
                elapsed_ms: 5_000,
                ..Default::default()
            };
            store
                .put_meta(STATUS_META_KEY, serde_json::to_value(&old).unwrap())
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let killed = StatusSnapshot {
            pipeline: "p".into(),
            state: RunState::Running,
            pid: dead_pid(),
            updated_at_ms: 2_000_000,
            elapsed_ms: 42_000,
            steps: vec![StepStatus {
                step: "s".into(),
                total: 2,
                in_flight: 2,
                pending: 2,
                ..Default::default()
            }],
            requests_in_flight: 2,
            request_limit: 4,
            ..Default::default()
        };
        atk_state::write_status_snapshot(dir.path(), &serde_json::to_value(&killed).unwrap())
            .unwrap();
        let s = read_status(dir.path()).unwrap();
        assert_eq!(s.state, RunState::Killed, "{s:?}");
        assert_eq!(
            (s.elapsed_ms, s.requests_in_flight),
            (42_000, 0),
            "the killed run's snapshot, the newer one"
        );
        let text = s.render_at(2_000_000 + 185_000);
        assert!(
            text.starts_with(
                "p: killed (last seen 3 min 5 s ago; after 42 s): the run is not running; pid"
            ),
            "{text}"
        );
        assert!(!text.contains("requests in flight"), "{text}");
    }

    #[test]
    fn a_status_json_written_by_release_0_1_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        // As release 0.1 wrote it at a run's end: `running`, no `state`.
        let old = r#"{"pipeline":"example-pipeline","running":false,"pid":7,"updated_at_ms":5000,
            "elapsed_ms":3000,"steps":[{"step":"write_poem","total":2,"done":2,"failed":0,"pending":0}],
            "cost_usd":0.0,"stale":false,"milestone":[1.0,"pipeline complete"]}"#;
        std::fs::write(dir.path().join(STATUS_FILE), old).unwrap();
        let s = read_status(dir.path()).unwrap();
        assert_eq!(s.state, RunState::Finished);
        assert_eq!(s.steps[0].done, 2);
        assert!(s.render_at(6000).starts_with("example-pipeline: finished"));
        // A 0.1 run killed while running reads as killed.
        let killed = old.replace(
            r#""running":false,"pid":7"#,
            r#""running":true,"pid":4294967294"#,
        );
        std::fs::write(dir.path().join(STATUS_FILE), killed).unwrap();
        assert_eq!(read_status(dir.path()).unwrap().state, RunState::Killed);
    }

    #[test]
    fn an_empty_dir_has_no_run() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_status(dir.path()),
            Err(StatusError::NoRun(_))
        ));
    }
}
