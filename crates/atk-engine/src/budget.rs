//! `Budget`: a spending cap shared by every engine of a run (`max_cost`).
//!
//! Before a request is sent its worst case is reserved: the prompt's estimated tokens plus its
//! `max_tokens`, at the engine's prices. When what was spent plus what is reserved would pass
//! the cap, the request waits for those in flight to settle (a reply usually costs far less
//! than its worst case); when it still would with nothing in flight, it is not sent
//! (`Error::Cancelled`: the item stays pending for the next run) and the budget is marked
//! reached for good: nothing more is sent by any engine, while requests already in flight
//! finish and are paid from their reservations. Since no reply can
//! cost more than its reservation, a run never spends past the cap (as long as the server's
//! token counts stay within the estimate; see [`worst_case_tokens`]).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::cost::Pricing;
use crate::stack::{Layer, Next};
use crate::{Error, Prompt, Reply, Request};

/// Completion tokens reserved for a request that sets no `max_tokens`.
pub const UNBOUNDED_COMPLETION_TOKENS: u64 = 4096;

/// A cap on what a run may spend, shared by its engines (clone the `Arc`).
#[derive(Debug)]
pub struct Budget {
    /// The cap, USD.
    cap_usd: f64,
    /// What was spent and what is reserved.
    state: Mutex<Spending>,
    /// Fired when the cap is reached.
    reached: CancellationToken,
    /// Woken when a reservation is settled (room may have come back).
    settled: tokio::sync::Notify,
}

/// The money side of a [`Budget`].
#[derive(Debug, Default, Clone, Copy)]
struct Spending {
    /// Spent so far (earlier runs included), USD.
    spent: f64,
    /// Reserved by requests in flight, USD.
    reserved: f64,
}

impl Budget {
    /// A budget of `cap_usd`, of which `spent_usd` is already spent (by earlier runs on the
    /// same output dir).
    pub fn new(cap_usd: f64, spent_usd: f64) -> Arc<Self> {
        let budget = Arc::new(Self {
            cap_usd,
            state: Mutex::new(Spending {
                spent: spent_usd,
                reserved: 0.0,
            }),
            reached: CancellationToken::new(),
            settled: tokio::sync::Notify::new(),
        });
        if spent_usd >= cap_usd {
            budget.reached.cancel();
        }
        budget
    }

    /// The cap, USD.
    pub fn cap_usd(&self) -> f64 {
        self.cap_usd
    }

    /// Spent so far, USD (replies counted, earlier runs included).
    pub fn spent_usd(&self) -> f64 {
        self.lock().spent
    }

    /// True once a request was held back because it could have passed the cap.
    pub fn is_reached(&self) -> bool {
        self.reached.is_cancelled()
    }

    /// Completes when the budget is reached.
    pub async fn reached(&self) {
        self.reached.cancelled().await;
    }

    /// Reserves `usd` once it fits under the cap with everything spent and reserved, waiting
    /// for reservations in flight to settle; when it cannot fit with none in flight, marks the
    /// budget reached and returns `None`.
    async fn reserve(&self, usd: f64) -> Option<f64> {
        loop {
            // Registered before looking, so a settle in between is not missed.
            let settled = self.settled.notified();
            if self.is_reached() {
                return None;
            }
            {
                let mut s = self.lock();
                if s.spent + s.reserved + usd <= self.cap_usd {
                    s.reserved += usd;
                    return Some(usd);
                }
                if s.reserved <= 0.0 {
                    drop(s);
                    self.mark_reached();
                    return None;
                }
            }
            tokio::select! {
                () = settled => {}
                () = self.reached.cancelled() => return None,
            }
        }
    }

    /// Marks the budget reached: nothing more is sent.
    fn mark_reached(&self) {
        if !self.reached.is_cancelled() {
            tracing::warn!(
                cap_usd = self.cap_usd,
                "budget reached: no more requests are sent"
            );
        }
        self.reached.cancel();
    }

    /// Ends a reservation: `spent` (what the reply cost, 0 for no reply) replaces it.
    fn settle(&self, reserved: f64, spent: f64) {
        let mut s = self.lock();
        s.reserved = (s.reserved - reserved).max(0.0);
        if s.reserved < 1e-12 {
            // Float sums of additions and removals need not come back to exactly 0.
            s.reserved = 0.0;
        }
        s.spent += spent;
        drop(s);
        self.settled.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The most tokens `request` can be billed for: its prompt counted with the run's tokenizer,
/// plus a margin for a server counting differently (an eighth, and 8 tokens of framing per
/// message), plus its `max_tokens` ([`UNBOUNDED_COMPLETION_TOKENS`] when it sets none).
pub fn worst_case_tokens(request: &Request) -> (u64, u64) {
    let prompt = match &request.prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| atk_tokens::count(&m.content) as u64 + 8)
            .sum(),
        Prompt::Completion(text) => atk_tokens::count(text) as u64 + 8,
    };
    let completion = request.max_tokens().unwrap_or(UNBOUNDED_COMPLETION_TOKENS);
    (prompt + prompt / 8, completion)
}

