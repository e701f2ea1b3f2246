//! Value rules shared by several keys, each with one message wherever it is broken: a count
//! written as `-5`, `0`, `2.5` or `many` all get "expected a whole number of at least 1".

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// A whole number of at least 1 (`concurrency_limit`, `chunk_size`, `max_attempts`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AtLeastOne(pub u64);

/// What [`AtLeastOne`] expects, as every message says it.
pub(crate) const AT_LEAST_ONE: &str = "a whole number of at least 1";

impl AtLeastOne {
    /// As a `usize` (saturating).
    pub fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// As a `u32` (saturating).
    pub fn u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
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
