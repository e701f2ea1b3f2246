//! The whole-pipeline benchmark: the `example-pipeline` release binary over 3000 one-chunk
//! documents at concurrency 200, against `atk-testkit-server` in its own process answering
//! after 200 ms. Ideal time: 3000 × 0.2 s ÷ 200 = 3 s; prints the whole-process wall time
//! (start-up, chunking, store, dataset writing included) divided by that.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{cargo, status, target_dir};

const DOCS: usize = 3000;
const CONCURRENCY: usize = 200;
const LATENCY_MS: u64 = 200;

/// Builds the example pipeline in release and runs the benchmark once.
pub(crate) fn run(root: &Path, server_bin: &Path) -> anyhow::Result<()> {
    status(
        cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "example-pipeline"]),
    )?;
    let pipeline_bin = target_dir(root)
        .join("release")
        .join(format!("example-pipeline{}", std::env::consts::EXE_SUFFIX));

    let work = tempfile::tempdir()?;
    let inputs = work.path().join("inputs");
    std::fs::create_dir_all(&inputs)?;
    for i in 0..DOCS {
        std::fs::write(inputs.join(format!("doc_{i:04}.txt")), document(i))?;
    }

    let mut server = Command::new(server_bin)
        .args([
            "--port",
            "0",
            "--latency-ms",
            &LATENCY_MS.to_string(),
            "--reply-template",
            REPLY_TEMPLATE,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", server_bin.display()))?;
    let base_url = {
        let mut line = String::new();
        BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
        line.trim()
            .strip_prefix("listening on ")
            .map(str::to_owned)
            .with_context(|| format!("unexpected server banner {line:?}"))?
    };

    let config = work.path().join("bench.yaml");
    std::fs::write(
        &config,
        config_yaml(&base_url, &inputs, &work.path().join("output")),
    )?;
    let run = || crate::timed::run_pipeline(&pipeline_bin, &config, work.path());
    let output = work.path().join("output");
    let load = load_average();
    // Cold: a fresh output dir (no chunk cache, no store).
    let cold = run();
    let stats = fetch_stats(&base_url);
    let lines_of = || {
        std::fs::read_to_string(output.join("sharegpt_format.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let cold_lines = lines_of();
    // The same command again: everything is stored, so this is the fixed cost of a run
    // (start-up, reading the chunk cache, opening the store, skipping every item).
    let rerun = cold.as_ref().ok().map(|_| run());
    let stats_rerun = fetch_stats(&base_url);
    // Warm: the store and datasets removed, the chunk cache kept: every request again.
    let warm = rerun.as_ref().and_then(|r| r.as_ref().ok()).map(|_| {
        for entry in std::fs::read_dir(&output)?.filter_map(Result::ok) {
            if entry.file_name() == "chunk_cache" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        run()
    });
    let stats_warm = fetch_stats(&base_url);
    drop(server.stdin.take()); // the server exits when its stdin closes
    let _ = server.wait();
    let cold = cold?;
    let rerun = rerun.transpose()?.unwrap_or_default();
    let warm = warm.transpose()?.unwrap_or_default();
    let warm_lines = lines_of();

    let ideal = Duration::from_millis(DOCS as u64 * LATENCY_MS / CONCURRENCY as u64);
    let stat = |s: &anyhow::Result<String>, key: &str| {
        s.as_ref()
            .ok()
            .and_then(|s| json_number(s, key))
            .unwrap_or(0)
    };
    println!(
        "pipeline: {DOCS} one-chunk documents, concurrency {CONCURRENCY}, server latency {LATENCY_MS} ms (own process)"
    );
    println!(
        "  load average at start:  {}",
        load.unwrap_or_else(|| "n/a".to_owned())
    );
    println!("  dataset lines:          {cold_lines} cold, {warm_lines} warm");
    println!(
        "  server:                 {} requests, {} completed, max in flight {}",
        stat(&stats, "requests"),
        stat(&stats, "completed"),
        stat(&stats, "max_in_flight")
    );
    let show = |name: &str, u: &crate::timed::Usage| {
        println!(
            "  {name:<22}  {:.2} s = {:.3}x ideal ({:.1} s), CPU {:.2} s = {:.0} µs per item, peak RSS {:.0} MB",
            u.wall.as_secs_f64(),
            u.wall.as_secs_f64() / ideal.as_secs_f64(),
            ideal.as_secs_f64(),
            u.cpu_s,
            u.cpu_s * 1e6 / DOCS as f64,
            u.rss_mb
        );
    };
    show("first run (cold):", &cold);
    show("warm chunk cache:", &warm);
    println!(
        "  rerun (all stored):     {:.2} s, CPU {:.2} s, {} requests sent",
        rerun.wall.as_secs_f64(),
        rerun.cpu_s,
        stat(&stats_rerun, "requests").saturating_sub(stat(&stats, "requests"))
    );
    println!(
        "  whole-process time / ideal ({:.1} s): {:.3}x cold, {:.3}x warm (goal ≤ 1.15x); CPU per item {:.0} µs cold (goal ≤ 250)",
        ideal.as_secs_f64(),
        cold.wall.as_secs_f64() / ideal.as_secs_f64(),
        warm.wall.as_secs_f64() / ideal.as_secs_f64(),
        cold.cpu_s * 1e6 / DOCS as f64
    );
    let warm_requests =
        stat(&stats_warm, "requests").saturating_sub(stat(&stats_rerun, "requests"));
    if cold_lines != DOCS || warm_lines != DOCS || warm_requests != DOCS as u64 {
        bail!(
            "expected {DOCS} dataset lines and {DOCS} warm requests, got {cold_lines} / {warm_lines} lines, {warm_requests} requests"
        );
    }
    Ok(())
}

/// The number after `"key":` in a flat JSON object (enough for the server's stats).
fn json_number(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The 1-minute load average (Linux), to read the figure against.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(format!(
        "{} (on {} cores)",
        text.split_whitespace().next()?,
        std::thread::available_parallelism().ok()?
    ))
}

/// What the test server "writes": a poem the example's validator accepts.
const REPLY_TEMPLATE: &str = "<poem>\n{lines}\n</poem>";

/// Document `i`: one paragraph, distinct from every other, well under one chunk.
pub(crate) fn document(i: usize) -> String {
    const WORDS: &[&str] = &[
        "harbour", "lantern", "orchard", "granite", "meadow", "compass", "ember", "willow", "tide",
        "quarry", "sparrow", "cellar", "thistle", "beacon", "furrow", "ledger", "cinder", "marsh",
        "bellows", "loom",
    ];
    let mut text = format!("Document {i}. ");
    let mut state = i as u64 * 2_654_435_761 + 1;
    for n in 0..60 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
        text.push_str(if n % 12 == 11 { ". " } else { " " });
    }
    text.push('\n');
    text
}

/// `GET /stats` of the server, by hand (one request; not worth an HTTP client dependency).
fn fetch_stats(base_url: &str) -> anyhow::Result<String> {
    let host = base_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /stats HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// The benchmark config: the example's real-API shape, both engines pointed at the test
/// server (which takes any key), concurrency 200, one chunk per document.
fn config_yaml(base_url: &str, inputs: &Path, output: &Path) -> String {
    format!(
        r#"# written by `cargo xtask bench pipeline`
api:
  small_model: bench-small
  small_api_key: bench-key
  small_base_url: {base_url}
  small_mode: api
  large_model: bench-large
  large_api_key: bench-key
  large_base_url: {base_url}
  large_mode: api
path:
  input_dir: "{inputs}"
  output_dir: "{output}"
system:
  concurrency_limit: {CONCURRENCY}
  chunk_size: 2000
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
"#,
        inputs = inputs.display(),
        output = output.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_from_the_server_stats() {
        let stats =
            r#"{"requests":3000,"completed":2999,"max_in_flight":200,"per_prompt":{"ab":1}}"#;
        assert_eq!(json_number(stats, "requests"), Some(3000));
        assert_eq!(json_number(stats, "max_in_flight"), Some(200));
        assert_eq!(json_number(stats, "missing"), None);
    }

    #[test]
    fn documents_are_distinct_and_short() {
        let (a, b) = (document(1), document(2));
        assert_ne!(a, b);
        assert!(a.split_whitespace().count() < 100, "one chunk each");
    }
}
