//! Token-bounded, lossless splitting of one text.
//!
//! Hand-written rather than `text-splitter` because of cost: text-splitter sizes candidate
//! chunks by re-encoding them (a binary search per chunk), several tokenizer passes over the
//! text, while this splitter encodes each line once and adds the counts up (the measured
//! difference is in the crate README, section Performance). The sum is exact
//! because lines are cut only at *clean* positions (see [`is_clean_cut`]): places where
//! tiktoken's pre-tokenizer always starts a new piece, so the tokens of `a + b` are the
//! tokens of `a` followed by those of `b`. Chunks that are joined anywhere else (sentences,
//! words) are re-counted on their own text before they are accepted.

use std::sync::LazyLock;

use atk_tokens::Tokenizer;
use icu_segmenter::options::{SentenceBreakInvariantOptions, WordBreakInvariantOptions};
use icu_segmenter::{
    GraphemeClusterSegmenter, GraphemeClusterSegmenterBorrowed, SentenceSegmenter,
    SentenceSegmenterBorrowed, WordSegmenter, WordSegmenterBorrowed,
};

static SENTENCES: LazyLock<SentenceSegmenterBorrowed<'static>> =
    LazyLock::new(|| SentenceSegmenter::new(SentenceBreakInvariantOptions::default()));
static WORDS: LazyLock<WordSegmenterBorrowed<'static>> =
    LazyLock::new(|| WordSegmenter::new_dictionary(WordBreakInvariantOptions::default()));
const GRAPHEMES: GraphemeClusterSegmenterBorrowed<'static> = GraphemeClusterSegmenter::new();

/// One chunk of a text: a byte range and its exact token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// First byte, inclusive.
    pub start: usize,
    /// Last byte, exclusive.
    pub end: usize,
    /// Tokens in `text[start..end]`, counted on that text alone.
    pub tokens: usize,
}

/// True when `text` may be cut at byte `at` without changing how either side tokenizes:
/// right after a line break and before a character that is not whitespace (and not `/`,
/// which o200k's pre-tokenizer glues to a preceding `\n`).
///
/// Why this is safe for cl100k and o200k: every pre-token alternative that can contain `\n`
/// (`\s*[\r\n]+`, `\s++$`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`) ends at the last line break of a
/// whitespace run, which is `at`, whether or not text follows; no alternative starting with
/// an optional prefix accepts `\n` as that prefix; and the pattern has no look-behind, so
/// the text after `at` splits the same way on its own.
pub(crate) fn is_clean_cut(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    if at == 0 || at >= bytes.len() {
        return true;
    }
    if bytes[at - 1] != b'\n' {
        return false;
    }
    match text[at..].chars().next() {
        Some(c) => !c.is_whitespace() && c != '/',
        None => true,
    }
}

/// Cuts texts into pieces of at most `limit` tokens.
pub(crate) struct Splitter {
    tokenizer: Tokenizer,
    limit: usize,
}

/// One unit being packed: a byte range with its own token count.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
}

/// Splitting levels, coarsest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Sentence,
    Word,
}

/// Greedy packer: adds units while the estimated sum fits and verifies inexact joins.
struct Packer<'t> {
    text: &'t str,
    tokenizer: Tokenizer,
    limit: usize,
    cur: Vec<Unit>,
    cur_tokens: usize,
    /// Whether `cur_tokens` may differ from the real count (some join was not clean).
    cur_inexact: bool,
    out: Vec<Piece>,
}

impl Splitter {
    /// A splitter counting with `tokenizer`, bounded by `limit` tokens (at least 1).
    pub(crate) fn new(tokenizer: Tokenizer, limit: usize) -> Self {
        Self {
            tokenizer,
            limit: limit.max(1),
        }
    }

    /// Exact token count of `text`.
    pub(crate) fn count(&self, text: &str) -> usize {
        self.tokenizer.count(text)
    }

    /// The chunk limit in tokens.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Splits `text` into consecutive pieces covering it exactly, each within the limit.
    pub(crate) fn split(&self, text: &str) -> Vec<Piece> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut packer = Packer {
            text,
            tokenizer: self.tokenizer,
            limit: self.limit,
            cur: Vec::new(),
            cur_tokens: 0,
            cur_inexact: false,
            out: Vec::new(),
        };
        // Paragraphs, each a run of lines; every cut between lines is clean, so sums are exact.
        let mut para: Vec<Unit> = Vec::new();
        let mut para_tokens = 0;
        let mut start = 0;
        for (end, paragraph_break) in line_cuts(text) {
            let unit = Unit {
                start,
                end,
                tokens: self.count(&text[start..end]),
            };
            para_tokens += unit.tokens;
            para.push(unit);
            start = end;
            if paragraph_break || end == text.len() {
                packer.paragraph(&para, para_tokens);
                para.clear();
                para_tokens = 0;
            }
        }
        packer.finish();
        packer.out
    }
}

