//! `read_dir` over many small files: what the chunk cache costs cold and saves warm, what
//! loading the tokenizer costs, and how counting on the shared tokenizer scales over threads.
//!
//! Run: `cargo bench -p atk-chunk --bench cache` (release). Prints times and ratios measured
//! in this one run (each figure the best of `ROUNDS`); nothing is compared against stored
//! timings. `ATK_BENCH_FILES` overrides the file count (default 3000, like the pipeline bench).
#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use atk_chunk::{ChunkConfig, Tokenizer, read_dir};
use rayon::prelude::*;

const ROUNDS: usize = 3;
const WORDS: &[&str] = &[
    "the",
    "of",
    "river",
    "mountain",
    "a",
    "to",
    "in",
    "village",
    "harvest",
    "ledger",
    "lantern",
    "winter",
    "merchant",
    "kettle",
    "orchard",
    "journey",
    "bridge",
    "cartographer",
    "quietly",
    "northern",
    "eleven",
    "weather",
    "machinery",
    "borrowed",
    "stone",
    "letters",
    "granary",
];

/// Document `i`: one paragraph of about 60 words, distinct from every other.
fn small_doc(i: usize) -> String {
    let mut s = format!("Record {i}.");
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for w in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(' ');
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        if w % 12 == 11 {
            s.push('.');
        }
    }
    s.push_str(".\n");
    s
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..ROUNDS).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let files: usize = std::env::var("ATK_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let root = tempfile::tempdir().expect("tempdir");
    let input = root.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    for i in 0..files {
        std::fs::write(input.join(format!("doc_{i:05}.txt")), small_doc(i)).expect("write");
    }
    let config = ChunkConfig::new(2000);
    // The first use loads the tokenizer (once per process): timed here, outside the rest.
    let load = secs(|| {
        let _ = Tokenizer::Cl100k.bpe();
    });
    let tiktoken_load = secs(|| drop(tiktoken_rs::cl100k_base().expect("loads")));
    let run = |cfg: &ChunkConfig| {
        let set = read_dir(&input, cfg).expect("read_dir");
        assert_eq!(set.report.files_read, files);
        set.report.cache_hits
    };
    let no_cache = best(|| secs(|| assert_eq!(run(&config), 0)));
    let mut round = 0;
    let cold = best(|| {
        round += 1;
        let cfg = config
            .clone()
            .with_cache_dir(root.path().join(format!("cache{round}")));
        secs(|| assert_eq!(run(&cfg), 0))
    });
    let warm_cfg = config.clone().with_cache_dir(root.path().join("cache1"));
    let warm = best(|| secs(|| assert_eq!(run(&warm_cfg), files)));
    let cache_files = std::fs::read_dir(root.path().join("cache1"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "read_dir: {files} one-paragraph files, {} threads, best of {ROUNDS}",
        rayon::current_num_threads()
    );
    println!("  no cache           : {no_cache:7.3} s");
    println!(
        "  cold (cache write) : {cold:7.3} s   cache cost / chunking = {:.2}",
        (cold - no_cache) / no_cache
    );
    println!(
        "  warm (all hits)    : {warm:7.3} s   warm / cold = {:.2}",
        warm / cold
    );
    println!("  cache folder holds {cache_files} file(s)");
    println!(
        "  loading cl100k      : {:.0} ms (tiktoken-rs: {:.0} ms)",
        load * 1e3,
        tiktoken_load * 1e3
    );
    counting_over_threads();
}

/// Counting 16 MB of prose with the one shared tokenizer on 1 thread and on every core: the
/// regex's scratch space is pooled per thread, so threads should not slow each other down.
fn counting_over_threads() {
    let threads = rayon::current_num_threads().max(2);
    let para: String = (0..200).map(small_doc).collect::<Vec<_>>().join("\n");
    let pieces: Vec<&str> =
        std::iter::repeat_n(para.as_str(), 16_000_000 / para.len() + 1).collect();
    let on = |n: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool");
        pool.install(|| {
            secs(|| {
                let n: usize = pieces.par_iter().map(|p| Tokenizer::Cl100k.count(p)).sum();
                assert!(n > 0);
            })
        })
    };
    let one = on(1);
    let all = on(threads);
    println!(
        "counting 16 MB on the shared tokenizer: 1 thread {one:.2} s, {threads} threads {all:.2} s, speed-up {:.2}x",
        one / all
    );
}
