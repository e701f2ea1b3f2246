//! The store's layout on disk: the format version, and the key-only indexes of redb stores
//! (built once for stores made before them).

use std::path::Path;

use super::{RECORDS_PER_BATCH, STORE_FORMAT_VERSION};
use crate::backend::{Kv, Op, Tree};
use crate::codec::decode;
use crate::key::{display_item, item_key_id};
use crate::{Error, ItemRecord, RECORD_VERSION};

/// Key of the format version in the root tree.
pub(super) const FORMAT_KEY: &[u8] = b"atk_state_format";
/// Key in the root tree marking the `roots` index as complete (stores made before it had
/// none: it is built once, on open).
pub(super) const ROOTS_KEY: &[u8] = b"atk_state_roots_index";
/// Key in the root tree marking the `done` index as complete (built once, like `roots`).
pub(super) const DONE_KEY: &[u8] = b"atk_state_done_index";
/// Checks the store's format version, writing it into a new store.
pub(super) fn check_format(dir: &Path, kv: &dyn Kv) -> Result<(), Error> {
    match kv.get(Tree::Root, FORMAT_KEY)? {
        Some(found) => {
            let found = std::str::from_utf8(&found)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if found != STORE_FORMAT_VERSION {
                return Err(Error::Incompatible {
                    path: dir.to_path_buf(),
                    found,
                    expected: STORE_FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            for tree in [Tree::Items, Tree::Results, Tree::Failures, Tree::Meta] {
                if kv.len(tree)? > 0 {
                    return Err(Error::Incompatible {
                        path: dir.to_path_buf(),
                        found: 0,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
            let version = STORE_FORMAT_VERSION.to_string().into_bytes();
            kv.init(vec![Op::Put(Tree::Root, FORMAT_KEY.to_vec(), version)])
        }
    }
}

/// Builds the `roots` index of a store made before it existed (once: a marker in the root
/// tree says it is complete; a crash while building just builds it again), or `again`
/// after records were copied in.
pub(super) fn build_roots_index(dir: &Path, kv: &dyn Kv, again: bool) -> Result<(), Error> {
    if !again && kv.get(Tree::Root, ROOTS_KEY)?.is_some() {
        return Ok(());
    }
    let mut ops = Vec::new();
    let mut roots = 0_u64;
    for entry in kv.scan(Tree::Items, b"") {
        let (key, value) = entry?;
        let id = item_key_id(&key)?;
        // A record that does not decode is indexed as a root: running it then fails naming
        // its key, as before the index, instead of this open failing for every command.
        let root = is_root(dir, &id, &key, &value).unwrap_or(true);
        if root {
            roots += 1;
            ops.push(Op::Put(Tree::Roots, key, Vec::new()));
        }
        if ops.len() == RECORDS_PER_BATCH {
            kv.init(std::mem::take(&mut ops))?;
        }
    }
    ops.push(Op::Put(Tree::Root, ROOTS_KEY.to_vec(), b"1".to_vec()));
    kv.init(ops)?;
    if roots > 0 && !again {
        tracing::info!(roots, dir = %dir.display(), "indexed the store's root items (once, for stores made by an older atk)");
    }
    Ok(())
}

/// Builds the `done` index of a store made before it existed (once, as for `roots`).
pub(super) fn build_done_index(kv: &dyn Kv, again: bool) -> Result<(), Error> {
    if !again && kv.get(Tree::Root, DONE_KEY)?.is_some() {
        return Ok(());
    }
    let mut ops = Vec::new();
    for entry in kv.scan(Tree::Results, b"") {
        ops.push(Op::Put(Tree::Done, entry?.0, Vec::new()));
        if ops.len() == RECORDS_PER_BATCH {
            kv.init(std::mem::take(&mut ops))?;
        }
    }
    ops.push(Op::Put(Tree::Root, DONE_KEY.to_vec(), b"1".to_vec()));
    kv.init(ops)
}

/// Whether the item stored under `key` is a root: from the start of its bytes, decoding the
/// record only when they do not start the way this build writes them.
pub(super) fn is_root(dir: &Path, id: &str, key: &[u8], value: &[u8]) -> Result<bool, Error> {
    match is_root_encoded(id, value) {
        Some(root) => Ok(root),
        None => decode::<ItemRecord>(dir, || format!("items:{}", display_item(key)), value)
            .map(|item| item.parent.is_none()),
    }
}

/// Whether an encoded item is a root, read from the start of its bytes: [`encode`] writes
/// `{"v":1,"id":"…","parent":null,…` (fields in declaration order). `None` when the bytes do
/// not start that way (another layout version, a corrupt record): the caller decodes then.
///
/// Allocation-free for ids that JSON writes unescaped (it runs once per item on resume).
pub(super) fn is_root_encoded(id: &str, bytes: &[u8]) -> Option<bool> {
    let rest = bytes.strip_prefix(b"{\"v\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let version: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    // Items kept their layout from version 1 on.
    if !(crate::record::OLDEST_READABLE_VERSION..=RECORD_VERSION).contains(&version) {
        return None;
    }
    let rest = rest[digits..].strip_prefix(b",\"id\":")?;
    let rest = if id.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        rest.strip_prefix(serde_json::to_string(id).ok()?.as_bytes())?
    } else {
        rest.strip_prefix(b"\"")?
            .strip_prefix(id.as_bytes())?
            .strip_prefix(b"\"")?
    };
    let rest = rest.strip_prefix(b",\"parent\":")?;
    if rest.starts_with(b"null") {
        Some(true)
    } else if rest.starts_with(b"\"") {
        Some(false)
    } else {
        None
    }
}