/// Clean cut positions after each line (and the end of text), with whether a blank line
/// precedes the cut (a paragraph break).
fn line_cuts(text: &str) -> impl Iterator<Item = (usize, bool)> + '_ {
    let bytes = text.as_bytes();
    let mut from = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        loop {
            let Some(rel) = bytes[from..].iter().position(|&b| b == b'\n') else {
                done = true;
                return Some((bytes.len(), true));
            };
            let at = from + rel + 1;
            from = at;
            if at >= bytes.len() {
                done = true;
                return Some((bytes.len(), true));
            }
            if is_clean_cut(text, at) {
                // A paragraph break when the whitespace run before `at` holds another `\n`.
                let run = text[..at - 1].trim_end_matches(|c: char| c.is_whitespace() && c != '\n');
                return Some((at, run.ends_with('\n')));
            }
        }
    })
}

impl Packer<'_> {
    fn count(&self, start: usize, end: usize) -> usize {
        self.tokenizer.count(&self.text[start..end])
    }

    /// Packs one paragraph made of `lines` (`tokens` in total).
    fn paragraph(&mut self, lines: &[Unit], tokens: usize) {
        let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
            return;
        };
        if tokens <= self.limit {
            self.push(
                Unit {
                    start: first.start,
                    end: last.end,
                    tokens,
                },
                true,
            );
            return;
        }
        // Too big: start it in a fresh chunk so the chunk boundary sits on the paragraph break.
        self.flush_all();
        for &line in lines {
            if line.tokens <= self.limit {
                self.push(line, true);
            } else {
                self.flush_all();
                self.split_unit(line, Level::Sentence);
            }
        }
    }

    /// Splits an over-long unit at `level` (sentences, then words, then inside a word).
    fn split_unit(&mut self, unit: Unit, level: Level) {
        let slice = &self.text[unit.start..unit.end];
        let cuts: Vec<usize> = match level {
            Level::Sentence => SENTENCES.segment_str(slice).collect(),
            Level::Word => word_cuts(slice),
        };
        let mut parts = Vec::with_capacity(cuts.len());
        let mut prev = 0;
        for &c in cuts.iter().filter(|&&c| c > 0) {
            parts.push((unit.start + prev, unit.start + c));
            prev = c;
        }
        if prev < slice.len() {
            parts.push((unit.start + prev, unit.end));
        }
        if parts.len() <= 1 {
            match level {
                Level::Sentence => self.split_unit(unit, Level::Word),
                _ => self.cut_word(unit),
            }
            return;
        }
        for (s, e) in parts {
            let tokens = self.count(s, e);
            let part = Unit {
                start: s,
                end: e,
                tokens,
            };
            if tokens <= self.limit {
                self.push(part, is_clean_cut(self.text, s));
            } else {
                self.flush_all();
                match level {
                    Level::Sentence => self.split_unit(part, Level::Word),
                    _ => self.cut_word(part),
                }
            }
        }
    }

    /// Cuts a single word longer than the limit at grapheme boundaries.
    fn cut_word(&mut self, unit: Unit) {
        let mut bounds: Vec<usize> = GRAPHEMES
            .segment_str(&self.text[unit.start..unit.end])
            .map(|b| unit.start + b)
            .collect();
        if bounds.last() != Some(&unit.end) {
            bounds.push(unit.end);
        }
        // bounds[0] == unit.start; take the longest prefix that fits by galloping then
        // bisecting, so each piece costs O(log n) counts of text about one chunk long.
        let n = bounds.len();
        let mut i = 0;
        while i + 1 < n {
            let start = bounds[i];
            let fits = |j: usize| self.count(start, bounds[j]) <= self.limit;
            let mut lo = i + 1; // one grapheme is always taken, so the loop moves on
            let mut hi = n; // indices >= hi are known not to fit (n: not probed)
            let mut step = 1;
            while lo + step < hi {
                let probe = lo + step;
                if fits(probe) {
                    lo = probe;
                    step *= 2;
                } else {
                    hi = probe;
                }
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid) { lo = mid } else { hi = mid }
            }
            let end = bounds[lo];
            let tokens = self.count(start, end);
            self.push(Unit { start, end, tokens }, false);
            self.flush_all();
            i = lo;
        }
    }

    /// Adds a unit to the current chunk, emitting the chunk first when the unit does not fit.
    /// `clean_join`: the unit starts at a clean cut, so token counts add up exactly.
    fn push(&mut self, unit: Unit, clean_join: bool) {
        loop {
            if self.cur.is_empty() {
                self.cur.push(unit);
                self.cur_tokens = unit.tokens;
                return;
            }
            if self.cur_tokens + unit.tokens <= self.limit {
                self.cur.push(unit);
                self.cur_tokens += unit.tokens;
                self.cur_inexact |= !clean_join;
                return;
            }
            self.flush_once();
        }
    }

    /// Emits a prefix of the current chunk (all of it when it fits); what does not fit stays.
    fn flush_once(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let start = self.cur[0].start;
        let mut keep = self.cur.len();
        let mut tokens = self.cur_tokens;
        if self.cur_inexact {
            loop {
                tokens = self.count(start, self.cur[keep - 1].end);
                if tokens <= self.limit || keep == 1 {
                    break;
                }
                keep -= 1;
            }
        }
        let end = self.cur[keep - 1].end;
        self.out.push(Piece { start, end, tokens });
        self.cur.drain(..keep);
        self.cur_tokens = self.cur.iter().map(|u| u.tokens).sum();
        self.cur_inexact = self.cur.len() > 1;
    }

    fn flush_all(&mut self) {
        while !self.cur.is_empty() {
            self.flush_once();
        }
    }

    fn finish(&mut self) {
        self.flush_all();
    }
}

