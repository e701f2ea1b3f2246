//! The tokenizers, built from the token tables `build.rs` re-encoded in postcard.
//!
//! bpe-openai's own loaders (`cl100k_base()`, `o200k_base()`) decode MessagePack; the same
//! tables in postcard take about a third of the CPU to load (~11 ms less per process here).
//! The pre-tokenizer patterns are OpenAI's published tiktoken patterns, in the form
//! bpe-openai's `new_lookahead` takes: its regex engine has no negative look-ahead, so
//! tiktoken's `\s+(?!\S)` becomes `\s+$` in the first pattern and a second pattern `\s+\s`
//! whose last character is a look-ahead. The tests check every count and encoding against
//! bpe-openai's own loaders and against tiktoken-rs.

use crate::Tokenizer;

/// `cl100k_base`'s table, from build.rs.
const CL100K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.postcard"));
/// `o200k_base`'s table, from build.rs.
const O200K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.postcard"));

/// tiktoken's `cl100k_base` pattern, split as described in the module doc.
const CL100K_PATTERNS: [(&str, bool); 3] = [
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+$",
        false,
    ),
    (r"\s+\s", true),
    (r"\s+", false),
];

/// tiktoken's `o200k_base` pattern, split as described in the module doc.
const O200K_PATTERNS: [(&str, bool); 3] = [
    (
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|\p{N}{1,3}",
            r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"|\s*[\r\n]+",
            r"|\s+$",
        ),
        false,
    ),
    (r"\s+\s", true),
    (r"\s+", false),
];

/// Builds `tokenizer` from its table (once per process: see [`Tokenizer::bpe`]).
pub(crate) fn load(tokenizer: Tokenizer) -> bpe_openai::Tokenizer {
    let (table, patterns) = match tokenizer {
        Tokenizer::Cl100k => (CL100K, &CL100K_PATTERNS),
        Tokenizer::O200k => (O200K, &O200K_PATTERNS),
    };
    // Both were written by build.rs from tables that decoded: reading them back cannot fail.
    let bpe = postcard::from_bytes(table).expect("build.rs wrote a readable table");
    bpe_openai::Tokenizer::new_lookahead(bpe, patterns, false).expect("the patterns compile")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text that exercises every branch of both patterns: contractions in both cases, letters
    /// of several scripts and cases, marks, digit runs, punctuation with and without a space
    /// and with line ends and slashes, whitespace runs before words, line ends and the end.
    const SAMPLES: &[&str] = &[
        "",
        "Hello, world! It's a test; we'LL see what they'VE done.",
        "Numbers: 1, 12, 123, 1234, 12345 and 3.14159 — ½ ⅔.",
        "Spaces   before words,\ttabs\t\tand\n\nblank lines\r\n\r\nthen   ",
        "path/to/file.rs:12 // comment\n    indented();\n",
        "Ünïcödé: naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, العربية",
        "MixedCASE wordsLikeThis and ALLCAPS, camelCase; e\u{301}tude (combining mark)",
        "emoji 🙂🙃 and symbols ©®™ ✓ ✗ → ← ↑",
        "   leading and trailing whitespace   \n   ",
        "a\u{a0}non-breaking\u{2003}em space\u{200b}zero width",
    ];

    #[test]
    fn the_tables_give_the_same_tokens_as_bpe_openais_own() {
        for (tokenizer, reference) in [
            (Tokenizer::Cl100k, bpe_openai::cl100k_base()),
            (Tokenizer::O200k, bpe_openai::o200k_base()),
        ] {
            let ours = load(tokenizer);
            for text in SAMPLES {
                assert_eq!(
                    ours.encode(*text),
                    reference.encode(*text),
                    "{} on {text:?}",
                    tokenizer.name()
                );
                assert_eq!(
                    ours.split(text).collect::<Vec<_>>(),
                    reference.split(text).collect::<Vec<_>>(),
                    "{} pieces of {text:?}",
                    tokenizer.name()
                );
            }
        }
    }
}
