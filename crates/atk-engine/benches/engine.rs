//! The HTTP engine against `atk-testkit-server` in its own process, three scenarios:
//!
//! - throughput: 3000 requests at concurrency 200, server latency 200 ms: wall time / ideal
//!   (3000 × 0.2 s / 200 = 3 s) and client CPU (user + sys) per request. Goals: ≤ 1.05× and
//!   ≤ 100 µs.
//! - rate limit: 1500 requests at concurrency 200 against a real token bucket of 100 requests
//!   per second (bucket 20) with OpenAI-style 429s, once with headers describing the bucket and
//!   once with headers stating 6000/min (a quantized limit): the share of requests refused
//!   with 429 and wall time ÷ the limit's. Goals: ≤ 5 % and ≤ 1.10 in both.
//! - fault mix: 300 requests at concurrency 24, 40 ms, with 10 % 429 (Retry-After 1,
//!   retry-after-ms 300), 5 % 500, 3 % resets, 2 % malformed SSE, 5 % garbage: wall time, and
//!   ÷ the seed's 3.9 s (goal < 1), every reply checked whole.
//!
//! `ATK_BENCH_ENGINE=throughput|rate|faults` runs one. Server binary: `$ATK_TESTKIT_SERVER`,
//! else built with `$CARGO build --release`.
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

/// Starts the server with these extra flags; returns it and its base URL.
fn start_server(bin: &PathBuf, args: &[&str]) -> (std::process::Child, String) {
    let mut server = Command::new(bin)
        .args(["--port", "0"])
        .args(args)
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
    (server, base_url)
}

fn stop_server(mut server: std::process::Child) {
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    let bin = server_binary();
    let which = std::env::var("ATK_BENCH_ENGINE").unwrap_or_default();
    let runs = |name: &str| which.is_empty() || which == "all" || which == name;
    if runs("throughput") {
        throughput(&bin);
    }
    if runs("rate") {
        rate_limit(&bin);
    }
    if runs("faults") {
        fault_mix(&bin);
    }
}

/// Sends `n` chat requests at `concurrency`; returns wall time and the replies.
async fn send_all(
    base_url: &str,
    n: usize,
    concurrency: usize,
) -> (
    Duration,
    Vec<(usize, Result<atk_engine::Reply, atk_engine::Error>)>,
) {
    let cfg = EngineConfig::default()
        .with_label("bench")
        .with_base_url(base_url.to_string())
        .with_model("m")
        .with_concurrency_limit(concurrency);
    let engine = build_engine(cfg, vec![]).expect("engine");
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { (i, engine.call(bench_request(i)).await) })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    (t0.elapsed(), out)
}

fn bench_request(i: usize) -> Request {
    Request::chat(vec![
        Message::new("system", "You are a poet."),
        Message::new(
            "user",
            format!("Write a short poem about request number {i}."),
        ),
    ])
    .with_param("max_tokens", 200)
}

async fn server_stats(base_url: &str) -> serde_json::Value {
    let root = base_url.trim_end_matches("/v1");
    reqwest::get(format!("{root}/stats"))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("stats JSON")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A real 100 req/s token bucket (bucket 20), twice: with headers describing the bucket, and
/// with headers stating 6000 per minute and what is left of it over the last minute (as
/// OpenAI's do, while the limit is enforced per second).
fn rate_limit(bin: &PathBuf) {
    const N: usize = 1500;
    const CONCURRENCY: usize = 200;
    const LIMIT: f64 = 100.0;
    const BUCKET: f64 = 20.0;
    // The bucket starts full: the limit's own time for N requests is (N - 20) / 100 s.
    let limit_time = (N as f64 - BUCKET) / LIMIT;
    println!(
        "engine bench, rate limit: {N} requests, concurrency {CONCURRENCY}, 40 ms, a token bucket of 100 requests per second (bucket 20), OpenAI-style 429s; the limit's own time {limit_time:.2} s"
    );
    for (name, extra) in [
        ("headers describe the bucket", None),
        ("headers state 6000/min", Some("6000")),
    ] {
        let mut args = vec![
            "--latency-ms",
            "40",
            "--rate-limit-requests",
            "20",
            "--rate-limit-period-ms",
            "200",
        ];
        if let Some(per_minute) = extra {
            args.extend(["--rate-limit-stated-per-minute", per_minute]);
        }
        let (server, base_url) = start_server(bin, &args);
        let (wall, replies, stats) = runtime().block_on(async {
            let (wall, replies) = send_all(&base_url, N, CONCURRENCY).await;
            (wall, replies, server_stats(&base_url).await)
        });
        stop_server(server);
        let failed = replies.iter().filter(|(_, r)| r.is_err()).count();
        let requests = stats["requests"].as_u64().unwrap_or(0) as f64;
        let refused = stats["statuses"]["429"].as_u64().unwrap_or(0) as f64;
        println!(
            "  {name}: refused {refused} of {requests} requests ({:.2} %, goal <= 5 %), wall {:.2} s = {:.3} x the limit's time (goal <= 1.10), failed calls {failed}",
            100.0 * refused / requests.max(1.0),
            wall.as_secs_f64(),
            wall.as_secs_f64() / limit_time
        );
    }
}

/// The random fault mix of issue 12, as measured for the seed (3.9 s) and Curator (7-8 s).
fn fault_mix(bin: &PathBuf) {
    const N: usize = 300;
    const SEED_TIME: f64 = 3.9;
    let template = "Reply {hash}: {words}";
    let mut times = Vec::new();
    for seed in 0..5 {
        let seed = seed.to_string();
        let (server, base_url) = start_server(
            bin,
            &[
                "--latency-ms",
                "40",
                "--seed",
                &seed,
                "--reply-template",
                template,
                "--fault-rate-limit",
                "0.10",
                "--retry-after-secs",
                "0.3",
                "--retry-after-ms",
                "--fault-server-error",
                "0.05",
                "--fault-reset",
                "0.03",
                "--fault-malformed",
                "0.02",
                "--fault-garbage",
                "0.05",
            ],
        );
        let (wall, replies) = runtime().block_on(send_all(&base_url, N, 24));
        stop_server(server);
        let mut invalid = 0;
        for (i, reply) in &replies {
            let req = bench_request(*i);
            let atk_engine::Prompt::Chat(messages) = &req.prompt else {
                unreachable!()
            };
            let body = serde_json::json!({ "messages": messages });
            let expected = atk_testkit::render_template(template, &body);
            if !reply.as_ref().is_ok_and(|r| r.text == expected) {
                invalid += 1;
            }
        }
        assert_eq!(invalid, 0, "a reply was lost or not whole");
        times.push(wall.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "engine bench, fault mix: {N} requests, concurrency 24, 40 ms; 10 % 429 (Retry-After 1, retry-after-ms 300), 5 % 500, 3 % resets, 2 % malformed SSE, 5 % garbage; 5 seeds"
    );
    println!(
        "  wall min {:.2} s, median {:.2} s, max {:.2} s; median / seed's 3.9 s = {:.2} (goal < 1); every reply whole",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times[times.len() / 2] / SEED_TIME
    );
}

fn throughput(bin: &PathBuf) {
    let (mut server, base_url) = start_server(bin, &["--latency-ms", &LATENCY_MS.to_string()]);

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
