//! Whole-store passes of [`DiskStore`]: result counts (the damage check), merging shards
//! (`atk merge`) and collecting the records of retired items (`atk gc`).

use std::collections::BTreeMap;

use super::layout::{build_done_index, build_roots_index};
use super::{DiskStore, RECORDS_PER_BATCH};
use crate::Error;
use crate::backend::{Op, Tree};

/// What [`DiskStore::merge_from`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Items (children included).
    pub items: u64,
    /// Results, all steps.
    pub results: u64,
    /// Failures, all steps.
    pub failures: u64,
}

/// What [`DiskStore::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Results of retired items.
    pub results: u64,
    /// Failures of retired items.
    pub failures: u64,
    /// Bytes of the records removed (the database reuses the space as it rewrites pages).
    pub bytes: u64,
}

impl DiskStore {
    /// How many results each step has, counted from keys alone (no record decoded), in one
    /// pass over the results. Steps without results are absent.
    pub fn result_counts(&self) -> Result<BTreeMap<String, u64>, Error> {
        let mut counts = BTreeMap::new();
        let mut last: Option<(Vec<u8>, u64)> = None;
        for entry in self.kv.scan(self.done(), b"") {
            let (key, _) = entry?;
            let step = key.split(|b| *b == 0).next().unwrap_or_default();
            match &mut last {
                Some((name, n)) if name.as_slice() == step => *n += 1,
                _ => {
                    if let Some((name, n)) = last.take() {
                        counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
                    }
                    last = Some((step.to_vec(), 1));
                }
            }
        }
        if let Some((name, n)) = last {
            counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
        }
        Ok(counts)
    }

    /// [`result_counts`](Self::result_counts), given the counts a caller recorded outside the
    /// store (the runner's status.json). On redb, which never drops records silently (a
    /// damaged page is an error, and it repairs itself after a crash), the table's O(1) total
    /// equal to the recorded total means the recorded counts are the store's, and the pass
    /// over every result key (0.5 s at 100 k results) is skipped. On sled (whose damaged log
    /// loses records without a word) the keys are always counted.
    pub fn result_counts_since(
        &self,
        recorded: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, u64>, Error> {
        if self.indexed
            && !recorded.is_empty()
            && self.kv.len(Tree::Done)? == recorded.values().sum::<u64>()
        {
            return Ok(recorded.clone());
        }
        self.result_counts()
    }

    /// Copies every item, result and failure of `other` into this store as stored (bytes
    /// as they are: no record is decoded, so any record version merges), durably. A failure
    /// is left out where this store has a result for the same step and item. Metadata is not
    /// copied. For `atk merge` (the shards of one run hold disjoint items); the two stores
    /// may be kept in different databases, so a merge into a new directory also converts.
    pub async fn merge_from(&self, other: &DiskStore) -> Result<Merged, Error> {
        // Failures may be copied in: a later result's put must look for them.
        self.failures_possible
            .store(true, std::sync::atomic::Ordering::Release);
        // So may item ids this handle does not know: look every id up from now on.
        self.forget_known_ids();
        let mut merged = Merged::default();
        for tree in [Tree::Items, Tree::ItemIds, Tree::Results, Tree::Failures] {
            let mut batch = Vec::with_capacity(RECORDS_PER_BATCH);
            let mut n = 0_u64;
            for entry in other.kv.scan(tree, b"") {
                let (key, value) = entry?;
                if tree == Tree::Failures && self.kv.contains(Tree::Results, &key)? {
                    continue;
                }
                batch.push(Op::Put(tree, key, value));
                n += 1;
                if batch.len() == RECORDS_PER_BATCH {
                    self.kv
                        .write(std::mem::take(&mut batch), false, false)
                        .await?;
                }
            }
            self.kv.write(batch, false, false).await?;
            match tree {
                Tree::Items => merged.items = n,
                Tree::Results => merged.results = n,
                Tree::Failures => merged.failures = n,
                _ => {}
            }
        }
        self.kv.write(Vec::new(), false, true).await?;
        if self.indexed {
            // The source may keep no indexes (sled): index what was copied.
            build_roots_index(&self.dir, self.kv.as_ref(), true)?;
            build_done_index(self.kv.as_ref(), true)?;
        }
        Ok(merged)
    }

    /// Removes the results and failures of items the store no longer holds (retired: their
    /// input is gone), durably, and says how much was removed. Keys are read to decide; no
    /// record is decoded.
    pub async fn collect_garbage(&self) -> Result<Collected, Error> {
        let mut collected = Collected::default();
        for tree in [Tree::Results, Tree::Failures] {
            let mut removals = Vec::new();
            for entry in self.kv.scan(tree, b"") {
                let (key, value) = entry?;
                let Some(at) = key.iter().position(|b| *b == 0) else {
                    continue;
                };
                if self.kv.contains(Tree::ItemIds, &key[at + 1..])? {
                    continue;
                }
                collected.bytes += (key.len() + value.len()) as u64;
                match tree {
                    Tree::Results => {
                        collected.results += 1;
                        if self.indexed {
                            removals.push(Op::Remove(Tree::Done, key.clone()));
                        }
                    }
                    _ => collected.failures += 1,
                }
                removals.push(Op::Remove(tree, key));
            }
            for chunk in removals.chunks(RECORDS_PER_BATCH) {
                self.kv.write(chunk.to_vec(), false, false).await?;
            }
        }
        if collected.results + collected.failures > 0 {
            self.kv.write(Vec::new(), false, true).await?;
        }
        Ok(collected)
    }
}
