//! Helpers for the end-to-end tests: a temp dir with inputs and a config pointing at a
//! loopback test server, a pipeline binary run with a timeout (or killed mid-run), and readers
//! for what it wrote.
//!
//! Each test makes its own [`Env`] (temp dir) and its own `atk_testkit::TestServer`.
//!
//! The tests themselves are one binary, `e2e/main.rs`, a module per area (`run`, `faults`,
//! `resume`, `auth`, `config_errors`, `secrets`, `validation`, `accounting`, `cli`, `demo`,
//! `conventions`, `warnings`).
//! Run them with `cargo test -p atk-e2e`. A test reads like this:
//!
//! ```ignore
//! let (server, poems) = poem_server(ServerConfig::default()).await; // wants API_KEY
//! let env = Env::new();
//! env.write_docs(6);                                      // 6 one-chunk documents
//! let config = env.write_config(&Config::new(server.base_url()));
//! let out = run(env.command(bin(), &config), RUN_TIMEOUT).await;
//! out.assert_code(0);                                     // prints stdout/stderr if not
//! assert_eq!(env.dataset().len(), 6);
//! poems.assert_all_whole(&env);                           // no cut-off reply kept
//! ```
//!
//! Slow a run down with the server's latency, never with sleeps in the test; act at a point
//! of a run with `TestServer::wait_until` (for example `Running::kill` after 5 replies).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// The API key the test server requires and the configs send (tests grep for it).
pub const API_KEY: &str = "sk-e2e-c0ffee-5ecret-key-do-not-print";

/// The reply template of the test server: a poem the example pipeline accepts.
pub const POEM_TEMPLATE: &str = "Here is a poem.\n<poem>\n{lines}\n</poem>";

/// Words the sample documents are made of.
const DOC_WORDS: [&str; 40] = [
    "the",
    "harbor",
    "light",
    "turned",
    "slowly",
    "over",
    "water",
    "while",
    "fishermen",
    "mended",
    "nets",
    "and",
    "gulls",
    "argued",
    "about",
    "bread",
    "a",
    "child",
    "counted",
    "boats",
    "returning",
    "before",
    "dusk",
    "wind",
    "carried",
    "salt",
    "across",
    "roofs",
    "of",
    "town",
    "where",
    "bakers",
    "were",
    "already",
    "kneading",
    "dough",
    "for",
    "morning",
    "market",
    "stalls",
];

