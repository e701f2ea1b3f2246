//! `cargo xtask bench scale`: the `example-pipeline` release binary on the in-process mock
//! engine over 10 k, 100 k and 1 M items, then the same command again over the finished work.
//! Prints wall time, peak RSS (GNU time), store size and rerun time per size, and the
//! ratios between sizes, so that growth with the corpus is visible.
//!
//! Each size runs once per store backend (`ATK_SCALE_BACKENDS=redb`, default `sled,redb`).
//!
//! Sizes: `ATK_SCALE_SIZES=10000,100000` (default `10000,100000,1000000`). Up to 100 k items
//! each item is its own one-chunk `.txt` file (the shape of the issue's measurement); above,
//! `.jsonl` files of 1000 one-chunk records each (a million files would measure the file
//! system more than atk).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{cargo, status, target_dir};

/// Items per `.jsonl` file above [`FILES_UP_TO`].
const RECORDS_PER_FILE: usize = 1000;
/// Largest size written as one file per item.
const FILES_UP_TO: usize = 100_000;

/// A size's working folder: removed afterwards, or kept for profiling.
enum Kept {
    /// Removed on drop.
    Temp(tempfile::TempDir),
    /// Left in place.
    Path(std::path::PathBuf),
}

impl Kept {
    /// The folder.
    fn path(&self) -> &Path {
        match self {
            Kept::Temp(dir) => dir.path(),
            Kept::Path(path) => path,
        }
    }
}

/// One size's figures.
struct Figures {
    backend: String,
    items: usize,
    shape: &'static str,
    wall: Duration,
    cpu_s: f64,
    rss_mb: f64,
    store_mb: f64,
    rerun: Duration,
    rerun_cpu_s: f64,
    rerun_rss_mb: f64,
    /// Whether the rerun left the dataset as it was (same inode and mtime).
    rerun_kept_dataset: bool,
}

/// Builds the example pipeline in release and runs every size.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let sizes: Vec<usize> = match std::env::var("ATK_SCALE_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .with_context(|| format!("ATK_SCALE_SIZES: {n:?}"))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    status(
        cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "example-pipeline"]),
    )?;
    let bin = target_dir(root)
        .join("release")
        .join(format!("example-pipeline{}", std::env::consts::EXE_SUFFIX));
    let backends: Vec<String> = std::env::var("ATK_SCALE_BACKENDS")
        .unwrap_or_else(|_| "sled,redb".to_owned())
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    for backend in &backends {
        scale(&bin, &sizes, backend)?;
    }
    Ok(())
}

