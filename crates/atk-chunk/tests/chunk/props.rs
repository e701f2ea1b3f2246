//! Property tests: no chunk over the limit, exact token counts, and the chunks of a text
//! joined in order give back the text (so no word is lost or reordered).

use atk_chunk::{ChunkConfig, Tokenizer, chunk_texts, extracted_text};
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "the",
    "keeper",
    "wrote",
    "weather",
    "ledger",
    "Évora",
    "naïve",
    "façade",
    "2026",
    "3.14",
    "don't",
    "e-mail",
    "(aside)",
    "\"quoted\"",
    "über",
    "x",
    "antidisestablishmentarianism",
    "🙂",
    "日本",
    "東京",
    "—",
    "...",
    "&",
    "ﬁsh",
];
const SEPARATORS: &[&str] = &[
    " ", " ", " ", ", ", ". ", "? ", "! ", "\n", "\n\n", "\t", "  ", "\r\n", " \n \n", "\u{3000}",
    "\u{a0}", "。", "、", "\n/", ";\n",
];
const CJK: &str = "日本語の文章は空白なしで書かれることが多い東京大阪京都北海道沖縄山川海空雨雪風花鳥月星人心手目口耳足学生先生会社電車駅時間";

/// Checks the invariants for `text` with one tokenizer and limit; returns the chunk count.
fn check(text: &str, limit: usize, tokenizer: Tokenizer) -> usize {
    check_with(text, limit, tokenizer, 0)
}

/// As [`check`], with small chunks joined to neighbours (`min_chars`).
fn check_with(text: &str, limit: usize, tokenizer: Tokenizer, min_chars: usize) -> usize {
    let config = ChunkConfig::new(limit)
        .with_tokenizer(tokenizer)
        .with_min_chars(min_chars);
    let set = chunk_texts(&[("t".to_string(), text.to_string())], &config);
    // The reference is tiktoken itself, not the counter atk-chunk uses.
    let bpe = reference(tokenizer);
    for c in &set.chunks {
        let exact = bpe.encode_ordinary(&c.text).len();
        assert_eq!(
            c.tokens, exact,
            "reported tokens are exact for {:?}",
            c.text
        );
        assert!(
            c.tokens <= limit || c.text.chars().count() == 1,
            "{} tokens > {limit} in {:?}",
            c.tokens,
            c.text
        );
    }
    let joined: String = set.chunks.iter().map(|c| c.text.as_str()).collect();
    let expected = extracted_text(&[text]);
    if expected.chars().count() < min_chars {
        assert!(set.chunks.is_empty());
        assert_eq!(
            set.report.dropped_fragments,
            usize::from(!expected.is_empty())
        );
    } else {
        assert_eq!(joined, expected);
    }
    set.chunks.len()
}

/// tiktoken-rs's encoder for `tokenizer`, loaded once per test process.
fn reference(tokenizer: Tokenizer) -> &'static tiktoken_rs::CoreBPE {
    match tokenizer {
        Tokenizer::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        Tokenizer::O200k => tiktoken_rs::o200k_base_singleton(),
    }
}

fn prose() -> impl Strategy<Value = String> {
    prop::collection::vec((0..WORDS.len(), 0..SEPARATORS.len()), 1..400).prop_map(|v| {
        v.into_iter()
            .map(|(w, s)| format!("{}{}", WORDS[w], SEPARATORS[s]))
            .collect()
    })
}

fn cjk() -> impl Strategy<Value = String> {
    let chars: Vec<char> = CJK.chars().collect();
    prop::collection::vec((0..chars.len(), 0..40u8), 50..900).prop_map(move |v| {
        v.into_iter()
            .map(|(c, p)| match p {
                0 => format!("{}。", chars[c]),
                1 => format!("{}\n\n", chars[c]),
                _ => chars[c].to_string(),
            })
            .collect()
    })
}

fn whitespace_soup() -> impl Strategy<Value = String> {
    let ws = prop::sample::select(vec![
        " ", "\t", "\n", "\r\n", "\n\n\n", "  \t ", "\u{2003}", "\u{a0}", "\u{3000}", "\u{85}",
    ]);
    prop::collection::vec((prop::sample::select(WORDS.to_vec()), ws), 1..300)
        .prop_map(|v| v.into_iter().map(|(w, s)| format!("{w}{s}")).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_prose(text in prose(), limit in 6usize..80, min_chars in prop::sample::select(vec![0usize, 50])) {
        check_with(&text, limit, Tokenizer::Cl100k, min_chars);
    }

    #[test]
    fn random_prose_o200k(text in prose(), limit in 6usize..80) {
        check(&text, limit, Tokenizer::O200k);
    }

    #[test]
    fn one_giant_paragraph(n in 20usize..120, limit in 8usize..60) {
        let text = (0..n).map(|i| format!("Sentence {i} tells of the keeper and the {} weather. ", WORDS[i % WORDS.len()])).collect::<String>();
        prop_assert!(check(&text, limit, Tokenizer::Cl100k) > 1);
    }

    #[test]
    fn cjk_without_spaces(text in cjk(), limit in 6usize..50) {
        check(&text, limit, Tokenizer::Cl100k);
        check(&text, limit, Tokenizer::O200k);
    }

    #[test]
    fn mixed_whitespace(text in whitespace_soup(), limit in 4usize..40) {
        check(&text, limit, Tokenizer::Cl100k);
    }
}

#[test]
fn thousands_of_words_without_punctuation() {
    let plain = [
        "the", "keeper", "wrote", "weather", "ledger", "naïve", "über", "x", "lanterns",
    ];
    let text: String = (0..3000)
        .map(|i| plain[(i * 7) % plain.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let n = check(&text, 50, Tokenizer::Cl100k);
    assert!(n > 50);
}

#[test]
fn one_word_longer_than_the_limit_is_cut_inside() {
    let text = "ab".repeat(2000);
    assert!(check(&text, 16, Tokenizer::Cl100k) > 10);
    let text = "日本".repeat(800);
    assert!(check(&text, 16, Tokenizer::O200k) > 10);
}
