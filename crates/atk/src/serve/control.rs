//! Start / stop: the pipeline binaries offered, a config shown key by key (the binary's
//! `--describe-config`) with its errors (`--check-config`), runs started as child processes
//! with the flags a user would type, and stopped with the signal Ctrl-C sends.

use std::collections::VecDeque;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atk_cli::config::KeyDoc;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::AppState;
use super::guard::form_value;
use super::html::{esc, href, page};
use super::runs;

/// Longest a binary may take to describe or check a config.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of a child's output kept for the page.
const LOG_LINES: usize = 200;

/// A run started from the page.
pub(crate) struct Child {
    /// Its process id.
    pub pid: u32,
    /// The command line, as typed.
    pub command: String,
    /// Its exit code once it ended.
    pub exit: Option<i32>,
    /// The last lines it printed (stdout and stderr).
    pub log: VecDeque<String>,
}

/// The pipelines offered and the runs started here.
pub(crate) struct Control {
    /// Pipeline binaries (given with `--pipeline`, or found in `target/release`).
    pub pipelines: Vec<PathBuf>,
    /// Runs started from the page, oldest first.
    pub children: Arc<Mutex<Vec<Child>>>,
}

impl Control {
    /// Offers `pipelines`.
    pub(crate) fn new(pipelines: Vec<PathBuf>) -> Self {
        Self {
            pipelines,
            children: Arc::default(),
        }
    }
}

/// The executables in the enclosing Cargo workspace's `target/release` that describe
/// themselves as pipelines (`--describe-config` answers JSON with `keys`).
pub(crate) fn workspace_release_binaries() -> Vec<PathBuf> {
    let Ok(cwd) = std::env::current_dir() else {
        return Vec::new();
    };
    let Some(root) = cwd.ancestors().find(|d| {
        std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
    }) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(root.join("target/release")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let executable = std::fs::metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        if !executable || name.contains('.') || name == "atk" || name == "xtask" {
            continue;
        }
        if describes_itself(&path) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// True when `bin --describe-config` answers, within [`ASK_TIMEOUT`], with JSON holding
/// `keys` (a binary that does something else is killed when its time is up).
fn describes_itself(bin: &Path) -> bool {
    let Ok(mut child) = std::process::Command::new(bin)
        .arg("--describe-config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let stdout = child.stdout.take();
    // Read on a thread: a pipe left full would keep the child from exiting.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            let _ = std::io::Read::read_to_end(&mut s, &mut out);
        }
        out
    });
    let deadline = std::time::Instant::now() + ASK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    status.is_some_and(|s| s.success())
        && serde_json::from_slice::<serde_json::Value>(&out).is_ok_and(|v| v.get("keys").is_some())
}

