//! Pacing from the server's own rate-limit headers (`x-ratelimit-{limit,remaining,reset}-
//! {requests,tokens}`, sent by OpenAI and many compatible providers on every response).
//!
//! The server runs a token bucket; its headers say how full it was when it admitted a request
//! (`remaining`), how big it is (`limit`) and when it will be full again (`reset`), which gives
//! the refill rate. The pacer mirrors that bucket: the level a response reports, minus what was
//! sent after that request, plus the refill since. A request is sent only when the mirrored
//! bucket has room, so a client that paces itself this way meets few 429s (one that only backs
//! off after 429s gets many: 22–50 % of requests refused at a 100 req/s limit, measured).
//! Without the headers the pacer never delays anything.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName};
use tokio::time::Instant;

use crate::{Prompt, Request};

/// Sends older than this are forgotten (a response never reports on a request this old).
const HISTORY: Duration = Duration::from_secs(600);
/// Most sends remembered.
const HISTORY_MAX: usize = 100_000;
/// Share of a bucket kept free: costs a burst this size once, never the steady rate.
const MARGIN: f64 = 0.03;

/// One engine's mirror of the server's buckets; shared by the limit layer (which waits for
/// room) and the HTTP layer (which records sends and reads the headers).
#[derive(Default)]
pub(crate) struct Pacer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    requests: Option<Mirror>,
    tokens: Option<Mirror>,
    /// Recent sends: when, and the tokens reserved for each.
    sent: VecDeque<(Instant, f64)>,
}

/// The mirror of one server bucket.
struct Mirror {
    limit: f64,
    /// Level at `at` (may go below zero when sends outrun the estimate).
    level: f64,
    at: Instant,
    /// Refill per second, once a response showed the bucket below full.
    rate: Option<f64>,
    /// `at` of the observation in force (a stale response does not overwrite a newer one).
    observed: Instant,
}

impl Mirror {
    fn level_at(&self, now: Instant) -> f64 {
        let refill =
            self.rate.unwrap_or(0.0) * now.saturating_duration_since(self.at).as_secs_f64();
        (self.level + refill).min(self.limit)
    }

    /// How long until the bucket holds `need` plus a margin of [`MARGIN`] of its size (zero
    /// when it does now). The margin absorbs what the headers round off (whole requests,
    /// milliseconds) and what arrives at the server before the responses that report it.
    fn wait_for(&self, need: f64, now: Instant) -> Duration {
        let level = self.level_at(now);
        let need = (need + MARGIN * self.limit).min(self.limit);
        if level >= need {
            return Duration::ZERO;
        }
        match self.rate {
            Some(rate) if rate > 0.0 => Duration::from_secs_f64(((need - level) / rate).min(600.0)),
            // Never seen below full: nothing to go by, try again shortly.
            _ => Duration::from_millis(100),
        }
    }
}

/// The rate-limit headers of one response.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct LimitHeaders {
    pub(crate) requests: Option<Bucket>,
    pub(crate) tokens: Option<Bucket>,
}

/// `limit`, `remaining` and `reset` of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) limit: f64,
    pub(crate) remaining: f64,
    pub(crate) reset: Duration,
}

impl LimitHeaders {
    /// Reads `x-ratelimit-*-requests` and `-tokens`; a bucket missing any of its three
    /// headers is `None`.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        /// `limit`, `remaining` and `reset` of one bucket: parsed names, so a response's
        /// lookups build no string.
        type Names = [HeaderName; 3];
        const REQUESTS: Names = [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ];
        const TOKENS: Names = [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ];
        let bucket = |[limit, remaining, reset]: &Names| {
            let get = |name: &HeaderName| headers.get(name)?.to_str().ok().map(str::trim);
            Some(Bucket {
                limit: get(limit)?.parse().ok().filter(|v: &f64| *v > 0.0)?,
                remaining: get(remaining)?.parse().ok().filter(|v: &f64| *v >= 0.0)?,
                reset: parse_go_duration(get(reset)?)?,
            })
        };
        Self {
            requests: bucket(&REQUESTS),
            tokens: bucket(&TOKENS),
        }
    }

    /// True when the headers show a bucket with no room for this request (`tokens` needed).
    pub(crate) fn used_up(&self, tokens: f64) -> bool {
        self.requests.is_some_and(|b| b.remaining < 1.0)
            || self
                .tokens
                .is_some_and(|b| b.remaining < tokens.min(b.limit))
    }

    /// The interval at which the request bucket refills one request, when the headers show it
    /// below full: `reset` is the time it takes to refill what was used. (For a limit stated
    /// per minute and enforced over shorter periods, as OpenAI's, that is the enforced pace.)
    pub(crate) fn interval(&self) -> Option<Duration> {
        let b = self.requests?;
        (b.remaining < b.limit && !b.reset.is_zero())
            .then(|| b.reset.div_f64(b.limit - b.remaining))
    }

    fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }
}

