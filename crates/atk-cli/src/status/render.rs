//! The text `atk status` prints for a snapshot.

use std::fmt::Write as _;

use super::{FingerprintStatus, MissingResults, RunState, StatusSnapshot};

/// Longest sample reply shown per reason (characters; `status.json` keeps it whole).
const SAMPLE_CHARS: usize = 400;

impl StatusSnapshot {
    /// Human rendering for `atk status`.
    pub fn render(&self) -> String {
        self.render_at(atk_state::now_ms())
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
        // "last seen 3 s ago; " when the snapshot's time is known.
        let seen = if self.updated_at_ms > 0 {
            format!(
                "last seen {} ago; ",
                ago(now_ms.saturating_sub(self.updated_at_ms))
            )
        } else {
            String::new()
        };
        let pid = self.pid;
        let _ = match &self.state {
            RunState::Running => writeln!(s, "{name}: running (pid {pid}), {elapsed:.0} s elapsed"),
            RunState::Finished => {
                writeln!(s, "{name}: finished ({seen}the run took {elapsed:.0} s)")
            }
            RunState::Failed { reason } => {
                writeln!(s, "{name}: failed ({seen}after {elapsed:.0} s): {reason}")
            }
            RunState::Interrupted => writeln!(
                s,
                "{name}: interrupted ({seen}after {elapsed:.0} s); rerun the same command to resume"
            ),
            RunState::Killed => writeln!(
                s,
                "{name}: killed ({seen}after {elapsed:.0} s): the run is not running; pid {pid} stopped without \
                 finishing (killed or crashed); figures are from then; rerun the same command to resume"
            ),
            RunState::BudgetReached { reason } => writeln!(
                s,
                "{name}: budget reached ({seen}after {elapsed:.0} s): {reason}"
            ),
            RunState::WaitingForBatches => writeln!(
                s,
                "{name}: waiting for batches ({seen}after {elapsed:.0} s); rerun the same command to collect their results"
            ),
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
        if self.is_running() {
            let _ = writeln!(
                s,
                "  requests in flight: {} (limit {})",
                self.requests_in_flight, self.request_limit
            );
        }
        // "this run" while it runs; afterwards the same figures are the last run's.
        let this = if self.is_running() {
            "this run"
        } else {
            "last run"
        };
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
            if let Some(o) = e.outage.as_ref().filter(|_| self.is_running()) {
                let _ = writeln!(
                    s,
                    "  engine {}: ENDPOINT DOWN for {}: calls wait, one probe at a time ({})",
                    e.label,
                    ago(now_ms.saturating_sub(o.since_ms)),
                    o.error
                );
            }
        }
        let _ = writeln!(
            s,
            "  cost: ${:.4} {this}, ${:.4} all runs",
            self.run_cost_usd, self.cost_usd
        );
        for r in &self.reasons {
            let _ = writeln!(s, "  {} x {} at {}: {}", r.count, r.kind, r.step, r.reason);
            if let Some(sample) = &r.sample {
                let short: String = sample.chars().take(SAMPLE_CHARS).collect();
                let _ = writeln!(s, "    sample reply: {}", short.replace('\n', "\n      "));
            }
        }
        super::batches::render_batches(&self.batches, &mut s);
        if let Some(b) = &self.budget {
            let _ = writeln!(
                s,
                "  max_cost: ${:.4} of ${:.4} spent{}",
                b.spent_usd,
                b.cap_usd,
                if b.reached { " (reached)" } else { "" }
            );
        }
        if !self.damage.is_empty() {
            let total: u64 = self.damage.iter().map(MissingResults::missing).sum();
            let _ = writeln!(
                s,
                "  STORE DAMAGED: {total} stored results missing; they are requested again"
            );
            for m in &self.damage {
                let _ = writeln!(s, "    {}", m.line());
            }
        }
        if let Some(advice) = &self.store_advice {
            let _ = writeln!(s, "  store: {advice}");
        }
        s
    }
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

#[cfg(test)]
mod tests {
    use super::super::EngineStatus;
    use super::*;

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
                ..Default::default()
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
        let stopped = StatusSnapshot {
            budget: Some(super::super::BudgetStatus {
                cap_usd: 0.5,
                spent_usd: 0.5,
                reached: true,
            }),
            ..s.clone()
        }
        .render_at(0);
        assert!(
            stopped.contains("max_cost: $0.5000 of $0.5000 spent (reached)"),
            "{stopped}"
        );
        let running = StatusSnapshot {
            state: RunState::Running,
            ..s
        }
        .render_at(0);
        assert!(
            running.contains("this run 10 requests") && running.contains("$0.2000 this run"),
            "{running}"
        );
    }
}
