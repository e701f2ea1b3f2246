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
//! - floor: where one request's CPU goes. The same 3000 requests at concurrency 200 (the
//!   example pipeline's prompt shape, its reply template) sent three ways in one process,
//!   interleaved over rounds: a bare reqwest client reading the streamed body to its end,
//!   atk's HTTP transport alone (parsing, checks, usage), and the whole stack a pipeline run
//!   builds (observers with a cost counter, retry, outage guard, limit, cancel, the call
//!   tagged with its step's name). Prints the median CPU per request of each and the
//!   differences, so each layer's cost is known.
//!
//! `ATK_BENCH_ENGINE=throughput|rate|faults|floor` runs one (`floor` is not in the default
//! set: it takes ~30 s). Server binary: `$ATK_TESTKIT_SERVER`,
//! else built with `$CARGO build --release`. `ATK_BENCH_RATE_REPEAT=N` runs only the
//! per-minute-headers rate scenario, N times; `ATK_BENCH_LOG=atk_engine=debug` prints the
//! engine's logs (the pacer's decisions) to stderr.
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
    if std::env::var("ATK_BENCH_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("ATK_BENCH_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
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
    if which == "floor" {
        floor(&bin);
    }
}

/// One way of sending a request in the floor scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    /// hyper's HTTP/1 connection polled by the task that sends the request (no connection
    /// task, no channel between the two), kept in a pool between requests.
    HyperInline,
    Reqwest,
    Transport,
    Stack,
}

/// The example pipeline's prompt shape: a system prompt with the instructions and a passage of
/// about 60 words in the user message.
fn floor_request(i: usize) -> Request {
    let system = "You are a poet who reads closely. You are given a passage of text and you write one short, original poem that it inspires: borrow its images, its mood or a single striking detail, but do not summarise it. Write in free verse, for benchmark readers.\n\nYou may think before writing, but put the finished poem, and only the poem, between <poem> and </poem> tags at the very end of your answer. The poem has between 4 and 16 lines.\n";
    let mut passage = format!("Passage (from doc_{i:05}.txt):\n\"\"\"\nDocument {i}. ");
    for n in 0..60 {
        passage.push_str(["harbour", "lantern", "orchard", "granite", "meadow"][(i + n * 7) % 5]);
        passage.push(' ');
    }
    passage.push_str("\n\"\"\"\n");
    Request::chat(vec![
        Message::new("system", system),
        Message::new("user", passage),
    ])
    .with_param("temperature", 0.7)
    .with_param("max_tokens", 400)
}