/// Runs every size on one store backend and prints the figures and ratios.
fn scale(bin: &Path, sizes: &[usize], backend: &str) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for &n in sizes {
        let work = tempfile::Builder::new()
            .prefix("atk-bench-scale-")
            .tempdir()?;
        // `ATK_SCALE_KEEP=1` keeps each size's folder (inputs, config, output) for profiling.
        let work = if std::env::var_os("ATK_SCALE_KEEP").is_some() {
            let kept = work.keep();
            eprintln!("kept {}", kept.display());
            Kept::Path(kept)
        } else {
            Kept::Temp(work)
        };
        let shape = write_inputs(&work.path().join("inputs"), n)?;
        let config = work.path().join("scale.yaml");
        std::fs::write(
            &config,
            CONFIG.replace(
                "  chunk_size: 2000\n",
                &format!("  chunk_size: 2000\n  store_backend: {backend}\n"),
            ),
        )?;
        let first = crate::timed::run_pipeline(bin, &config, work.path())?;
        let store_mb = dir_size(&work.path().join("output/store")) as f64 / 1e6;
        let dataset_path = work.path().join("output/sharegpt_format.jsonl");
        let before = file_identity(&dataset_path);
        let rerun = crate::timed::run_pipeline(bin, &config, work.path())?;
        let rerun_kept_dataset = before.is_some() && file_identity(&dataset_path) == before;
        let dataset = std::fs::read_to_string(&dataset_path).unwrap_or_default();
        let lines = dataset.lines().count();
        let f = Figures {
            backend: backend.to_owned(),
            items: n,
            shape,
            wall: first.wall,
            cpu_s: first.cpu_s,
            rss_mb: first.rss_mb,
            store_mb,
            rerun: rerun.wall,
            rerun_cpu_s: rerun.cpu_s,
            rerun_rss_mb: rerun.rss_mb,
            rerun_kept_dataset,
        };
        println!(
            "scale {} {:>8} items ({}): first run {:>7.2} s, CPU {:.0} µs/item, peak RSS {:>6.0} MB, store {:>7.0} MB; rerun {:>6.2} s, CPU {:.2} s, peak RSS {:>6.0} MB, dataset {}",
            f.backend,
            f.items,
            f.shape,
            f.wall.as_secs_f64(),
            f.cpu_s * 1e6 / f.items as f64,
            f.rss_mb,
            f.store_mb,
            f.rerun.as_secs_f64(),
            f.rerun_cpu_s,
            f.rerun_rss_mb,
            if f.rerun_kept_dataset {
                "left as it was"
            } else {
                "REWRITTEN"
            }
        );
        if backend == "redb" && n == 100_000 {
            println!(
                "  goals at 100 k on redb: first run CPU {:.0} µs/item (≤ 250), peak RSS {:.0} MB (≤ 120); rerun {:.2} s (≤ 1), {:.0} MB (≤ 100)",
                f.cpu_s * 1e6 / f.items as f64,
                f.rss_mb,
                f.rerun.as_secs_f64(),
                f.rerun_rss_mb
            );
        }
        if lines != n {
            bail!("{n} items gave {lines} dataset lines");
        }
        all.push(f);
    }
    if let Some(base) = all.first() {
        println!(
            "{}: ratios to {} items (items ×, first-run time ×, peak RSS ×, store ×, rerun time ×):",
            base.backend, base.items
        );
        for f in &all[1..] {
            println!(
                "  {:>8}: {:>6.1}  {:>6.2}  {:>6.2}  {:>6.2}  {:>6.2}",
                f.items,
                f.items as f64 / base.items as f64,
                f.wall.as_secs_f64() / base.wall.as_secs_f64(),
                f.rss_mb / base.rss_mb,
                f.store_mb / base.store_mb,
                f.rerun.as_secs_f64() / base.rerun.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Inode and mtime of a file: equal before and after a run that left it as it was.
fn file_identity(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((ino, m.modified().ok()?))
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Writes `n` one-chunk items under `dir`; returns the shape used.
fn write_inputs(dir: &Path, n: usize) -> anyhow::Result<&'static str> {
    std::fs::create_dir_all(dir)?;
    if n <= FILES_UP_TO {
        for i in 0..n {
            // 100 folders of at most 1000 files: no directory holds 100 k entries.
            let sub = dir.join(format!("d{:02}", i % 100));
            if i < 100 {
                std::fs::create_dir_all(&sub)?;
            }
            std::fs::write(
                sub.join(format!("doc_{i:07}.txt")),
                crate::bench_pipeline::document(i),
            )?;
        }
        return Ok("one .txt file per item");
    }
    for f in 0..n.div_ceil(RECORDS_PER_FILE) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(
            dir.join(format!("part_{f:05}.jsonl")),
        )?);
        for i in f * RECORDS_PER_FILE..((f + 1) * RECORDS_PER_FILE).min(n) {
            writeln!(
                out,
                "{{\"text\": {:?}}}",
                crate::bench_pipeline::document(i).trim()
            )?;
        }
        out.flush()?;
    }
    Ok("jsonl, 1000 items per file")
}

/// Mock engines in process, no latency, no meta datagen; one chunk per item.
const CONFIG: &str = r#"# written by `cargo xtask bench scale`
api:
  small_model: mock-small
  small_api_key: ""
  small_mode: mock
  large_model: mock-large
  large_api_key: ""
  large_mode: mock
path:
  input_dir: ./inputs
  output_dir: ./output
system:
  concurrency_limit: 200
  chunk_size: 2000
  mock_reply: "Here is my poem.\n<poem>\n{lines}\n</poem>"
cost:
  cost_per_million_small_input: 0.15
  cost_per_million_small_output: 0.60
meta_datagen:
  do_meta_datagen: false
no_flatten:
  - example_heading
example_heading:
  poem_style: free verse
  audience: benchmark readers
example_heading_2:
  key3: "Write a short poem inspired by the following passage."
"#;
