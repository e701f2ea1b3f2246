//! The run status behind `atk status`: a snapshot the runner writes atomically to
//! `<output_dir>/status.json` about once a second, and its text rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the snapshot inside the output dir.
pub const STATUS_FILE: &str = "status.json";
/// Store meta key holding the last snapshot of a run (read when no run holds the store).
pub(crate) const STATUS_META_KEY: &str = "atk_status";

/// Per-step counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Step name.
    pub step: String,
    /// Items the step sees.
    pub total: u64,
    /// Items with a stored result.
    pub done: u64,
    /// Items that failed the step (in the latest run).
    pub failed: u64,
    /// Items a filter step dropped (included in `done`).
    #[serde(default)]
    pub dropped: u64,
    /// Items started and not finished (some may wait for a request slot; the requests in
    /// flight are [`StatusSnapshot::requests_in_flight`]).
    #[serde(default)]
    pub in_flight: u64,
    /// Items neither done nor failed.
    pub pending: u64,
    /// Prompt tokens spent on the step in the latest run.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens spent on the step in the latest run.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// How a step's stored results compare with its current fingerprint (prompt, params, model,
/// version): counted from a store no run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintStatus {
    /// Results made with the current fingerprint.
    pub current: u64,
    /// Results made with an older one (`--redo-changed` remakes them).
    pub older: u64,
}

/// Requests, tokens and cost of one engine: every run's on this output dir, and this run's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Engine label (`small`, `large`).
    pub label: String,
    /// Model name.
    pub model: String,
    /// Requests answered, all runs.
    pub requests: u64,
    /// Prompt tokens, all runs.
    pub prompt_tokens: u64,
    /// Completion tokens, all runs.
    pub completion_tokens: u64,
    /// Cost in USD, all runs.
    pub cost_usd: f64,
    /// Requests answered in this run.
    #[serde(default)]
    pub run_requests: u64,
    /// Prompt tokens in this run.
    #[serde(default)]
    pub run_prompt_tokens: u64,
    /// Completion tokens in this run.
    #[serde(default)]
    pub run_completion_tokens: u64,
    /// Cost of this run, USD.
    #[serde(default)]
    pub run_cost_usd: f64,
}

/// What `atk status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Pipeline name.
    #[serde(default)]
    pub pipeline: String,
    /// True while the run that wrote it is going.
    #[serde(default)]
    pub running: bool,
    /// Process id of the run.
    #[serde(default)]
    pub pid: u32,
    /// Unix time (ms) of the snapshot.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Milliseconds since the run started.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Per-step counts, in the order steps started.
    pub steps: Vec<StepStatus>,
    /// Per-engine requests, tokens and cost (all runs, and this run).
    #[serde(default)]
    pub engines: Vec<EngineStatus>,
    /// Total cost so far, all runs, USD.
    pub cost_usd: f64,
    /// Total cost of this run, USD.
    #[serde(default)]
    pub run_cost_usd: f64,
    /// Requests holding a slot of the engines' concurrency limit (what the engine counts as in
    /// flight; never above the limit), at the snapshot.
    #[serde(default)]
    pub requests_in_flight: u64,
    /// The concurrency limit's current window (`concurrency_limit`, lowered after 429s).
    #[serde(default)]
    pub request_limit: u64,
    /// Set when read: the snapshot says running, but its process is gone (killed or crashed),
    /// so the figures are from `updated_at_ms` and nothing is running.
    #[serde(default)]
    pub stale: bool,
    /// The last `set_progress` milestone: (progress 0..=1, message).
    #[serde(default)]
    pub milestone: Option<(f64, String)>,
    /// Per step: results made with the current fingerprint and with an older one (counted
    /// from the store when no run holds it; empty in a running run's snapshot).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fingerprints: std::collections::BTreeMap<String, FingerprintStatus>,
    /// Per step, how many results the store held (kept here, outside sled, so that a store
    /// that comes back with fewer is noticed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_results: BTreeMap<String, u64>,
    /// Results found missing when the run opened its store (a damaged store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<MissingResults>,
}

/// A step whose store came back with fewer results than were last recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResults {
    /// Step name.
    pub step: String,
    /// Results recorded (in `status.json`) after the last run.
    pub recorded: u64,
    /// Results the store holds now.
    pub found: u64,
}

impl MissingResults {
    /// How many results are gone.
    pub(crate) fn missing(&self) -> u64 {
        self.recorded.saturating_sub(self.found)
    }
}

