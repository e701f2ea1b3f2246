//! Retiring items whose input is gone: the store follows the run's current inputs.

use std::collections::{HashMap, HashSet};

use crate::{Error, Store};

/// What [`retire_stale_items`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Root items not among the current ones.
    pub roots: u64,
    /// Items made from them (children, grandchildren, ...), and children whose parent is gone.
    pub children: u64,
}

impl Retired {
    /// Items removed in all.
    pub fn total(&self) -> u64 {
        self.roots + self.children
    }
}

/// Removes from `store` the root items (`parent == None`) whose id is not in `current`, and
/// every item descending from them, so the executor and the datasets only see what this run
/// seeded. Results and failures stay: an input that comes back reuses them.
///
/// Cheap when nothing is stale: one pass over root ids (no record decoded by the sled store).
/// Only when some root is stale are the other items read, to find their parents.
pub async fn retire_stale_items(
    store: &dyn Store,
    current: &HashSet<String>,
) -> Result<Retired, Error> {
    let mut roots = HashSet::new();
    let mut stale = Vec::new();
    for id in store.root_ids() {
        let id = id?;
        if !current.contains(&id) {
            stale.push(id.clone());
        }
        roots.insert(id);
    }
    if stale.is_empty() {
        return Ok(Retired::default());
    }
    // Every non-root item with its parent; then keep those whose ancestry reaches a current root.
    let mut parents: HashMap<String, Option<String>> = HashMap::new();
    for id in store.item_ids() {
        let id = id?;
        if roots.contains(&id) {
            continue;
        }
        let parent = store.item(&id)?.and_then(|item| item.parent);
        parents.insert(id, parent);
    }
    let mut live: HashMap<String, bool> = HashMap::new();
    let mut dead_children = Vec::new();
    for id in parents.keys() {
        if !is_live(id, current, &parents, &mut live) {
            dead_children.push(id.clone());
        }
    }
    dead_children.sort();
    let retired = Retired {
        roots: stale.len() as u64,
        children: dead_children.len() as u64,
    };
    stale.extend(dead_children);
    store.remove_items(stale).await?;
    Ok(retired)
}

/// True when `id` is a current root or descends from one (memoised in `live`; a parent cycle,
/// which a well-formed store never has, counts as not live).
fn is_live(
    id: &str,
    current: &HashSet<String>,
    parents: &HashMap<String, Option<String>>,
    live: &mut HashMap<String, bool>,
) -> bool {
    // Walk up to the first known answer, then write it back down the path.
    let mut path: Vec<&str> = Vec::new();
    let mut cursor = id;
    let answer = loop {
        if let Some(&known) = live.get(cursor) {
            break known;
        }
        if current.contains(cursor) {
            break true;
        }
        if path.contains(&cursor) {
            break false;
        }
        path.push(cursor);
        match parents.get(cursor) {
            Some(Some(parent)) => cursor = parent,
            // A stale root (not among `parents`), or an item without a parent.
            _ => break false,
        }
    };
    for step in path {
        live.insert(step.to_owned(), answer);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ItemRecord, RECORD_VERSION, ResultRecord, SledStore};
    use serde_json::json;

    fn item(id: &str, parent: Option<&str>, order: &[u64]) -> ItemRecord {
        let mut fields = crate::Fields::new();
        fields.insert("text".into(), json!(id));
        ItemRecord {
            v: RECORD_VERSION,
            id: id.into(),
            parent: parent.map(Into::into),
            order: order.to_vec(),
            fields,
        }
    }

    fn ids(store: &SledStore) -> Vec<String> {
        store.item_ids().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn stale_roots_and_their_descendants_go_results_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_items(vec![
                item("keep", None, &[0]),
                item("keep.0", Some("keep"), &[0, 0]),
                item("gone", None, &[1]),
                item("gone.0", Some("gone"), &[1, 0]),
                item("gone.0.0", Some("gone.0"), &[1, 0, 0]),
                item("orphan", Some("never-seeded"), &[2, 0]),
            ])
            .await
            .unwrap();
        let result = ResultRecord {
            v: RECORD_VERSION,
            output: json!("paid for"),
            details: None,
            attempts: 1,
            prompt_tokens: 1,
            completion_tokens: 1,
            elapsed_ms: 1,
            stored_at_ms: 1,
            ..ResultRecord::new(serde_json::Value::Null)
        };
        store.put_result("s", "gone", result).await.unwrap();
        let current: HashSet<String> = ["keep".to_owned()].into();
        let retired = retire_stale_items(&store, &current).await.unwrap();
        assert_eq!(
            retired,
            Retired {
                roots: 1,
                children: 3
            }
        );
        assert_eq!(ids(&store), ["keep", "keep.0"]);
        assert!(
            store.has_result("s", "gone").unwrap(),
            "paid results are kept"
        );
        assert_eq!(
            retire_stale_items(&store, &current).await.unwrap(),
            Retired::default()
        );
    }

    #[tokio::test]
    async fn nothing_stale_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_items(vec![item("a", None, &[0]), item("a.0", Some("a"), &[0, 0])])
            .await
            .unwrap();
        let current: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        assert_eq!(
            retire_stale_items(&store, &current).await.unwrap().total(),
            0
        );
        assert_eq!(ids(&store), ["a", "a.0"]);
    }
}
