//! The end-of-run summary: items done and failed by reason (with a sample output), requests
//! and retries by cause, tokens and cost per engine, wall time; printed to stderr (where each
//! dataset went: stdout) and written to `<output_dir>/run_summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atk_engine::CostTotals;
use atk_step::RunReport;
use serde::{Deserialize, Serialize};

pub(crate) use crate::layout::SUMMARY_FILE;
/// File name of the per-engine token and cost totals (all runs) in the output dir.
pub(crate) const TOKEN_COUNTS_FILE: &str = "token_counts.json";
/// Longest sample output shown on the terminal (characters).
const SAMPLE_CHARS: usize = 400;
/// Drop reasons shown per step on the terminal.
const MAX_DROP_LINES: usize = 5;

impl From<&atk_step::FailureGroup> for FailureSummary {
    fn from(g: &atk_step::FailureGroup) -> Self {
        Self {
            kind: g.kind.clone(),
            reason: g.reason.clone(),
            count: g.count,
            sample_output: g.sample_output.clone(),
        }
    }
}

/// Failures of one kind and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FailureSummary {
    /// Short class (`validation`, `length`, `transport`, ...).
    pub kind: String,
    /// The reason.
    pub reason: String,
    /// How many items failed this way in this run.
    pub count: u64,
    /// One raw output that failed this way.
    pub sample_output: Option<String>,
}

/// One step's counts in this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepSummary {
    /// Step name.
    pub step: String,
    /// Results stored in this run.
    pub done: u64,
    /// Results already stored by an earlier run.
    pub already_done: u64,
    /// Items that failed in this run.
    pub failed: u64,
    /// Items a filter dropped in this run.
    pub dropped: u64,
    /// Failures by reason, most common first.
    pub failures: Vec<FailureSummary>,
    /// Drops by reason (this run's and stored ones met again), most common first.
    #[serde(default)]
    pub drops: Vec<FailureSummary>,
}

/// One engine's requests, tokens and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EngineSummary {
    /// Engine label.
    pub label: String,
    /// Model.
    pub model: String,
    /// True for the mock engine.
    pub mock: bool,
    /// Requests answered in this run.
    pub requests: u64,
    /// Requests answered in every run on this output dir.
    #[serde(default)]
    pub requests_all_runs: u64,
    /// Requests that failed for good in this run.
    pub failed_requests: u64,
    /// Transport retries in this run, by cause.
    pub retries: BTreeMap<String, u64>,
    /// Prompt tokens in this run.
    pub prompt_tokens: u64,
    /// Completion tokens in this run.
    pub completion_tokens: u64,
    /// Cost of this run, USD.
    pub cost_usd: f64,
    /// Cost of every run on this output dir, USD.
    pub cost_usd_all_runs: f64,
    /// Streams the endpoint cut in this run while other requests were in flight.
    #[serde(default)]
    pub cut_while_busy: u64,
    /// The in-flight window those cuts left (1: the endpoint serves one request at a time).
    #[serde(default)]
    pub cut_window: Option<u64>,
    /// With several endpoints: this run's attempts per endpoint, `[answered, failed]`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, [u64; 2]>,
}

/// What `run_summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// Wall time of the run, seconds.
    pub wall_time_s: f64,
    /// Per step, every chain the pipeline ran.
    pub steps: Vec<StepSummary>,
    /// Per engine.
    pub engines: Vec<EngineSummary>,
    /// Datasets written: path and line count.
    pub datasets: Vec<(PathBuf, u64)>,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// True when items failed and none reached the end of a chain.
    pub all_failed: bool,
    /// Items that went through a whole chain (this run or earlier), over every chain run.
    #[serde(default)]
    pub finished: u64,
    /// Rows left out of a dataset because they were not valid for its format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_rows: Vec<DroppedRows>,
    /// The barrier step a `--shard` run stopped before (no item could reach the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_before: Option<String>,
    /// How to move a large sled store to redb (shown by the first run past the threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_advice: Option<String>,
}

/// Rows of one dataset left out for one reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DroppedRows {
    /// The dataset file.
    pub file: PathBuf,
    /// Why they were left out.
    pub reason: String,
    /// How many.
    pub count: u64,
}

fn minus(a: u64, b: u64) -> u64 {
    a.saturating_sub(b)
}

