//! Each common key's value rule, as a `deserialize_with` function on its field of
//! [`CommonConfig`](super::CommonConfig), with one message wherever it is broken: a count
//! written as `-5`, `0`, `2.5` or `many` all get "expected a whole number of at least 1".

use std::time::Duration;

use atk_engine::{Endpoint, Mode, Secret};
use atk_tokens::Tokenizer;
use serde::de::{self, Deserialize, Deserializer, Error as _, Unexpected, Visitor};

/// A whole number of at least 1 (`concurrency_limit`, `chunk_size`, `max_attempts`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AtLeastOne(u64);

/// What [`AtLeastOne`] expects, as every message says it.
pub(crate) const AT_LEAST_ONE: &str = "a whole number of at least 1";

/// A count of at least 1 (`concurrency_limit`, `chunk_size`, `max_attempts`, ...), saturating
/// at the type's largest value.
pub(crate) fn count<'de, D: Deserializer<'de>, T: TryFrom<u64> + Bounded>(
    d: D,
) -> Result<T, D::Error> {
    let AtLeastOne(n) = AtLeastOne::deserialize(d)?;
    Ok(T::try_from(n).unwrap_or(T::MAX))
}

/// [`count`] for a key that may be left out (`requests_per_minute`: no cap).
pub(crate) fn optional_count<'de, D: Deserializer<'de>, T: TryFrom<u64> + Bounded>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<AtLeastOne>::deserialize(d)?.map(|AtLeastOne(n)| T::try_from(n).unwrap_or(T::MAX)))
}

/// The integer types a count is read into.
pub(crate) trait Bounded {
    /// The largest value (what a larger count saturates to).
    const MAX: Self;
}

impl Bounded for usize {
    const MAX: Self = usize::MAX;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}

/// A number of seconds above 0 (`request_timeout`, `burst`, ...).
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(D::Error::custom(format!(
            "must be a number of seconds above 0, found {s}"
        )))
    }
}

/// A whole number of milliseconds (`mock_latency_ms`).
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A price of 0 or more, USD per million tokens (`cost_per_million_*`).
pub(crate) fn price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v < 0.0 {
        return Err(D::Error::custom(format!(
            "must be a price of 0 or more (USD per million tokens), found {v}"
        )));
    }
    Ok(v)
}

/// A cap in USD above 0 (`max_cost`); empty is no cap.
pub(crate) fn optional_cost<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
        Some(v) => Err(D::Error::custom(format!(
            "must be an amount above 0 (USD), found {v}; leave it out for no cap"
        ))),
    }
}

/// A price of 0 or more, or none (`cost_per_million_*_cached_input`).
pub(crate) fn optional_price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        Some(v) => Err(D::Error::custom(format!(
            "must be a price of 0 or more (USD per million tokens), found {v}"
        ))),
    }
}

/// A share of the price above 0 and at most 1 (`batch_discount`).
pub(crate) fn discount<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(D::Error::custom(format!(
            "must be the share of the online price a batch pays, above 0 and at most 1 (0.5 = half price), found {v}"
        )));
    }
    Ok(v)
}

/// `api`, `batch` or `mock` (`small_mode`, `large_mode`); empty is `api`.
pub(crate) fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(Mode::Api),
        text => text.parse().map_err(|_| {
            D::Error::custom(format!(
                "unknown mode `{text}`; expected `api`, `batch` or `mock`"
            ))
        }),
    }
}

/// `openai` or `anthropic` (`small_api`, `large_api`); empty is `openai`.
pub(crate) fn dialect<'de, D: Deserializer<'de>>(d: D) -> Result<atk_engine::Dialect, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(atk_engine::Dialect::OpenAi),
        text => text.parse().map_err(|_| {
            D::Error::custom(format!(
                "unknown API `{text}`; expected `openai` or `anthropic`"
            ))
        }),
    }
}

/// The store's database by name (`store_backend`: `sled` or `redb`).
pub(crate) fn store_backend<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<atk_state::Backend, D::Error> {
    let name = String::deserialize(d)?;
    name.trim().parse().map_err(D::Error::custom)
}

/// A tokenizer by name (`tokenizer`).
pub(crate) fn tokenizer<'de, D: Deserializer<'de>>(d: D) -> Result<Tokenizer, D::Error> {
    let name = String::deserialize(d)?;
    Tokenizer::from_name(&name).map_err(D::Error::custom)
}

/// `small_base_url` / `large_base_url` as written: one URL, or a list of endpoints.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum BaseUrls {
    /// One endpoint.
    One(String),
    /// Several endpoints.
    Many(Vec<EndpointEntry>),
}

/// One entry of a `*_base_url` list: a URL, or a map with its own key and concurrency.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum EndpointEntry {
    /// Just the URL.
    Url(String),
    /// A URL with options.
    Full {
        url: String,
        #[serde(default)]
        api_key: Option<String>,
        #[serde(default)]
        concurrency: Option<i64>,
    },
}

/// `small_base_url` / `large_base_url`: one URL as written (checked with the engine's mode,
/// in `CommonConfig::check`), or every entry of a list, each checked here: an http(s) URL, a
/// concurrency of at least 1.
pub(crate) fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Endpoint>, D::Error> {
    let entries = match BaseUrls::deserialize(d)? {
        BaseUrls::One(url) => {
            return Ok(vec![Endpoint {
                base_url: url,
                api_key: None,
                concurrency: None,
            }]);
        }
        BaseUrls::Many(entries) => entries,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let bad =
            |message: String| D::Error::custom(format!("entry {} of the list: {message}", i + 1));
        let (url, api_key, concurrency) = match entry {
            EndpointEntry::Url(url) => (url, None, None),
            EndpointEntry::Full {
                url,
                api_key,
                concurrency,
            } => (url, api_key, concurrency),
        };
        let url = url.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(format!("`{url}` is not an http(s) URL")));
        }
        let concurrency = match concurrency {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return Err(bad(format!(
                    "`{url}`: concurrency must be at least 1, found {n}"
                )));
            }
        };
        out.push(Endpoint {
            base_url: url,
            api_key: api_key.filter(|k| !k.is_empty()).map(Secret::new),
            concurrency,
        });
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AtLeastOne;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(AT_LEAST_ONE)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AtLeastOne, E> {
                if v == 0 {
                    Err(E::invalid_value(Unexpected::Unsigned(0), &self))
                } else {
                    Ok(AtLeastOne(v))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AtLeastOne, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_of_breaking_the_rule_gets_the_same_expectation() {
        for text in ["-5", "0", "2.5", "many", "[1]"] {
            let err = serde_yaml::from_str::<AtLeastOne>(text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a whole number of at least 1"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            serde_yaml::from_str::<AtLeastOne>("12").unwrap(),
            AtLeastOne(12)
        );
    }
}