fn name_of(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `bin args...` and returns (exit code, stdout, stderr), bounded in time.
async fn ask(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<(i32, String, String), String> {
    let out = tokio::time::timeout(
        ASK_TIMEOUT,
        tokio::process::Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{} did not answer within {ASK_TIMEOUT:?}", bin.display()))?
    .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    Ok((
        out.status.code().unwrap_or(1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The pipeline (by name) and config (by id) chosen in a query or form.
fn chosen(state: &AppState, query: &str) -> (Option<PathBuf>, Option<runs::RunDir>) {
    let bin = form_value(query, "pipeline").and_then(|name| {
        state
            .control
            .pipelines
            .iter()
            .find(|p| name_of(p) == name)
            .cloned()
    });
    let config = form_value(query, "config").and_then(|id| {
        runs::find_configs(&state.roots)
            .into_iter()
            .find(|c| c.id == id)
    });
    (bin, config)
}

/// The runs started here, with a stop button for those still going.
fn children_table(state: &AppState) -> String {
    let children = state.control.children.lock().map(|c| {
        c.iter()
            .map(|c| {
                (
                    c.pid,
                    c.command.clone(),
                    c.exit,
                    c.log.iter().cloned().collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    });
    let children = children.unwrap_or_default();
    if children.is_empty() {
        return "<p class=muted>No run started from this page yet.</p>".into();
    }
    let mut out = String::new();
    for (pid, command, exit, log) in children.iter().rev() {
        let status = match exit {
            None => format!(
                "<span class=\"state running\">running</span> <form method=post action=\"/stop\" class=inline>\
                 <input type=hidden name=token value=\"{t}\"><input type=hidden name=pid value=\"{pid}\">\
                 <button type=submit class=stop>Stop (Ctrl-C)</button></form>",
                t = esc(&state.token)
            ),
            Some(130) => "<span class=\"state interrupted\">interrupted (exit 130; start again to resume)</span>".into(),
            Some(0) => "<span class=\"state finished\">finished (exit 0)</span>".into(),
            Some(code) => format!("<span class=\"state failed\">exit {code}</span>"),
        };
        let tail: Vec<&String> = log
            .iter()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let _ = write!(
            out,
            "<div class=child data-pid=\"{pid}\"><div class=head><code>{c}</code> · pid {pid} · {status}</div><pre class=log>{l}</pre></div>",
            c = esc(command),
            l = esc(&tail
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")),
        );
    }
    out
}

/// `GET /api/children`: the started runs alone.
pub(crate) async fn children_fragment(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(children_table(&state))
}

fn key_row(k: &KeyDoc, errors: &str) -> String {
    let value = match &k.value {
        None => "<span class=muted>(default)</span>".to_string(),
        Some(v) => esc(&v.as_str().map_or_else(|| v.to_string(), str::to_string)),
    };
    let named = errors.contains(&format!("`{}`", k.key))
        || errors.contains(&format!(".{}`", k.key))
        || errors.contains(&format!(".{} ", k.key))
        || errors.contains(&format!(" {} (", k.key));
    let class = if k.placeholder || named {
        " class=problem"
    } else {
        ""
    };
    let flag = if k.placeholder {
        " <span class=flag>!!PLACEHOLDER!! — fill it in</span>"
    } else if named {
        " <span class=flag>see the error above</span>"
    } else {
        ""
    };
    format!(
        "<tr{class} data-key=\"{key}\"><td><code>{key}</code>{req}</td><td>{value}{flag}</td><td>{ty}</td><td>{def}</td><td>{line}</td><td>{doc}</td></tr>",
        key = esc(&k.key),
        req = if k.required {
            " <small>required</small>"
        } else {
            ""
        },
        ty = esc(&k.ty),
        def = if k.default.is_null() {
            String::new()
        } else {
            esc(&k.default.to_string())
        },
        line = k.line.map(|l| l.to_string()).unwrap_or_default(),
        doc = esc(&k.doc),
    )
}

/// `GET /start[?pipeline=&config=]`: choose, inspect, start; and the runs started here.
pub(crate) async fn start_page(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let query = q.unwrap_or_default();
    let (bin, config) = chosen(&state, &query);
    let configs = runs::find_configs(&state.roots);
    let mut body = String::from(
        "<form method=get action=\"/start\" class=choose><label>Pipeline <select name=pipeline>",
    );
    if state.control.pipelines.is_empty() {
        body.push_str(
            "<option value=\"\">(none: pass --pipeline BIN, or build with --release)</option>",
        );
    }
    for p in &state.control.pipelines {
        let n = name_of(p);
        let sel = if bin.as_deref() == Some(p.as_path()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option{sel}>{}</option>", esc(&n));
    }
    body.push_str("</select></label> <label>Config <select name=config>");
    for c in &configs {
        let sel = if config.as_ref().is_some_and(|x| x.id == c.id) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option{sel}>{}</option>", esc(&c.id));
    }
    body.push_str("</select></label> <button type=submit>Show the config</button></form>");
    if let (Some(bin), Some(config)) = (&bin, &config) {
        let cfg = config.path.as_os_str();
        let check = ask(bin, &["--check-config".as_ref(), "--config".as_ref(), cfg]).await;
        let (ok, errors) = match &check {
            Ok((0, _, err)) => (true, err.clone()),
            Ok((_, _, err)) => (false, err.clone()),
            Err(e) => (false, e.clone()),
        };
        let errors = scrub_paths(&errors);
        if ok {
            let _ = write!(
                body,
                "<p class=ok>The config is ready (<code>--check-config</code> passed).</p>"
            );
            if !errors.trim().is_empty() {
                let _ = write!(body, "<pre class=warnings>{}</pre>", esc(errors.trim()));
            }
        } else {
            let _ = write!(
                body,
                "<div class=errors><p>The run would not start:</p><pre>{}</pre></div>",
                esc(errors.trim())
            );
        }
        match ask(
            bin,
            &["--describe-config".as_ref(), "--config".as_ref(), cfg],
        )
        .await
        {
            Ok((0, out, _)) => {
                let keys: Vec<KeyDoc> = serde_json::from_str::<serde_json::Value>(&out)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["keys"].clone()).ok())
                    .unwrap_or_default();
                body.push_str("<table class=config><thead><tr><th>Key</th><th>Value</th><th>Type</th><th>Default</th><th>Line</th><th>What it does</th></tr></thead><tbody>");
                let mut keys = keys;
                // Keys the file sets first, then the rest, each group in name order.
                keys.sort_by(|a, b| (a.value.is_none(), &a.key).cmp(&(b.value.is_none(), &b.key)));
                for k in &keys {
                    body.push_str(&key_row(k, &errors));
                }
                body.push_str("</tbody></table>");
            }
            Ok((_, _, err)) => {
                let _ = write!(body, "<pre class=errors>{}</pre>", esc(&scrub_paths(&err)));
            }
            Err(e) => {
                let _ = write!(body, "<p class=error>{}</p>", esc(&e));
            }
        }
        let _ = write!(
            body,
            "<form method=post action=\"/start\"><input type=hidden name=token value=\"{t}\">\
             <input type=hidden name=pipeline value=\"{p}\"><input type=hidden name=config value=\"{c}\">\
             <button type=submit class=start{dis}>Start <code>{p} --config {c}</code></button></form>",
            t = esc(&state.token),
            p = esc(&name_of(bin)),
            c = esc(&config.id),
            dis = if ok { "" } else { " disabled" },
        );
    }
    let _ = write!(
        body,
        "<h2>Runs started here</h2><div data-live=\"/api/children\">{}</div>",
        children_table(&state)
    );
    Html(page("Start / stop", &body)).into_response()
}

/// The messages as the binary printed them (they name the config's path as given).
fn scrub_paths(text: &str) -> String {
    text.to_string()
}

/// `POST /start` (pipeline, config): runs `BIN --config CONFIG` as a child.
pub(crate) async fn start_run(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body).into_owned();
    let (Some(bin), Some(config)) = chosen(&state, &form) else {
        return (StatusCode::NOT_FOUND, "choose a listed pipeline and config").into_response();
    };
    let mut command = tokio::process::Command::new(&bin);
    command
        .arg("--config")
        .arg(&config.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start {}: {e}", bin.display()),
            )
                .into_response();
        }
    };
    let pid = child.id().unwrap_or_default();
    let children = state.control.children.clone();
    if let Ok(mut list) = children.lock() {
        list.push(Child {
            pid,
            command: format!("{} --config {}", name_of(&bin), config.id),
            exit: None,
            log: VecDeque::new(),
        });
    }
    let push = move |children: &Arc<Mutex<Vec<Child>>>, line: String| {
        if let Ok(mut list) = children.lock()
            && let Some(c) = list.iter_mut().find(|c| c.pid == pid)
        {
            if c.log.len() >= LOG_LINES {
                c.log.pop_front();
            }
            c.log.push_back(line);
        }
    };
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let children = children.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                push(&children, line);
            }
        });
    }
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().or_else(|| s.signal().map(|sig| 128 + sig))
        });
        if let Ok(mut list) = children.lock()
            && let Some(c) = list.iter_mut().find(|c| c.pid == pid)
        {
            c.exit = Some(code.unwrap_or(1));
        }
    });
    Redirect::to(&href(
        "/start",
        &[("pipeline", &name_of(&bin)), ("config", &config.id)],
    ))
    .into_response()
}

/// `POST /stop` (pid): SIGINT to a run started here (what Ctrl-C sends: it stops cleanly,
/// exits 130, and resumes when started again).
pub(crate) async fn stop_run(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body).into_owned();
    let Some(pid) = form_value(&form, "pid").and_then(|p| p.parse::<u32>().ok()) else {
        return (StatusCode::BAD_REQUEST, "pid must be a number").into_response();
    };
    let ours = state
        .control
        .children
        .lock()
        .is_ok_and(|list| list.iter().any(|c| c.pid == pid && c.exit.is_none()));
    if !ours {
        return (
            StatusCode::NOT_FOUND,
            "no run with that pid was started here, or it has ended",
        )
            .into_response();
    }
    let Ok(raw) = i32::try_from(pid) else {
        return (StatusCode::BAD_REQUEST, "bad pid").into_response();
    };
    if let Err(e) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGINT,
    ) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot signal {pid}: {e}"),
        )
            .into_response();
    }
    Redirect::to("/start").into_response()
}
