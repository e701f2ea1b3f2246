//! Chunking options.

use std::path::PathBuf;

use atk_tokens::Tokenizer;

/// How to chunk: size, tokenizer, fragment threshold, cache and subset.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkConfig {
    /// Maximum tokens per chunk, counted on the chunk's own text.
    pub chunk_size: usize,
    /// Tokenizer that counts tokens (default `cl100k_base`).
    pub tokenizer: Tokenizer,
    /// Texts (whole files or records) shorter than this many characters are dropped, and
    /// chunks shorter than this are joined to a neighbour where the limit allows (default 50).
    pub min_chars: usize,
    /// Directory of per-file cache entries; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Take a seeded subset of the chunks instead of all of them.
    pub subset: Option<Subset>,
    /// Longest a PDF, DOCX or EPUB may take to read; a file that takes longer is skipped
    /// with a warning naming it (default 60 s).
    pub read_timeout: std::time::Duration,
}

/// A deterministic subset of the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subset {
    /// How many chunks to keep (all of them when there are fewer).
    pub size: usize,
    /// Seed of the choice: same seed, same chunks.
    pub seed: u64,
    /// Take about the same number of chunks from every source file instead of sampling
    /// the whole set (where long files dominate).
    pub spread_across_files: bool,
}

impl ChunkConfig {
    /// Default bound on reading one PDF, DOCX or EPUB.
    pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    /// Default fragment threshold in characters.
    pub const DEFAULT_MIN_CHARS: usize = 50;

    /// Chunks of at most `chunk_size` tokens, cl100k, 50-character fragments, no cache, no subset.
    pub fn new(chunk_size: usize) -> Self {
        Self {
            chunk_size,
            tokenizer: Tokenizer::default(),
            min_chars: Self::DEFAULT_MIN_CHARS,
            cache_dir: None,
            subset: None,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
        }
    }

    /// Sets the tokenizer.
    pub fn with_tokenizer(mut self, tokenizer: Tokenizer) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    /// Sets the fragment threshold in characters.
    pub fn with_min_chars(mut self, min_chars: usize) -> Self {
        self.min_chars = min_chars;
        self
    }

    /// Caches chunks per file in `dir` (created when missing).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Keeps only a seeded subset of the chunks.
    pub fn with_subset(mut self, subset: Subset) -> Self {
        self.subset = Some(subset);
        self
    }
}

impl Subset {
    /// `size` chunks chosen by `seed`, sampled over the whole set.
    pub fn new(size: usize, seed: u64) -> Self {
        Self {
            size,
            seed,
            spread_across_files: false,
        }
    }

    /// Spreads the subset evenly across source files.
    pub fn spread_across_files(mut self, spread: bool) -> Self {
        self.spread_across_files = spread;
        self
    }
}