impl Pacer {
    /// Room for a request reserving `tokens` now: it is recorded as sent and its send instant
    /// returned (for [`Pacer::observe`]); otherwise how long to wait before asking again.
    pub(crate) fn reserve(&self, tokens: f64) -> Result<Instant, Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        let req = st
            .requests
            .as_ref()
            .map_or(Duration::ZERO, |m| m.wait_for(1.0, now));
        let tok = st
            .tokens
            .as_ref()
            .map_or(Duration::ZERO, |m| m.wait_for(tokens, now));
        let wait = req.max(tok);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(m) = &mut st.requests {
            m.level -= 1.0;
        }
        if let Some(m) = &mut st.tokens {
            m.level -= tokens;
        }
        while st.sent.len() >= HISTORY_MAX
            || st
                .sent
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > HISTORY)
        {
            st.sent.pop_front();
        }
        st.sent.push_back((now, tokens));
        Ok(now)
    }

    /// Takes in the headers of the response to the request sent at `sent_at`.
    pub(crate) fn observe(&self, headers: &LimitHeaders, sent_at: Instant) {
        if headers.is_empty() {
            return;
        }
        let mut st = self.lock();
        // What was sent after this request: the server had not counted it yet.
        let first_after = st.sent.partition_point(|(t, _)| *t <= sent_at);
        let (n_after, tokens_after) = st
            .sent
            .iter()
            .skip(first_after)
            .fold((0.0, 0.0), |(n, t), (_, tok)| (n + 1.0, t + tok));
        if let Some(b) = headers.requests {
            update(&mut st.requests, b, sent_at, n_after);
        }
        if let Some(b) = headers.tokens {
            update(&mut st.tokens, b, sent_at, tokens_after);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn update(mirror: &mut Option<Mirror>, b: Bucket, sent_at: Instant, used_after: f64) {
    // Below full, `reset` is the time to refill `limit - remaining`: that is the rate.
    let rate = (b.remaining < b.limit && !b.reset.is_zero())
        .then(|| (b.limit - b.remaining) / b.reset.as_secs_f64());
    match mirror {
        Some(m) if m.observed > sent_at => {
            // An older response: only its rate is news.
            if rate.is_some() {
                m.rate = rate;
            }
        }
        _ => {
            let previous_rate = mirror.as_ref().and_then(|m| m.rate);
            *mirror = Some(Mirror {
                limit: b.limit,
                level: b.remaining - used_after,
                at: sent_at,
                rate: rate.or(previous_rate),
                observed: sent_at,
            });
        }
    }
}

/// A Go-style duration as OpenAI sends in `x-ratelimit-reset-*`: `20ms`, `0.36s`, `1s`,
/// `6m0s`, `1h2m3.5s`; a bare number is seconds.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total.min(86_400.0)))
}

/// Tokens a request may use, for the token bucket: a 4-bytes-per-token prompt estimate plus
/// `max_tokens` (what providers count against the limit when admitting a request).
pub(crate) fn request_tokens(request: &Request) -> f64 {
    let bytes: usize = match &request.prompt {
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
        Prompt::Completion(text) => text.len(),
    };
    (bytes as f64 / 4.0).ceil() + request.max_tokens().unwrap_or(0) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("20ms", Some(ms(20))),
            ("0.36s", Some(ms(360))),
            ("1s", Some(ms(1000))),
            ("6m0s", Some(Duration::from_secs(360))),
            ("1h2m3.5s", Some(ms(3_723_500))),
            ("2.5", Some(ms(2500))),
            ("", None),
            ("soon", None),
            ("5x", None),
        ] {
            assert_eq!(parse_go_duration(text), expected, "{text:?}");
        }
    }

    fn headers(limit: u32, remaining: u32, reset: &'static str) -> LimitHeaders {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(limit));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(remaining),
        );
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static(reset),
        );
        LimitHeaders::parse(&h)
    }

    #[tokio::test(start_paused = true)]
    async fn mirrors_the_bucket_from_the_headers_and_what_was_sent_since() {
        let p = Pacer::default();
        let t0 = p.reserve(1.0).expect("no headers: no pacing");
        tokio::time::advance(Duration::from_nanos(1)).await;
        // Nine more go out before the first response comes back.
        for _ in 0..9 {
            p.reserve(1.0).unwrap();
        }
        // 100 per second; the first request left 99, so the bucket is full in 10 ms.
        p.observe(&headers(100, 99, "10ms"), t0);
        // 87 of the 90 left go out at once (3 % of the bucket is kept free); the next waits for
        // one refill (10 ms).
        for _ in 0..87 {
            p.reserve(1.0).unwrap();
        }
        let w = p.reserve(1.0).unwrap_err();
        assert!(w > ms(9) && w <= ms(10), "{w:?}");
        tokio::time::advance(w).await;
        assert!(p.reserve(1.0).is_ok());
        // The 429 of a request that found the bucket empty is used up; one with room is not.
        assert!(headers(100, 0, "1s").used_up(1.0));
        assert!(!headers(100, 3, "1s").used_up(1.0));
        assert!(!LimitHeaders::default().used_up(1.0));
        // The interval the headers state: the bucket's own, or a per-minute limit's (6000/min,
        // 21 used, full again in 210 ms: one request per 10 ms); none when nothing is used.
        assert_eq!(headers(20, 0, "200ms").interval(), Some(ms(10)));
        assert_eq!(headers(6000, 5979, "210ms").interval(), Some(ms(10)));
        assert_eq!(headers(6000, 6000, "0s").interval(), None);
        assert_eq!(LimitHeaders::default().interval(), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
