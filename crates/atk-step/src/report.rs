//! What a run did: per-step counts, failures and drops grouped by reason.

use std::collections::HashMap;

/// Distinct reasons kept per step in a report; further ones are counted together.
const MAX_GROUPS: usize = 32;
/// Longest sample output kept in a report (characters).
const MAX_SAMPLE_CHARS: usize = 2000;
/// Longest drop reason kept for grouping (characters; the stored record keeps it whole).
const MAX_DROP_REASON_CHARS: usize = 160;

/// Failures (or drops) of one kind and reason, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// Short class (`validation`, `length`, `rejected`, `transport`, `dropped`, ...).
    pub kind: String,
    /// The reason, as given.
    pub reason: String,
    /// Items that failed (or were dropped) this way in this run.
    pub count: u64,
    /// The raw output of the first such item, when there was one (truncated).
    pub sample_output: Option<String>,
}

/// What one step did in a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Step name.
    pub step: String,
    /// Results stored in this run.
    pub done: u64,
    /// Items skipped because their result was already stored.
    pub skipped: u64,
    /// Items that failed for good in this run.
    pub failed: u64,
    /// Items the step dropped in this run (a filter, a failed vote, a fan-in with no kept child).
    pub dropped: u64,
    /// Failures grouped by kind and reason, most common first.
    pub failures_by_reason: Vec<FailureGroup>,
    /// Drops in this run and stored drops met again, grouped by reason, most common first.
    pub drops_by_reason: Vec<FailureGroup>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunReport {
    /// One report per step, in chain order.
    pub steps: Vec<StepReport>,
    /// Items that went through the whole chain (in this run or an earlier one).
    pub finished: u64,
    /// True when the run was cancelled before all work was done.
    pub cancelled: bool,
    /// The barrier step the run stopped before ([`ExecutorConfig::with_stop_before_barrier`](crate::ExecutorConfig::with_stop_before_barrier)):
    /// every item passed the steps before it; the barrier and later steps did not run.
    pub stopped_before: Option<String>,
}

impl RunReport {
    /// True when items failed and none reached the end of the chain (in this run or an earlier
    /// one): the dataset would be empty, so the CLI exits non-zero with the summary.
    pub fn all_failed(&self) -> bool {
        self.failed() > 0 && self.finished == 0 && !self.cancelled && self.stopped_before.is_none()
    }

    /// True when no item reached the end of the chain although items were worked on: every one
    /// failed or was dropped. The CLI exits 1 with the reasons.
    pub fn nothing_kept(&self) -> bool {
        let dropped: u64 = self
            .steps
            .iter()
            .flat_map(|s| &s.drops_by_reason)
            .map(|g| g.count)
            .sum();
        self.finished == 0
            && !self.cancelled
            && self.stopped_before.is_none()
            && (self.failed() > 0 || dropped > 0)
    }

    /// Items that failed in this run, over all steps.
    pub fn failed(&self) -> u64 {
        self.steps.iter().map(|s| s.failed).sum()
    }

    /// A readable summary: counts per step, failures and drops by reason, one raw output for
    /// the most common failure.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!(
                "{}: {} done, {} already stored, {} failed, {} dropped\n",
                s.step, s.done, s.skipped, s.failed, s.dropped
            ));
            for g in &s.failures_by_reason {
                out.push_str(&format!("  {} x {}: {}\n", g.count, g.kind, g.reason));
            }
            for g in &s.drops_by_reason {
                out.push_str(&format!("  {} x dropped: {}\n", g.count, g.reason));
            }
        }
        let most_common = self
            .steps
            .iter()
            .flat_map(|s| s.failures_by_reason.iter().map(move |g| (s, g)))
            .fold(
                None::<(&StepReport, &FailureGroup)>,
                |best, cur| match best {
                    Some(b) if b.1.count >= cur.1.count => Some(b),
                    _ => Some(cur),
                },
            );
        if let Some((step, group)) = most_common {
            match &group.sample_output {
                Some(sample) => out.push_str(&format!(
                    "most common failure ({}, {}): {}\nsample raw output:\n{}\n",
                    step.step, group.kind, group.reason, sample
                )),
                None => out.push_str(&format!(
                    "most common failure ({}, {}): {}\n",
                    step.step, group.kind, group.reason
                )),
            }
        }
        if self.all_failed() {
            out.push_str("every attempted item failed: no item reached the end of the chain\n");
        } else if self.nothing_kept() {
            out.push_str("no item reached the end of the chain: every one was dropped or failed\n");
        }
        if self.cancelled {
            out.push_str("cancelled: the next run resumes where this one stopped\n");
        }
        out
    }
}

/// A step's counts while the run goes on.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) report: StepReport,
    failure_index: HashMap<(String, String), usize>,
    drop_index: HashMap<(String, String), usize>,
}

impl Tally {
    pub(crate) fn new(step: &str) -> Self {
        Self {
            report: StepReport {
                step: step.to_string(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub(crate) fn add_failure(&mut self, kind: &str, reason: &str, output: Option<&str>) {
        self.report.failed += 1;
        add(
            &mut self.report.failures_by_reason,
            &mut self.failure_index,
            (kind.to_string(), reason.to_string()),
            output,
            "other",
        );
    }

    /// Counts a drop by its (shortened) reason, keeping the first raw reply dropped for it;
    /// `fresh` when it happened in this run.
    pub(crate) fn add_drop(&mut self, reason: &str, raw: Option<&str>, fresh: bool) {
        if fresh {
            self.report.dropped += 1;
        }
        let line = reason
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let mut short: String = line.chars().take(MAX_DROP_REASON_CHARS).collect();
        if short.len() < line.len() || reason.trim() != line {
            short.push_str(" [...]");
        }
        let (groups, index) = (&mut self.report.drops_by_reason, &mut self.drop_index);
        add(
            groups,
            index,
            ("dropped".to_string(), short),
            raw,
            "dropped",
        );
    }

    pub(crate) fn finish(mut self) -> StepReport {
        self.report
            .failures_by_reason
            .sort_by_key(|g| std::cmp::Reverse(g.count));
        self.report
            .drops_by_reason
            .sort_by_key(|g| std::cmp::Reverse(g.count));
        self.report
    }
}

fn add(
    groups: &mut Vec<FailureGroup>,
    index: &mut HashMap<(String, String), usize>,
    key: (String, String),
    output: Option<&str>,
    overflow_kind: &str,
) {
    let key = if index.len() < MAX_GROUPS || index.contains_key(&key) {
        key
    } else {
        (
            overflow_kind.to_string(),
            "(more distinct reasons than shown)".to_string(),
        )
    };
    let i = *index.entry(key.clone()).or_insert_with(|| {
        groups.push(FailureGroup {
            kind: key.0,
            reason: key.1,
            count: 0,
            sample_output: None,
        });
        groups.len() - 1
    });
    let group = &mut groups[i];
    group.count += 1;
    if group.sample_output.is_none() {
        group.sample_output = output.map(|o| o.chars().take(MAX_SAMPLE_CHARS).collect());
    }
}