/// One test's temp dir: `inputs/`, `output/`, the config file.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh temp dir with an empty `inputs/` folder.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("atk-e2e-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("inputs")).expect("inputs dir");
        Env { dir }
    }

    /// The temp dir.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The input folder.
    pub fn inputs(&self) -> PathBuf {
        self.root().join("inputs")
    }

    /// The output folder (created by the pipeline).
    pub fn output(&self) -> PathBuf {
        self.root().join("output")
    }

    /// Writes `n` distinct small documents (about 60 words each: one chunk apiece at the
    /// default test chunk size) and returns their file names.
    pub fn write_docs(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let name = format!("doc_{i:03}.txt");
                std::fs::write(self.inputs().join(&name), sample_doc(i)).expect("write input");
                name
            })
            .collect()
    }

    /// Writes the config to `config.yaml` and returns its path.
    pub fn write_config(&self, config: &Config) -> PathBuf {
        let path = self.root().join("config.yaml");
        std::fs::write(&path, config.to_yaml()).expect("write config");
        path
    }

    /// The dataset file's bytes, if it was written.
    pub fn dataset_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.output().join("sharegpt_format.jsonl")).ok()
    }

    /// The dataset lines, parsed (empty when the file is missing).
    pub fn dataset(&self) -> Vec<Value> {
        let bytes = self.dataset_bytes().unwrap_or_default();
        String::from_utf8(bytes)
            .expect("dataset is UTF-8")
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("dataset line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The `gpt` values of the dataset, in file order.
    pub fn dataset_replies(&self) -> Vec<String> {
        self.dataset()
            .iter()
            .map(|line| conversation_value(line, "gpt"))
            .collect()
    }

    /// A command running `bin --config <config>` in the temp dir, logs at info level unless
    /// the test sets `RUST_LOG`.
    pub fn command(&self, bin: &Path, config: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("--progress")
            .arg("plain");
        cmd.current_dir(self.root())
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ATK_SMALL_API_KEY")
            .env_remove("ATK_LARGE_API_KEY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// [`Env::command`] with a `--set KEY=VALUE` per entry of `sets`.
    pub fn command_with<S: AsRef<str>>(
        &self,
        bin: &Path,
        config: &Path,
        sets: &[S],
    ) -> tokio::process::Command {
        let mut cmd = self.command(bin, config);
        for set in sets {
            cmd.arg("--set").arg(set.as_ref());
        }
        cmd
    }
}

/// The `value` of the first conversation turn `from` a speaker (`human` or `gpt`).
pub fn conversation_value(line: &Value, from: &str) -> String {
    line["conversations"]
        .as_array()
        .and_then(|turns| turns.iter().find(|t| t["from"] == from))
        .and_then(|t| t["value"].as_str())
        .unwrap_or_else(|| panic!("no `{from}` turn in dataset line {line}"))
        .to_owned()
}

/// Sample document `i`: about 60 words, distinct for each `i`.
pub fn sample_doc(i: usize) -> String {
    let mut words = vec![format!("Chronicle number {i} of the harbor town.")];
    let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    for k in 0..60 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        words.push(DOC_WORDS[(x >> 33) % DOC_WORDS.len()].to_owned());
        if k % 12 == 11 {
            words.push(format!("(entry {i}.{k})."));
        }
    }
    words.join(" ") + "\n"
}

/// The example pipeline's own sections (as in its `config.yaml`).
pub const EXAMPLE_SECTIONS: &str = "\
no_flatten:
  - example_heading
example_heading:
  poem_style: free verse
  audience: testers who like short poems
example_heading_2:
  key3: \"Write a short poem inspired by the following passage.\"
";

/// The test config, written in the seed's sectioned shape.
#[derive(Clone, Debug)]
pub struct Config {
    /// The test server's base URL (`small_base_url` and `large_base_url`).
    pub base_url: String,
    /// The key sent (`small_api_key` and `large_api_key`); a YAML scalar written as is, so
    /// `!!PLACEHOLDER!!` works.
    pub api_key: String,
    /// `concurrency_limit`.
    pub concurrency_limit: usize,
    /// `chunk_size` in tokens.
    pub chunk_size: usize,
    /// More keys for the `system` section (value written as raw YAML).
    pub system: BTreeMap<String, String>,
    /// Raw YAML appended at the end (custom sections; [`EXAMPLE_SECTIONS`] by default).
    pub tail: String,
}

impl Config {
    /// An API-mode config for the server at `base_url` sending [`API_KEY`].
    pub fn new(base_url: impl Into<String>) -> Config {
        let mut system = BTreeMap::new();
        // Fast transport retries and stall detection: the suite must stay short.
        system.insert("idle_timeout".to_owned(), "1".to_owned());
        system.insert("request_timeout".to_owned(), "20".to_owned());
        for (k, v) in [
            ("use_subset", "false"),
            ("completion_mode", "false"),
            ("use_stop", "true"),
            ("dataset_license", "cc0-1.0"),
        ] {
            system.insert(k.to_owned(), v.to_owned());
        }
        Config {
            base_url: base_url.into(),
            api_key: format!("\"{API_KEY}\""),
            concurrency_limit: 4,
            chunk_size: 400,
            system,
            tail: EXAMPLE_SECTIONS.to_owned(),
        }
    }

    /// Sets one `system` key (value as raw YAML).
    #[must_use]
    pub fn set(mut self, key: &str, yaml_value: &str) -> Config {
        self.system.insert(key.to_owned(), yaml_value.to_owned());
        self
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        out.push_str("api:\n");
        for engine in ["small", "large"] {
            out.push_str(&format!("  {engine}_model: e2e-test-model\n"));
            out.push_str(&format!("  {engine}_api_key: {}\n", self.api_key));
            out.push_str(&format!("  {engine}_base_url: \"{}\"\n", self.base_url));
            out.push_str(&format!("  {engine}_mode: api\n"));
        }
        out.push_str("path:\n  input_dir: ./inputs\n  output_dir: ./output\n");
        out.push_str("system:\n");
        out.push_str(&format!(
            "  concurrency_limit: {}\n",
            self.concurrency_limit
        ));
        out.push_str(&format!("  chunk_size: {}\n", self.chunk_size));
        for (k, v) in &self.system {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str(&self.tail);
        out
    }
}

/// What a finished (or killed) run left.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

impl Output {
    /// Panics with the run's output unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit\n{self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A spawned pipeline whose output is being collected.
pub struct Running {
    child: tokio::process::Child,
    start: Instant,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    /// Spawns `cmd` with piped output (drained as it comes, so a chatty run never blocks).
    pub fn spawn(mut cmd: tokio::process::Command) -> Running {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("pipeline binary starts");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Running {
            child,
            start: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// Waits for the exit; kills the process and panics after `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Output {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                let code = status.expect("wait for the pipeline").code();
                self.collect(code).await
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                let out = self.collect(None).await;
                panic!("the pipeline did not finish within {timeout:?}\n{out}");
            }
        }
    }

    /// Sends SIGINT (what Ctrl-C sends), through the shell's `kill`; the run keeps going.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("the pipeline is still running");
        let status = std::process::Command::new("sh")
            .args(["-c", "kill -INT \"$0\"", &pid.to_string()])
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -INT {pid} failed");
    }

    /// Kills the process with SIGKILL and collects what it printed.
    pub async fn kill(mut self) -> Output {
        self.child.start_kill().expect("send SIGKILL");
        let status = self.child.wait().await.expect("reap the killed pipeline");
        self.collect(status.code()).await
    }

    async fn collect(self, code: Option<i32>) -> Output {
        let elapsed = self.start.elapsed();
        let stdout = String::from_utf8_lossy(&self.stdout.await.unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.await.unwrap_or_default()).into_owned();
        Output {
            code,
            stdout,
            stderr,
            elapsed,
        }
    }
}

fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    })
}

