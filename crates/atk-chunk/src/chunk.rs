//! Chunks, their ids, and turning a source's records into chunks.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::splitter::{Piece, Splitter};

/// What joins the records of one source (JSON items, JSONL lines) in its extracted text.
pub const RECORD_SEPARATOR: &str = "\n\n";

/// One token-bounded piece of a source text, ready to become a pipeline item.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Stable id: see [`chunk_id`].
    pub id: String,
    /// Source path relative to the input directory, `/`-separated (or the source name).
    pub metadata: String,
    /// Tokens in `text`, counted on `text` alone with the configured tokenizer.
    pub tokens: usize,
    /// The chunk's text, exactly as it appears in the source's extracted text.
    pub text: String,
    /// Where the chunk sits in its source.
    pub position: ChunkPosition,
}

/// Where a chunk sits: which source, which chunk of it, which byte of its extracted text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChunkPosition {
    /// Index of the source among the sources read, in output (sorted path) order.
    pub file_index: usize,
    /// Index of the chunk within its source, counting from 0 before any subset is taken.
    pub chunk_index: usize,
    /// Byte offset of `text` in the source's extracted text.
    pub byte_start: usize,
}

/// The `atk chunk` output line: a borrowed view of a [`Chunk`] without its position.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct ChunkLine<'a> {
    /// See [`Chunk::id`].
    pub id: &'a str,
    /// See [`Chunk::metadata`].
    pub metadata: &'a str,
    /// See [`Chunk::tokens`].
    pub tokens: usize,
    /// See [`Chunk::text`].
    pub text: &'a str,
}

impl Chunk {
    /// The serializable `{"id","metadata","tokens","text"}` view printed by `atk chunk`.
    pub fn line(&self) -> ChunkLine<'_> {
        ChunkLine {
            id: &self.id,
            metadata: &self.metadata,
            tokens: self.tokens,
            text: &self.text,
        }
    }

    /// The `atk chunk` JSON line for this chunk (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.line()).expect("a chunk line always serializes")
    }
}

/// Stable chunk id: the first 32 hex digits of SHA-256 over the relative path, a NUL byte,
/// the text, a NUL byte, and the decimal occurrence number of that exact text in that source
/// (0 for its first appearance), so repeated paragraphs get distinct ids.
pub fn chunk_id(rel_path: &str, text: &str, occurrence: usize) -> String {
    let mut h = Sha256::new();
    h.update(rel_path.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.update([0]);
    h.update(occurrence.to_string().as_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

/// A chunk before it is named: what the cache stores (ids depend on the path, so they are
/// computed on load instead).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct TextChunk {
    pub text: String,
    pub tokens: usize,
    pub byte_start: usize,
}

/// The chunks of one source plus how many standalone fragments were dropped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) struct Chunked {
    pub chunks: Vec<TextChunk>,
    pub dropped: usize,
}

/// The extracted text of a source: its records, trimmed, non-empty, joined by
/// [`RECORD_SEPARATOR`]. Chunk `byte_start`s index into this text.
pub fn extracted_text<S: AsRef<str>>(records: &[S]) -> String {
    let parts: Vec<&str> = records
        .iter()
        .map(|r| r.as_ref().trim())
        .filter(|r| !r.is_empty())
        .collect();
    parts.join(RECORD_SEPARATOR)
}

/// Chunks each record on its own (a chunk never spans two records); records under
/// `min_chars` characters are dropped and counted; small pieces join a neighbour when the
/// joined text stays within the limit.
pub(crate) fn chunk_records<S: AsRef<str>>(
    records: &[S],
    splitter: &Splitter,
    min_chars: usize,
) -> Chunked {
    let mut out = Chunked::default();
    let mut offset = 0;
    for record in records
        .iter()
        .map(|r| r.as_ref().trim())
        .filter(|r| !r.is_empty())
    {
        if offset > 0 {
            offset += RECORD_SEPARATOR.len();
        }
        let base = offset;
        offset += record.len();
        if record.chars().count() < min_chars {
            out.dropped += 1;
            continue;
        }
        let mut pieces = splitter.split(record);
        merge_small(record, &mut pieces, splitter, min_chars);
        out.chunks.extend(pieces.into_iter().map(|p| TextChunk {
            text: record[p.start..p.end].to_string(),
            tokens: p.tokens,
            byte_start: base + p.start,
        }));
    }
    out
}

/// Joins each piece under `min_chars` characters to the piece before it, else to the one
/// after it, when the joined text stays within the limit; a piece that fits nowhere is kept.
/// One pass: at most one extra count per boundary next to a small piece.
fn merge_small(text: &str, pieces: &mut Vec<Piece>, splitter: &Splitter, min_chars: usize) {
    if min_chars == 0 || pieces.len() < 2 {
        return;
    }
    let small = |p: &Piece| text[p.start..p.end].chars().take(min_chars).count() < min_chars;
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces.drain(..) {
        if let Some(last) = out.last_mut()
            && (small(last) || small(&p))
        {
            let tokens = splitter.count(&text[last.start..p.end]);
            if tokens <= splitter.limit() {
                last.end = p.end;
                last.tokens = tokens;
                continue;
            }
        }
        out.push(p);
    }
    *pieces = out;
}

/// Names the chunks of one source: ids from the path, text and occurrence number.
pub(crate) fn name_chunks(rel_path: &str, file_index: usize, chunks: Vec<TextChunk>) -> Vec<Chunk> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    chunks
        .into_iter()
        .enumerate()
        .map(|(chunk_index, c)| {
            let occurrence = {
                let n = seen.entry(c.text.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            Chunk {
                id: chunk_id(rel_path, &c.text, occurrence),
                metadata: rel_path.to_string(),
                tokens: c.tokens,
                text: c.text,
                position: ChunkPosition {
                    file_index,
                    chunk_index,
                    byte_start: c.byte_start,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atk_tokens::Tokenizer;

    #[test]
    fn ids_are_32_hex_and_depend_on_path_text_and_occurrence() {
        let a = chunk_id("a.txt", "hello", 0);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, chunk_id("b.txt", "hello", 0));
        assert_ne!(a, chunk_id("a.txt", "hello", 1));
        assert_eq!(a, chunk_id("a.txt", "hello", 0));
    }

    #[test]
    fn repeated_text_gets_distinct_ids_and_json_line_has_four_fields() {
        let mk = |t: &str| TextChunk {
            text: t.into(),
            tokens: 1,
            byte_start: 0,
        };
        let named = name_chunks("x.md", 3, vec![mk("same"), mk("other"), mk("same")]);
        assert_ne!(named[0].id, named[2].id);
        assert_eq!(named[2].position.chunk_index, 2);
        let v: serde_json::Value = serde_json::from_str(&named[1].to_json_line()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(v["metadata"], "x.md");
    }

    #[test]
    fn tiny_records_are_dropped_and_tiny_tails_merged() {
        let s = Splitter::new(Tokenizer::Cl100k, 30);
        let long = "A sentence that is long enough to matter here. ".repeat(6);
        let text = format!("{long}\n\nEnd.");
        let out = chunk_records(&["tiny".to_string(), text.clone()], &s, 50);
        assert_eq!(out.dropped, 1);
        let joined: String = out.chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(joined, text.trim());
        assert!(out.chunks.iter().all(|c| c.tokens <= 30));
        assert!(out.chunks.last().unwrap().text.chars().count() >= 50);
        assert_eq!(
            out.chunks[0].byte_start,
            "tiny".len() + RECORD_SEPARATOR.len()
        );
    }
}
