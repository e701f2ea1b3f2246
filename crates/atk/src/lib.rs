//! The `atk` tool: chunk a folder, show a run's status, merge shards, free what a run no longer
//! needs, export a run's datasets for publishing.
#![doc = include_str!("../README.md")]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod export;
mod gc;
mod merge;

/// Tools around atk pipelines: see how a folder is chunked (chunk), how far a run has got
/// (status), merge the shards of a run (merge), free what a run no longer needs (gc), export a
/// run's datasets for publishing (export).
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
    /// Frees what OUTPUT_DIR no longer needs: results and failures of retired items (their
    /// input is gone) and chunk-cache packs no current input uses. Says how much was freed.
    Gc {
        /// The run's output_dir (no run may be using it).
        output_dir: PathBuf,
    },
    /// Copies the datasets, meta datasets and dataset card of the last completed run in
    /// OUTPUT_DIR into DEST (a new or empty folder) and nothing else, ready for
    /// `hf upload REPO DEST --repo-type dataset`.
    Export {
        /// The run's output_dir.
        output_dir: PathBuf,
        /// The folder to create.
        dest: PathBuf,
        /// Hold out this fraction (0..1) of the source documents as a `test` split; every row of
        /// one document lands in the same split.
        #[arg(long, value_name = "F")]
        test_fraction: Option<f64>,
        /// Seed of the split's hash.
        #[arg(long, default_value_t = 0, value_name = "S")]
        seed: u64,
    },
    /// Merges the output dirs of a run split with `--shard I/N` into OUT: items, results,
    /// failures and cost totals. Then run the pipeline with output_dir OUT: it sends nothing
    /// and writes the full datasets.
    Merge {
        /// The shards' output dirs.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// The output dir to create.
        #[arg(long, value_name = "OUT")]
        into: PathBuf,
        /// Database of the new store, `sled` or `redb` (default: the first shard's). Merging
        /// one output dir this way moves a store to the other database.
        #[arg(long, value_name = "NAME")]
        store_backend: Option<atk_state::Backend>,
    },
}

/// Runs the `atk` tool with the process's arguments; returns the exit code (0 done, 2 bad
/// input, 1 failure).
pub fn main() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// [`main`] with explicit arguments (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    atk_cli::term::init_logging(0);
    match cli.command {
        Command::Chunk {
            input_dir,
            chunk_size,
            tokenizer,
            subset,
            seed,
        } => chunk(input_dir, chunk_size, &tokenizer, subset, seed),
        Command::Status { output_dir, json } => status(&output_dir, json),
        Command::Merge {
            dirs,
            into,
            store_backend,
        } => merge(&dirs, &into, store_backend),
        Command::Gc { output_dir } => gc(&output_dir),
        Command::Export {
            output_dir,
            dest,
            test_fraction,
            seed,
        } => match export::export(&output_dir, &dest, test_fraction, seed) {
            Ok(report) => {
                atk_cli::term::always(&report.render(&dest));
                ExitCode::SUCCESS
            }
            Err(e) => {
                atk_cli::term::always(&format!(
                    "error: {e}
"
                ));
                ExitCode::from(e.exit_code())
            }
        },
    }
}

fn gc(output_dir: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            atk_cli::term::always(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(crate::gc::gc(output_dir)) {
        Ok(report) => {
            atk_cli::term::always(&format!("{}\n", report.render()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            atk_cli::term::always(&format!("error: {e}\n"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn merge(
    dirs: &[PathBuf],
    into: &std::path::Path,
    backend: Option<atk_state::Backend>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            atk_cli::term::always(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(crate::merge::merge(dirs, into, backend)) {
        Ok(r) => {
            atk_cli::term::always(&format!(
                "merged {} output dirs into {}: {} items, {} results, {} failures; ${:.4} spent in all\n",
                r.shards,
                into.display(),
                r.items,
                r.results,
                r.failures,
                r.cost_usd
            ));
            if !r.missing_shards.is_empty() {
                let list: Vec<String> = r.missing_shards.iter().map(u32::to_string).collect();
                atk_cli::term::always(&format!(
                    "warning: shards {} were not given; the first run on {} will work on their items\n",
                    list.join(", "),
                    into.display()
                ));
            }
            atk_cli::term::always(&format!(
                "next: run the pipeline with output_dir {} (it sends nothing for merged results)\n",
                into.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            atk_cli::term::always(&format!("error: {e}\n"));
            ExitCode::from(e.exit_code())
        }
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
            atk_cli::term::always(&format!("error: {e}\n"));
            return ExitCode::from(2);
        }
    };
    if chunk_size == 0 {
        atk_cli::term::always("error: --chunk-size must be at least 1\n");
        return ExitCode::from(2);
    }
    let mut cfg = atk_chunk::ChunkConfig::new(chunk_size).with_tokenizer(tokenizer);
    if let Some(n) = subset {
        cfg = cfg.with_subset(atk_chunk::Subset::new(n, seed));
    }
    let set = match atk_chunk::read_dir(&input_dir, &cfg) {
        Ok(set) => set,
        Err(e) => {
            atk_cli::term::always(&format!("error: {e}\n"));
            return ExitCode::from(2);
        }
    };
    for m in set.report.messages() {
        atk_cli::term::always(&format!("{m}\n"));
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
    atk_cli::term::always(&format!("{}\n", set.report.summary()));
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
            atk_cli::term::always(&format!("error: {e}\n"));
            ExitCode::from(2)
        }
    }
}
