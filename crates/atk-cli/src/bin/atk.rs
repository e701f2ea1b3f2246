//! `atk`: tools around pipelines (see [`atk_cli::tool`]).

fn main() -> std::process::ExitCode {
    atk_cli::tool::main()
}
