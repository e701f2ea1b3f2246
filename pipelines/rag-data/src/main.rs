//! `rag-data --config FILE`: see the crate docs.
fn main() -> std::process::ExitCode {
    rag_data::main()
}
