#![doc = include_str!("../README.md")]

use std::sync::OnceLock;

mod tables;

/// Counts tokens in text; implemented by the tiktoken encodings and a whitespace counter for tests.
pub trait TokenCounter: Send + Sync {
    /// Number of tokens in `text`, counted on the text exactly as written.
    fn count(&self, text: &str) -> usize;
    /// Stable name of the tokenizer (part of cache keys).
    fn name(&self) -> &'static str;
}

/// The tokenizers atk knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tokenizer {
    /// OpenAI `cl100k_base` (GPT-3.5/4 era); the default.
    #[default]
    Cl100k,
    /// OpenAI `o200k_base` (GPT-4o era).
    O200k,
}

/// A tokenizer name that atk does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown tokenizer `{0}` (known: cl100k_base, o200k_base)")]
pub struct UnknownTokenizer(pub String);

impl Tokenizer {
    /// Parses `cl100k_base` / `o200k_base` (also `cl100k` / `o200k`).
    pub fn from_name(name: &str) -> Result<Self, UnknownTokenizer> {
        match name.trim() {
            "cl100k_base" | "cl100k" => Ok(Self::Cl100k),
            "o200k_base" | "o200k" => Ok(Self::O200k),
            other => Err(UnknownTokenizer(other.to_string())),
        }
    }

    /// The canonical name (`cl100k_base`, `o200k_base`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cl100k => "cl100k_base",
            Self::O200k => "o200k_base",
        }
    }

    /// The process-wide encoder for this tokenizer, loaded on first use (about 20 ms of CPU in
    /// a release build: bpe-openai's tables, re-encoded at build time, are read back; nothing
    /// is computed).
    pub fn bpe(self) -> &'static bpe_openai::Tokenizer {
        static LOADED: PerEncoding<OnceLock<bpe_openai::Tokenizer>> = PerEncoding {
            cl100k: OnceLock::new(),
            o200k: OnceLock::new(),
        };
        LOADED.get(self).get_or_init(|| tables::load(self))
    }

    /// Starts loading this tokenizer on a background thread, once per process, so that a
    /// later first count does not wait the whole load (it waits only for what is left).
    pub fn preload(self) {
        static STARTED: PerEncoding<OnceLock<()>> = PerEncoding {
            cl100k: OnceLock::new(),
            o200k: OnceLock::new(),
        };
        STARTED.get(self).get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("atk-tokens-load".into())
                .spawn(move || {
                    let _ = self.bpe();
                });
            // Without a thread the first count loads it, as it would have anyway.
            drop(spawned);
        });
    }

    /// Number of tokens in `text`, exactly as tiktoken's `encode_ordinary` counts them
    /// (special tokens are counted as the ordinary text they are).
    pub fn count(self, text: &str) -> usize {
        let bpe = self.bpe();
        let text = bpe.normalize(text);
        PIECES.with(|memo| {
            let mut memo = memo.borrow_mut();
            let memo = memo.get_mut(self);
            bpe.split(text.as_str())
                .map(|piece| memo.count(bpe, piece))
                .sum()
        })
    }

    /// A counter backed by this tokenizer.
    pub fn counter(self) -> &'static dyn TokenCounter {
        match self {
            Self::Cl100k => &Tiktoken(Self::Cl100k),
            Self::O200k => &Tiktoken(Self::O200k),
        }
    }
}

/// One `T` per [`Tokenizer`], a field each: a new encoding does not compile until it has its
/// own (an array indexed by the variant would panic instead).
#[derive(Default)]
struct PerEncoding<T> {
    /// For [`Tokenizer::Cl100k`].
    cl100k: T,
    /// For [`Tokenizer::O200k`].
    o200k: T,
}

impl<T> PerEncoding<T> {
    /// The `T` of `tokenizer`.
    fn get(&self, tokenizer: Tokenizer) -> &T {
        match tokenizer {
            Tokenizer::Cl100k => &self.cl100k,
            Tokenizer::O200k => &self.o200k,
        }
    }

    /// The `T` of `tokenizer`, to change.
    fn get_mut(&mut self, tokenizer: Tokenizer) -> &mut T {
        match tokenizer {
            Tokenizer::Cl100k => &mut self.cl100k,
            Tokenizer::O200k => &mut self.o200k,
        }
    }
}

