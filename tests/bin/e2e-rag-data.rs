//! The `rag-data` binary, rebuilt inside `atk-e2e` so its tests can find it.

fn main() -> std::process::ExitCode {
    rag_data::main()
}
