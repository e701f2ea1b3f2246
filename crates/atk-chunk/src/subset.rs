//! Seeded subsets of chunks.
//!
//! Hand-written instead of `rand`'s sampling: `StdRng` streams may change between rand
//! releases, and a subset chosen by hashing `(seed, chunk id)` stays the same across
//! versions and also when other files are added to the folder.

use std::collections::{BinaryHeap, HashMap};

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
    let mut picker = Picker::new(subset);
    picker.offer(chunks);
    picker.finish()
}

/// Picks the chunks [`take_subset`] keeps from chunks streamed in source order, holding at
/// most `subset.size` of them: each chunk gets the key by which `take_subset` would choose it
/// (its seeded rank; spread across files, its place among its file's ranks, then its file's
/// rank), and a bounded heap keeps the smallest keys. A file's chunks must come in one call.
pub(crate) struct Picker<'a> {
    /// The subset asked for.
    subset: &'a Subset,
    /// The `size` smallest keys seen so far (largest on top).
    kept: BinaryHeap<Picked>,
    /// Chunks seen so far: the source-order position of the next one.
    seen: u64,
}

/// A chunk and the key it is picked by.
struct Picked {
    /// What `take_subset` orders by, then the source position (its stable sort's tie-break).
    key: (u64, [u8; 32], u64),
    /// The chunk.
    chunk: Chunk,
}

impl PartialEq for Picked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Picked {}

impl PartialOrd for Picked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Picked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl<'a> Picker<'a> {
    /// An empty picker.
    pub(crate) fn new(subset: &'a Subset) -> Self {
        Self {
            subset,
            kept: BinaryHeap::with_capacity(subset.size.min(1 << 16) + 1),
            seen: 0,
        }
    }

    /// Offers the next chunks in source order (every chunk of a file in one call).
    pub(crate) fn offer(&mut self, chunks: Vec<Chunk>) {
        let base = self.seen;
        self.seen += chunks.len() as u64;
        // Spread: a chunk's round is its place among its file's chunks by rank.
        let mut rounds = vec![0_u64; chunks.len()];
        let mut file_ranks: HashMap<&str, [u8; 32]> = HashMap::new();
        if self.subset.spread_across_files {
            let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, c) in chunks.iter().enumerate() {
                by_file.entry(c.metadata.as_str()).or_default().push(i);
            }
            for (name, mut idx) in by_file {
                idx.sort_by_cached_key(|&i| rank(self.subset.seed, &chunks[i].id));
                for (round, i) in idx.into_iter().enumerate() {
                    rounds[i] = round as u64;
                }
                file_ranks.insert(name, rank(self.subset.seed, name));
            }
        }
        let keys: Vec<(u64, [u8; 32], u64)> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let position = base + i as u64;
                if self.subset.spread_across_files {
                    (rounds[i], file_ranks[c.metadata.as_str()], position)
                } else {
                    (0, rank(self.subset.seed, &c.id), position)
                }
            })
            .collect();
        drop(file_ranks);
        for (key, chunk) in keys.into_iter().zip(chunks) {
            if self.kept.len() < self.subset.size {
                self.kept.push(Picked { key, chunk });
            } else if self.kept.peek().is_some_and(|top| key < top.key) {
                self.kept.pop();
                self.kept.push(Picked { key, chunk });
            }
        }
    }

    /// The chunks picked, in source order.
    pub(crate) fn finish(self) -> Vec<Chunk> {
        let mut picked = self.kept.into_vec();
        picked.sort_by_key(|p| p.key.2);
        picked.into_iter().map(|p| p.chunk).collect()
    }
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

    /// The picking before [`Picker`]: every chunk in memory, sorted (the reference).
    fn reference_subset(chunks: Vec<Chunk>, subset: &Subset) -> Vec<Chunk> {
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

    #[test]
    fn streaming_picks_what_sorting_everything_picks() {
        let all = chunks(&[("big.txt", 90), ("a.txt", 5), ("b.txt", 5), ("c.md", 31)]);
        for size in [0, 1, 7, 12, 40, 131, 500] {
            for seed in [1, 7, 11037] {
                for spread in [false, true] {
                    let s = Subset::new(size, seed).spread_across_files(spread);
                    let want = reference_subset(all.clone(), &s);
                    // Streamed a file at a time, as `read_dir_batched` hands them over.
                    let mut picker = Picker::new(&s);
                    let mut rest = all.clone();
                    while !rest.is_empty() {
                        let file = rest[0].metadata.clone();
                        let n = rest.iter().take_while(|c| c.metadata == file).count();
                        picker.offer(rest.drain(..n).collect());
                    }
                    assert_eq!(
                        picker.finish(),
                        want,
                        "size {size}, seed {seed}, spread {spread}"
                    );
                }
            }
        }
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
