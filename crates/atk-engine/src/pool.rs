//! Several endpoints serving one engine's model (vLLM or llama.cpp replicas on several
//! machines): each call goes to the least-loaded healthy endpoint whose window is not paused;
//! one that fails with a lost connection or a 5xx is taken out for a back-off period (1 s
//! doubling to 30 s) and the call is tried on another at once. Each endpoint keeps its own key,
//! client, rate-limit mirror and adaptive window (its [`Gate`]), all inside the run's one bound.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::config::EngineConfig;
use crate::http::Http;
use crate::limit::Gate;
use crate::observer::Observers;
use crate::{Engine, Error, Reply, Request, TransientKind};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The inner engine when `EngineConfig::endpoints` lists more than one.
pub(crate) struct Pool {
    label: String,
    model: String,
    members: Vec<Member>,
    observers: Observers,
}

struct Member {
    url: String,
    http: Http,
    /// Admission to this endpoint (`None` in a stack without a limit).
    gate: Option<Gate>,
    /// The entry's concurrency: its share of the load.
    weight: usize,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

struct Health {
    down_until: Option<Instant>,
    backoff: Duration,
}

/// Counts a member's call in flight while alive.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Member {
    fn down_until(&self) -> Option<Instant> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .down_until
    }
    fn healthy(&self, now: Instant) -> bool {
        self.down_until().is_none_or(|t| t <= now)
    }
    /// Healthy, and not paused by a 429's Retry-After.
    fn ready(&self, now: Instant) -> bool {
        self.healthy(now)
            && self
                .gate
                .as_ref()
                .is_none_or(|g| g.window().paused_until().is_none())
    }
    /// Load per unit of concurrency, in thousandths.
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) * 1000 / self.weight
    }
    fn mark(&self, ok: bool) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            h.down_until = None;
            h.backoff = FIRST_BACKOFF;
        } else {
            h.down_until = Some(Instant::now() + h.backoff);
            h.backoff = (h.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Failures that say this endpoint (not the request) is the trouble.
fn endpoint_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Transient {
            kind: TransientKind::Unavailable
                | TransientKind::Connection
                | TransientKind::ServerError,
            ..
        }
    )
}

impl Pool {
    /// One member per `cfg.endpoints` entry; `gate(key, name)` gives each its admission.
    pub(crate) fn new(
        cfg: &EngineConfig,
        cancel: &Cancel,
        observers: Observers,
        gate: impl Fn(&str, &str) -> Option<Gate>,
    ) -> Result<Self, Error> {
        let mut members = Vec::with_capacity(cfg.endpoints.len());
        for (i, e) in cfg.endpoints.iter().enumerate() {
            if e.concurrency == Some(0) {
                return Err(Error::Config(format!(
                    "{}: endpoint {} ({}): concurrency must be at least 1",
                    cfg.label,
                    i + 1,
                    e.base_url
                )));
            }
            let mut one = cfg.clone();
            one.base_url.clone_from(&e.base_url);
            if let Some(key) = &e.api_key {
                one.api_key = key.clone();
            }
            let url = e.base_url.trim().trim_end_matches('/').to_string();
            let name = format!("{} @ {url}", cfg.label);
            members.push(Member {
                gate: gate(&crate::builder::window_key(&url, &cfg.model), &name),
                url,
                http: Http::new(&one, cancel.clone())?,
                weight: e.concurrency.unwrap_or(1).max(1),
                in_flight: AtomicUsize::new(0),
                health: Mutex::new(Health {
                    down_until: None,
                    backoff: FIRST_BACKOFF,
                }),
            });
        }
        Ok(Self {
            label: cfg.label.clone(),
            model: cfg.model.clone(),
            members,
            observers,
        })
    }

    /// The next endpoint to try: the least-loaded ready one not tried yet, else the
    /// least-loaded healthy one, else the untried one back soonest.
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let now = Instant::now();
        let untried = || (0..self.members.len()).filter(|i| !tried[*i]);
        let load = |i: &usize| self.members[*i].load();
        untried()
            .filter(|i| self.members[*i].ready(now))
            .min_by_key(load)
            .or_else(|| {
                untried()
                    .filter(|i| self.members[*i].healthy(now))
                    .min_by_key(load)
            })
            .or_else(|| untried().min_by_key(|i| self.members[*i].down_until()))
    }

    /// One attempt on member `i`; `None` when it went down while this call waited for its
    /// slot and another healthy one is left to try.
    async fn attempt(
        &self,
        i: usize,
        request: &Request,
        tried: &[bool],
    ) -> Option<Result<Reply, Error>> {
        let m = &self.members[i];
        let Some(gate) = &m.gate else {
            return Some(m.http.call_ref(request).await);
        };
        let queued_since = Instant::now();
        let permit = match gate.slot().await {
            Ok(permit) => permit,
            Err(e) => return Some(Err(e)),
        };
        let now = Instant::now();
        if !m.healthy(now)
            && (0..self.members.len()).any(|j| !tried[j] && j != i && self.members[j].healthy(now))
        {
            return None;
        }
        let admitted = match gate.budget(permit, request, queued_since).await {
            Ok(admitted) => admitted,
            Err(e) => return Some(Err(e)),
        };
        let result = m.http.call_ref(request).await;
        Some(gate.settle(admitted, result, &self.label))
    }
}

#[async_trait]
impl Engine for Pool {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        self.call_ref(&request).await
    }
    async fn call_ref(&self, request: &Request) -> Result<Reply, Error> {
        let mut tried = vec![false; self.members.len()];
        loop {
            let i = self.pick(&tried).expect("a pool has at least one endpoint");
            let m = &self.members[i];
            m.in_flight.fetch_add(1, Ordering::Relaxed);
            let busy = Busy(&m.in_flight);
            let result = self.attempt(i, request, &tried).await;
            drop(busy);
            let Some(result) = result else {
                continue; // it went down meanwhile: pick again
            };
            if matches!(
                result,
                Err(Error::Cancelled { .. } | Error::EngineDead { .. })
            ) {
                return result; // stopped before it was sent
            }
            tried[i] = true;
            let failed = result.as_ref().err().is_some_and(endpoint_failure);
            m.mark(!failed);
            for o in self.observers.iter() {
                o.on_endpoint(&self.label, &m.url, !failed);
            }
            if failed && tried.iter().any(|t| !t) {
                let error = result
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::warn!(engine = %self.label, endpoint = %m.url, %error, "endpoint failed: taken out for a while, trying another");
                continue;
            }
            return result;
        }
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn model(&self) -> &str {
        &self.model
    }
}
