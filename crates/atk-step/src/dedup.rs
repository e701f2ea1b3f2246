//! Near-duplicate removal as a ready barrier step: exact matches (a hash of the normalised
//! text) and near matches (MinHash signatures compared through LSH bands), over one text field,
//! keeping the first of each group in item order.
//!
//! MinHash is written here rather than taken from a crate: it is some forty lines, and the
//! verdicts must never change with a dependency's hashing or band layout (a stored dedup
//! verdict that changed would remake every later result). The crates that exist for it either
//! pull in a text-processing stack or do not promise stable hashes across versions.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::barrier::{BarrierStep, Survivor, Verdict};
use crate::item::Item;

/// Signature length (hash functions); 64 × 4 bytes per item.
const PERMUTATIONS: usize = 64;
/// LSH bands of [`ROWS`] values each: pairs with similarity around 0.5 and above share a band.
const BANDS: usize = 16;
const ROWS: usize = PERMUTATIONS / BANDS;
/// Characters per shingle.
const SHINGLE: usize = 4;

/// What a dedup barrier keeps of each item: a hash of its normalised text and its MinHash
/// signature (about 300 bytes, whatever the text's length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupState {
    exact: [u8; 16],
    signature: Box<[u32; PERMUTATIONS]>,
}

impl DedupState {
    /// The state of one text.
    pub fn of(text: &str) -> Self {
        let norm = normalise(text);
        let exact = Sha256::digest(norm.as_bytes())[..16]
            .try_into()
            .expect("16 bytes");
        let chars: Vec<char> = norm.chars().collect();
        let mut signature = Box::new([u32::MAX; PERMUTATIONS]);
        let mut add = |shingle: &[char]| {
            let base = fnv(shingle);
            for (i, slot) in signature.iter_mut().enumerate() {
                let h = mix(base ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as u32;
                *slot = (*slot).min(h);
            }
        };
        if chars.len() <= SHINGLE {
            add(&chars);
        } else {
            chars.windows(SHINGLE).for_each(&mut add);
        }
        Self { exact, signature }
    }

    /// The estimated Jaccard similarity of two texts' shingle sets (0.0–1.0).
    pub fn similarity(&self, other: &Self) -> f64 {
        let same = self
            .signature
            .iter()
            .zip(other.signature.iter())
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / PERMUTATIONS as f64
    }

    fn bands(&self) -> impl Iterator<Item = u64> + '_ {
        self.signature.chunks(ROWS).enumerate().map(|(band, rows)| {
            let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ band as u64;
            for r in rows {
                h = mix(h ^ u64::from(*r));
            }
            h
        })
    }
}

/// Lower case, letters and digits kept, every other run of characters one space.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

fn fnv(chars: &[char]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for c in chars {
        for b in (*c as u32).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// SplitMix64's finaliser: a fixed, well-spread 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The verdicts of a dedup pass: the first item of each group of (near-)duplicates is kept;
/// each later one is dropped with a reason naming the kept twin's id. `threshold` is the
/// estimated similarity (0.0–1.0) from which two texts count as near duplicates.
pub fn dedup_verdicts(survivors: &[Survivor<DedupState>], threshold: f64) -> Vec<Verdict> {
    let mut exact: HashMap<[u8; 16], usize> = HashMap::new();
    let mut bands: HashMap<u64, Vec<usize>> = HashMap::new();
    survivors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if let Some(&j) = exact.get(&s.state.exact) {
                return Verdict::Drop(format!("duplicate of {}", survivors[j].id));
            }
            let mut twin: Option<(usize, f64)> = None;
            for key in s.state.bands() {
                for &j in bands.get(&key).into_iter().flatten() {
                    if twin.is_some_and(|(t, _)| t <= j) {
                        continue;
                    }
                    let sim = s.state.similarity(&survivors[j].state);
                    if sim >= threshold {
                        twin = Some((j, sim));
                    }
                }
            }
            if let Some((j, sim)) = twin {
                return Verdict::Drop(format!(
                    "near-duplicate of {} ({:.0}% similar)",
                    survivors[j].id,
                    sim * 100.0
                ));
            }
            exact.insert(s.state.exact, i);
            for key in s.state.bands() {
                bands.entry(key).or_default().push(i);
            }
            Verdict::Keep(Value::Null)
        })
        .collect()
}

