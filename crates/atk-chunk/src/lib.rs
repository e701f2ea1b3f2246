#![doc = include_str!("../README.md")]

mod cache;
mod chunk;
mod config;
mod decode;
mod dir;
mod error;
mod fingerprint;
mod html;
mod read;
mod splitter;
mod subset;

use std::path::PathBuf;

pub use atk_tokens::Tokenizer;
pub use cache::{CHUNKER_VERSION, pack_name};
pub use chunk::{Chunk, ChunkLine, ChunkPosition, RECORD_SEPARATOR, chunk_id, extracted_text};
pub use config::{ChunkConfig, Subset};
pub use dir::{BYTES_PER_BATCH, FILES_PER_BATCH, chunk_texts, read_dir, read_dir_batched};
pub use error::Error;
pub use fingerprint::{InputsFingerprint, fingerprint_dir};
pub use read::READ_EXTENSIONS;

/// The chunks of a folder (or of given texts) and a report of how they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSet {
    /// Chunks in source order: sources by relative path, chunks in reading order.
    pub chunks: Vec<Chunk>,
    /// What was read, skipped, dropped and counted.
    pub report: ReadReport,
}

/// What a read did: files read and skipped, warnings, totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    /// Files (or given texts) read successfully, cache hits included.
    pub files_read: usize,
    /// Files left out, with the reason (binary, corrupt, unreadable, symlink loop, ...).
    pub skipped: Vec<Skipped>,
    /// Problems that did not stop a file from being read, each starting with its path.
    pub warnings: Vec<String>,
    /// Texts (files or records) under `min_chars` characters that were dropped.
    pub dropped_fragments: usize,
    /// Chunks returned (after the subset, if any).
    pub chunks: usize,
    /// Tokens in the chunks returned.
    pub total_tokens: usize,
    /// Files whose chunks came from the cache.
    pub cache_hits: usize,
}

/// A file that was not read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file's path (the input directory joined with its relative path).
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

impl ReadReport {
    /// One human line for stderr, e.g.
    /// `read 3 files (1 from cache), skipped 1: 42 chunks, 12345 tokens; 2 short fragments dropped; 1 warning`.
    pub fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut s = format!("read {}", plural(self.files_read, "file", "files"));
        if self.cache_hits > 0 {
            s.push_str(&format!(" ({} from cache)", self.cache_hits));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(", skipped {}", self.skipped.len()));
        }
        s.push_str(&format!(
            ": {}, {}",
            plural(self.chunks, "chunk", "chunks"),
            plural(self.total_tokens, "token", "tokens")
        ));
        if self.dropped_fragments > 0 {
            s.push_str(&format!(
                "; {} dropped",
                plural(self.dropped_fragments, "short fragment", "short fragments")
            ));
        }
        if !self.warnings.is_empty() {
            s.push_str(&format!(
                "; {}",
                plural(self.warnings.len(), "warning", "warnings")
            ));
        }
        s
    }

    /// The lines a CLI prints before the summary: one `skipped PATH: REASON` per skipped
    /// file, then one `warning: ...` per warning.
    pub fn messages(&self) -> Vec<String> {
        let skipped = self
            .skipped
            .iter()
            .map(|k| format!("skipped {}: {}", k.path.display(), k.reason));
        let warnings = self.warnings.iter().map(|w| format!("warning: {w}"));
        skipped.chain(warnings).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_like_a_sentence() {
        let r = ReadReport {
            files_read: 3,
            skipped: vec![Skipped {
                path: "in/x.bin".into(),
                reason: "binary".into(),
            }],
            warnings: vec!["a.jsonl: line 2: malformed".into()],
            dropped_fragments: 2,
            chunks: 42,
            total_tokens: 12345,
            cache_hits: 1,
        };
        assert_eq!(
            r.summary(),
            "read 3 files (1 from cache), skipped 1: 42 chunks, 12345 tokens; 2 short fragments dropped; 1 warning"
        );
        assert_eq!(
            r.messages(),
            [
                "skipped in/x.bin: binary",
                "warning: a.jsonl: line 2: malformed"
            ]
        );
    }
}
