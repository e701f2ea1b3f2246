//! `atk serve`: every route behind the token and the Host check, POST-only changes, no file
//! outside the served folders, no API key in any response, nothing external; and a real
//! browser (headless Chromium through chromedriver) watching a 120-item run against the test
//! server, opening a failure's raw reply, starting and stopping a run, reading a dataset row.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atk::serve::{ServeOptions, start};
use atk_e2e::{API_KEY, Config, Env, Running};
use atk_testkit::{ServerConfig, TestServer};

use crate::{RUN_TIMEOUT, bin, poem_server};

const TOKEN: &str = "e2e-serve-token-3141";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn serve(dirs: Vec<PathBuf>) -> String {
    let running = start(ServeOptions {
        dirs,
        pipelines: vec![bin().to_path_buf()],
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        token: TOKEN.into(),
        workspace_pipelines: false,
    })
    .await
    .expect("atk serve starts");
    assert!(
        running.url.ends_with(&format!("/?token={TOKEN}")),
        "{}",
        running.url
    );
    format!("http://{}", running.addr)
}

/// A finished example run (3 items) in `env`, its config holding the API key.
async fn finished_run(env: &Env) -> PathBuf {
    let (server, _) = poem_server(ServerConfig::default()).await;
    env.write_docs(3);
    let config = env.write_config(&Config::new(server.base_url()));
    atk_e2e::run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    config
}

const GET_ROUTES: &[&str] = &[
    "/",
    "/api/runs",
    "/run?dir=output",
    "/api/live?dir=output",
    "/api/status?dir=output",
    "/why?dir=output",
    "/outputs?dir=output",
    "/outputs?dir=output&file=README.md",
    "/download?dir=output&file=sharegpt_format.jsonl",
    "/review/export?dir=output",
    "/start",
    "/start?pipeline=e2e-example-pipeline&config=config.yaml",
    "/api/children",
    "/assets/app.js",
    "/assets/style.css",
];

