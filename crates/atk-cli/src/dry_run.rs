//! `--dry-run`: the pipeline runs its whole chain on a sample of its items against engines
//! that count and answer offline, over an in-memory store, so nothing is requested and nothing
//! is written to the output dir; the counts are scaled from the sample to every item.
//!
//! How: [`CountingEngine`] renders nothing itself; the step renders its prompt as in a real
//! run and calls the engine, which counts the prompt's tokens, notes `max_tokens`, and answers
//! with the mock engine's reply (the step's mock reply), so filters, fan-outs, votes and
//! fan-ins behave as they would on the demo and later steps are counted too.
//! [`crate::RunContext::run_chain`] then ends the run with the estimate (`RunOutcome::DryRun`,
//! exit 0) before the pipeline writes any dataset.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use atk_engine::{Engine, Error, Prompt, Reply, Request};

use atk_tokens::TokenCounter;

/// Per-message overhead of the chat format, in tokens (role markers and separators).
const CHAT_MESSAGE_OVERHEAD: u64 = 4;

/// What a dry run counted for one engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EngineEstimate {
    /// Engine label.
    pub label: String,
    /// Model name.
    pub model: String,
    /// Requests the chain would send (counted on the sample, scaled to every item).
    pub requests: u64,
    /// Prompt tokens over those requests.
    pub prompt_tokens: u64,
    /// Sum of `max_tokens` over those requests (None when a request set no `max_tokens`).
    pub max_output_tokens: Option<u64>,
    /// USD per million input tokens.
    pub input_price: f64,
    /// USD per million output tokens.
    pub output_price: f64,
    /// The first rendered prompt, for a look.
    pub sample: Option<String>,
}

impl EngineEstimate {
    /// Cost of the prompt tokens.
    pub(crate) fn input_cost(&self) -> f64 {
        self.prompt_tokens as f64 * self.input_price / 1e6
    }
    /// Upper bound of the output cost (every reply using all of `max_tokens`).
    pub(crate) fn max_output_cost(&self) -> Option<f64> {
        self.max_output_tokens
            .map(|t| t as f64 * self.output_price / 1e6)
    }
}