/// Word cut positions: UAX #29 word boundaries (dictionary-based for CJK), with whitespace
/// kept on the word before it so that pieces read "word ".
fn word_cuts(slice: &str) -> Vec<usize> {
    WORDS
        .segment_str(slice)
        .filter(|&b| b > 0 && b < slice.len() && !slice[b..].starts_with(char::is_whitespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, limit: usize) -> Vec<Piece> {
        for tok in [Tokenizer::Cl100k, Tokenizer::O200k] {
            let s = Splitter::new(tok, limit);
            let pieces = s.split(text);
            let mut at = 0;
            for p in &pieces {
                assert_eq!(p.start, at, "pieces are contiguous");
                at = p.end;
                let exact = s.count(&text[p.start..p.end]);
                assert_eq!(
                    p.tokens,
                    exact,
                    "reported count is exact for {:?}",
                    &text[p.start..p.end]
                );
                assert!(p.tokens <= limit || text[p.start..p.end].chars().count() == 1);
            }
            assert_eq!(at, text.len());
        }
        Splitter::new(Tokenizer::Cl100k, limit).split(text)
    }

    #[test]
    fn clean_cuts_add_up_exactly() {
        let text = "Title.\n\nFirst line here.\nSecond line, with words.\n\n  indented\n/slash\n\r\n\"Quoted\" start.\n";
        let total = Tokenizer::Cl100k.count(text);
        let sum: usize = {
            let mut start = 0;
            line_cuts(text)
                .map(|(end, _)| {
                    let n = Tokenizer::Cl100k.count(&text[start..end]);
                    start = end;
                    n
                })
                .sum()
        };
        assert_eq!(sum, total);
        check(text, 3);
    }

    #[test]
    fn paragraphs_are_packed_and_long_ones_split() {
        let para = "Sentence number one is here. Another sentence follows it. ".repeat(20);
        let text = format!("Short intro.\n\n{para}\n\nShort outro paragraph.\n");
        let pieces = check(&text, 40);
        assert!(pieces.len() > 3);
        assert_eq!(&text[pieces[0].start..pieces[0].end], "Short intro.\n\n");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// The claim behind exact sums: at a clean cut, tokens(a + b) = tokens(a) + tokens(b).
        #[test]
        fn clean_cuts_never_change_counts(
            chars in proptest::collection::vec(proptest::sample::select(vec![
                'a', 'Z', 'é', 's', '1', '9', ' ', ' ', '\t', '\n', '\n', '\n', '\r', '.', '/', '\'',
                '"', '!', '#', '\u{3000}', '\u{85}', '\u{a0}', '日', '\u{301}', '-', '😀',
            ]), 1..60)
        ) {
            let text: String = chars.into_iter().collect();
            for tok in [Tokenizer::Cl100k, Tokenizer::O200k] {
                let whole = tok.count(&text);
                for (at, _) in text.char_indices().filter(|&(i, _)| i > 0 && is_clean_cut(&text, i)) {
                    let parts = tok.count(&text[..at]) + tok.count(&text[at..]);
                    proptest::prop_assert_eq!(whole, parts, "{:?} cut at {}", text, at);
                }
            }
        }
    }

    #[test]
    fn giant_word_is_cut_inside() {
        let text = "x".repeat(3000);
        let pieces = check(&text, 10);
        assert!(pieces.len() >= 2);
    }
}
