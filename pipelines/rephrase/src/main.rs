//! `rephrase --config FILE`: see the crate docs.
fn main() -> std::process::ExitCode {
    rephrase::main()
}