/// An engine that counts requests and prompt tokens and sends nothing.
pub(crate) struct CountingEngine {
    label: String,
    model: String,
    counter: &'static dyn TokenCounter,
    state: Mutex<EngineEstimate>,
    /// False once a request came without `max_tokens` (the output bound is then unknown).
    bounded: Mutex<bool>,
    /// Answers in place of the endpoint (the mock engine); none: every call is refused.
    inner: Option<Arc<dyn Engine>>,
    /// What [`Engine::is_mock`] says: the mode of the engine it stands for (step fingerprints
    /// include it).
    stands_for_mock: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CountingEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingEngine")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The reason every dry-run call fails with (never shown as a failure: the run stops first).
pub(crate) const NOT_SENT: &str = "dry run: not sent";

impl CountingEngine {
    /// A counting stand-in for the engine `label` running `model`, priced per million tokens.
    pub(crate) fn new(
        label: &str,
        model: &str,
        counter: &'static dyn TokenCounter,
        input_price: f64,
        output_price: f64,
    ) -> Arc<Self> {
        Arc::new(Self {
            label: label.to_string(),
            model: model.to_string(),
            counter,
            state: Mutex::new(EngineEstimate {
                label: label.to_string(),
                model: model.to_string(),
                input_price,
                output_price,
                max_output_tokens: Some(0),
                ..EngineEstimate::default()
            }),
            bounded: Mutex::new(true),
            inner: None,
            stands_for_mock: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// As [`new`](Self::new), answering each counted call with `inner`'s reply (a mock engine),
    /// so the whole chain runs.
    pub(crate) fn answering(
        label: &str,
        model: &str,
        counter: &'static dyn TokenCounter,
        input_price: f64,
        output_price: f64,
        inner: Arc<dyn Engine>,
    ) -> Arc<Self> {
        let mut engine =
            Arc::into_inner(Self::new(label, model, counter, input_price, output_price))
                .unwrap_or_else(|| unreachable!());
        engine.inner = Some(inner);
        Arc::new(engine)
    }

    /// Says it stands for an engine in mock mode (what step fingerprints see).
    pub(crate) fn set_stands_for_mock(&self, mock: bool) {
        self.stands_for_mock
            .store(mock, std::sync::atomic::Ordering::Relaxed);
    }

    /// The estimate scaled from a sample of `sample` items to `total` items.
    pub(crate) fn scaled_estimate(&self, sample: u64, total: u64) -> EngineEstimate {
        let mut e = self.estimate();
        if sample > 0 && total != sample {
            let scale = |n: u64| ((n as f64) * (total as f64) / (sample as f64)).round() as u64;
            e.requests = scale(e.requests);
            e.prompt_tokens = scale(e.prompt_tokens);
            e.max_output_tokens = e.max_output_tokens.map(scale);
        }
        e
    }

    /// What was counted so far.
    pub(crate) fn estimate(&self) -> EngineEstimate {
        let mut e = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !*self.bounded.lock().unwrap_or_else(|e| e.into_inner()) || e.requests == 0 {
            e.max_output_tokens = if e.requests == 0 { Some(0) } else { None };
        }
        e
    }

    fn count_prompt(&self, prompt: &Prompt) -> (u64, String) {
        match prompt {
            Prompt::Chat(messages) => {
                let tokens = messages
                    .iter()
                    .map(|m| self.counter.count(&m.content) as u64 + CHAT_MESSAGE_OVERHEAD)
                    .sum();
                let text = messages
                    .iter()
                    .map(|m| format!("[{}]\n{}", m.role, m.content))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                (tokens, text)
            }
            Prompt::Completion(text) => (self.counter.count(text) as u64, text.clone()),
        }
    }
}

#[async_trait]
impl Engine for CountingEngine {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        let (tokens, text) = self.count_prompt(&request.prompt);
        let max = request.max_tokens();
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.requests += 1;
            st.prompt_tokens += tokens;
            if let (Some(sum), Some(m)) = (st.max_output_tokens.as_mut(), max) {
                *sum += m;
            }
            if st.sample.is_none() {
                st.sample = Some(text);
            }
        }
        if max.is_none() {
            *self.bounded.lock().unwrap_or_else(|e| e.into_inner()) = false;
        }
        if let Some(inner) = &self.inner {
            return inner.call(request).await;
        }
        Err(Error::Rejected {
            engine: self.label.clone(),
            status: 0,
            message: NOT_SENT.to_string(),
        })
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn is_mock(&self) -> bool {
        self.stands_for_mock
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The line `--dry-run` adds under its estimate when `max_cost` is set: a warning when the
/// estimate can pass the cap (the run would stop there with items pending), else how it fits.
pub(crate) fn render_cap_warning(cap: f64, engines: &[EngineEstimate]) -> String {
    let low: f64 = engines.iter().map(EngineEstimate::input_cost).sum();
    let high: Option<f64> = engines
        .iter()
        .map(|e| e.max_output_cost().map(|c| c + e.input_cost()))
        .sum();
    match high {
        _ if low > cap => format!(
            "  WARNING: max_cost is ${cap:.4}, below the estimate (at least ${low:.4}): the run will stop at the cap with items pending\n"
        ),
        Some(h) if h <= cap => format!("  max_cost ${cap:.4} covers the estimate\n"),
        _ => format!(
            "  WARNING: max_cost is ${cap:.4}, within the estimate's range: the run may stop at the cap with items pending\n"
        ),
    }
}

/// Renders the dry-run report printed on stderr; `sample` is how many of the `items` the
/// chain ran on (the counts are scaled from them). The cost is given online and, beside it, at
/// the batch price (`batch_discount` of it).
pub(crate) fn render_estimate(
    items: u64,
    sample: u64,
    input_tokens: u64,
    engines: &[EngineEstimate],
    show_sample: bool,
    batch_discount: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dry run: nothing was sent; these figures are an ESTIMATE"
    );
    let _ = writeln!(
        s,
        "  {items} chunks, {input_tokens} input tokens in the chunks"
    );
    let _ = writeln!(
        s,
        "  the whole chain ran on {sample} of {items} chunks with the steps' mock replies; requests and tokens are scaled to all {items}"
    );
    let mut low = 0.0;
    let mut high = Some(0.0);
    for e in engines {
        let out = match (e.max_output_tokens, e.max_output_cost()) {
            (Some(t), Some(c)) => format!(
                "0..{t} output tokens, ${:.4}..${:.4} total",
                e.input_cost(),
                e.input_cost() + c
            ),
            _ => format!(
                "output unbounded (no max_tokens set), at least ${:.4}",
                e.input_cost()
            ),
        };
        let _ = writeln!(
            s,
            "  {} engine ({}): {} requests, {} prompt tokens (${:.4}), {out}",
            e.label,
            e.model,
            e.requests,
            e.prompt_tokens,
            e.input_cost()
        );
        low += e.input_cost();
        high = match (high, e.max_output_cost()) {
            (Some(h), Some(c)) => Some(h + e.input_cost() + c),
            _ => None,
        };
    }
    let d = batch_discount;
    match high {
        Some(h) => {
            let _ = writeln!(
                s,
                "  estimated cost of the whole chain: ${low:.4} to ${h:.4} online, ${:.4} to ${:.4} in batch mode (batch_discount {d})",
                low * d,
                h * d
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  estimated cost of the whole chain: at least ${low:.4} online, at least ${:.4} in batch mode (batch_discount {d})",
                low * d
            );
        }
    }
    let _ = writeln!(
        s,
        "  (real replies differ from mock ones: drops, splits and retries may change the counts)"
    );
    match engines.iter().find_map(|e| e.sample.as_ref()) {
        Some(sample) if show_sample => {
            let _ = writeln!(s, "first rendered prompt:\n{sample}");
        }
        Some(_) => {
            let _ = writeln!(s, "  (-v also prints the first rendered prompt)");
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_engine::Message;
    use atk_state::{FailureRecord, ItemRecord, MemStore, ResultRecord, Store};
    use atk_tokens::WhitespaceCounter;

    #[tokio::test]
    async fn counting_engine_counts_and_sends_nothing() {
        let e = CountingEngine::new("small", "m", &WhitespaceCounter, 1.0, 2.0);
        let req = Request::chat(vec![
            Message::new("system", "be brief"),
            Message::new("user", "three words here"),
        ])
        .with_param("max_tokens", 100);
        let err = e.call(req.clone()).await.unwrap_err();
        assert!(
            !err.is_fatal(),
            "a dry-run call must fail the item, not the run"
        );
        e.call(req).await.unwrap_err();
        let est = e.estimate();
        assert_eq!(est.requests, 2);
        assert_eq!(est.prompt_tokens, 2 * (2 + 3 + 2 * CHAT_MESSAGE_OVERHEAD));
        assert_eq!(est.max_output_tokens, Some(200));
        assert!(
            est.sample
                .as_deref()
                .unwrap()
                .contains("[user]\nthree words here")
        );
    }

    #[tokio::test]
    async fn a_request_without_max_tokens_makes_the_output_unbounded() {
        let e = CountingEngine::new("large", "m", &WhitespaceCounter, 1.0, 2.0);
        e.call(Request::completion("a b c")).await.unwrap_err();
        assert_eq!(e.estimate().max_output_tokens, None);
        let text = render_estimate(1, 1, 3, &[e.estimate()], false, 0.5);
        assert!(text.contains("output unbounded"), "{text}");
        // 3 prompt tokens at $1 per million: online and at half price side by side.
        assert!(
            text.contains(
                "at least $0.0000 online, at least $0.0000 in batch mode (batch_discount 0.5)"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn mem_store_keeps_order_and_clears_failures() {
        let s = MemStore::default();
        let item = |id: &str, o: u64| ItemRecord {
            v: 1,
            id: id.into(),
            parent: None,
            order: vec![o],
            fields: Default::default(),
        };
        s.put_items(vec![item("b", 2), item("a", 1)]).await.unwrap();
        let ids: Vec<String> = s.items().map(|i| i.unwrap().id).collect();
        assert_eq!(ids, ["a", "b"]);
        let f = FailureRecord {
            v: 1,
            kind: "k".into(),
            reason: "r".into(),
            last_output: None,
            last_prompt: None,
            attempts: 1,
            stored_at_ms: 0,
        };
        s.put_failure("s", "a", f).await.unwrap();
        assert_eq!(s.failures("s").count(), 1);
        let r = ResultRecord {
            v: 1,
            output: serde_json::json!(1),
            details: None,
            attempts: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
            elapsed_ms: 0,
            stored_at_ms: 0,
            ..ResultRecord::new(serde_json::Value::Null)
        };
        s.put_result("s", "a", r).await.unwrap();
        assert_eq!(s.failures("s").count(), 0);
        assert!(s.has_result("s", "a").unwrap());
    }
}