#[tokio::test]
async fn every_route_needs_the_token_the_host_and_a_post_for_changes() {
    let env = Env::new();
    finished_run(&env).await;
    let base = serve(vec![env.root().to_path_buf()]).await;
    let http = client();
    let cookie = format!("atk_token={TOKEN}");
    for route in GET_ROUTES {
        let url = format!("{base}{route}");
        let none = http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{route} without a token");
        let wrong = http
            .get(&url)
            .header("cookie", "atk_token=nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403, "{route} with a wrong token");
        let ok = http
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{route} with the token");
        let rebound = http
            .get(&url)
            .header("cookie", &cookie)
            .header("host", "attacker.example:80")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 403, "{route} with a foreign Host");
    }
    // The token in the URL sets the cookie (HttpOnly, SameSite=Strict) and leaves the URL.
    let first = http
        .get(format!("{base}/?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 303);
    let set = first.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert_eq!(first.headers()["location"], "/");
    // Changes: POST only, and the cookie alone is not enough (no cross-site forgery).
    for route in ["/start", "/stop", "/review"] {
        let cookie_only = http
            .post(format!("{base}{route}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            cookie_only.status(),
            401,
            "POST {route} with the cookie only"
        );
        let wrong = http
            .post(format!("{base}{route}"))
            .header("x-atk-token", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403, "POST {route} with a wrong token");
    }
    let get_stop = http
        .get(format!("{base}/stop"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get_stop.status(), 405, "GET on a change");
    let put = http
        .put(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    // Review through the form field: row 0 accepted, then exported.
    let marked = http
        .post(format!("{base}/review"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={TOKEN}&dir=output&file=sharegpt_format.jsonl&row=0&mark=accepted"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 303);
    let exported = http
        .get(format!("{base}/review/export?dir=output"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first_row = env.dataset_bytes().unwrap();
    let first_row = String::from_utf8(first_row).unwrap();
    let first_row = first_row.lines().next().unwrap().to_string();
    assert_eq!(exported, format!("{first_row}\n"));
    // The mark is kept under the row's item, so it follows the item across a rerun in which
    // a new document comes first and the reviewed row becomes row 1.
    let marks = std::fs::read_to_string(env.output().join("review.json")).unwrap();
    assert!(marks.contains("\"item:sharegpt_format.jsonl:"), "{marks}");
    std::fs::write(env.inputs().join("a_first.txt"), atk_e2e::sample_doc(50)).unwrap();
    let (server, _) = poem_server(ServerConfig::default()).await;
    let config = env.write_config(&Config::new(server.base_url()));
    atk_e2e::run(env.command(bin(), &config), RUN_TIMEOUT)
        .await
        .assert_code(0);
    let rows = String::from_utf8(env.dataset_bytes().unwrap()).unwrap();
    assert_eq!(rows.lines().nth(1), Some(first_row.as_str()), "{rows}");
    let page = http
        .get(format!("{base}/outputs?dir=output"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("class=\"row accepted\" id=\"row-1\"")
            && page.contains("class=\"row unreviewed\" id=\"row-0\""),
        "{page}"
    );
    let exported = http
        .get(format!("{base}/review/export?dir=output"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(exported, format!("{first_row}\n"));
}

#[tokio::test]
async fn no_file_outside_the_served_folders_no_key_and_nothing_external() {
    let env = Env::new();
    finished_run(&env).await;
    // A secret file beside the served folder, and a symlink inside pointing at it.
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("secret.jsonl");
    std::fs::write(&secret_file, "TOP-SECRET-OUTSIDE\n").unwrap();
    std::os::unix::fs::symlink(&secret_file, env.output().join("link.jsonl")).unwrap();
    let base = serve(vec![env.root().to_path_buf()]).await;
    let http = client();
    let cookie = format!("atk_token={TOKEN}");
    let escapes = [
        "/download?dir=output&file=../config.yaml",
        "/download?dir=output&file=..%2Fconfig.yaml",
        "/download?dir=output&file=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/download?dir=..&file=config.yaml",
        "/download?dir=output%2F..%2F..&file=passwd",
        "/download?dir=output&file=link.jsonl",
        "/outputs?dir=output&file=link.jsonl",
        "/outputs?dir=output&file=/etc/passwd",
        "/download?dir=/etc&file=passwd",
        "/../../etc/passwd",
        "/assets/../../Cargo.toml",
    ];
    for route in escapes {
        let r = http
            .get(format!("{base}{route}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status == 404 || status == 400, "{route}: {status}");
        assert!(
            !body.contains("TOP-SECRET")
                && !body.contains("root:")
                && !body.contains("e2e-test-model"),
            "{route} returned a file outside: {body}"
        );
    }
    // No response carries the API key, and no page loads anything from elsewhere.
    for route in GET_ROUTES {
        let r = http
            .get(format!("{base}{route}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("http"),
            "{csp}"
        );
        let body = r.text().await.unwrap();
        assert!(!body.contains(API_KEY), "{route} shows the API key");
        for attr in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "url(http",
            "@import",
        ] {
            assert!(
                !body.contains(attr),
                "{route} loads something external: {attr}"
            );
        }
    }
    // The config page shows the key only as set.
    let page = http
        .get(format!(
            "{base}/start?pipeline=e2e-example-pipeline&config=config.yaml"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-key=\"small_api_key\"") && page.contains(">set<"),
        "{page}"
    );
}

#[tokio::test]
async fn an_output_dir_made_after_serve_started_is_listed() {
    let env = Env::new();
    let base = serve(vec![env.root().to_path_buf()]).await;
    let http = client();
    let cookie = format!("atk_token={TOKEN}");
    let runs = || async {
        http.get(format!("{base}/api/runs"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(runs().await.contains("No output dir"));
    finished_run(&env).await;
    let listed = runs().await;
    assert!(
        listed.contains("dir=output") && listed.contains("finished"),
        "{listed}"
    );
}

// --- the browser -------------------------------------------------------------------------

/// Longest the page may take to show what a step of the test awaits (generous: CI's two cores
/// may be busy building something else).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an awaited condition is checked.
const POLL: Duration = Duration::from_millis(100);

/// Checks `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`; `Err` says what
/// was last seen. WebDriver and the file system have no push, so waiting is polling, always
/// bounded.
async fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(last) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{what}: not within {timeout:?}; last seen: {last}"));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits (bounded) until `path` exists.
async fn file_appears(path: &Path) {
    until(
        &format!("{} appears", path.display()),
        PAGE_TIMEOUT,
        async || {
            if path.exists() {
                Ok(())
            } else {
                Err("missing".into())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// chromedriver and every Chromium process it started, in a process group of their own that
/// is killed when this is dropped: a failing test leaves no browser behind.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.wait();
    }
}

/// A WebDriver session over HTTP (the W3C protocol is a handful of JSON requests; a client
/// crate would bring its own HTTP stack for these few calls).
struct Browser {
    http: reqwest::Client,
    session: String,
    /// Dropped last: kills chromedriver and Chromium.
    _driver: Driver,
}

/// True when running in CI (`CI` set to anything but `false` or empty).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or says loudly why not (and fails in CI).
    async fn start(profile: &Path) -> Option<Browser> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let driver = ["/usr/bin/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver): the browser test of atk serve did NOT run";
            assert!(!in_ci(), "{message}");
            // Straight to the terminal: the test harness captures `eprintln!` of passing tests.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("\n!!!!! SKIPPED: {message} !!!!!\n\n").as_bytes(),
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let guard = Driver(child);
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        until("chromedriver answers", PAGE_TIMEOUT, async || {
            http.get(format!("{base}/status"))
                .send()
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let r: serde_json::Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Some(Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: guard,
        })
    }

    /// One WebDriver command; `Err` carries the driver's error (a stale element, say).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let request = self.http.request(method, format!("{}{path}", self.session));
        // A GET carries no body (chromedriver refuses one).
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let r = request.send().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        let value = v["value"].clone();
        match value.get("error") {
            Some(error) => Err(format!("{error}: {}", value["message"])),
            None => Ok(value),
        }
    }

    async fn open(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({"url": url}),
        )
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The id of the first element matching `css`.
    async fn find(&self, css: &str) -> Result<String, String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await?;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no {css} on the page"))
    }

    /// The text of the first element matching `css`.
    async fn text(&self, css: &str) -> Result<String, String> {
        let id = self.find(css).await?;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                serde_json::Value::Null,
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// Clicks the first element matching `css`, finding it again if the page changed between
    /// finding and clicking (a refused click did not happen, so trying again is safe).
    async fn click(&self, css: &str) {
        let outcome = until(&format!("click {css}"), PAGE_TIMEOUT, async || {
            let id = self.find(css).await?;
            self.call(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                serde_json::json!({}),
            )
            .await
            .map(drop)
        })
        .await;
        if let Err(e) = outcome {
            self.fail(&e).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", serde_json::Value::Null)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, base64_decode(png.as_str().unwrap_or_default())).unwrap();
    }

    /// Waits (bounded) until the text of `css` satisfies `ok`, and returns it.
    async fn wait_for(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let seen = until(&format!("the text of {css}"), PAGE_TIMEOUT, async || {
            let t = self.text(css).await?;
            if ok(&t) { Ok(t) } else { Err(format!("{t:?}")) }
        })
        .await;
        match seen {
            Ok(t) => t,
            Err(e) => self.fail(&e).await,
        }
    }

    /// Panics with `why` and the page's source.
    async fn fail(&self, why: &str) -> ! {
        let source = self
            .call(reqwest::Method::GET, "/source", serde_json::Value::Null)
            .await
            .unwrap_or_default();
        panic!("{why}; page:\n{}", source.as_str().unwrap_or_default());
    }

    /// Ends the session (Chromium quits); the driver is killed when `self` drops.
    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Standard base64 (the screenshot) decoded; 20 lines instead of a dependency for tests.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Where screenshots go: `target/atk-serve-screenshots/`.
fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/atk-serve-screenshots")
}

#[tokio::test]
async fn a_browser_watches_a_run_reads_why_starts_and_stops_and_reads_a_row() {
    let profile = tempfile::tempdir().unwrap();
    let Some(browser) = Browser::start(profile.path()).await else {
        return;
    };
    // 120 items, 2 at a time, 150 ms each: about 9 s of run, long enough to see it move even
    // on a loaded machine.
    let server = TestServer::start(
        ServerConfig::default()
            .with_api_key(API_KEY)
            .with_latency(Duration::from_millis(150))
            .with_reply(atk_testkit::ReplyMode::func(|body| {
                // Passage 7 gets a reply without a poem every time: a failure with a raw reply.
                let text = body.to_string();
                if text.contains("Chronicle number 7 ") {
                    "I would rather not write a poem today.".to_string()
                } else {
                    atk_testkit::render_template(atk_e2e::POEM_TEMPLATE, body)
                }
            })),
    )
    .await
    .unwrap();
    let env = Env::new();
    env.write_docs(120);
    let mut config = Config::new(server.base_url());
    config.concurrency_limit = 2;
    let config_path = env.write_config(&config);
    let base = serve(vec![env.root().to_path_buf()]).await;

    let run = Running::spawn(env.command(bin(), &config_path));
    // Once the run has written its first snapshot, watch the page.
    file_appears(&env.output().join("status.json")).await;
    browser
        .open(&format!("{base}/run?dir=output&token={TOKEN}"))
        .await;
    let first: u64 = browser
        .wait_for("#done", |t| t.parse::<u64>().is_ok())
        .await
        .parse()
        .unwrap();
    // The count rises on the same page (no navigation: the script merges the panel in).
    browser
        .wait_for("#done", |t| t.parse::<u64>().is_ok_and(|n| n > first))
        .await;
    browser.screenshot(&shots().join("live.png")).await;
    run.wait(RUN_TIMEOUT).await.assert_code(0);
    // One passage fails every retry: 119 reach the dataset, 120 are settled.
    browser.wait_for("[data-state]", |t| t == "finished").await;
    browser.wait_for("#done", |t| t == "119").await;

    // Why: the failure reason opens onto its raw reply.
    browser.open(&format!("{base}/why?dir=output")).await;
    browser.click("details.reason summary").await;
    let reply = browser
        .wait_for("details.reason pre.reply", |t| !t.is_empty())
        .await;
    assert!(
        reply.contains("rather not write a poem"),
        "raw reply shown: {reply:?}"
    );
    // The exact prompt the failed item was sent.
    let prompt = browser
        .text("details.reason pre.prompt")
        .await
        .unwrap_or_default();
    assert!(
        prompt.contains("Chronicle number 7 ") && prompt.contains("[user]"),
        "the failed item's prompt shown: {prompt:?}"
    );
    browser.screenshot(&shots().join("why.png")).await;

    // Outputs: the first dataset row is readable as a conversation.
    browser.open(&format!("{base}/outputs?dir=output")).await;
    let row = browser
        .wait_for("#row-0 .turn.assistant .text", |t| !t.is_empty())
        .await;
    let first_reply = env.dataset_replies().into_iter().next().unwrap();
    assert_eq!(row.trim(), first_reply.trim());
    browser.screenshot(&shots().join("outputs.png")).await;

    // Start a slow run from the page (60 items, one at a time, 400 ms each: 24 s at least),
    // see it running, stop it: exit 130, resumable.
    let slow = tempfile::Builder::new()
        .prefix("slow-")
        .tempdir_in(env.root())
        .unwrap();
    std::fs::create_dir_all(slow.path().join("inputs")).unwrap();
    for i in 0..60 {
        std::fs::write(
            slow.path().join(format!("inputs/doc_{i:03}.txt")),
            atk_e2e::sample_doc(i),
        )
        .unwrap();
    }
    let (slow_server, _) =
        poem_server(ServerConfig::default().with_latency(Duration::from_millis(400))).await;
    let mut slow_config = Config::new(slow_server.base_url());
    slow_config.concurrency_limit = 1;
    std::fs::write(slow.path().join("slow.yaml"), slow_config.to_yaml()).unwrap();
    let slow_id = format!(
        "{}/slow.yaml",
        slow.path().file_name().unwrap().to_string_lossy()
    );
    browser
        .open(&format!(
            "{base}/start?pipeline=e2e-example-pipeline&config={}",
            atk_e2e_encode(&slow_id)
        ))
        .await;
    browser.wait_for("p.ok", |t| t.contains("ready")).await;
    browser.screenshot(&shots().join("start.png")).await;
    browser.click("button.start").await;
    browser.wait_for(".child .state", |t| t == "running").await;
    // Once it has sent something, stop it from the page.
    let slow_out = slow.path().join("output");
    file_appears(&slow_out.join("status.json")).await;
    browser.click("button.stop").await;
    let stopped = browser
        .wait_for(".child .state", |t| {
            t.starts_with("interrupted") || t.starts_with("finished") || t.starts_with("exit")
        })
        .await;
    assert!(stopped.starts_with("interrupted"), "stopped run: {stopped}");
    // What it stored is kept, and it was no run that failed its items.
    let status = atk_cli::status::read_status(&slow_out).expect("status.json of the stopped run");
    assert_eq!(status.state.name(), "interrupted");
    assert!(
        status.steps.iter().all(|s| s.failed == 0),
        "the run started from the page failed items: {:?}",
        status.reasons
    );
    browser.quit().await;
}

/// A query value percent-encoded.
fn atk_e2e_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
