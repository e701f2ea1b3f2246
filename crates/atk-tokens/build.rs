//! Writes bpe-openai's token tables again in postcard, into `OUT_DIR` (see `src/tables.rs`).
//!
//! bpe-openai ships its tables as MessagePack; decoding that is most of the ~30 ms of CPU a
//! process spends loading a tokenizer (issue 25: ~10 µs per item of a 3000-document run). The
//! same tables in postcard load in about a third of the CPU. Nothing is computed here: the
//! tables are bpe-openai's, decoded and encoded again.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (name, tokenizer) in [
        ("cl100k_base", bpe_openai::cl100k_base()),
        ("o200k_base", bpe_openai::o200k_base()),
    ] {
        let bytes = postcard::to_allocvec(&tokenizer.bpe).expect("bpe-openai's tables encode");
        let path = out.join(format!("{name}.postcard"));
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