impl BarrierStep<DedupState> {
    /// Near-duplicate removal over the text at `path` (a field, or `key.field` inside a step's
    /// result): exact duplicates (after lower-casing and dropping punctuation) and texts whose
    /// estimated similarity is at least `threshold` (0.0–1.0; 0.7 is a good start) are dropped,
    /// the first in item order kept; the drop reason names the kept twin. An item without the
    /// field is dropped with a reason naming it.
    pub fn near_duplicates(
        name: impl Into<String>,
        path: impl Into<String>,
        threshold: f64,
    ) -> Self {
        let path = path.into();
        BarrierStep::new(
            name,
            move |item: &Item, _| match item.path(&path) {
                Some(Value::String(text)) => Ok(DedupState::of(text)),
                Some(other) => Ok(DedupState::of(&other.to_string())),
                None => Err(format!("no field `{path}` to compare for duplicates")),
            },
            move |survivors, _| dedup_verdicts(survivors, threshold),
        )
        .version(format!("dedup1 t={threshold}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(texts: &[&str], threshold: f64) -> Vec<Verdict> {
        let survivors: Vec<Survivor<DedupState>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Survivor {
                id: format!("q{i}"),
                state: DedupState::of(t),
            })
            .collect();
        dedup_verdicts(&survivors, threshold)
    }

    #[test]
    fn the_first_of_each_group_is_kept_and_later_twins_name_it() {
        let v = run(
            &[
                "Which river carries the most sediment into the delta each spring?",
                "How do lighthouse keepers trim the wick of an oil lamp?",
                "which river carries the most sediment into the delta, each spring",
                "Which river carries the most sediment into the delta every spring?",
                "Why did the town council ban carts on the old bridge?",
            ],
            0.7,
        );
        assert_eq!(v[0], Verdict::Keep(Value::Null));
        assert_eq!(v[1], Verdict::Keep(Value::Null));
        assert_eq!(
            v[2],
            Verdict::Drop("duplicate of q0".into()),
            "case and punctuation differ only"
        );
        match &v[3] {
            Verdict::Drop(r) => assert!(r.starts_with("near-duplicate of q0 ("), "{r}"),
            other => panic!("a one-word change is a near duplicate: {other:?}"),
        }
        assert_eq!(v[4], Verdict::Keep(Value::Null));
        // Deterministic: the same texts give the same verdicts.
        assert_eq!(
            v,
            run(
                &[
                    "Which river carries the most sediment into the delta each spring?",
                    "How do lighthouse keepers trim the wick of an oil lamp?",
                    "which river carries the most sediment into the delta, each spring",
                    "Which river carries the most sediment into the delta every spring?",
                    "Why did the town council ban carts on the old bridge?",
                ],
                0.7
            )
        );
    }

    #[test]
    fn similarity_tracks_overlap_and_the_threshold_decides() {
        let a = DedupState::of("the quick brown fox jumps over the lazy dog near the barn");
        let b = DedupState::of("the quick brown fox jumps over the lazy cat near the barn");
        let c = DedupState::of("an entirely different sentence about tides and harbour walls");
        assert!(a.similarity(&b) > 0.6, "{}", a.similarity(&b));
        assert!(a.similarity(&c) < 0.2, "{}", a.similarity(&c));
        assert_eq!(a.similarity(&a), 1.0);
        let texts = [
            "the quick brown fox jumps over the lazy dog near the barn",
            "the quick brown fox jumps over the lazy cat near the barn",
        ];
        assert!(matches!(run(&texts, 0.6)[1], Verdict::Drop(_)));
        assert_eq!(run(&texts, 0.99)[1], Verdict::Keep(Value::Null));
        // Short texts still compare.
        assert_eq!(
            run(&["ok", "OK!"], 0.7)[1],
            Verdict::Drop("duplicate of q0".into())
        );
    }
}