/// The steps whose `found` result count is below the `recorded` one.
pub(crate) fn find_missing(
    recorded: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Vec<MissingResults> {
    recorded
        .iter()
        .map(|(step, &recorded)| MissingResults {
            step: step.clone(),
            recorded,
            found: found.get(step).copied().unwrap_or(0),
        })
        .filter(|m| m.missing() > 0)
        .collect()
}

/// The loud report of a damaged store: what is missing per step, that it will be requested
/// again, and how to keep a copy of the store first.
pub(crate) fn render_damage(store_dir: &Path, missing: &[MissingResults]) -> String {
    let mut s = String::new();
    let total: u64 = missing.iter().map(MissingResults::missing).sum();
    let _ = writeln!(
        s,
        "STORE DAMAGED: {total} stored results are missing from {}",
        store_dir.display()
    );
    for m in missing {
        let _ = writeln!(
            s,
            "  step {:<20} {:>8} missing (recorded {}, found {})",
            m.step,
            m.missing(),
            m.recorded,
            m.found
        );
    }
    let _ = writeln!(
        s,
        "  The store holds fewer results than the last run recorded (status.json): its files were\n  \
         damaged or replaced. The missing results will be requested (and paid for) again.\n  \
         To keep a copy of the store as it is now, stop the run (Ctrl-C) and copy it first:\n    \
         cp -a {dir} {dir}.damaged",
        dir = store_dir.display()
    );
    s
}

impl StatusSnapshot {
    /// Human rendering for `atk status`.
    pub fn render(&self) -> String {
        self.render_at(now_ms())
    }

    /// [`render`](Self::render) as seen at `now_ms` (Unix ms).
    pub(crate) fn render_at(&self, now_ms: u64) -> String {
        let mut s = String::new();
        let name = if self.pipeline.is_empty() {
            "run"
        } else {
            &self.pipeline
        };
        let elapsed = self.elapsed_ms as f64 / 1000.0;
        let seen = (self.updated_at_ms > 0).then(|| {
            format!(
                "last seen {} ago",
                ago(now_ms.saturating_sub(self.updated_at_ms))
            )
        });
        let _ = match (self.running, self.stale, seen) {
            (true, _, _) => writeln!(
                s,
                "{name}: running (pid {}), {elapsed:.0} s elapsed",
                self.pid
            ),
            (false, true, seen) => writeln!(
                s,
                "{name}: {}, the run is not running (pid {} stopped without finishing after {elapsed:.0} s: \
                 killed or crashed; figures are from then; rerun the same command to resume)",
                seen.unwrap_or_else(|| "last seen at an unknown time".into()),
                self.pid
            ),
            (false, false, Some(seen)) => writeln!(
                s,
                "{name}: not running ({seen}; the last run took {elapsed:.0} s)"
            ),
            (false, false, None) => {
                writeln!(s, "{name}: not running (the last run took {elapsed:.0} s)")
            }
        };
        if let Some((p, m)) = &self.milestone {
            let _ = writeln!(s, "  milestone: [{:>3.0}%] {m}", p * 100.0);
        }
        if self.steps.is_empty() {
            let _ = writeln!(s, "  no step has started");
        }
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:<20} {:>6} done {:>6} failed {:>6} pending {:>6} in progress  (of {})",
                st.step, st.done, st.failed, st.pending, st.in_flight, st.total
            );
            if let Some(FingerprintStatus { current, older }) = self.fingerprints.get(&st.step) {
                let _ = writeln!(
                    s,
                    "  {:<20} {current} made with the current prompt/params/model/version, {older} with an older one{}",
                    "",
                    if *older > 0 {
                        " (--redo-changed remakes them)"
                    } else {
                        ""
                    }
                );
            }
        }
        if self.running {
            let _ = writeln!(
                s,
                "  requests in flight: {} (limit {})",
                self.requests_in_flight, self.request_limit
            );
        }
        // "this run" while it runs; afterwards the same figures are the last run's.
        let this = if self.running { "this run" } else { "last run" };
        for e in &self.engines {
            let _ = writeln!(
                s,
                "  engine {} ({}): {this} {} requests, {} tokens in, {} out, ${:.4}; all runs {} requests, {} in, {} out, ${:.4}",
                e.label,
                e.model,
                e.run_requests,
                e.run_prompt_tokens,
                e.run_completion_tokens,
                e.run_cost_usd,
                e.requests,
                e.prompt_tokens,
                e.completion_tokens,
                e.cost_usd
            );
        }
        let _ = writeln!(
            s,
            "  cost: ${:.4} {this}, ${:.4} all runs",
            self.run_cost_usd, self.cost_usd
        );
        if !self.damage.is_empty() {
            let total: u64 = self.damage.iter().map(MissingResults::missing).sum();
            let _ = writeln!(
                s,
                "  STORE DAMAGED: {total} stored results missing; they are requested again"
            );
            for m in &self.damage {
                let _ = writeln!(
                    s,
                    "    step {:<20} {:>8} missing (recorded {}, found {})",
                    m.step,
                    m.missing(),
                    m.recorded,
                    m.found
                );
            }
        }
        s
    }

    /// Reads `<output_dir>/status.json`.
    pub(crate) fn read(output_dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(output_dir.join(STATUS_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// Why `atk status` could not say anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Neither a store nor a status snapshot is in the directory.
    #[error("no atk run in {}: no store and no status.json", .0.display())]
    NoRun(std::path::PathBuf),
    /// The store or the snapshot could not be read.
    #[error("{0}")]
    Read(String),
}

/// `42 s`, `3 min 5 s`, `2 h 4 min`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A running run rewrites its snapshot about once a second; one older than this is not trusted
/// to describe a live run on its own.
const HEARTBEAT_STALE_MS: u64 = 30_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

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
    let fresh = |s: &StatusSnapshot| now_ms().saturating_sub(s.updated_at_ms) < HEARTBEAT_STALE_MS;
    if let Some(s) = &snapshot
        && s.running
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
                .map(|s| StatusSnapshot { running: true, ..s })
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

/// A snapshot read while no run holds the store: not running, and stale when it says running
/// (its process died without writing its last snapshot).
fn settle(mut s: StatusSnapshot) -> StatusSnapshot {
    s.stale = s.running || s.stale;
    s.running = false;
    s.requests_in_flight = 0;
    s
}

/// Counts done and failed per step in a store no run holds. Step names and totals come from
/// the last snapshot the run saved (in the store, else `status.json`).
pub(crate) fn from_store(
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
    s.damage = find_missing(&recorded, &found);
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
    use super::*;
    use atk_state::{FailureRecord, ItemRecord, ResultRecord, SledStore, Store};

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
                attempts: 4,
                stored_at_ms: 1,
            };
            store.put_failure("write_poem", "c", f).await.unwrap();
            let last = StatusSnapshot {
                pipeline: "example-pipeline".into(),
                running: false, // as a run saves it at its end
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
        assert!(!s.running);
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
            running: true,
            pid: 1, // pid 1 is always alive
            updated_at_ms: now_ms(),
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
    async fn a_snapshot_from_a_killed_run_is_marked_stale() {
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
            running: true,
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
        assert!(s.stale && !s.running, "{s:?}");
        assert_eq!(
            (s.elapsed_ms, s.requests_in_flight),
            (42_000, 0),
            "the killed run's snapshot, the newer one"
        );
        let text = s.render_at(2_000_000 + 185_000);
        assert!(
            text.starts_with("p: last seen 3 min 5 s ago, the run is not running (pid"),
            "{text}"
        );
        assert!(!text.contains("requests in flight"), "{text}");
    }

    #[test]
    fn engine_rows_say_which_figures_are_this_runs() {
        let s = StatusSnapshot {
            engines: vec![EngineStatus {
                label: "small".into(),
                model: "m".into(),
                requests: 30,
                prompt_tokens: 3000,
                completion_tokens: 300,
                cost_usd: 0.5,
                run_requests: 10,
                run_prompt_tokens: 1000,
                run_completion_tokens: 100,
                run_cost_usd: 0.2,
            }],
            cost_usd: 0.5,
            run_cost_usd: 0.2,
            ..Default::default()
        };
        let text = s.render_at(0);
        assert!(
            text.contains("engine small (m): last run 10 requests, 1000 tokens in, 100 out, $0.2000; all runs 30 requests, 3000 in, 300 out, $0.5000"),
            "{text}"
        );
        assert!(
            text.contains("cost: $0.2000 last run, $0.5000 all runs"),
            "{text}"
        );
        let running = StatusSnapshot { running: true, ..s }.render_at(0);
        assert!(
            running.contains("this run 10 requests") && running.contains("$0.2000 this run"),
            "{running}"
        );
    }

    #[test]
    fn an_empty_dir_has_no_run() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_status(dir.path()),
            Err(StatusError::NoRun(_))
        ));
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = StatusSnapshot {
            pipeline: "example".into(),
            steps: vec![StepStatus {
                step: "write_poem".into(),
                total: 3,
                done: 2,
                pending: 1,
                ..Default::default()
            }],
            cost_usd: 0.5,
            ..Default::default()
        };
        let back: StatusSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
