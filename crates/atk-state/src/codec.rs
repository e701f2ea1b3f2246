//! JSON encoding of records, with the version check every read goes through.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::record::OLDEST_READABLE_VERSION;
use crate::{Error, FailureRecord, ItemRecord, RECORD_VERSION, ResultRecord};

/// A record carrying a layout version.
pub(crate) trait Versioned: Serialize + DeserializeOwned {
    /// The record's `v`.
    fn version(&self) -> u32;
    /// Stamps this build's layout version before writing.
    fn stamp(&mut self);
    /// Brings a record of an older readable layout to this build's.
    fn migrate(self) -> Self;
}

macro_rules! versioned {
    ($($record:ty => $migrate:expr),*) => {$(
        impl Versioned for $record {
            fn version(&self) -> u32 {
                self.v
            }
            fn stamp(&mut self) {
                self.v = RECORD_VERSION;
            }
            fn migrate(self) -> Self {
                $migrate(self)
            }
        }
    )*};
}
// Items and failures kept their layout in version 2; results moved their outcome out of `output`.
versioned!(
    ItemRecord => |mut r: ItemRecord| { r.v = RECORD_VERSION; r },
    ResultRecord => ResultRecord::migrate_v1,
    FailureRecord => |mut r: FailureRecord| { r.v = RECORD_VERSION; r }
);

/// Serialises a record, stamped with [`RECORD_VERSION`].
pub(crate) fn encode<T: Versioned>(mut record: T) -> Vec<u8> {
    record.stamp();
    // Records are plain structs of strings, numbers and JSON values: serialising cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Only the version of a record whose other fields did not decode.
#[derive(serde::Deserialize)]
struct VersionOnly {
    /// The record's `v`, when present.
    v: Option<u32>,
}

/// Decodes a record: an older readable `v` is migrated, an unknown one is
/// [`Error::Incompatible`], anything else unreadable is [`Error::Corrupt`] naming `key`.
pub(crate) fn decode<T: Versioned>(
    dir: &Path,
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, Error> {
    let incompatible = |found| Error::Incompatible {
        path: dir.to_path_buf(),
        found,
        expected: RECORD_VERSION,
    };
    match serde_json::from_slice::<T>(bytes) {
        Ok(record) if record.version() == RECORD_VERSION => Ok(record),
        Ok(record) if (OLDEST_READABLE_VERSION..RECORD_VERSION).contains(&record.version()) => {
            Ok(record.migrate())
        }
        Ok(record) => Err(incompatible(record.version())),
        Err(error) => match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v: Some(found) })
                if !(OLDEST_READABLE_VERSION..=RECORD_VERSION).contains(&found) =>
            {
                Err(incompatible(found))
            }
            _ => Err(Error::Corrupt {
                key: key(),
                message: error.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<FailureRecord, Error> {
        decode(Path::new("/store"), || "failures:s/i".to_owned(), bytes)
    }

    #[test]
    fn round_trip_stamps_the_version() {
        let record = FailureRecord {
            v: 0,
            kind: "validation".into(),
            reason: "no JSON".into(),
            last_output: None,
            last_prompt: None,
            attempts: 3,
            stored_at_ms: 1,
        };
        let back = check(&encode(record.clone())).unwrap();
        assert_eq!(
            back,
            FailureRecord {
                v: RECORD_VERSION,
                ..record
            }
        );
    }

    #[test]
    fn a_failure_keeps_its_last_prompt_and_older_failures_still_read() {
        let record = FailureRecord {
            v: RECORD_VERSION,
            kind: "validation".into(),
            reason: "no <poem>".into(),
            last_output: Some("no poem today".into()),
            last_prompt: Some("[user]\nWrite a poem".into()),
            attempts: 4,
            stored_at_ms: 1,
        };
        assert_eq!(check(&encode(record.clone())).unwrap(), record);
        // Written before the prompt was kept: reads, with no prompt.
        let old = format!(
            r#"{{"v":{RECORD_VERSION},"kind":"validation","reason":"r","last_output":null,"attempts":1,"stored_at_ms":1}}"#
        );
        assert_eq!(check(old.as_bytes()).unwrap().last_prompt, None);
    }

    #[test]
    fn unknown_versions_are_incompatible_and_garbage_is_corrupt() {
        let future = br#"{"v": 7, "kind": "x", "shape": "changed"}"#;
        let err = check(future).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Incompatible {
                    found: 7,
                    expected: RECORD_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(b"\x00garbage").unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { key, .. } if key == "failures:s/i"),
            "{err}"
        );
        assert!(err.to_string().contains("failures:s/i"));
        let err = check(br#"{"v": 1, "kind": 5}"#).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    fn result_v1(output: &str) -> ResultRecord {
        let bytes = format!(
            r#"{{"v":1,"output":{output},"details":null,"attempts":1,"prompt_tokens":3,"completion_tokens":4,"elapsed_ms":5,"stored_at_ms":6}}"#
        );
        decode(
            Path::new("/store"),
            || "results:s/i".to_owned(),
            bytes.as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn version_1_results_are_migrated_to_typed_outcomes() {
        use crate::Outcome;
        let dropped = result_v1(r#"{"atk_dropped":"off topic"}"#);
        assert_eq!(
            (dropped.v, dropped.outcome, dropped.output),
            (
                RECORD_VERSION,
                Outcome::Dropped {
                    reason: "off topic".into()
                },
                serde_json::Value::Null
            )
        );
        let split = result_v1(r#"{"atk_children":["a","b"],"output":"raw"}"#);
        assert_eq!(
            split.outcome,
            Outcome::Children {
                ids: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(split.output, serde_json::json!("raw"));
        let kept = result_v1(r#"{"poem":"x"}"#);
        assert_eq!(
            (kept.outcome, kept.output, kept.prompt_tokens),
            (Outcome::Kept, serde_json::json!({"poem":"x"}), 3)
        );
        // A user's own value of that shape, written by version 2, is never misread.
        let mut mine = ResultRecord::new(serde_json::json!({"atk_dropped": "my data"}));
        mine.v = 0;
        let back: ResultRecord = decode(Path::new("/s"), String::new, &encode(mine)).unwrap();
        assert_eq!(back.outcome, Outcome::Kept);
    }
}
