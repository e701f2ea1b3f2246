//! JSON encoding of records, with the version check every read goes through.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, FailureRecord, ItemRecord, RECORD_VERSION, ResultRecord};

/// A record carrying a layout version.
pub(crate) trait Versioned: Serialize + DeserializeOwned {
    /// The record's `v`.
    fn version(&self) -> u32;
    /// Stamps this build's layout version before writing.
    fn stamp(&mut self);
}

macro_rules! versioned {
    ($($record:ty),*) => {$(
        impl Versioned for $record {
            fn version(&self) -> u32 {
                self.v
            }
            fn stamp(&mut self) {
                self.v = RECORD_VERSION;
            }
        }
    )*};
}
versioned!(ItemRecord, ResultRecord, FailureRecord);

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

/// Decodes a record: an unknown `v` is [`Error::Incompatible`], anything else unreadable is
/// [`Error::Corrupt`] naming `key`.
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
        Ok(record) => Err(incompatible(record.version())),
        Err(error) => match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v: Some(found) }) if found != RECORD_VERSION => {
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
}
