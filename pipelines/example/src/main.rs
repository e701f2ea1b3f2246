//! `example-pipeline --config FILE`: see the crate docs.
fn main() -> std::process::ExitCode {
    example_pipeline::main()
}
