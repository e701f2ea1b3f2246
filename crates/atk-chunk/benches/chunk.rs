//! Chunking cost vs one plain counting pass (atk-tokens) over the same text (goal: at most
//! 1.5x), and that pass against tiktoken-rs's `encode_ordinary` (the same counts, asserted).
//!
//! Run: `cargo bench -p atk-chunk --bench chunk` (release). Prints ratios and MB/s measured
//! in this one run; nothing is compared against stored timings.
#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use atk_chunk::{ChunkConfig, Tokenizer, chunk_texts};

const CORPUS_MB: usize = 50;
const DOCS: usize = 100;
const CHUNK_SIZE: usize = 512;
/// text-splitter is compared on a slice of the corpus: it is several times slower.
const COMPARE_MB: usize = 5;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "river",
    "mountain",
    "a",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "it",
    "with",
    "as",
    "his",
    "on",
    "be",
    "at",
    "by",
    "village",
    "harvest",
    "from",
    "they",
    "ledger",
    "lantern",
    "winter",
    "merchant",
    "had",
    "were",
    "which",
    "an",
    "said",
    "kettle",
    "their",
    "there",
    "orchard",
    "been",
    "would",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "up",
    "what",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "journey",
    "bridge",
    "cartographer",
    "unexpectedly",
    "quietly",
    "northern",
    "eleven",
    "1847",
    "weather",
    "machinery",
    "borrowed",
    "stone",
    "letters",
    "afterwards",
    "granary",
];

/// A deterministic xorshift stream (no rand dependency in the bench).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Prose: paragraphs of 2–9 sentences of 4–28 words, some commas and quotes.
fn document(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 1024);
    while s.len() < bytes {
        for _ in 0..2 + rng.below(8) {
            let n = 4 + rng.below(25);
            for w in 0..n {
                let word = WORDS[rng.below(WORDS.len())];
                if w == 0 {
                    let mut c = word.chars();
                    let first = c.next().unwrap_or('x').to_uppercase().collect::<String>();
                    s.push_str(&first);
                    s.push_str(c.as_str());
                } else {
                    s.push_str(word);
                }
                if w + 1 < n {
                    s.push_str(if rng.below(9) == 0 { ", " } else { " " });
                }
            }
            s.push_str([". ", "? ", "! ", ". ", ". "][rng.below(5)]);
        }
        s.pop();
        s.push_str("\n\n");
    }
    s
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let docs: Vec<(String, String)> = (0..DOCS)
        .map(|i| {
            (
                format!("doc{i:03}.txt"),
                document(&mut rng, CORPUS_MB * 1_000_000 / DOCS),
            )
        })
        .collect();
    let total_bytes: usize = docs.iter().map(|(_, t)| t.len()).sum();
    let mb = total_bytes as f64 / 1e6;
    // tiktoken-rs: the reference counts, text-splitter's sizer and the earlier baseline.
    let bpe = tiktoken_rs::cl100k_base().expect("tiktoken loads");
    let bpe = &bpe;
    let counter = Tokenizer::Cl100k;
    let config = ChunkConfig::new(CHUNK_SIZE).with_min_chars(0);
    println!("corpus: {mb:.1} MB in {DOCS} documents, chunk_size {CHUNK_SIZE}, cl100k_base");

    // Both sides run on the same single worker thread, alternating document by document, so
    // machine load and tiktoken's per-thread regex state (see the crate README) hit both alike.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let (t_tiktoken, t_encode, t_chunk, tokens, mut chunks) = one_thread.install(|| {
        let _ = chunk_texts(&docs[..1], &config); // warm up tokenizer and segmenters
        let (mut tt, mut te, mut tc, mut tokens, mut chunks) = (0.0, 0.0, 0.0, 0, 0);
        let mut reference = 0;
        for doc in &docs {
            tt += secs(|| reference += bpe.encode_ordinary(&doc.1).len());
            te += secs(|| tokens += counter.count(&doc.1));
            tc += secs(|| chunks += chunk_texts(std::slice::from_ref(doc), &config).chunks.len());
        }
        assert_eq!(tokens, reference, "atk-tokens counts what tiktoken counts");
        (tt, te, tc, tokens, chunks)
    });
    println!("single thread, interleaved per document:");
    println!(
        "  tiktoken-rs encode   : {t_tiktoken:7.2} s  {:7.2} MB/s  ({tokens} tokens)",
        mb / t_tiktoken
    );
    println!(
        "  atk-tokens count pass: {t_encode:7.2} s  {:7.2} MB/s  ({:.2}x faster than tiktoken-rs)",
        mb / t_encode,
        t_tiktoken / t_encode
    );
    println!(
        "  atk-chunk            : {t_chunk:7.2} s  {:7.2} MB/s  ({chunks} chunks)",
        mb / t_chunk
    );
    println!(
        "  ratio chunk/count    : {:.3}x  (goal <= 1.5x)",
        t_chunk / t_encode
    );

    // All cores: read_dir-style parallel chunking vs a parallel counting pass.
    let t_enc_par = secs(|| {
        use rayon::prelude::*;
        let _ = docs
            .par_iter()
            .map(|(_, t)| counter.count(t))
            .sum::<usize>();
    });
    let t_chunk_par = secs(|| chunks = chunk_texts(&docs, &config).chunks.len());
    println!(
        "all cores ({} threads): count {t_enc_par:.2} s ({:.2} MB/s), atk-chunk {t_chunk_par:.2} s ({:.2} MB/s), ratio {:.3}x",
        rayon::current_num_threads(),
        mb / t_enc_par,
        mb / t_chunk_par,
        t_chunk_par / t_enc_par
    );

    // text-splitter (tiktoken sizer, trimming off so it is lossless too) on a slice.
    let n = (DOCS * COMPARE_MB / CORPUS_MB).max(1);
    let slice = &docs[..n];
    let slice_mb = slice.iter().map(|(_, t)| t.len()).sum::<usize>() as f64 / 1e6;
    let splitter = text_splitter::TextSplitter::new(
        text_splitter::ChunkConfig::new(CHUNK_SIZE)
            .with_sizer(bpe)
            .with_trim(false),
    );
    let (t_ts, t_ours, t_enc_slice, ts_chunks, ours) = one_thread.install(|| {
        let (mut a, mut b, mut c, mut na, mut nb) = (0.0, 0.0, 0.0, 0, 0);
        for doc in slice {
            a += secs(|| na += splitter.chunks(&doc.1).count());
            b += secs(|| nb += chunk_texts(std::slice::from_ref(doc), &config).chunks.len());
            c += secs(|| {
                let _ = counter.count(&doc.1);
            });
        }
        (a, b, c, na, nb)
    });
    println!("text-splitter 0.33 vs atk-chunk on {slice_mb:.1} MB, single thread, interleaved:");
    println!(
        "  text-splitter        : {t_ts:7.2} s  {:7.2} MB/s  ({ts_chunks} chunks, {:.2}x count)",
        slice_mb / t_ts,
        t_ts / t_enc_slice
    );
    println!(
        "  atk-chunk            : {t_ours:7.2} s  {:7.2} MB/s  ({ours} chunks, {:.2}x count)",
        slice_mb / t_ours,
        t_ours / t_enc_slice
    );
    println!("  text-splitter / atk-chunk: {:.2}x", t_ts / t_ours);
}
