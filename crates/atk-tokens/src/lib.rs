#![doc = include_str!("../README.md")]

use std::sync::OnceLock;

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
    /// a release build: the prebuilt tables are deserialized, nothing is computed).
    pub fn bpe(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Self::Cl100k => bpe_openai::cl100k_base(),
            Self::O200k => bpe_openai::o200k_base(),
        }
    }

    /// Starts loading this tokenizer on a background thread, once per process, so that a
    /// later first count does not wait the whole load (it waits only for what is left).
    pub fn preload(self) {
        static STARTED: [OnceLock<()>; 2] = [OnceLock::new(), OnceLock::new()];
        STARTED[self as usize].get_or_init(|| {
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
        self.bpe().count(text)
    }

    /// A counter backed by this tokenizer.
    pub fn counter(self) -> &'static dyn TokenCounter {
        match self {
            Self::Cl100k => &Tiktoken(Self::Cl100k),
            Self::O200k => &Tiktoken(Self::O200k),
        }
    }
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
    fn preloading_twice_is_harmless_and_counting_still_works() {
        Tokenizer::Cl100k.preload();
        Tokenizer::Cl100k.preload();
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
    }
}
