//! `VoteStep`: the same prompt asked `n` times per item; a threshold of "yes" verdicts keeps
//! the item, otherwise it is dropped. Votes go out in the smallest waves that can decide the
//! outcome, concurrently within the engine's one concurrency bound, so a clear 2-of-3 costs
//! two calls, not three.

use std::sync::Arc;

use async_trait::async_trait;
use atk_state::{ItemRecord, Outcome, ResultRecord};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::error::StepError;
use crate::filter::default_judge;
use crate::prompt_step::PromptStep;
use crate::step::{Step, StepContext, StepOutput};

type Verdict = Arc<dyn Fn(&Value) -> Result<(bool, String), String> + Send + Sync>;

/// A vote of `n` calls per item. Build it with [`PromptStep::votes`]. Its stored output is the
/// tally, `{"passed", "yes", "no", "votes": [{"yes", "reason"}]}`, merged under the inner step's
/// result key; its details (when kept) are those of the first vote that agreed with the outcome.
pub struct VoteStep {
    inner: PromptStep,
    n: u32,
    threshold: u32,
    verdict: Verdict,
}

impl std::fmt::Debug for VoteStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoteStep")
            .field("name", &self.inner.name())
            .field("n", &self.n)
            .field("threshold", &self.threshold)
            .finish()
    }
}

/// How votes are counted so far.
#[derive(Debug, Default)]
struct Tally {
    yes: u32,
    no: u32,
    votes: Vec<Value>,
}

impl VoteStep {
    /// `n` votes (at least 1), a majority (`n / 2 + 1` yes) to keep; verdicts read by [`default_judge`].
    pub fn new(inner: PromptStep, n: u32) -> Self {
        let n = n.max(1);
        Self {
            inner,
            n,
            threshold: n / 2 + 1,
            verdict: Arc::new(default_judge),
        }
    }

    /// Yes votes needed to keep the item (clamped to `1..=n`).
    pub fn threshold(mut self, yes_needed: u32) -> Self {
        self.threshold = yes_needed.clamp(1, self.n);
        self
    }

    /// Reads one vote from the processed reply: `Ok((yes, reason))`, or `Err` to ask that vote again.
    pub fn verdict(
        mut self,
        f: impl Fn(&Value) -> Result<(bool, String), String> + Send + Sync + 'static,
    ) -> Self {
        self.verdict = Arc::new(f);
        self
    }

    /// No votes that make the item fail.
    fn no_needed(&self) -> u32 {
        self.n - self.threshold + 1
    }
}

#[async_trait]
impl Step for VoteStep {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn prompt_names(&self) -> Vec<String> {
        self.inner.prompt_names()
    }

    fn engines(&self) -> Vec<crate::EngineChoice> {
        self.inner.engines()
    }

    fn result_key(&self) -> &str {
        Step::result_key(&self.inner)
    }

    fn details_key(&self) -> Option<&str> {
        Step::details_key(&self.inner)
    }

    fn fingerprint_parts(&self, ctx: &StepContext) -> Option<crate::Fingerprint> {
        let fp = self.inner.fingerprint_of(ctx)?;
        let params = fp.part(crate::Part::Params).unwrap_or_default().to_string();
        Some(fp.with(
            crate::Part::Params,
            &format!("{params} votes {} threshold {}", self.n, self.threshold),
        ))
    }

    fn template_args(&self) -> Option<Vec<String>> {
        self.inner.template_args()
    }

