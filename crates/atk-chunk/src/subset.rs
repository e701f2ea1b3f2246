//! Seeded subsets of chunks.
//!
//! Hand-written instead of `rand`'s sampling: `StdRng` streams may change between rand
//! releases, and a subset chosen by hashing `(seed, chunk id)` stays the same across
//! versions and also when other files are added to the folder.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::{Chunk, Subset};

/// A seeded pseudo-random rank for `key`.
fn rank(seed: u64, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Keeps `subset.size` chunks chosen by the seed, in their original (source) order.
pub(crate) fn take_subset(chunks: Vec<Chunk>, subset: &Subset) -> Vec<Chunk> {
    if subset.size >= chunks.len() {
        return chunks;
    }
    let keep: Vec<bool> = if subset.spread_across_files {
        spread(&chunks, subset)
    } else {
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.sort_by_cached_key(|&i| rank(subset.seed, &chunks[i].id));
        let mut keep = vec![false; chunks.len()];
        for &i in &order[..subset.size] {
            keep[i] = true;
        }
        keep
    };
    chunks
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

/// Gives every file one slot per round (files in seeded order) until `size` slots are
/// handed out; within a file the seeded ranks pick which chunks fill its slots.
fn spread(chunks: &[Chunk], subset: &Subset) -> Vec<bool> {
    let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in chunks.iter().enumerate() {
        by_file.entry(c.metadata.as_str()).or_default().push(i);
    }
    let mut files: Vec<(&str, Vec<usize>)> = by_file.into_iter().collect();
    files.sort_by_cached_key(|(name, _)| rank(subset.seed, name));
    for (_, idx) in &mut files {
        idx.sort_by_cached_key(|&i| rank(subset.seed, &chunks[i].id));
    }
    let mut keep = vec![false; chunks.len()];
    let mut left = subset.size;
    let mut round = 0;
    while left > 0 {
        let mut gave = false;
        for (_, idx) in &files {
            if left == 0 {
                break;
            }
            if let Some(&i) = idx.get(round) {
                keep[i] = true;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
        round += 1;
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkPosition;
    use crate::chunk::chunk_id;

    fn chunks(files: &[(&str, usize)]) -> Vec<Chunk> {
        let mut out = Vec::new();
        for (fi, (name, n)) in files.iter().enumerate() {
            for ci in 0..*n {
                let text = format!("{name} chunk {ci}");
                out.push(Chunk {
                    id: chunk_id(name, &text, 0),
                    metadata: name.to_string(),
                    tokens: 3,
                    text,
                    position: ChunkPosition {
                        file_index: fi,
                        chunk_index: ci,
                        byte_start: 0,
                    },
                });
            }
        }
        out
    }

    #[test]
    fn subsets_are_seeded_ordered_and_spread() {
        let all = chunks(&[("big.txt", 90), ("a.txt", 5), ("b.txt", 5)]);
        let s = Subset::new(12, 7);
        let one = take_subset(all.clone(), &s);
        assert_eq!(one, take_subset(all.clone(), &s), "same seed, same subset");
        assert_ne!(one, take_subset(all.clone(), &Subset::new(12, 8)));
        assert_eq!(one.len(), 12);
        let pos: Vec<_> = one
            .iter()
            .map(|c| (c.position.file_index, c.position.chunk_index))
            .collect();
        let mut sorted = pos.clone();
        sorted.sort();
        assert_eq!(pos, sorted, "subset keeps source order");

        let spread = take_subset(all.clone(), &s.spread_across_files(true));
        for f in ["big.txt", "a.txt", "b.txt"] {
            assert_eq!(spread.iter().filter(|c| c.metadata == f).count(), 4, "{f}");
        }
        // A small file runs out: the rest comes from the others.
        let spread = take_subset(all, &Subset::new(20, 1).spread_across_files(true));
        assert_eq!(
            spread.iter().filter(|c| c.metadata == "big.txt").count(),
            10
        );
    }
}
