//! The output dirs in the served folders, what their runs say, and their files: everything
//! is found by walking the served folders, so a name in a request only ever selects from
//! these lists (no request path names a file).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use atk_cli::status::{RunState, StatusSnapshot};
use atk_state::{FailureRecord, Outcome, Store};

/// How deep below a served folder output dirs (and configs) are looked for.
const MAX_DEPTH: usize = 5;

/// An output dir found in a served folder.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    /// Its name in URLs: the path relative to its served folder (`/`-separated).
    pub id: String,
    /// Where it is (canonical, inside a served folder).
    pub path: PathBuf,
}

/// True for a folder a run wrote (`status.json` or a store).
fn is_output_dir(dir: &Path) -> bool {
    dir.join(atk_cli::status::STATUS_FILE).is_file() || atk_cli::store_dir(dir).is_dir()
}

/// Every output dir under the served folders, by id (walked each time: new ones show up).
pub(crate) fn find_runs(roots: &[PathBuf]) -> Vec<RunDir> {
    let mut found = Vec::new();
    for root in roots {
        let walker = walkdir::WalkDir::new(root)
            .max_depth(MAX_DEPTH)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name().to_string_lossy();
                e.file_type().is_dir()
                    && !name.starts_with('.')
                    && name != "store"
                    && name != "target"
            });
        for entry in walker.flatten() {
            if is_output_dir(entry.path()) {
                found.push(RunDir {
                    id: relative_id(root, entry.path(), roots.len() > 1),
                    path: entry.path().to_path_buf(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// The id of `path` under `root` (the root's own name first when several are served).
fn relative_id(root: &Path, path: &Path, prefix_root: bool) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts: Vec<String> = Vec::new();
    if prefix_root || rel.as_os_str().is_empty() {
        parts.push(
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into()),
        );
    }
    parts.extend(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// The run with this id, if it is one of the found ones.
pub(crate) fn find_run(roots: &[PathBuf], id: &str) -> Option<RunDir> {
    find_runs(roots).into_iter().find(|r| r.id == id)
}

/// The YAML files under the served folders that look like configs (ids as for runs).
pub(crate) fn find_configs(roots: &[PathBuf]) -> Vec<RunDir> {
    let mut found = Vec::new();
    for root in roots {
        let walker = walkdir::WalkDir::new(root)
            .max_depth(MAX_DEPTH)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name().to_string_lossy();
                !name.starts_with('.') && name != "store" && name != "target" && name != "prompts"
            });
        for entry in walker.flatten() {
            let p = entry.path();
            let yaml = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
            if entry.file_type().is_file() && yaml && !inside_output_dir(root, p) {
                found.push(RunDir {
                    id: relative_id(root, p, roots.len() > 1),
                    path: p.to_path_buf(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

fn inside_output_dir(root: &Path, file: &Path) -> bool {
    file.ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root))
        .any(is_output_dir)
}

/// What a run says about itself: the same judgement as `atk status` (a snapshot that says
/// running whose process is gone is `killed`). Read from `status.json`; the store is opened
/// only when no run holds it.
fn read_status(dir: &Path) -> Result<StatusSnapshot, String> {
    atk_cli::status::read_status(dir).map_err(|e| e.to_string())
}

/// When `status.json` and the store folder last changed (and the file's size).
type Stamp = (
    Option<std::time::SystemTime>,
    Option<u64>,
    Option<std::time::SystemTime>,
);

fn stamp(dir: &Path) -> Stamp {
    let status = std::fs::metadata(dir.join(atk_cli::status::STATUS_FILE)).ok();
    let store = std::fs::metadata(atk_cli::store_dir(dir)).ok();
    (
        status.as_ref().and_then(|m| m.modified().ok()),
        status.map(|m| m.len()),
        store.and_then(|m| m.modified().ok()),
    )
}

/// The status of each run, read again only when its files changed: the pages refresh every
/// second, and reading a stopped run's status opens its store (which a run starting in a
/// terminal at that instant would find locked), so a stopped run's store is opened once per
/// change, not once per refresh.
#[derive(Default)]
pub(crate) struct StatusCache {
    seen: std::sync::Mutex<std::collections::HashMap<PathBuf, (Stamp, StatusSnapshot)>>,
    /// Held while this server opens a store, so two of its own requests never find a store
    /// locked by each other (and take it for a running run).
    opening: std::sync::Mutex<()>,
}

impl StatusCache {
    /// The run's status (see [`read_status`]), from the cache while its files are unchanged
    /// and it is not running.
    pub(crate) fn status_of(&self, dir: &Path) -> Result<StatusSnapshot, String> {
        let now = stamp(dir);
        if let Ok(seen) = self.seen.lock()
            && let Some((was, snapshot)) = seen.get(dir)
            && *was == now
            && snapshot.state != RunState::Running
        {
            return Ok(snapshot.clone());
        }
        let fresh = {
            let _one_at_a_time = self.opening.lock();
            read_status(dir)?
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(dir.to_path_buf(), (now, fresh.clone()));
        }
        Ok(fresh)
    }
}

/// Per-step facts the live page shows besides the snapshot, computed once here.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Outlook {
    /// Items done over all steps' totals (0..=1).
    pub fraction: f64,
    /// Seconds left at the pace so far, while running (the runner's per-step ETA).
    pub eta_s: Option<f64>,
    /// Cost at the end at the pace so far (USD), while running.
    pub projected_cost_usd: Option<f64>,
}

/// ETA and projected cost from the snapshot's counts and elapsed time.
pub(crate) fn outlook(s: &StatusSnapshot) -> Outlook {
    let total: u64 = s.steps.iter().map(|st| st.total).sum();
    let settled: u64 = s.steps.iter().map(|st| st.done + st.failed).sum();
    let fraction = if total == 0 {
        0.0
    } else {
        (settled as f64 / total as f64).min(1.0)
    };
    let running = s.state == RunState::Running;
    // The runner's own per-step ETA (what its bars show); the run ends with its slowest step.
    let eta_s = s
        .steps
        .iter()
        .filter_map(|st| st.eta_ms)
        .max()
        .filter(|_| running)
        .map(|ms| ms as f64 / 1000.0);
    let projected_cost_usd = (running && fraction > 0.0).then(|| {
        let spent_before = s.cost_usd - s.run_cost_usd;
        spent_before + s.run_cost_usd / fraction
    });
    Outlook {
        fraction,
        eta_s,
        projected_cost_usd,
    }
}

/// A file of a run offered on the Outputs page.
#[derive(Debug, Clone)]
pub(crate) struct OutputFile {
    /// Its name as listed (relative to the run dir, `/`-separated).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
}

/// The datasets (`*.jsonl` in the run dir), meta datasets (`meta_datagen/*.jsonl`) and the
/// card (`README.md`), each only when it is a regular file inside the run dir (no symlink).
pub(crate) fn output_files(run: &RunDir) -> Vec<OutputFile> {
    let mut files = Vec::new();
    for (sub, ext) in [
        ("", "jsonl"),
        ("meta_datagen", "jsonl"),
        ("", "md"),
        ("", "json"),
    ] {
        let dir = if sub.is_empty() {
            run.path.clone()
        } else {
            run.path.join(sub)
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if !meta.file_type().is_file() || !name.ends_with(&format!(".{ext}")) {
                continue;
            }
            if ext == "json" && name != "run_summary.json" {
                continue;
            }
            files.push(OutputFile {
                name: if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                },
                path: entry.path(),
                bytes: meta.len(),
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// Lines `[from, from + count)` of a JSONL file (and whether more follow).
pub(crate) fn read_lines(
    path: &Path,
    from: usize,
    count: usize,
) -> std::io::Result<(Vec<String>, bool)> {
    let file = std::fs::File::open(path)?;
    let mut lines = std::io::BufReader::new(file).lines().skip(from);
    let mut out = Vec::new();
    for line in lines.by_ref().take(count) {
        out.push(line?);
    }
    Ok((out, lines.next().is_some()))
}

/// One sample of a failure or drop: the item, the prompt sent when it was kept, the raw reply.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// The item's id.
    pub item: String,
    /// The messages (or completion prompt) sent, when the store kept them.
    pub prompt: Option<String>,
    /// The raw reply.
    pub reply: Option<String>,
    /// The item's input text, when it has one.
    pub input: Option<String>,
}

/// One reason an item stopped at a step, with how many and a few samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reason {
    /// `failed` (every retry spent) or `dropped` (the step let it go).
    pub kind: &'static str,
    /// The reason, as recorded.
    pub reason: String,
    /// How many items.
    pub count: u64,
    /// Up to [`SAMPLES`] of them.
    pub samples: Vec<Sample>,
}

/// Samples kept per reason.
const SAMPLES: usize = 3;

/// Every failure and drop reason per step, from the store (read only when no run holds it).
pub(crate) fn reasons(
    dir: &Path,
    cache: &StatusCache,
) -> Result<BTreeMap<String, Vec<Reason>>, String> {
    // Steps first: the status may open the store itself (once), so read it before this does.
    let steps: Vec<String> = cache
        .status_of(dir)
        .map(|s| s.steps.iter().map(|st| st.step.clone()).collect())
        .unwrap_or_default();
    let _one_at_a_time = cache.opening.lock();
    let store = atk_state::SledStore::try_open_read(&atk_cli::store_dir(dir)).map_err(|e| match e {
        atk_state::Error::Locked { .. } => {
            "the run holds its store; reasons show here once it stops (the live page counts them meanwhile)".to_string()
        }
        other => other.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for step in steps {
        let mut by_reason: BTreeMap<(&'static str, String), Reason> = BTreeMap::new();
        for record in store.failures(&step) {
            let Ok((item, f)) = record else { continue };
            let FailureRecord {
                reason,
                last_output,
                last_prompt,
                ..
            } = f;
            let entry = by_reason
                .entry(("failed", reason.clone()))
                .or_insert_with(|| Reason {
                    kind: "failed",
                    reason,
                    ..Reason::default()
                });
            entry.count += 1;
            if entry.samples.len() < SAMPLES {
                entry.samples.push(Sample {
                    input: input_text(&store, &item),
                    item,
                    prompt: last_prompt,
                    reply: last_output,
                });
            }
        }
        for record in store.results(&step) {
            let Ok((item, r)) = record else { continue };
            let Outcome::Dropped { reason } = &r.outcome else {
                continue;
            };
            let entry = by_reason
                .entry(("dropped", reason.clone()))
                .or_insert_with(|| Reason {
                    kind: "dropped",
                    reason: reason.clone(),
                    ..Reason::default()
                });
            entry.count += 1;
            if entry.samples.len() < SAMPLES {
                let prompt = r.details.as_ref().map(|d| {
                    d.prompt.clone().unwrap_or_else(|| {
                        d.messages
                            .iter()
                            .map(|m| {
                                format!(
                                    "[{}]\n{}",
                                    m["role"].as_str().unwrap_or("?"),
                                    m["content"].as_str().unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n")
                    })
                });
                let reply = r
                    .raw
                    .clone()
                    .or_else(|| r.details.as_ref().map(|d| d.reply.clone()));
                entry.samples.push(Sample {
                    input: input_text(&store, &item),
                    item,
                    prompt,
                    reply,
                });
            }
        }
        let mut reasons: Vec<Reason> = by_reason.into_values().collect();
        reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        out.insert(step, reasons);
    }
    Ok(out)
}

fn input_text(store: &atk_state::SledStore, item: &str) -> Option<String> {
    store
        .item(item)
        .ok()
        .flatten()
        .and_then(|i| i.text("text").ok())
}
