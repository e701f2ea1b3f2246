//! Throughput and client CPU of the HTTP engine against `atk-testkit-server` in its own process.
//!
//! 3000 requests at concurrency 200, server latency 200 ms: prints wall time / ideal
//! (3000 × 0.2 s / 200 = 3 s) and client CPU (user + sys) per request. Goals: ≤ 1.05× and
//! ≤ 100 µs. Server binary: `$ATK_TESTKIT_SERVER`, else built with `$CARGO build --release`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atk_engine::{EngineConfig, Message, Request, build_engine};

const REQUESTS: usize = 3000;
const CONCURRENCY: usize = 200;
const LATENCY_MS: u64 = 200;

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ATK_TESTKIT_SERVER") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "atk-testkit",
            "--bin",
            "atk-testkit-server",
        ])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building atk-testkit-server failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release").join("atk-testkit-server")
}

/// User + system CPU of this process, from /proc/self/stat (fields 14 and 15, in clock ticks;
/// USER_HZ is 100 on Linux). No libc call: the workspace forbids `unsafe`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn main() {
    let bin = server_binary();
    let mut server = Command::new(&bin)
        .args(["--port", "0", "--latency-ms", &LATENCY_MS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let base_url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("`listening on URL`")
        .to_string();

    // ATK_BENCH_RUNTIME=current_thread measures the engine on a single-threaded runtime.
    let current_thread = std::env::var("ATK_BENCH_RUNTIME").is_ok_and(|v| v == "current_thread");
    let mut builder = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder.enable_all().build().expect("tokio runtime");
    let (wall, cpu, stats) = rt.block_on(async {
        let cfg = EngineConfig::default()
            .with_label("bench")
            .with_base_url(base_url.clone())
            .with_model("m")
            .with_concurrency_limit(CONCURRENCY)
            // ATK_BENCH_STREAM=0 asks for one JSON body instead of SSE.
            .with_stream(std::env::var("ATK_BENCH_STREAM").map_or(true, |v| v != "0"));
        let engine = build_engine(cfg, vec![]).expect("engine");
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let req = Request::chat(vec![
                        Message::new("system", "You are a poet."),
                        Message::new(
                            "user",
                            format!("Write a short poem about request number {i}."),
                        ),
                    ])
                    .with_param("temperature", 0.7)
                    .with_param("max_tokens", 200);
                    engine.call(req).await
                })
            })
            .collect();
        let mut failed = 0;
        let mut attempt_ms = Vec::with_capacity(REQUESTS);
        let mut head_ms = Vec::with_capacity(REQUESTS);
        for t in tasks {
            match t.await.expect("task") {
                Ok(reply) => {
                    attempt_ms.push((reply.timing.total - reply.timing.queued).as_secs_f64() * 1e3);
                    head_ms.push(reply.timing.first_byte.as_secs_f64() * 1e3);
                }
                Err(_) => failed += 1,
            }
        }
        let pct = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            v.get(((v.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let spread = |v: &mut Vec<f64>| {
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                pct(v, 0.5),
                pct(v, 0.9),
                pct(v, 1.0)
            )
        };
        println!("  slot held per request: {}", spread(&mut attempt_ms));
        println!("  send to response head: {}", spread(&mut head_ms));
        let wall = t0.elapsed();
        let cpu = process_cpu() - cpu0;
        assert_eq!(failed, 0, "failed requests");
        let root = base_url.trim_end_matches("/v1");
        let stats: serde_json::Value = reqwest::get(format!("{root}/stats"))
            .await
            .expect("GET /stats")
            .json()
            .await
            .expect("stats JSON");
        (wall, cpu, stats)
    });
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();

    let ideal =
        Duration::from_secs_f64(REQUESTS as f64 * LATENCY_MS as f64 / 1000.0 / CONCURRENCY as f64);
    let ratio = wall.as_secs_f64() / ideal.as_secs_f64();
    let cpu_us = cpu.as_secs_f64() * 1e6 / REQUESTS as f64;
    let runtime = if current_thread {
        "current_thread"
    } else {
        "multi_thread"
    };
    println!(
        "engine bench: {REQUESTS} requests, concurrency {CONCURRENCY}, server latency {LATENCY_MS} ms (separate process), {runtime} runtime"
    );
    println!(
        "  server: requests {}, max in flight {}",
        stats["requests"], stats["max_in_flight"]
    );
    println!(
        "  wall {:.3} s, ideal {:.3} s, ratio {ratio:.3} (goal <= 1.05)",
        wall.as_secs_f64(),
        ideal.as_secs_f64()
    );
    println!(
        "  client CPU {:.3} s, {cpu_us:.1} us per request (goal <= 100)",
        cpu.as_secs_f64()
    );
}
