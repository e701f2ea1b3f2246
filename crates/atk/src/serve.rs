//! `atk serve`: a local web page to start, watch and judge runs.
//!
//! Server-rendered HTML (axum), one small script that refreshes the parts of a page marked
//! `data-live` by polling, and a stylesheet, all embedded in the binary: nothing is loaded
//! from outside the machine (the Content-Security-Policy says `'self'` only). Everything it
//! shows is read from what runs write (`status.json` through `atk_cli::status`, the store,
//! the datasets); a run started in a terminal shows up the same as one started here.
//!
//! Access (`guard.rs`): every request needs the token (`?token=` once sets an HttpOnly,
//! SameSite=Strict cookie), a POST needs it in a header or form field too, the `Host` header
//! must be the bound address, and no path from a request ever names a file: runs, configs,
//! datasets and pipelines are picked by name from lists the server made itself.

mod control;
mod guard;
mod html;
mod pages;
mod review;
mod runs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use guard::random_token;

/// What `atk serve` was asked to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Folders whose output dirs (and config files) are served.
    pub dirs: Vec<PathBuf>,
    /// Pipeline binaries offered on the Start page (besides the workspace's `target/release`).
    pub pipelines: Vec<PathBuf>,
    /// Address to bind (127.0.0.1 unless told otherwise).
    pub host: std::net::IpAddr,
    /// Port (0: any free one).
    pub port: u16,
    /// The access token.
    pub token: String,
    /// Look for pipeline binaries in the enclosing workspace's `target/release` too.
    pub workspace_pipelines: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A served folder does not exist or is unreadable.
    #[error("cannot serve {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The server's shared state.
pub(crate) struct AppState {
    /// Served folders, canonical.
    pub roots: Vec<PathBuf>,
    /// The token.
    pub token: String,
    /// `Host` header values accepted.
    pub hosts: Vec<String>,
    /// Pipelines offered and the runs started here.
    pub control: control::Control,
    /// API key values found in the environment, scrubbed from every response.
    pub secrets: Vec<String>,
    /// Each run's status, read again only when its files change.
    pub status: runs::StatusCache,
}

/// A server bound and ready: its address, and the task serving it.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The URL to open (with the token).
    pub url: String,
    /// The serving task (ends only on error).
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds and starts serving; returns once the socket listens.
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
    let mut roots = Vec::new();
    for dir in &options.dirs {
        let canonical = std::fs::canonicalize(dir).map_err(|source| ServeError::Folder {
            path: dir.clone(),
            source,
        })?;
        roots.push(canonical);
    }
    let addr = SocketAddr::new(options.host, options.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mut hosts = vec![addr.to_string()];
    if options.host.is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    let mut pipelines = options.pipelines.clone();
    if options.workspace_pipelines {
        pipelines.extend(
            tokio::task::spawn_blocking(control::workspace_release_binaries)
                .await
                .unwrap_or_default(),
        );
    }
    let secrets = ["OPENAI_API_KEY", "ATK_SMALL_API_KEY", "ATK_LARGE_API_KEY"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .filter(|v| v.trim().len() >= 4)
        .collect();
    let state = Arc::new(AppState {
        roots,
        token: options.token.clone(),
        hosts,
        control: control::Control::new(pipelines),
        secrets,
        status: runs::StatusCache::default(),
    });
    let app = router(state);
    let url = format!("http://{addr}/?token={}", options.token);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running { addr, url, task })
}

/// Every route, behind the guard.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::runs_page))
        .route("/api/runs", get(pages::runs_fragment))
        .route("/run", get(pages::run_page))
        .route("/api/live", get(pages::live_fragment))
        .route("/api/status", get(pages::status_json))
        .route("/why", get(pages::why_page))
        .route("/outputs", get(pages::outputs_page))
        .route("/download", get(pages::download))
        .route("/review", post(review::mark))
        .route("/review/export", get(review::export))
        .route("/start", get(control::start_page).post(control::start_run))
        .route("/stop", post(control::stop_run))
        .route("/api/children", get(control::children_fragment))
        .route("/assets/app.js", get(pages::app_js))
        .route("/assets/style.css", get(pages::style_css))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}
