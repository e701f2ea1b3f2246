//! `Retry-After` and `retry-after-ms`: how long a server asks a client to wait.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The longest Retry-After honoured. A server asking for more (or sending a far-future date)
/// gets this: the pause it causes in `Limit` stays bounded, and with the default
/// `RetryConfig::max_elapsed` (10 min) the retry policy then gives up on the call instead of
/// waiting. Also keeps `Instant + Duration` far from overflow.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// `retry-after-ms` (milliseconds) or `retry-after` (seconds, or an HTTP date as RFC 9110
/// allows: `Wed, 21 Oct 2015 07:28:00 GMT`). A date is measured from the response's own `Date`
/// header when it has one (so a skewed local clock does not matter), else from the local clock.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok();
    if let Some(ms) = text("retry-after-ms").and_then(|v| parse_delay(v, Duration::from_millis(1)))
    {
        return Some(ms);
    }
    let now = text("date")
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(std::time::SystemTime::now);
    parse_retry_after(text("retry-after")?, now)
}

/// One `Retry-After` value as a delay from `now`: seconds (fractions accepted) or an HTTP date;
/// a date in the past means "now" (zero); anything above [`MAX_RETRY_AFTER`] is capped to it.
/// `None` for anything else (negative, not a number, not a date).
pub(crate) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Some(d) = parse_delay(value, Duration::from_secs(1)) {
        return Some(d);
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// A non-negative, finite number of `unit`s, capped at [`MAX_RETRY_AFTER`].
pub(super) fn parse_delay(value: &str, unit: Duration) -> Option<Duration> {
    let n = value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    let secs = (n * unit.as_secs_f64()).min(MAX_RETRY_AFTER.as_secs_f64());
    Some(Duration::from_secs_f64(secs))
}
