//! Step fingerprints: what a step's results were made with (prompt file, sampling params,
//! model, pipeline version), stored in each result so a later run can tell which results an
//! edit made stale and say which part changed.
//!
//! A fingerprint is a short text of `key=hash` parts separated by `;`, e.g.
//! `p=1a2b3c4d;s=5e6f7a8b;m=9c0d1e2f;v=3a4b5c6d` (prompt, sampling params, model, version,
//! and `j=…` for a schema step's output schema);
//! parts are compared one by one, so "the prompt changed" can be told from "the model changed"
//! from the stored record alone.

use std::collections::BTreeMap;

use atk_state::{ResultRecord, Store};
use sha2::{Digest, Sha256};

/// One part of a fingerprint that can change on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The prompt file (after overrides, as used: chat or completion) and the step's arguments.
    Prompt,
    /// The sampling params sent.
    Params,
    /// The engine's model and mode (api or mock, chat or completion).
    Model,
    /// The version string the pipeline gives the step (bump it when a processor or validator changes).
    Version,
    /// The JSON Schema of a schema step's output (`PromptStep::json`); steps without one have
    /// no such part, so their fingerprints are what they were before schemas existed.
    Schema,
}

impl Part {
    fn key(self) -> &'static str {
        match self {
            Self::Prompt => "p",
            Self::Params => "s",
            Self::Model => "m",
            Self::Version => "v",
            Self::Schema => "j",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key {
            "p" => Some(Self::Prompt),
            "s" => Some(Self::Params),
            "m" => Some(Self::Model),
            "v" => Some(Self::Version),
            "j" => Some(Self::Schema),
            _ => None,
        }
    }

    /// How a user reads "made with another …".
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Prompt => "another prompt",
            Self::Params => "other sampling params",
            Self::Model => "another model",
            Self::Version => "another version of the step",
            Self::Schema => "another output schema",
        }
    }

    /// A short noun for listings (`prompt file`, `params`, `model`, `version`).
    pub fn noun(self) -> &'static str {
        match self {
            Self::Prompt => "prompt file",
            Self::Params => "params",
            Self::Model => "model",
            Self::Version => "version",
            Self::Schema => "output schema",
        }
    }
}

/// Eight hex digits of SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// Builds a fingerprint from readable parts (each is hashed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    parts: BTreeMap<Part, String>,
}

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one part from its readable value.
    pub fn with(mut self, part: Part, readable: &str) -> Self {
        self.parts.insert(part, readable.to_string());
        self
    }

    /// One part's readable value.
    pub fn part(&self, part: Part) -> Option<&str> {
        self.parts.get(&part).map(String::as_str)
    }

    /// The readable parts, for store meta and `atk status`.
    pub fn readable(&self) -> BTreeMap<String, String> {
        self.parts
            .iter()
            .map(|(p, v)| (p.noun().to_string(), v.clone()))
            .collect()
    }

    /// The stored text: `key=hash` parts in a fixed order, `;`-separated.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|(p, v)| format!("{}={}", p.key(), short_hash(v)))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The fingerprint of a step made from a function (no prompt): its version alone, when the
/// pipeline gave one.
pub(crate) fn of_function(version: Option<&str>) -> Option<Fingerprint> {
    version.map(|v| Fingerprint::new().with(Part::Version, v))
}

/// The parts in which two stored fingerprints differ (a part missing on one side differs).
pub fn changed_parts(old: &str, new: &str) -> Vec<Part> {
    let parse = |s: &str| -> BTreeMap<Part, String> {
        s.split(';')
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Part::from_key(k).map(|p| (p, v.to_string())))
            .collect()
    };
    let (a, b) = (parse(old), parse(new));
    let mut parts: Vec<Part> = a.keys().chain(b.keys()).copied().collect();
    parts.sort();
    parts.dedup();
    parts.retain(|p| a.get(p) != b.get(p));
    parts
}

/// `new` with its version part replaced by `current`'s: what a result reprocessed with the
/// current processor and validator, over a reply made with the old prompt, was made with.
pub fn with_version_of(old: &str, current: &str) -> String {
    let version = current
        .split(';')
        .find(|kv| kv.starts_with("v="))
        .unwrap_or_default();
    let mut parts: Vec<&str> = old
        .split(';')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("v="))
        .collect();
    if !version.is_empty() {
        parts.push(version);
    }
    parts.join(";")
}

/// How a step's stored results compare with its current fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FingerprintCounts {
    /// Results made with the current fingerprint.
    pub current: u64,
    /// Results made with another one, grouped by which parts differ.
    pub other: BTreeMap<Vec<Part>, u64>,
    /// Results stored without a fingerprint (made before atk recorded them, or by a step without one).
    pub unknown: u64,
    /// The other fingerprints met (to keep in store meta).
    pub seen: Vec<String>,
}

impl FingerprintCounts {
    /// Results made with another fingerprint.
    pub fn older(&self) -> u64 {
        self.other.values().sum()
    }

    /// Adds one stored record.
    pub fn add(&mut self, record: &ResultRecord, current: &str) {
        match record.fingerprint.as_deref() {
            None => self.unknown += 1,
            Some(fp) if fp == current => self.current += 1,
            Some(fp) => {
                *self.other.entry(changed_parts(fp, current)).or_default() += 1;
                if !self.seen.iter().any(|s| s == fp) {
                    self.seen.push(fp.to_string());
                }
            }
        }
    }
}

/// Reads every result of `step` and counts them against `current` (decodes each record).
pub fn count_fingerprints(
    store: &dyn Store,
    step: &str,
    current: &str,
) -> Result<FingerprintCounts, atk_state::Error> {
    let mut counts = FingerprintCounts::default();
    for r in store.results(step) {
        let (_, record) = r?;
        counts.add(&record, current);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_parts_name_what_differs() {
        let a = Fingerprint::new()
            .with(Part::Prompt, "p1")
            .with(Part::Params, "{}")
            .with(Part::Model, "m")
            .with(Part::Version, "1");
        let b = a.clone().with(Part::Prompt, "p2");
        assert_eq!(changed_parts(&a.text(), &b.text()), [Part::Prompt]);
        let c = b.clone().with(Part::Version, "2").with(Part::Model, "m2");
        assert_eq!(
            changed_parts(&a.text(), &c.text()),
            [Part::Prompt, Part::Model, Part::Version]
        );
        assert!(changed_parts(&a.text(), &a.text()).is_empty());
        assert_eq!(a.text().split(';').count(), 4);
        let reprocessed = with_version_of(&a.text(), &c.text());
        assert_eq!(
            changed_parts(&reprocessed, &c.text()),
            [Part::Prompt, Part::Model]
        );
    }
}