impl RunSummary {
    /// Builds the summary; `costs` are `(label, model, mock, totals now, totals at start)`.
    pub(crate) fn new(
        pipeline: &str,
        wall: Duration,
        reports: &[RunReport],
        costs: &[(String, String, bool, CostTotals, CostTotals)],
        datasets: Vec<(PathBuf, u64)>,
        error: Option<String>,
    ) -> Self {
        let steps = reports
            .iter()
            .flat_map(|r| r.steps.iter())
            .map(|s| StepSummary {
                step: s.step.clone(),
                done: s.done,
                already_done: s.skipped,
                failed: s.failed,
                dropped: s.dropped,
                failures: s
                    .failures_by_reason
                    .iter()
                    .map(FailureSummary::from)
                    .collect(),
                drops: s.drops_by_reason.iter().map(FailureSummary::from).collect(),
            })
            .collect();
        let engines = costs
            .iter()
            .map(|(label, model, mock, now, start)| EngineSummary {
                label: label.clone(),
                model: model.clone(),
                mock: *mock,
                requests: minus(now.requests, start.requests),
                requests_all_runs: now.requests,
                failed_requests: minus(now.failed_requests, start.failed_requests),
                retries: now
                    .retries
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            minus(*v, start.retries.get(k).copied().unwrap_or(0)),
                        )
                    })
                    .filter(|(_, v)| *v > 0)
                    .collect(),
                prompt_tokens: minus(now.prompt_tokens, start.prompt_tokens),
                completion_tokens: minus(now.completion_tokens, start.completion_tokens),
                cost_usd: (now.cost_usd - start.cost_usd).max(0.0),
                cost_usd_all_runs: now.cost_usd,
                cut_while_busy: minus(now.cut_while_busy, start.cut_while_busy),
                cut_window: now.cut_window,
                endpoints: now
                    .endpoints
                    .iter()
                    .map(|(url, [ok, failed])| {
                        let [ok0, failed0] = start.endpoints.get(url).copied().unwrap_or_default();
                        (url.clone(), [minus(*ok, ok0), minus(*failed, failed0)])
                    })
                    .filter(|(_, [ok, failed])| ok + failed > 0)
                    .collect(),
            })
            .collect();
        let all_failed = reports.iter().any(RunReport::all_failed);
        let finished = reports.iter().map(|r| r.finished).sum();
        Self {
            pipeline: pipeline.to_string(),
            wall_time_s: wall.as_secs_f64(),
            steps,
            engines,
            datasets,
            error,
            all_failed,
            finished,
            dropped_rows: Vec::new(),
            stopped_before: reports.iter().find_map(|r| r.stopped_before.clone()),
            store_advice: None,
        }
    }

    /// Why the run kept nothing, when it did not: no item reached the end of a chain although
    /// items were dropped or failed, or every dataset written came out empty. The CLI exits 1.
    pub(crate) fn nothing_kept(&self) -> Option<String> {
        let dropped: u64 = self
            .steps
            .iter()
            .flat_map(|s| &s.drops)
            .map(|d| d.count)
            .sum();
        let failed: u64 = self.steps.iter().map(|s| s.failed).sum();
        if self.stopped_before.is_some() {
            return None;
        }
        if !self.steps.is_empty() && self.finished == 0 && dropped + failed > 0 {
            return Some(format!(
                "no item reached the end of the chain ({dropped} dropped, {failed} failed); the reasons are listed above"
            ));
        }
        if !self.datasets.is_empty() && self.datasets.iter().all(|(_, n)| *n == 0) {
            return Some("every dataset written is empty; see the step counts above".to_string());
        }
        None
    }

    /// Fills the step lines from progress counts (for a chain that stopped without a report).
    pub(crate) fn add_progress_counts(&mut self, status: &crate::status::StatusSnapshot) {
        for st in &status.steps {
            self.steps.push(StepSummary {
                step: st.step.clone(),
                done: st.done,
                already_done: 0,
                failed: st.failed,
                dropped: st.dropped,
                failures: Vec::new(),
                drops: Vec::new(),
            });
        }
    }

    /// Why every item failed, for `atk status`: the most common failure with its count.
    pub(crate) fn failure_reason(&self) -> String {
        let top = self
            .steps
            .iter()
            .flat_map(|s| s.failures.iter().map(move |f| (s, f)))
            .max_by_key(|(_, f)| f.count);
        match top {
            Some((st, f)) => format!(
                "every item failed; most often at step {}: {} x {}: {}",
                st.step, f.count, f.kind, f.reason
            ),
            None => "every item failed".to_string(),
        }
    }

    /// True when items failed and none reached the end of a chain.
    pub(crate) fn all_failed(&self) -> bool {
        self.all_failed
    }

    /// Writes `run_summary.json` atomically.
    pub(crate) fn write(&self, output_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::dataset::write_jsonl_atomic(&output_dir.join(SUMMARY_FILE), [text]).map(|_| ())
    }

    /// The terminal rendering.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== {} summary ({:.1} s) ==",
            self.pipeline, self.wall_time_s
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "step {}: {} done, {} already done, {} failed, {} dropped",
                st.step, st.done, st.already_done, st.failed, st.dropped
            );
            // Over-long prompts differ in their token counts: one line for all of them.
            let over: Vec<&FailureSummary> = st
                .failures
                .iter()
                .filter(|f| f.kind == atk_step::OVER_CONTEXT)
                .collect();
            if let Some(first) = over.first() {
                let n: u64 = over.iter().map(|f| f.count).sum();
                let _ = writeln!(
                    s,
                    "  prompt over the model's context: {n} item{} (e.g. {})",
                    if n == 1 { "" } else { "s" },
                    first.reason
                );
            }
            for f in st
                .failures
                .iter()
                .filter(|f| f.kind != atk_step::OVER_CONTEXT)
            {
                let _ = writeln!(s, "  {} x {}: {}", f.count, f.kind, f.reason);
            }
            for d in st.drops.iter().take(MAX_DROP_LINES) {
                let _ = writeln!(s, "  {} x dropped: {}", d.count, d.reason);
            }
            if st.drops.len() > MAX_DROP_LINES {
                let more: u64 = st.drops[MAX_DROP_LINES..].iter().map(|d| d.count).sum();
                let _ = writeln!(
                    s,
                    "  {more} more dropped for {} other reasons (run_summary.json lists them)",
                    st.drops.len() - MAX_DROP_LINES
                );
            }
            if let Some(sample) = st.failures.first().and_then(|f| f.sample_output.as_ref()) {
                let short: String = sample.chars().take(SAMPLE_CHARS).collect();
                let more = if sample.chars().count() > SAMPLE_CHARS {
                    " [...]"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "  sample output of the most common failure:\n    {}{more}",
                    short.replace('\n', "\n    ")
                );
            }
        }
        // An engine that did nothing in this run or any earlier one is left out.
        for e in self
            .engines
            .iter()
            .filter(|e| e.requests + e.failed_requests > 0 || e.cost_usd_all_runs > 0.0)
        {
            let retries = if e.retries.is_empty() {
                "no retries".to_string()
            } else {
                e.retries
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " retries"
            };
            let _ = writeln!(
                s,
                "engine {} ({}{}): this run {} requests ({} failed), {retries}, {} tokens in, {} out, ${:.4}; all runs ${:.4}",
                e.label,
                e.model,
                if e.mock { ", mock" } else { "" },
                e.requests,
                e.failed_requests,
                e.prompt_tokens,
                e.completion_tokens,
                e.cost_usd,
                e.cost_usd_all_runs
            );
        }
        for e in &self.engines {
            for (url, [ok, failed]) in &e.endpoints {
                let _ = writeln!(
                    s,
                    "engine {} endpoint {url}: {ok} answered, {failed} failed (connection lost or 5xx)",
                    e.label
                );
            }
        }
        for e in self.engines.iter().filter(|e| e.cut_while_busy > 0) {
            let serial = if e.cut_window == Some(1) {
                "; it serves one request at a time"
            } else {
                "; it serves fewer requests at once than were sent"
            };
            let _ = writeln!(
                s,
                "engine {}: the endpoint cut {} streams while other requests were in flight{serial}: set concurrency_limit: {}",
                e.label,
                e.cut_while_busy,
                e.cut_window.unwrap_or(1)
            );
        }
        for d in &self.dropped_rows {
            let _ = writeln!(
                s,
                "{}: {} row{} left out: {}",
                d.file.display(),
                d.count,
                if d.count == 1 { "" } else { "s" },
                d.reason
            );
        }
        if self.all_failed {
            let _ = writeln!(
                s,
                "every attempted item failed: no dataset line was produced"
            );
        }
        if let Some(advice) = &self.store_advice {
            let _ = writeln!(s, "store: {advice}");
        }
        s
    }

    /// One `dataset written: PATH (N lines)` line per dataset (paths relative to the working
    /// directory when inside it): the runner prints them on stdout, for scripts.
    pub(crate) fn dataset_lines(&self) -> Vec<String> {
        let cwd = std::env::current_dir().unwrap_or_default();
        self.datasets
            .iter()
            .map(|(path, lines)| {
                let shown = path.strip_prefix(&cwd).unwrap_or(path);
                let unit = if *lines == 1 { "line" } else { "lines" };
                format!("dataset written: {} ({lines} {unit})", shown.display())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_step::{FailureGroup, StepReport};

    #[test]
    fn summary_counts_this_run_and_renders_failures_with_a_sample() {
        let report = RunReport {
            stopped_before: None,
            steps: vec![StepReport {
                step: "write_poem".into(),
                done: 3,
                skipped: 2,
                failed: 1,
                dropped: 0,
                drops_by_reason: vec![],
                failures_by_reason: vec![
                    FailureGroup {
                        kind: "validation".into(),
                        reason: "no <poem> tags".into(),
                        count: 1,
                        sample_output: Some("just prose".into()),
                    },
                    FailureGroup {
                        kind: "over_context".into(),
                        reason: "maximum context length is 2048 tokens; 3419".into(),
                        count: 1,
                        sample_output: None,
                    },
                    FailureGroup {
                        kind: "over_context".into(),
                        reason: "maximum context length is 2048 tokens; 2999".into(),
                        count: 2,
                        sample_output: None,
                    },
                ],
            }],
            finished: 5,
            cancelled: false,
        };
        let start = CostTotals {
            requests: 10,
            prompt_tokens: 1000,
            cost_usd: 1.0,
            ..Default::default()
        };
        let mut now = CostTotals {
            requests: 14,
            prompt_tokens: 1400,
            completion_tokens: 200,
            cost_usd: 1.5,
            ..Default::default()
        };
        now.retries.insert("rate_limited".into(), 2);
        now.cut_while_busy = 31;
        now.endpoints
            .insert("http://10.0.0.2:8000/v1".into(), [12, 3]);
        now.cut_window = Some(1);
        let s = RunSummary::new(
            "example",
            Duration::from_millis(1500),
            &[report],
            &[("small".into(), "m".into(), true, now, start)],
            vec![("out/sharegpt_format.jsonl".into(), 3)],
            None,
        );
        assert_eq!(s.engines[0].requests, 4);
        assert_eq!(s.engines[0].prompt_tokens, 400);
        assert!(!s.all_failed());
        let text = s.render();
        assert!(
            text.contains("step write_poem: 3 done, 2 already done, 1 failed"),
            "{text}"
        );
        assert!(text.contains("1 x validation: no <poem> tags"), "{text}");
        assert!(
            text.contains("prompt over the model's context: 3 items (e.g. maximum context length is 2048 tokens; 3419)"),
            "{text}"
        );
        assert!(!text.contains("x over_context"), "{text}");
        assert!(text.contains("just prose"), "{text}");
        assert!(text.contains("2 rate_limited retries"), "{text}");
        assert!(
            text.contains(
                "engine small endpoint http://10.0.0.2:8000/v1: 12 answered, 3 failed (connection lost or 5xx)"
            ),
            "{text}"
        );
        assert!(text.contains("engine small (m, mock): this run 4 requests (0 failed), 2 rate_limited retries, 400 tokens in, 200 out, $0.5000; all runs $1.5000"), "{text}");
        assert!(
            text.contains("engine small: the endpoint cut 31 streams while other requests were in flight; it serves one request at a time: set concurrency_limit: 1"),
            "{text}"
        );
        assert!(
            !text.contains("dataset written"),
            "datasets are results, printed apart: {text}"
        );
        assert_eq!(
            s.dataset_lines(),
            ["dataset written: out/sharegpt_format.jsonl (3 lines)"]
        );
    }
}
