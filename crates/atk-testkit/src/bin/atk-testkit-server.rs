//! The test server in its own process, so benchmarks measure the client's CPU alone.

use std::process::ExitCode;
use std::time::Duration;

use atk_testkit::{Fault, Faults, RateLimit, ReplyMode, ServerConfig, TestServer};
use clap::Parser;

/// An OpenAI-compatible test server on 127.0.0.1 with latency and fault injection.
#[derive(Parser, Debug)]
#[command(name = "atk-testkit-server", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Wait before the first byte of each reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Require this API key (Authorization: Bearer KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// Serve one request at a time (llama.cpp style).
    #[arg(long)]
    serial: bool,
    /// Do not send the final usage chunk in streams (llama.cpp style).
    #[arg(long)]
    no_usage: bool,
    /// Prompt words + max_tokens above this get 400 context_length_exceeded.
    #[arg(long)]
    context_limit: Option<u64>,
    /// Content deltas per streamed reply.
    #[arg(long, default_value_t = 4)]
    stream_chunks: usize,
    /// Seed of the fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reply template ({hash} {words} {lines} {excerpt}).
    #[arg(long)]
    reply_template: Option<String>,
    /// Chance of a 429 per request.
    #[arg(long, default_value_t = 0.0)]
    fault_rate_limit: f64,
    /// Retry-After sent with 429s, in seconds.
    #[arg(long)]
    retry_after_secs: Option<f64>,
    /// Send the 429 wait as retry-after-ms instead of Retry-After.
    #[arg(long)]
    retry_after_ms: bool,
    /// Chance of a 500.
    #[arg(long, default_value_t = 0.0)]
    fault_server_error: f64,
    /// Chance of a connection reset mid-body.
    #[arg(long, default_value_t = 0.0)]
    fault_reset: f64,
    /// Chance of a stall mid-body.
    #[arg(long, default_value_t = 0.0)]
    fault_stall: f64,
    /// How long a stall lasts, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    stall_ms: u64,
    /// Chance of a malformed SSE line.
    #[arg(long, default_value_t = 0.0)]
    fault_malformed: f64,
    /// Chance of a non-JSON body.
    #[arg(long, default_value_t = 0.0)]
    fault_garbage: f64,
    /// Chance of a stream cut before finish_reason and `[DONE]`.
    #[arg(long, default_value_t = 0.0)]
    fault_cut: f64,
    /// Chance of an error object mid-stream.
    #[arg(long, default_value_t = 0.0)]
    fault_error_mid_stream: f64,
    /// Chance of an overloaded answer (529 on /v1/messages, 503 on the OpenAI routes).
    #[arg(long, default_value_t = 0.0)]
    fault_overloaded: f64,
    /// Faults for the first requests, comma-separated (e.g. rate_limit,server_error).
    #[arg(long, value_delimiter = ',')]
    script: Vec<Fault>,
    /// Each distinct prompt fails its first N requests.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// The fault used by --fail-first.
    #[arg(long, default_value = "server_error")]
    fail_first_kind: Fault,
    /// Cut replies at the request's max_tokens words (finish_reason "length").
    #[arg(long)]
    honor_max_tokens: bool,
    /// One request at a time, and a new request cuts the running stream (llama-cpp-python).
    #[arg(long)]
    cut_on_arrival: bool,
    /// A token-bucket limit of this many requests per --rate-limit-period-ms (429 beyond).
    #[arg(long, default_value_t = 0)]
    rate_limit_requests: u64,
    /// A token-bucket limit of this many tokens (prompt words + max_tokens) per period.
    #[arg(long, default_value_t = 0)]
    rate_limit_tokens: u64,
    /// The rate limit's refill period, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    rate_limit_period_ms: u64,
    /// Headers state this many requests per minute (what is left of it over the last minute)
    /// instead of describing the enforced bucket: a per-minute limit enforced per period.
    #[arg(long)]
    rate_limit_stated_per_minute: Option<u64>,
    /// Do not send x-ratelimit-* headers with the rate limit.
    #[arg(long)]
    no_rate_limit_headers: bool,
    /// Keep serving when stdin closes (for stdin = /dev/null).
    #[arg(long)]
    no_stdin_watch: bool,
}

impl Args {
    fn config(&self) -> ServerConfig {
        let faults = Faults {
            rate_limit: self.fault_rate_limit,
            retry_after: self.retry_after_secs.map(Duration::from_secs_f64),
            retry_after_ms: self.retry_after_ms,
            server_error: self.fault_server_error,
            reset_mid_stream: self.fault_reset,
            stall: self.fault_stall,
            stall_for: Duration::from_millis(self.stall_ms),
            malformed_sse: self.fault_malformed,
            garbage: self.fault_garbage,
            cut_before_done: self.fault_cut,
            error_mid_stream: self.fault_error_mid_stream,
            overloaded: self.fault_overloaded,
            script: self.script.clone(),
            fail_first_per_prompt: self.fail_first,
            fail_first_kind: self.fail_first_kind,
        };
        let mut cfg = ServerConfig::default()
            .with_latency(Duration::from_millis(self.latency_ms))
            .with_faults(faults)
            .with_serial(self.serial)
            .with_usage_in_stream(!self.no_usage)
            .with_stream_chunks(self.stream_chunks)
            .with_seed(self.seed)
            .with_honor_max_tokens(self.honor_max_tokens)
            .with_cut_on_arrival(self.cut_on_arrival);
        if self.rate_limit_requests > 0 || self.rate_limit_tokens > 0 {
            let mut limit = RateLimit::requests(
                self.rate_limit_requests,
                Duration::from_millis(self.rate_limit_period_ms),
            )
            .with_tokens(self.rate_limit_tokens)
            .with_headers(!self.no_rate_limit_headers);
            if let Some(per_minute) = self.rate_limit_stated_per_minute {
                limit = limit.with_stated(per_minute, Duration::from_secs(60));
            }
            cfg = cfg.with_rate_limit(limit);
        }
        cfg.api_key.clone_from(&self.api_key);
        cfg.context_limit = self.context_limit;
        if let Some(t) = &self.reply_template {
            cfg.reply = ReplyMode::Template(t.clone());
        }
        cfg
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("atk-testkit-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match TestServer::start_on(args.port, args.config()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "atk-testkit-server: cannot listen on 127.0.0.1:{}: {e}",
                    args.port
                );
                return ExitCode::FAILURE;
            }
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {}", server.base_url());
            let _ = out.flush();
        }
        if args.no_stdin_watch {
            std::future::pending::<()>().await;
        }
        // Serve until stdin reaches its end (the parent closed it or exited).
        // A plain thread: a blocking read is all this needs (tokio's stdin does the same).
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
