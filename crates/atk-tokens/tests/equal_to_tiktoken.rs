//! atk counts tokens with `bpe-openai`; users' limits and costs are stated in tiktoken's
//! counts. These tests hold the two equal, text by text, on a generated corpus built to hit
//! every branch of the pre-tokenizer (letters of every script, digit runs, contractions in
//! any case, punctuation runs, whitespace runs of every kind, CRLF, lone CR, text ending in
//! whitespace), on this repository's own documentation, and on random strings.

use atk_tokens::Tokenizer;
use proptest::prelude::*;
use tiktoken_rs::CoreBPE;

/// Fragments the generated corpus is made of: each one aimed at a pre-tokenizer case.
const FRAGMENTS: &[&str] = &[
    // words and scripts
    "the",
    "The",
    "THE",
    "keeper",
    "naïve",
    "café",
    "Évora",
    "façade",
    "über",
    "ﬁsh",
    "東京",
    "日本語の文章",
    "привет",
    "Мир",
    "αβγ",
    "Ωμέγα",
    "שלום",
    "مرحبا",
    "नमस्ते",
    "한국어",
    "ไทย",
    "e\u{301}",
    "a\u{200b}b",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ǅemal",
    "ʰmod",
    "x",
    "I",
    // contractions, in every case and without a word before them
    "don't",
    "I'll",
    "we're",
    "they've",
    "she'd",
    "it's",
    "I'm",
    "'S",
    "'LL",
    "'Ve",
    "'rE",
    "'D",
    "'t",
    "''",
    "'",
    "’s",
    "rock'n'roll",
    // numbers
    "1",
    "12",
    "123",
    "1234",
    "1234567",
    "3.14159",
    "$100,000",
    "2026-12-06",
    "٣٤٥",
    "①②",
    "Ⅻ",
    "½",
    "x2",
    "2x",
    // punctuation and symbols
    ".",
    "...",
    "!!!",
    "?!",
    "—",
    "–",
    "(aside)",
    "\"quoted\"",
    "<div>",
    "</p>",
    "/path/to",
    "a/b",
    "#",
    "@@",
    "&amp;",
    "{}",
    "[]",
    "**bold**",
    "`code`",
    "😀",
    "👍🏽",
    "🏳️‍🌈",
    "©",
    // whitespace of every kind
    " ",
    " ",
    " ",
    "  ",
    "   ",
    "    ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    " \n",
    "\n ",
    " \n \n",
    "  \n  ",
    "\t\n",
    "\n\t",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{2029}",
    "\u{b}",
    "\u{c}",
    "\u{85}",
    "\u{2003}",
    "\n/",
    " /",
    ";\n",
    ".\r\n",
];

/// A small deterministic generator (SplitMix64), so a failure names a reproducible text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `count` texts of 1 to 300 fragments each.
fn generated_corpus(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let n = 1 + rng.below(300);
            (0..n)
                .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
                .collect()
        })
        .collect()
}

fn reference(tokenizer: Tokenizer) -> CoreBPE {
    match tokenizer {
        Tokenizer::Cl100k => tiktoken_rs::cl100k_base().expect("tiktoken loads cl100k"),
        Tokenizer::O200k => tiktoken_rs::o200k_base().expect("tiktoken loads o200k"),
    }
}

/// Asserts atk's count equals tiktoken's for every text; returns the tokens counted.
fn assert_equal(tokenizer: Tokenizer, reference: &CoreBPE, texts: &[String]) -> usize {
    let mut total = 0;
    for text in texts {
        let expected = reference.encode_ordinary(text).len();
        assert_eq!(
            tokenizer.count(text),
            expected,
            "{} count differs from tiktoken's for {text:?}",
            tokenizer.name()
        );
        total += expected;
    }
    total
}

#[test]
fn generated_corpus_counts_equal_tiktokens_for_both_encodings() {
    let texts = generated_corpus(25, 400);
    for tokenizer in [Tokenizer::Cl100k, Tokenizer::O200k] {
        let tokens = assert_equal(tokenizer, &reference(tokenizer), &texts);
        assert!(tokens > 50_000, "the corpus is large: {tokens} tokens");
    }
}

#[test]
fn this_projects_documentation_counts_equal_tiktokens() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut texts = Vec::new();
    for dir in [root.clone(), root.join("docs")] {
        for entry in std::fs::read_dir(&dir)
            .expect("repository folder")
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path).expect("markdown is UTF-8");
                // Whole files, and the same with Windows line ends.
                texts.push(text.replace('\n', "\r\n"));
                texts.push(text);
            }
        }
    }
    assert!(texts.len() >= 10, "found the docs: {} texts", texts.len());
    let cl100k = reference(Tokenizer::Cl100k);
    assert!(assert_equal(Tokenizer::Cl100k, &cl100k, &texts) > 50_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_strings_count_equal_tiktokens(
        text in "[ a-zA-Z0-9'\u{a0}\u{3000}\t\r\n.,!?/éß東京😀\u{301}-]{0,80}"
    ) {
        static CL100K: std::sync::LazyLock<CoreBPE> =
            std::sync::LazyLock::new(|| reference(Tokenizer::Cl100k));
        prop_assert_eq!(Tokenizer::Cl100k.count(&text), CL100K.encode_ordinary(&text).len());
    }
}
