//! The `factual-qa` binary, rebuilt inside `atk-e2e` so its tests can find it.

fn main() -> std::process::ExitCode {
    factual_qa::main()
}
