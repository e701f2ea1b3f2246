//! `CostCounter`: requests, tokens and cost of one engine, persisted and resumed via `CostTotals`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observer::Observer;
use crate::{Error, Reply, Request};

/// Price per million tokens (USD), from the config's `cost_per_million_{input,output}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// USD per million prompt tokens.
    pub input_per_million: f64,
    /// USD per million completion tokens.
    pub output_per_million: f64,
    /// USD per million prompt tokens read from the provider's prompt cache
    /// (`cost_per_million_*_cached_input`); `None`: the input price.
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// USD per million prompt tokens written to the prompt cache (Anthropic bills these above
    /// the input price); `None`: the input price.
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
}

impl Pricing {
    /// Input and output prices, cached input at the input price.
    pub fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Self {
            input_per_million,
            output_per_million,
            ..Self::default()
        }
    }

    /// The cost in USD of one reply's `usage`: uncached prompt tokens at the input price,
    /// cache reads and writes at theirs, completion tokens at the output price.
    pub fn cost(&self, usage: &crate::Usage) -> f64 {
        let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
        let written = usage
            .cache_write_tokens
            .min(usage.prompt_tokens.saturating_sub(cached));
        let plain = usage.prompt_tokens - cached - written;
        (plain as f64 * self.input_per_million
            + cached as f64
                * self
                    .cached_input_per_million
                    .unwrap_or(self.input_per_million)
            + written as f64
                * self
                    .cache_write_per_million
                    .unwrap_or(self.input_per_million)
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

/// Counters of one engine; serialize them to persist, `CostCounter::restore` to resume.
#[derive(Serialize, Deserialize, Clone, Default, Debug, PartialEq)]
pub struct CostTotals {
    /// Calls that ended with a reply.
    pub requests: u64,
    /// Calls that ended with an error.
    pub failed_requests: u64,
    /// Prompt tokens (server-reported or estimated).
    pub prompt_tokens: u64,
    /// Completion tokens (server-reported or estimated).
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those read from the provider's prompt cache.
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// Of `prompt_tokens`, those written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Replies whose usage was counted locally.
    pub estimated_replies: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Transport retries by cause (`TransientKind::as_str`).
    pub retries: BTreeMap<String, u64>,
    /// Streams the endpoint cut while other requests were in flight.
    #[serde(default)]
    pub cut_while_busy: u64,
    /// Smallest in-flight window those cuts left (1: the endpoint serves one at a time).
    #[serde(default)]
    pub cut_window: Option<u64>,
    /// With several endpoints: attempts per endpoint URL, `[answered, failed]`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, [u64; 2]>,
    /// Cost in USD of the calls made under each tag ([`tagged`]: the runner tags a step's
    /// calls with the step's name), so each step's cost is known, not only the engine's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost_by_tag: BTreeMap<String, f64>,
    /// Outages of the endpoint: times it stopped answering and calls waited for it.
    #[serde(default)]
    pub outages: u64,
}

/// An endpoint outage in progress, as the engine's outage guard reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutageNow {
    /// When it began (Unix ms).
    pub since_ms: u64,
    /// The failure that made it an outage.
    pub error: String,
}

tokio::task_local! {
    /// The tag of the calls the running task makes, set by [`tagged`].
    static CALL_TAG: Arc<str>;
}

/// Runs `fut` with every engine call it makes counted under `tag` as well
/// ([`CostTotals::cost_by_tag`]). Observers run on the calling task, so the tag reaches them
/// whatever the layers below do.
pub async fn tagged<F: std::future::Future>(tag: &str, fut: F) -> F::Output {
    CALL_TAG.scope(Arc::from(tag), fut).await
}

impl CostTotals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &CostTotals) {
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.estimated_replies += other.estimated_replies;
        self.cost_usd += other.cost_usd;
        for (k, v) in &other.retries {
            *self.retries.entry(k.clone()).or_default() += v;
        }
        self.cut_while_busy += other.cut_while_busy;
        self.outages += other.outages;
        for (url, [ok, failed]) in &other.endpoints {
            let e = self.endpoints.entry(url.clone()).or_default();
            e[0] += ok;
            e[1] += failed;
        }
        for (tag, cost) in &other.cost_by_tag {
            *self.cost_by_tag.entry(tag.clone()).or_default() += cost;
        }
        self.cut_window = match (self.cut_window, other.cut_window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Observer counting one engine's traffic (events of other engines are ignored by label).
pub struct CostCounter {
    label: String,
    pricing: Pricing,
    totals: Mutex<CostTotals>,
    /// The outage in progress, if any (live state: not saved with the totals).
    outage: Mutex<Option<OutageNow>>,
}

impl CostCounter {
    /// A counter for the engine labelled `label`.
    pub fn new(label: impl Into<String>, pricing: Pricing) -> Arc<Self> {
        Arc::new(Self {
            label: label.into(),
            pricing,
            totals: Mutex::new(CostTotals::default()),
            outage: Mutex::new(None),
        })
    }

    /// The endpoint's outage in progress: it stopped answering and calls wait while it is
    /// probed.
    pub fn outage(&self) -> Option<OutageNow> {
        self.outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The engine label counted.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The totals so far.
    pub fn snapshot(&self) -> CostTotals {
        self.lock().clone()
    }

    /// Adds totals saved by an earlier run, so a resumed run keeps counting on top.
    pub fn restore(&self, saved: &CostTotals) {
        self.lock().add(saved);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CostTotals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for CostCounter {
    fn on_reply(&self, label: &str, _request: &Request, reply: &Reply) {
        if label != self.label {
            return;
        }
        let u = reply.usage;
        let cost = self.pricing.cost(&u);
        let mut t = self.lock();
        t.requests += 1;
        t.prompt_tokens += u.prompt_tokens;
        t.completion_tokens += u.completion_tokens;
        t.cached_prompt_tokens += u.cached_prompt_tokens;
        t.cache_write_tokens += u.cache_write_tokens;
        t.estimated_replies += u64::from(u.estimated);
        t.cost_usd += cost;
        let _ = CALL_TAG.try_with(|tag| match t.cost_by_tag.get_mut(&**tag) {
            Some(sum) => *sum += cost,
            None => {
                t.cost_by_tag.insert(tag.to_string(), cost);
            }
        });
    }
    fn on_retry(&self, label: &str, error: &Error, _attempt: u32, _delay: Duration) {
        if label != self.label {
            return;
        }
        let kind = match error {
            Error::Transient { kind, .. } => kind.as_str(),
            _ => "other",
        };
        *self.lock().retries.entry(kind.to_string()).or_default() += 1;
    }
    fn on_cut_while_busy(&self, label: &str, window: usize) {
        if label != self.label {
            return;
        }
        let mut t = self.lock();
        t.cut_while_busy += 1;
        let window = window as u64;
        t.cut_window = Some(t.cut_window.map_or(window, |w| w.min(window)));
    }
    fn on_endpoint(&self, label: &str, url: &str, ok: bool) {
        if label == self.label {
            self.lock().endpoints.entry(url.to_string()).or_default()[usize::from(!ok)] += 1;
        }
    }
    fn on_outage(&self, label: &str, down: bool, error: &str) {
        if label != self.label {
            return;
        }
        let now = if down {
            self.lock().outages += 1;
            let since_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Some(OutageNow {
                since_ms,
                error: error.to_string(),
            })
        } else {
            None
        };
        *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }
    fn on_error(&self, label: &str, _request: &Request, error: &Error) {
        // A call stopped by cancel was never answered (nor, mostly, sent): not a failure.
        if label == self.label && !matches!(error, Error::Cancelled { .. }) {
            self.lock().failed_requests += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Timing, TransientKind, Usage};

    #[tokio::test]
    async fn tagged_calls_are_costed_under_their_tag_too() {
        let c = CostCounter::new("small", Pricing::new(2.0, 10.0));
        let reply = Reply {
            text: "x".into(),
            finish_reason: None,
            usage: Usage {
                prompt_tokens: 1000,
                completion_tokens: 500,
                ..Usage::default()
            },
            model: "m".into(),
            timing: Timing::default(),
        };
        let req = Request::completion("p");
        tagged("judge", async { c.on_reply("small", &req, &reply) }).await;
        tagged("answer", async {
            c.on_reply("small", &req, &reply);
            c.on_reply("small", &req, &reply);
        })
        .await;
        c.on_reply("small", &req, &reply); // untagged: in the total only
        let t = c.snapshot();
        assert!((t.cost_usd - 4.0 * 0.007).abs() < 1e-12, "{}", t.cost_usd);
        assert!((t.cost_by_tag["judge"] - 0.007).abs() < 1e-12);
        assert!((t.cost_by_tag["answer"] - 0.014).abs() < 1e-12);
        // Saved and restored, per tag too.
        let back: CostTotals = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        let resumed = CostCounter::new("small", Pricing::new(2.0, 10.0));
        resumed.restore(&back);
        resumed.restore(&back);
        assert!((resumed.snapshot().cost_by_tag["answer"] - 0.028).abs() < 1e-12);
        // Totals saved before tags existed still read.
        let old: CostTotals = serde_json::from_str(
            r#"{"requests":1,"failed_requests":0,"prompt_tokens":1,"completion_tokens":1,"estimated_replies":0,"cost_usd":0.5,"retries":{}}"#,
        )
        .unwrap();
        assert!(old.cost_by_tag.is_empty());
    }

    #[test]
    fn counts_costs_and_resumes() {
        let c = CostCounter::new("small", Pricing::new(2.0, 10.0));
        let reply = Reply {
            text: "x".into(),
            finish_reason: None,
            usage: Usage {
                prompt_tokens: 1000,
                completion_tokens: 500,
                estimated: true,
                ..Usage::default()
            },
            model: "m".into(),
            timing: Timing::default(),
        };
        let req = Request::completion("p");
        c.on_reply("small", &req, &reply);
        c.on_reply("large", &req, &reply); // another engine's reply: ignored
        let err = Error::Transient {
            engine: "small".into(),
            kind: TransientKind::RateLimited,
            message: "m".into(),
            retry_after: None,
            limit_used_up: false,
            limit_interval: None,
        };
        c.on_retry("small", &err, 1, Duration::ZERO);
        c.on_error("small", &req, &err);
        // A call stopped by the run's cancel is not a failed request.
        c.on_error(
            "small",
            &req,
            &Error::Cancelled {
                engine: "small".into(),
            },
        );
        let t = c.snapshot();
        assert_eq!(
            (
                t.requests,
                t.failed_requests,
                t.prompt_tokens,
                t.completion_tokens,
                t.estimated_replies
            ),
            (1, 1, 1000, 500, 1)
        );
        assert!((t.cost_usd - 0.007).abs() < 1e-12);
        assert_eq!(t.retries["rate_limited"], 1);
        // Persist, resume in a fresh counter, keep counting on top.
        let saved: CostTotals = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        let resumed = CostCounter::new("small", Pricing::new(2.0, 10.0));
        resumed.restore(&saved);
        resumed.on_reply("small", &req, &reply);
        assert_eq!(resumed.snapshot().requests, 2);
        assert!((resumed.snapshot().cost_usd - 0.014).abs() < 1e-12);
    }

    #[test]
    fn cached_prompt_tokens_are_priced_apart() {
        let pricing = Pricing {
            cached_input_per_million: Some(0.3),
            cache_write_per_million: Some(3.75),
            ..Pricing::new(3.0, 15.0)
        };
        let c = CostCounter::new("large", pricing);
        let reply = |cached, written| Reply {
            text: "x".into(),
            finish_reason: Some("stop".into()),
            usage: Usage {
                prompt_tokens: 2000,
                completion_tokens: 100,
                cached_prompt_tokens: cached,
                cache_write_tokens: written,
                estimated: false,
            },
            model: "m".into(),
            timing: Timing::default(),
        };
        let req = Request::completion("p");
        // First call writes 1500 tokens to the cache, the second reads them.
        c.on_reply("large", &req, &reply(0, 1500));
        c.on_reply("large", &req, &reply(1500, 0));
        let t = c.snapshot();
        assert_eq!((t.cached_prompt_tokens, t.cache_write_tokens), (1500, 1500));
        let first = (500.0 * 3.0 + 1500.0 * 3.75 + 100.0 * 15.0) / 1e6;
        let second = (500.0 * 3.0 + 1500.0 * 0.3 + 100.0 * 15.0) / 1e6;
        assert!(
            (t.cost_usd - (first + second)).abs() < 1e-12,
            "{}",
            t.cost_usd
        );
        // Without a cached price, cached tokens cost what any input token costs.
        assert!(
            (Pricing::new(3.0, 15.0).cost(&reply(1500, 0).usage) - (2000.0 * 3.0 + 1500.0) / 1e6)
                .abs()
                < 1e-12
        );
    }
}
