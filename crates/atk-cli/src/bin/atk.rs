//! `atk`: tools around pipelines. `atk chunk` shows how a folder is read and chunked;
//! `atk status` shows how far a run (running or finished) has got.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tools around atk pipelines: see how a folder is chunked, see how far a run has got.
#[derive(Debug, Parser)]
#[command(name = "atk", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads and chunks a folder like a pipeline would; one JSON object per chunk on stdout
    /// (`id`, `metadata`, `tokens`, `text`), warnings and a summary on stderr.
    Chunk {
        /// The folder to read (recursively).
        input_dir: PathBuf,
        /// Most tokens per chunk.
        #[arg(long, value_name = "N")]
        chunk_size: usize,
        /// Tokenizer: cl100k_base or o200k_base.
        #[arg(long, default_value = "cl100k_base", value_name = "NAME")]
        tokenizer: String,
        /// Keep a seeded subset of N chunks.
        #[arg(long, value_name = "N")]
        subset: Option<usize>,
        /// Seed of the subset.
        #[arg(long, default_value_t = 11037, value_name = "S")]
        seed: u64,
    },
    /// Per-step done/failed/pending and cost so far of the run in OUTPUT_DIR.
    Status {
        /// The run's output_dir.
        output_dir: PathBuf,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    atk_cli::logging::init(0);
    match cli.command {
        Command::Chunk {
            input_dir,
            chunk_size,
            tokenizer,
            subset,
            seed,
        } => chunk(input_dir, chunk_size, &tokenizer, subset, seed),
        Command::Status { output_dir, json } => status(&output_dir, json),
    }
}

fn chunk(
    input_dir: PathBuf,
    chunk_size: usize,
    tokenizer: &str,
    subset: Option<usize>,
    seed: u64,
) -> ExitCode {
    let tokenizer = match atk_tokens::Tokenizer::from_name(tokenizer) {
        Ok(t) => t,
        Err(e) => {
            atk_cli::out::always(&format!("error: {e}\n"));
            return ExitCode::from(2);
        }
    };
    if chunk_size == 0 {
        atk_cli::out::always("error: --chunk-size must be at least 1\n");
        return ExitCode::from(2);
    }
    let mut cfg = atk_chunk::ChunkConfig::new(chunk_size).with_tokenizer(tokenizer);
    if let Some(n) = subset {
        cfg = cfg.with_subset(atk_chunk::Subset::new(n, seed));
    }
    let set = match atk_chunk::read_dir(&input_dir, &cfg) {
        Ok(set) => set,
        Err(e) => {
            atk_cli::out::always(&format!("error: {e}\n"));
            return ExitCode::from(2);
        }
    };
    for m in set.report.messages() {
        atk_cli::out::always(&format!("{m}\n"));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for c in &set.chunks {
        if writeln!(out, "{}", c.to_json_line()).is_err() {
            // stdout closed (e.g. piped into `head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    atk_cli::out::always(&format!("{}\n", set.report.summary()));
    ExitCode::SUCCESS
}

fn status(output_dir: &std::path::Path, json: bool) -> ExitCode {
    match atk_cli::status::read_status(output_dir) {
        Ok(s) => {
            let text = if json {
                serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
            } else {
                s.render()
            };
            // A closed stdout (`atk status DIR | head -1`) ends the output quietly.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            atk_cli::out::always(&format!("error: {e}\n"));
            ExitCode::from(2)
        }
    }
}
