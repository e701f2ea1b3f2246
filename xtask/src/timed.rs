//! One pipeline run under GNU time (`/usr/bin/time`), for the benches that report the
//! pipeline process's own wall time, CPU and peak resident set.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What one run cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Wall time of the whole process.
    pub(crate) wall: Duration,
    /// User + system CPU seconds.
    pub(crate) cpu_s: f64,
    /// Peak resident set, MB.
    pub(crate) rss_mb: f64,
}

/// Runs `bin --progress off --config CONFIG` in `dir`, its output appended to
/// `dir/pipeline.log`; an exit other than 0 is an error carrying that log.
pub(crate) fn run_pipeline(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<Usage> {
    let log_path = dir.join("pipeline.log");
    let usage_path = dir.join("usage.txt");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let started = Instant::now();
    let exit = Command::new("/usr/bin/time")
        .args([
            "-f".as_ref(),
            "%U %S %M".as_ref(),
            "-o".as_ref(),
            usage_path.as_os_str(),
            bin.as_os_str(),
            "--progress".as_ref(),
            "off".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ])
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| {
            format!(
                "running {} under /usr/bin/time (GNU time is needed for CPU and RSS)",
                bin.display()
            )
        })?;
    let wall = started.elapsed();
    if !exit.success() {
        bail!(
            "{} exited with {exit}:\n{}",
            bin.display(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    let usage = std::fs::read_to_string(&usage_path)?;
    let fields: Vec<f64> = usage
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, system, rss_kb] = fields[..] else {
        bail!("GNU time wrote {usage:?}");
    };
    Ok(Usage {
        wall,
        cpu_s: user + system,
        rss_mb: rss_kb / 1024.0,
    })
}