    async fn run(&self, item: &ItemRecord, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let mut tally = Tally::default();
        let mut sent = 0u32;
        let mut total = ResultRecord::new(Value::Null);
        total.attempts = 0;
        let mut evidence: (Option<ResultRecord>, Option<ResultRecord>) = (None, None);
        let accept = |out: &Value, _: &ItemRecord| (self.verdict)(out);
        while tally.yes < self.threshold && tally.no < self.no_needed() {
            let wave = (self.threshold - tally.yes)
                .min(self.no_needed() - tally.no)
                .min(self.n - sent);
            let calls = (sent..sent + wave).map(|k| self.inner.attempt_call(item, ctx, k, &accept));
            sent += wave;
            for result in join_all(calls).await {
                let ((yes, reason), record) = result?;
                total.attempts += record.attempts;
                total.prompt_tokens += record.prompt_tokens;
                total.completion_tokens += record.completion_tokens;
                total.elapsed_ms = total.elapsed_ms.max(record.elapsed_ms);
                tally.votes.push(json!({"yes": yes, "reason": reason}));
                if yes {
                    tally.yes += 1;
                    evidence.0.get_or_insert(record);
                } else {
                    tally.no += 1;
                    evidence.1.get_or_insert(record);
                }
            }
        }
        let passed = tally.yes >= self.threshold;
        let deciding = if passed { evidence.0 } else { evidence.1 };
        if let Some(d) = deciding {
            total.details = d.details;
            total.raw = d.raw;
        }
        total.output =
            json!({"passed": passed, "yes": tally.yes, "no": tally.no, "votes": tally.votes});
        if passed {
            Ok(StepOutput::Keep(total))
        } else {
            total.outcome = Outcome::Dropped {
                reason: format!("failed the vote ({} yes, {} no)", tally.yes, tally.no),
            };
            Ok(StepOutput::Drop(total))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::PromptLibrary;
    use crate::step::Engines;
    use crate::testing::{ScriptedEngine, reply};

    const PROMPTS: &[(&str, &str)] =
        &[("check.yaml", "- role: user\n  content: \"check {text}\"\n")];

    fn item() -> ItemRecord {
        let mut fields = atk_state::Fields::new();
        fields.insert("text".into(), json!("a claim"));
        ItemRecord {
            v: atk_state::RECORD_VERSION,
            id: "i".into(),
            parent: None,
            order: vec![0],
            fields,
        }
    }

    async fn vote(replies: &[&str], n: u32) -> (StepOutput, u64) {
        let engine = Arc::new(ScriptedEngine::new("e"));
        for r in replies {
            engine.push(Ok(reply(*r)));
        }
        let ctx = StepContext::new(
            Engines::single(engine.clone()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let out = PromptStep::new("check")
            .votes(n)
            .run(&item(), &ctx)
            .await
            .unwrap();
        (out, engine.calls())
    }

    #[tokio::test]
    async fn a_clear_majority_stops_after_two_calls() {
        let (out, calls) = vote(&["fine\nYES", "ok\nyes"], 3).await;
        assert_eq!(calls, 2, "the third vote cannot change a 2-0 outcome");
        let StepOutput::Keep(r) = out else {
            panic!("kept expected: {out:?}")
        };
        assert_eq!(
            (
                r.output["yes"].as_u64(),
                r.output["no"].as_u64(),
                r.prompt_tokens
            ),
            (Some(2), Some(0), 20)
        );
    }

    #[tokio::test]
    async fn a_split_vote_asks_a_third_time_and_records_every_vote() {
        let (out, calls) = vote(&["fine\nyes", "unsupported\nno", "no"], 3).await;
        assert_eq!(calls, 3);
        let StepOutput::Drop(r) = out else {
            panic!("dropped expected: {out:?}")
        };
        assert_eq!(r.drop_reason(), Some("failed the vote (1 yes, 2 no)"));
        assert_eq!(r.output["votes"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            r.raw.as_deref(),
            Some("unsupported\nno"),
            "the first vote agreeing with the outcome is the evidence"
        );
    }

    #[tokio::test]
    async fn unreadable_votes_are_asked_again_and_thresholds_apply() {
        let engine = Arc::new(ScriptedEngine::new("e"));
        engine.push(Ok(reply("hmm"))).push(Ok(reply("yes")));
        let ctx = StepContext::new(
            Engines::single(engine.clone()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let out = PromptStep::new("check")
            .votes(1)
            .run(&item(), &ctx)
            .await
            .unwrap();
        assert!(
            matches!(out, StepOutput::Keep(ref r) if r.attempts == 2),
            "{out:?}"
        );
        let (out, calls) = vote(&["yes", "yes", "no"], 3).await;
        assert!(matches!(out, StepOutput::Keep(_)) && calls == 2);
        // Unanimity: the first "no" decides.
        let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| Ok(reply("no"))));
        let ctx = StepContext::new(
            Engines::single(engine.clone()),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let out = PromptStep::new("check")
            .votes(3)
            .threshold(3)
            .run(&item(), &ctx)
            .await
            .unwrap();
        assert!(matches!(out, StepOutput::Drop(_)));
        assert_eq!(engine.calls(), 1);
    }
}