/// Sends `REQUESTS` requests one `way` at `CONCURRENCY`; returns this process's CPU per request.
async fn floor_round(way: Way, base_url: &str) -> f64 {
    let cancel = tokio_util::sync::CancellationToken::new();
    let cfg = EngineConfig::default()
        .with_label("floor")
        .with_base_url(base_url.to_string())
        .with_model("m");
    let engine: std::sync::Arc<dyn atk_engine::Engine> = match way {
        Way::Reqwest | Way::HyperInline => atk_engine::EngineBuilder::transport(&cfg)
            .build()
            .expect("engine"),
        Way::Transport => atk_engine::EngineBuilder::transport(&cfg)
            .build()
            .expect("engine"),
        Way::Stack => {
            let cost = atk_engine::CostCounter::new("floor", atk_engine::Pricing::new(0.15, 0.6));
            let bound = atk_engine::ConcurrencyLimit::new(CONCURRENCY);
            atk_engine::EngineBuilder::transport(&cfg)
                .observe([cost as std::sync::Arc<dyn atk_engine::Observer>])
                .retry(cfg.retry)
                .outage(cfg.outage_limit)
                .limit(atk_engine::LimitConfig::new(bound))
                .cancel(cancel.clone())
                .build()
                .expect("engine")
        }
    };
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let url = reqwest::Url::parse(&format!("{base_url}/chat/completions")).expect("url");
    // The bare client and the transport alone are bounded here; the stack bounds itself.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let pool: std::sync::Arc<std::sync::Mutex<Vec<Inline>>> = Default::default();
    let authority = url.authority().to_string();
    let cpu0 = process_cpu();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (engine, client, url, gate) =
                (engine.clone(), client.clone(), url.clone(), gate.clone());
            let (pool, authority) = (pool.clone(), authority.clone());
            tokio::spawn(async move {
                let request = floor_request(i);
                match way {
                    Way::HyperInline => {
                        let _slot = gate.acquire().await.expect("open");
                        let body = bare_body(&request);
                        hyper_inline(&pool, &authority, url.path(), body).await;
                    }
                    Way::Reqwest => {
                        let _slot = gate.acquire().await.expect("open");
                        let atk_engine::Prompt::Chat(messages) = &request.prompt else {
                            unreachable!()
                        };
                        let _ = messages;
                        let body = bare_body(&request);
                        let response = client
                            .post(url)
                            .header("content-type", "application/json")
                            .header("accept", "text/event-stream")
                            .body(body)
                            .send()
                            .await
                            .expect("send");
                        assert!(response.status().is_success());
                        let mut body = response.bytes_stream();
                        let mut bytes = 0;
                        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                            bytes += chunk.expect("body").len();
                        }
                        assert!(bytes > 0);
                    }
                    Way::Transport => {
                        let _slot = gate.acquire().await.expect("open");
                        let reply = engine.call(request).await.expect("reply");
                        assert!(reply.finish_reason.is_some());
                    }
                    Way::Stack => {
                        let reply = atk_engine::tagged("write_poem", engine.call(request))
                            .await
                            .expect("reply");
                        assert!(reply.finish_reason.is_some());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let cpu = process_cpu() - cpu0;
    cpu.as_secs_f64() * 1e6 / REQUESTS as f64
}

/// The request body the bare clients send (what atk's transport sends for the same request).
fn bare_body(request: &Request) -> Vec<u8> {
    let atk_engine::Prompt::Chat(messages) = &request.prompt else {
        unreachable!()
    };
    serde_json::to_vec(&serde_json::json!({
        "model": "m", "messages": messages, "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.7, "max_tokens": 400,
    }))
    .expect("body")
}

type InlineSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;
type Inline = (
    InlineSender,
    hyper::client::conn::http1::Connection<
        hyper_util::rt::TokioIo<tokio::net::TcpStream>,
        http_body_util::Full<bytes::Bytes>,
    >,
);

/// One request on a pooled HTTP/1 connection whose state machine this task polls itself.
async fn hyper_inline(
    pool: &std::sync::Mutex<Vec<Inline>>,
    authority: &str,
    path: &str,
    body: Vec<u8>,
) {
    use http_body_util::BodyExt;
    let pooled = pool.lock().expect("pool").pop();
    let (mut sender, mut conn) = match pooled {
        Some(c) => c,
        None => {
            let tcp = tokio::net::TcpStream::connect(authority)
                .await
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("handshake")
        }
    };
    let request = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = {
        let send = sender.send_request(request);
        tokio::pin!(send);
        tokio::select! {
            biased;
            r = &mut send => r.expect("response"),
            r = &mut conn => panic!("connection ended early: {r:?}"),
        }
    };
    assert!(response.status().is_success());
    let mut body = response.into_body();
    let mut bytes = 0;
    loop {
        let frame = tokio::select! {
            biased;
            f = body.frame() => f,
            r = &mut conn => panic!("connection ended mid-body: {r:?}"),
        };
        match frame {
            Some(f) => {
                if let Some(data) = f.expect("frame").data_ref() {
                    bytes += data.len();
                }
            }
            None => break,
        }
    }
    assert!(bytes > 0);
    // Let the connection see the end of the exchange before it is parked.
    std::future::poll_fn(|cx| {
        let _ = std::future::Future::poll(std::pin::Pin::new(&mut conn), cx);
        std::task::Poll::Ready(())
    })
    .await;
    pool.lock().expect("pool").push((sender, conn));
}

fn floor(bin: &PathBuf) {
    let rounds: usize = std::env::var("ATK_BENCH_FLOOR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (server, base_url) = start_server(
        bin,
        &[
            "--latency-ms",
            &LATENCY_MS.to_string(),
            "--reply-template",
            "<poem>\n{lines}\n</poem>",
        ],
    );
    let rt = runtime();
    let ways = [Way::Reqwest, Way::Transport, Way::Stack, Way::HyperInline];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (k, way) in ways.iter().enumerate() {
            cpu[k].push(rt.block_on(floor_round(*way, &base_url)));
        }
    }
    stop_server(server);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = cpu.iter_mut().map(median).collect();
    println!(
        "engine bench, floor: {REQUESTS} requests, concurrency {CONCURRENCY}, {LATENCY_MS} ms, streamed; {rounds} interleaved rounds, median client CPU per request (load {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    for (k, way) in ways.iter().enumerate() {
        let runs: Vec<String> = cpu[k].iter().map(|c| format!("{c:.0}")).collect();
        println!(
            "  {:<48} {:6.1} us  ({:.2} x bare reqwest; runs {})",
            match way {
                Way::Reqwest => "bare reqwest (send, read the body to its end)",
                Way::Transport => "atk HTTP transport alone",
                Way::Stack => "whole stack (observe, retry, outage, limit, tag)",
                Way::HyperInline => "hyper HTTP/1, connection polled by the caller",
            },
            m[k],
            m[k] / m[0],
            runs.join(", ")
        );
    }
    println!(
        "  transport over reqwest {:+.1} us, layers over the transport {:+.1} us",
        m[1] - m[0],
        m[2] - m[1]
    );
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
    let repeat: usize = std::env::var("ATK_BENCH_RATE_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let scenarios: Vec<(&str, Option<&str>)> = if repeat > 0 {
        vec![("headers state 6000/min", Some("6000")); repeat]
    } else {
        vec![
            ("headers describe the bucket", None),
            ("headers state 6000/min", Some("6000")),
        ]
    };
    for (name, extra) in scenarios {
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
