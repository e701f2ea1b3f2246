//! The typed layer: deserialising the flattened keys into `CommonConfig` and a pipeline's own
//! struct, recording which keys each ignored (unknown keys) and where a wrong type sits.

use serde::de::{self, DeserializeOwned, Visitor};
use serde_yaml::Value;

/// A value of a deserialised struct and the paths (`key`, `map.inner`) it ignored.
pub(crate) struct Tracked<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

/// Why deserialisation failed: the path of the offending value (`key`, `map.inner`, `list[0]`,
/// empty at the root) and serde's message.
pub(crate) struct Failure {
    pub path: String,
    pub message: String,
}

impl Failure {
    /// `Some(field)` when serde reported a missing field.
    pub(crate) fn missing_field(&self) -> Option<&str> {
        self.message
            .strip_prefix("missing field `")?
            .split('`')
            .next()
    }
}

/// Deserialises `T` from `value`, tracking ignored keys and the path of an error.
pub(crate) fn deserialize<T: DeserializeOwned>(value: Value) -> Result<Tracked<T>, Failure> {
    let mut track = serde_path_to_error::Track::new();
    let mut ignored = Vec::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let result = serde_ignored::deserialize(de, |path| {
        let path = path
            .to_string()
            .split('.')
            .filter(|s| *s != "?")
            .collect::<Vec<_>>()
            .join(".");
        ignored.push(path);
    });
    match result {
        Ok(value) => Ok(Tracked { value, ignored }),
        Err(e) => {
            let path = track.path().to_string();
            let path = path
                .split('.')
                .filter(|s| *s != "?" && !s.is_empty())
                .collect::<Vec<_>>()
                .join(".");
            Err(Failure {
                path,
                message: strip_location(&e.to_string()),
            })
        }
    }
}

/// Paths neither struct uses: ignored by one, and by the other either ignored too or covered
/// by an ignored ancestor (the common layer ignores a whole `no_flatten` map whose inner keys
/// the pipeline's struct reads).
pub(crate) fn unknown_paths(common: &[String], custom: &[String]) -> Vec<String> {
    let covered = |path: &str, by: &[String]| {
        by.iter()
            .any(|p| p == path || path.starts_with(&format!("{p}.")))
    };
    let mut out: Vec<String> = common
        .iter()
        .filter(|p| covered(p, custom))
        .chain(custom.iter().filter(|p| covered(p, common)))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    // Keep the deepest paths only: `map.typo` rather than both `map` and `map.typo`.
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q.starts_with(&format!("{p}."))));
    out
}

/// The best-matching known key for a mistyped one, if any is close enough: fewest edits
/// (a swap of two letters counts as one), then closest length, then most shared prefix.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 4).max(2);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let edits = strsim::osa_distance(word, c);
            let len_gap = word.len().abs_diff(c.len());
            (
                edits,
                len_gap,
                std::cmp::Reverse(ordered(strsim::jaro_winkler(word, c))),
                c,
            )
        })
        .filter(|(edits, ..)| *edits <= limit)
        .min()
        .map(|(.., c)| c)
}

/// A similarity score as an orderable integer (scores are in 0..=1).
fn ordered(score: f64) -> u64 {
    (score * 1e9) as u64
}

/// The field names a struct declares, found by asking it to deserialise from a probe that
/// records the names serde_derive passes to `deserialize_struct`. Empty for types that are
/// not plain structs (maps, `#[serde(flatten)]`). Hand-written because the crate that does
/// this (serde_aux) brings chrono and more for one function.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut names));
    names
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Self
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.0 = fields;
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// serde_yaml appends " at line L column C" to some messages; positions come from our index.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Custom {
        key3: String,
        example_heading: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn probe_finds_struct_fields() {
        assert_eq!(field_names::<Custom>(), &["key3", "example_heading"]);
        assert!(field_names::<std::collections::BTreeMap<String, String>>().is_empty());
    }

    #[test]
    fn unknown_is_what_neither_side_uses() {
        let common = vec![
            "key3".to_string(),
            "example_heading".to_string(),
            "concurency_limit".to_string(),
        ];
        let custom = vec![
            "small_model".to_string(),
            "concurency_limit".to_string(),
            "example_heading.x.y".to_string(),
        ];
        assert_eq!(
            unknown_paths(&common, &custom),
            vec!["concurency_limit", "example_heading.x.y"]
        );
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = [
            "concurrency_limit",
            "chunk_size",
            "small_model",
            "small_mode",
        ];
        assert_eq!(
            did_you_mean("concurency_limit", keys),
            Some("concurrency_limit")
        );
        assert_eq!(did_you_mean("chunk_sise", keys), Some("chunk_size"));
        assert_eq!(did_you_mean("small_modle", keys), Some("small_model"));
        assert_eq!(did_you_mean("banana", keys), None);
    }
}
