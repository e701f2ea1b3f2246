//! `factual-qa --config FILE`: see the crate docs.
fn main() -> std::process::ExitCode {
    factual_qa::main()
}
