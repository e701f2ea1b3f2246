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

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_values() {
        use std::time::UNIX_EPOCH;
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let s = Duration::from_secs;
        let table: [(&str, Option<Duration>); 14] = [
            ("3", Some(s(3))),
            (" 120 ", Some(s(120))),
            ("1.5", Some(Duration::from_millis(1500))),
            ("0", Some(s(0))),
            ("86400", Some(MAX_RETRY_AFTER)),
            ("1e300", Some(MAX_RETRY_AFTER)),
            ("-1", None),
            ("NaN", None),
            ("soon", None),
            ("", None),
            // HTTP dates (IMF-fixdate, and the obsolete RFC 850 / asctime forms RFC 9110 keeps).
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(s(30))),
            ("Wednesday, 21-Oct-15 07:29:00 GMT", Some(s(60))),
            ("Wed Oct 21 07:28:00 2015", Some(s(0))),
            // In the past: retry now; far future: capped.
            ("Tue, 20 Oct 2015 07:28:00 GMT", Some(s(0))),
        ];
        for (value, expected) in table {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", now),
            None
        );
    }

    #[test]
    fn retry_after_date_is_measured_from_the_server_date() {
        // The local clock is irrelevant when the response carries its own `Date`.
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:45 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(45)));
        // Without `Date`, a date long past is "now".
        h.remove("date");
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        // A relative date from the local clock: about 20 s (whole seconds, so 19..=20).
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(20));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            (Duration::from_secs(19)..=Duration::from_secs(20)).contains(&d),
            "{d:?}"
        );
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("99999999999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