/// Runs `cmd` to its end (at most `timeout`).
pub async fn run(cmd: tokio::process::Command, timeout: Duration) -> Output {
    Running::spawn(cmd).wait(timeout).await
}

/// Every file under `dir` (any depth) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        })
        .map(|e| e.into_path())
        .collect()
}

/// How many files (any depth) are under `dir`.
pub fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// The text between the last `<poem>` and `</poem>` of a reply, trimmed.
pub fn poem_of(reply: &str) -> Option<String> {
    let start = reply.rfind("<poem>")? + "<poem>".len();
    let end = start + reply[start..].find("</poem>")?;
    Some(reply[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_docs_are_distinct_and_long_enough_to_keep() {
        let docs: std::collections::BTreeSet<String> = (0..50).map(sample_doc).collect();
        assert_eq!(docs.len(), 50);
        assert!(
            docs.iter()
                .all(|d| d.len() > 200 && d.split_whitespace().count() >= 60)
        );
    }

    #[test]
    fn poem_of_takes_the_last_poem() {
        assert_eq!(
            poem_of("<poem>a</poem> then <poem>\n b \n</poem>").as_deref(),
            Some("b")
        );
        assert_eq!(poem_of("no poem"), None);
    }

    #[test]
    fn config_yaml_has_every_section_and_overrides_once() {
        let yaml = Config::new("http://127.0.0.1:1/v1")
            .set("use_stop", "false")
            .to_yaml();
        assert_eq!(yaml.matches("use_stop:").count(), 1);
        assert!(yaml.contains("  use_stop: false\n"));
        for key in [
            "small_api_key",
            "large_base_url",
            "input_dir",
            "concurrency_limit",
            "key3",
            "no_flatten",
        ] {
            assert!(yaml.contains(key), "{key} missing:\n{yaml}");
        }
        assert!(yaml.contains(&format!("small_api_key: \"{API_KEY}\"")));
    }
}
