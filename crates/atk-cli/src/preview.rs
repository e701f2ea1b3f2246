//! `--preview N`: the chain run for real on N seeded chunks (the same ones each time; their
//! results stay in the store, so the full run does not pay for them again), then per step
//! the pass rate, every failure and drop reason with its count and one raw reply for each;
//! no dataset and no card are written.

use std::fmt::Write as _;

use atk_engine::Secret;
use atk_step::{FailureGroup, RunReport};

/// Longest raw reply shown per reason (characters).
const SAMPLE_CHARS: usize = 600;

/// A sample reply with every API key in `secrets` masked, cut to `max` characters.
pub(crate) fn scrub_sample(text: &str, secrets: &[&Secret], max: usize) -> String {
    let scrubbed = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |t, s| s.scrub(&t));
    let mut short: String = scrubbed.chars().take(max).collect();
    if scrubbed.chars().count() > max {
        short.push_str(" [...]");
    }
    short
}

/// The reports with every sample reply's API keys masked: what the summary, `status.json`
/// and `--preview` show.
pub(crate) fn scrubbed(reports: &[RunReport], secrets: &[&Secret]) -> Vec<RunReport> {
    let mut reports = reports.to_vec();
    for group in reports.iter_mut().flat_map(|r| &mut r.steps).flat_map(|s| {
        s.failures_by_reason
            .iter_mut()
            .chain(&mut s.drops_by_reason)
    }) {
        if let Some(sample) = &group.sample_output {
            group.sample_output = Some(scrub_sample(sample, secrets, usize::MAX));
        }
    }
    reports
}

/// One sample raw reply per failure and drop reason of the run, for `status.json`.
pub(crate) fn reason_samples(reports: &[RunReport]) -> Vec<crate::status::ReasonSample> {
    reports
        .iter()
        .flat_map(|r| &r.steps)
        .flat_map(|s| {
            s.failures_by_reason
                .iter()
                .chain(&s.drops_by_reason)
                .map(move |g| crate::status::ReasonSample {
                    step: s.step.clone(),
                    kind: g.kind.clone(),
                    reason: g.reason.clone(),
                    count: g.count,
                    sample: g.sample_output.clone(),
                })
        })
        .collect()
}

/// The preview's report: what each step let through, and why not.
pub(crate) fn render(items: u64, report: &RunReport, secrets: &[&Secret]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "preview: the chain ran for real on {items} chunks (seeded: the same ones each time); \
         their results are stored, so the full run does not pay for them again; no dataset written"
    );
    for step in &report.steps {
        if report.stopped_before.as_deref() == Some(step.step.as_str()) {
            let _ = writeln!(
                s,
                "  (stopped before barrier step `{}`: it needs every item, so a preview does not run it or the steps after it; the full run does)",
                step.step
            );
            break;
        }
        let dropped: u64 = step.drops_by_reason.iter().map(|g| g.count).sum();
        let seen = step.done + step.skipped + step.failed;
        let passed = seen.saturating_sub(step.failed + dropped);
        let rate = if seen == 0 {
            "no items reached it".to_owned()
        } else {
            format!(
                "{passed} of {seen} passed ({:.0}%)",
                passed as f64 * 100.0 / seen as f64
            )
        };
        let _ = writeln!(
            s,
            "  {}: {rate}; {} failed, {dropped} dropped",
            step.step, step.failed
        );
        for g in &step.failures_by_reason {
            reason(&mut s, &format!("{} x {}", g.count, g.kind), g, secrets);
        }
        for g in &step.drops_by_reason {
            reason(&mut s, &format!("{} x dropped", g.count), g, secrets);
        }
    }
    s
}

/// One reason's line and its sample raw reply.
fn reason(s: &mut String, head: &str, g: &FailureGroup, secrets: &[&Secret]) {
    let _ = writeln!(s, "    {head}: {}", g.reason);
    match &g.sample_output {
        Some(sample) => {
            let sample = scrub_sample(sample, secrets, SAMPLE_CHARS);
            let _ = writeln!(
                s,
                "      raw reply: {}",
                sample.replace('\n', "\n                 ")
            );
        }
        None => {
            let _ = writeln!(s, "      (no reply was received)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_step::StepReport;

    #[test]
    fn a_preview_shows_rates_reasons_and_one_scrubbed_reply_each() {
        let key = Secret::new("sk-secret-123");
        let report = RunReport {
            stopped_before: None,
            steps: vec![StepReport {
                step: "judge".into(),
                done: 4,
                skipped: 1,
                failed: 1,
                dropped: 2,
                failures_by_reason: vec![FailureGroup {
                    kind: "validation".into(),
                    reason: "no verdict".into(),
                    count: 1,
                    sample_output: Some("I think so (key sk-secret-123)".into()),
                }],
                drops_by_reason: vec![FailureGroup {
                    kind: "dropped".into(),
                    reason: "unsuitable".into(),
                    count: 2,
                    sample_output: Some("Verdict: UNSUITABLE".into()),
                }],
            }],
            finished: 3,
            cancelled: false,
        };
        let text = render(5, &report, &[&key]);
        assert!(
            text.contains("judge: 3 of 6 passed (50%); 1 failed, 2 dropped"),
            "{text}"
        );
        assert!(text.contains("1 x validation: no verdict"), "{text}");
        assert!(text.contains("2 x dropped: unsuitable"), "{text}");
        assert!(text.contains("raw reply: Verdict: UNSUITABLE"), "{text}");
        assert!(!text.contains("sk-secret-123"), "{text}");
    }

    #[test]
    fn a_preview_stops_at_the_first_barrier_and_says_so() {
        let step = |name: &str, done| StepReport {
            step: name.into(),
            done,
            ..Default::default()
        };
        let report = RunReport {
            steps: vec![step("judge", 4), step("dedup", 0), step("answer", 0)],
            finished: 0,
            cancelled: false,
            stopped_before: Some("dedup".into()),
        };
        let text = render(4, &report, &[]);
        assert!(text.contains("judge: 4 of 4 passed"), "{text}");
        assert!(
            text.contains("stopped before barrier step `dedup`"),
            "{text}"
        );
        assert!(
            !text.contains("answer:"),
            "steps after the barrier are not listed: {text}"
        );
    }
}