/// Pieces up to this many bytes are remembered by [`PieceCounts`]: words and short runs,
/// the pieces that repeat; longer ones rarely do.
const MEMO_PIECE_BYTES: usize = 24;

/// Pieces remembered per tokenizer and thread; past this, pieces not yet seen are counted
/// without being remembered (about 0.5 MB per thread at most).
const MEMO_PIECES: usize = 8192;

/// The token counts of the pre-tokenizer's pieces (words with their leading space, numbers,
/// punctuation runs) already counted on this thread. A piece's count depends only on its
/// bytes, so a remembered count is exactly what the BPE would give again; in prose most
/// pieces repeat, and counting one afresh allocates and runs the backtracking encoder
/// (about half of chunking's CPU in the 3000-document bench, issue 25, round 5).
#[derive(Default)]
struct PieceCounts(rustc_hash::FxHashMap<Box<str>, u32>);

impl PieceCounts {
    fn count(&mut self, bpe: &bpe_openai::Tokenizer, piece: &str) -> usize {
        if piece.len() > MEMO_PIECE_BYTES {
            return bpe.bpe.count(piece.as_bytes());
        }
        if let Some(&n) = self.0.get(piece) {
            return n as usize;
        }
        let n = bpe.bpe.count(piece.as_bytes());
        if self.0.len() < MEMO_PIECES {
            self.0.insert(piece.into(), n as u32);
        }
        n
    }
}

thread_local! {
    /// One memo per tokenizer on each counting thread.
    static PIECES: std::cell::RefCell<PerEncoding<PieceCounts>> = std::cell::RefCell::default();
}

/// A [`TokenCounter`] over one of the bundled OpenAI encodings.
///
/// Counted with the `bpe-openai` crate rather than tiktoken-rs: the same counts (tested
/// against tiktoken-rs in this crate's tests), about 3 × faster, and a fifth of the load time.
#[derive(Debug, Clone, Copy)]
pub struct Tiktoken(pub Tokenizer);

impl TokenCounter for Tiktoken {
    fn count(&self, text: &str) -> usize {
        self.0.count(text)
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// Counts whitespace-separated words: a fast, dependency-free stand-in for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhitespaceCounter;

impl TokenCounter for WhitespaceCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn name(&self) -> &'static str {
        "whitespace"
    }
}

/// Counts `text` with the default tokenizer (`cl100k_base`).
pub fn count(text: &str) -> usize {
    Tokenizer::Cl100k.count(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_stable_and_whitespace_counter_counts_words() {
        assert_eq!(WhitespaceCounter.count(" a  b\tc\n"), 3);
        assert_eq!(count("The quick brown fox jumps over the lazy dog."), 10);
        assert_eq!(count(""), 0);
        assert_eq!(Tokenizer::O200k.counter().name(), "o200k_base");
        assert_eq!(Tokenizer::Cl100k.counter().count("hello world"), 2);
    }

    #[test]
    fn remembered_piece_counts_equal_fresh_counts_for_each_encoding() {
        // Repeated words hit the memo; the two encodings count some pieces differently, so
        // their memos must stay apart; more distinct pieces than the memo holds stay exact.
        let prose = "The lantern's glow, 12345 times: naïve café — über-long-compound-word! \
                     日本語のテキストです。 नमस्ते दुनिया 안녕하세요 세계\n";
        let many: String = (0..MEMO_PIECES + 500).map(|i| format!(" w{i}x")).collect();
        for text in [prose.repeat(3), many.clone(), many] {
            for tokenizer in [Tokenizer::Cl100k, Tokenizer::O200k] {
                let fresh = tokenizer.bpe().count(text.as_str());
                assert_eq!(tokenizer.count(&text), fresh, "{tokenizer:?}");
                assert_eq!(tokenizer.count(&text), fresh, "{tokenizer:?}, again");
            }
        }
        assert_ne!(
            Tokenizer::Cl100k.count(&prose.repeat(3)),
            Tokenizer::O200k.count(&prose.repeat(3)),
            "a text the encodings count differently (else the test above proves less)"
        );
    }

    #[test]
    fn preloading_twice_is_harmless_and_counting_still_works() {
        Tokenizer::Cl100k.preload();
        Tokenizer::Cl100k.preload();
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
    }
}
