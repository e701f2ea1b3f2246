#![doc = include_str!("../README.md")]

use std::cell::OnceCell;
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

pub use tiktoken_rs;

/// Counts tokens in text; implemented by the tiktoken tokenizers and a whitespace counter for tests.
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

    /// The process-wide BPE for this tokenizer, loaded on first use.
    pub fn bpe(self) -> &'static CoreBPE {
        static CL100K: OnceLock<CoreBPE> = OnceLock::new();
        static O200K: OnceLock<CoreBPE> = OnceLock::new();
        match self {
            Self::Cl100k => CL100K.get_or_init(|| self.load()),
            Self::O200k => O200K.get_or_init(|| self.load()),
        }
    }

    /// Runs `f` with a BPE owned by the calling thread, loaded on this thread's first call
    /// (about 0.45 s in release builds, several times that in debug builds).
    ///
    /// The shared [`Tokenizer::bpe`] is slower on every thread but the first to use it (its
    /// regex keeps per-thread scratch space in a pool that only one thread reaches without
    /// locking); long runs on worker threads gain by loading their own. Short ones do not:
    /// see [`LOCAL_BPE_BREAK_EVEN_BYTES`].
    pub fn with_local_bpe<R>(self, f: impl FnOnce(&CoreBPE) -> R) -> R {
        thread_local! {
            static CL100K: OnceCell<CoreBPE> = const { OnceCell::new() };
            static O200K: OnceCell<CoreBPE> = const { OnceCell::new() };
        }
        let cell = match self {
            Self::Cl100k => &CL100K,
            Self::O200k => &O200K,
        };
        cell.with(|c| f(c.get_or_init(|| self.load())))
    }

    /// A fresh BPE (not the shared one).
    fn load(self) -> CoreBPE {
        match self {
            Self::Cl100k => tiktoken_rs::cl100k_base().expect("bundled cl100k_base loads"),
            Self::O200k => tiktoken_rs::o200k_base().expect("bundled o200k_base loads"),
        }
    }

    /// A counter backed by this tokenizer.
    pub fn counter(self) -> &'static dyn TokenCounter {
        match self {
            Self::Cl100k => &Tiktoken(Self::Cl100k),
            Self::O200k => &Tiktoken(Self::O200k),
        }
    }
}

/// Text (in bytes) that one worker thread should have to tokenize before loading its own BPE
/// with [`Tokenizer::with_local_bpe`] pays off in a release build; below it, use the shared
/// [`Tokenizer::bpe`]. Measured on this project's benchmarks: a load costs about as much as
/// tokenizing this much text at the shared BPE's contended speed.
pub const LOCAL_BPE_BREAK_EVEN_BYTES: usize = 8 << 20;

/// A [`TokenCounter`] over one of the bundled tiktoken encodings.
#[derive(Debug, Clone, Copy)]
pub struct Tiktoken(pub Tokenizer);

impl TokenCounter for Tiktoken {
    fn count(&self, text: &str) -> usize {
        self.0.bpe().encode_ordinary(text).len()
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
    Tokenizer::Cl100k.counter().count(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_stable_and_whitespace_counter_counts_words() {
        assert_eq!(WhitespaceCounter.count(" a  b\tc\n"), 3);
        let n = count("The quick brown fox jumps over the lazy dog.");
        assert!((9..=11).contains(&n), "{n}");
        assert_eq!(Tokenizer::O200k.counter().name(), "o200k_base");
    }

    #[test]
    fn a_thread_local_bpe_counts_like_the_shared_one_and_loads_once_per_thread() {
        // The one test that loads a second BPE (slow in debug builds): keep it to one.
        let text = "Thread-local tokenizers must agree with the shared one: naïve café, 1847!";
        let shared = Tokenizer::Cl100k.bpe().encode_ordinary(text);
        let first = Tokenizer::Cl100k.with_local_bpe(|bpe| {
            assert!(
                !std::ptr::eq(bpe, Tokenizer::Cl100k.bpe()),
                "not the shared one"
            );
            assert_eq!(bpe.encode_ordinary(text), shared);
            std::ptr::from_ref(bpe) as usize
        });
        let again = Tokenizer::Cl100k.with_local_bpe(|bpe| std::ptr::from_ref(bpe) as usize);
        assert_eq!(first, again, "loaded once per thread");
    }
}
