//! `atk`: tools around pipelines (see the `atk` library crate).

fn main() -> std::process::ExitCode {
    atk::main()
}