/// The most `prompt_tokens` and `completion_tokens` can cost at `pricing`, USD: prompt tokens
/// at the highest prompt price (a cache write costs more than plain input on Anthropic).
pub fn price_of(pricing: Pricing, prompt_tokens: u64, completion_tokens: u64) -> f64 {
    let prompt_price = pricing
        .input_per_million
        .max(pricing.cache_write_per_million.unwrap_or(0.0))
        .max(pricing.cached_input_per_million.unwrap_or(0.0));
    prompt_tokens as f64 * prompt_price / 1e6
        + completion_tokens as f64 * pricing.output_per_million / 1e6
}

/// The layer: reserve before sending, settle with the reply's usage.
pub(crate) struct BudgetGuard {
    /// The run's budget.
    budget: Arc<Budget>,
    /// This engine's prices.
    pricing: Pricing,
}

impl BudgetGuard {
    pub(crate) fn new(budget: Arc<Budget>, pricing: Pricing) -> Self {
        Self { budget, pricing }
    }
}

#[async_trait]
impl Layer for BudgetGuard {
    async fn call(&self, request: &Request, next: Next<'_>) -> Result<Reply, Error> {
        let (prompt, completion) = worst_case_tokens(request);
        let worst = price_of(self.pricing, prompt, completion);
        let Some(reserved) = self.budget.reserve(worst).await else {
            return Err(Error::Cancelled {
                engine: next.label().to_string(),
            });
        };
        let result = next.call(request).await;
        let spent = match &result {
            // What the cost counter counts for the same reply.
            Ok(reply) => self.pricing.cost(&reply.usage),
            Err(_) => 0.0,
        };
        self.budget.settle(reserved, spent);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineBuilder, Message, MockConfig, MockEngine};

    fn pricing() -> Pricing {
        Pricing::new(1_000.0, 1_000.0)
    }

    fn request() -> Request {
        Request::chat(vec![Message::new("user", "write a poem about rain")])
            .with_param("max_tokens", 100)
    }

    /// Requests go while the next worst case fits; the first that would pass the cap is held
    /// back (not sent, `Cancelled`), and so is every later one, even one that would fit.
    #[tokio::test]
    async fn requests_stop_once_the_next_worst_case_would_pass_the_cap() {
        let (prompt, completion) = worst_case_tokens(&request());
        let worst = price_of(pricing(), prompt, completion);
        let budget = Budget::new(worst * 1.5, 0.0);
        let engine = EngineBuilder::new(MockEngine::new("small", "m", MockConfig::default()))
            .budget(budget.clone(), pricing())
            .build()
            .unwrap();
        let mut sent = 0;
        let held = loop {
            match engine.call(request()).await {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100, "the cap stops the requests");
        };
        assert!(matches!(held, Error::Cancelled { .. }), "{held}");
        assert!(sent >= 2, "replies cost less than their worst case: {sent}");
        let spent = budget.spent_usd();
        assert!(budget.is_reached());
        assert!(spent <= budget.cap_usd(), "{spent}");
        assert!(
            spent + worst > budget.cap_usd(),
            "held back only when it could pass"
        );
        let tiny = Request::chat(vec![Message::new("user", "hi")]).with_param("max_tokens", 1);
        assert!(matches!(
            engine.call(tiny).await.unwrap_err(),
            Error::Cancelled { .. }
        ));
        assert_eq!(budget.spent_usd(), spent, "nothing more was paid");
    }

    /// What earlier runs spent counts: a budget already used up sends nothing.
    #[tokio::test]
    async fn spending_of_earlier_runs_counts_against_the_cap() {
        let budget = Budget::new(1.0, 1.0);
        assert!(budget.is_reached());
        let engine = EngineBuilder::new(MockEngine::new("small", "m", MockConfig::default()))
            .budget(budget, pricing())
            .build()
            .unwrap();
        assert!(matches!(
            engine.call(request()).await.unwrap_err(),
            Error::Cancelled { .. }
        ));
    }

    #[test]
    fn the_worst_case_covers_the_prompt_and_max_tokens() {
        let (prompt, completion) = worst_case_tokens(&request());
        assert_eq!(completion, 100);
        assert!(prompt >= atk_tokens::count("write a poem about rain") as u64 + 4);
        let unbounded = Request::completion("x");
        assert_eq!(worst_case_tokens(&unbounded).1, UNBOUNDED_COMPLETION_TOKENS);
    }
}
