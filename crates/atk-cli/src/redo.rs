//! Iterating on a pipeline: what a run says about results made with another prompt, params,
//! model or step version, and `--redo STEP`, `--redo-changed`, `--reprocess STEP`.
//!
//! Store meta keeps, per step, the current fingerprint (readable parts included) and the other
//! fingerprints its stored results may carry (`seen`). A run whose steps all match what they
//! were last run with reads no result record for this check; only a step whose fingerprint
//! changed has its results read and counted. A rework (`--redo`, `--reprocess`) records its
//! request and start time in meta until a run of it completes, so rerunning the same command
//! after a kill goes on with the same start time: results already remade since then are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use atk_state::{Outcome, Store};
use atk_step::{Fingerprint, Part, Rework, ReworkCounts, ReworkMode, Step, StepContext};
use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::flags::CommonFlags;

pub(crate) use crate::layout::{FINGERPRINT_META_KEY, REWORK_META_KEY};

/// What store meta says about one step's fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepFingerprint {
    /// The fingerprint of the step in the latest run.
    pub current: String,
    /// Its readable parts (prompt digest and args, params, model and mode, version).
    #[serde(default)]
    pub parts: BTreeMap<String, String>,
    /// Other fingerprints stored results of the step may carry.
    #[serde(default)]
    pub seen: Vec<String>,
}

/// A rework in progress: what was asked and when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReworkMarker {
    /// The flags, normalised (`--redo a --redo-changed ...`).
    pub request: String,
    /// Unix ms it started: results stored since are already remade.
    pub since_ms: u64,
}

/// The rework flags of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReworkFlags {
    /// `--redo STEP`.
    pub redo: BTreeSet<String>,
    /// `--redo-changed`.
    pub redo_changed: bool,
    /// `--reprocess STEP`.
    pub reprocess: BTreeSet<String>,
    /// `--reprocess-only`.
    pub reprocess_only: bool,
}

impl ReworkFlags {
    /// The rework flags of a command line.
    pub(crate) fn from_flags(flags: &CommonFlags) -> Self {
        Self {
            redo: flags.redo.iter().cloned().collect(),
            redo_changed: flags.redo_changed,
            reprocess: flags.reprocess.iter().cloned().collect(),
            reprocess_only: flags.reprocess_only,
        }
    }

    /// True when anything is asked for again.
    pub(crate) fn any(&self) -> bool {
        !self.redo.is_empty() || self.redo_changed || !self.reprocess.is_empty()
    }

    /// The flags as typed again, in a stable order.
    pub(crate) fn request(&self) -> String {
        let mut parts: Vec<String> = self.redo.iter().map(|s| format!("--redo {s}")).collect();
        if self.redo_changed {
            parts.push("--redo-changed".into());
        }
        parts.extend(self.reprocess.iter().map(|s| format!("--reprocess {s}")));
        if self.reprocess_only {
            parts.push("--reprocess-only".into());
        }
        parts.join(" ")
    }
}

/// What [`prepare`] found: warnings to print and the rework to run with.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Lines to print on stderr before anything is sent (each a whole warning).
    pub warnings: Vec<String>,
    /// The rework for the executor, when flags ask for one that concerns this chain.
    pub rework: Option<Arc<Rework>>,
}

fn read_fingerprints(store: &dyn Store) -> Result<BTreeMap<String, StepFingerprint>, RunError> {
    Ok(store
        .meta(FINGERPRINT_META_KEY)?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// The rework marker left by a run that has not finished its rework.
pub(crate) fn read_marker(store: &dyn Store) -> Result<Option<ReworkMarker>, RunError> {
    Ok(store
        .meta(REWORK_META_KEY)?
        .and_then(|v| serde_json::from_value(v).ok()))
}

/// Checks the rework flags against `chain`, counts results made with another fingerprint
/// (only for steps whose fingerprint changed), records the current fingerprints in store meta
/// and sets up the rework. Sends nothing. Bad flags are [`RunError::Config`] (exit 2) naming
/// the steps that exist.
pub(crate) async fn prepare(
    store: &dyn Store,
    chain: &[Arc<dyn Step>],
    ctx: &StepContext,
    flags: &ReworkFlags,
) -> Result<Prepared, RunError> {
    let mut meta = read_fingerprints(store)?;
    let names: Vec<&str> = chain.iter().map(|s| s.name()).collect();
    check_names(flags, &names, &meta)?;
    let fingerprints: Vec<Option<Fingerprint>> =
        chain.iter().map(|s| s.fingerprint_parts(ctx)).collect();
    let mut prepared = Prepared::default();
    for (step, fp) in chain.iter().zip(&fingerprints) {
        if flags.reprocess.contains(step.name()) {
            check_reprocess(store, step.as_ref(), &names)?;
        }
        let Some(fp) = fp else { continue };
        let current = fp.text();
        let entry = meta.remove(step.name()).unwrap_or_default();
        let mut seen: Vec<String> = Vec::new();
        if entry
            .seen
            .iter()
            .chain([&entry.current])
            .any(|s| !s.is_empty() && *s != current)
        {
            let counts = atk_step::count_fingerprints(store, step.name(), &current)?;
            if counts.older() > 0 {
                prepared
                    .warnings
                    .push(warning(step.as_ref(), &counts.other, flags));
            }
            if counts.unknown > 0 && !entry.current.is_empty() && entry.current != current {
                let what: Vec<&str> = atk_step::changed_parts(&entry.current, &current)
                    .iter()
                    .map(|p| p.noun())
                    .collect();
                prepared.warnings.push(format!(
                    "step `{}` changed since the last run ({}), and {} of its results were stored by an older atk \
                     without a fingerprint, so which of them were made the old way is unknown; they are reused as \
                     they are (`--redo {}` remakes them all)",
                    step.name(),
                    what.join(", "),
                    counts.unknown,
                    step.name()
                ));
            }
            seen = counts.seen;
        }
        meta.insert(
            step.name().to_string(),
            StepFingerprint {
                current,
                parts: fp.readable(),
                seen,
            },
        );
    }
    store
        .put_meta(
            FINGERPRINT_META_KEY,
            serde_json::to_value(&meta).map_err(RunError::fatal)?,
        )
        .await?;

    let marker = read_marker(store)?;
    if !flags.any() {
        if let Some(m) = marker {
            prepared.warnings.push(format!(
                "a run with `{}` did not finish (it was stopped, or some of its requests failed); the results it has \
                 not remade yet are reused as they are. Rerun with the same flags to finish it.",
                m.request
            ));
        }
        return Ok(prepared);
    }
    let request = flags.request();
    let since_ms = match marker {
        Some(m) if m.request == request => m.since_ms,
        _ => {
            let since_ms = atk_state::now_ms();
            let marker = ReworkMarker { request, since_ms };
            store
                .put_meta(
                    REWORK_META_KEY,
                    serde_json::to_value(marker).map_err(RunError::fatal)?,
                )
                .await?;
            since_ms
        }
    };
    let mut steps = BTreeMap::new();
    for (step, fp) in chain.iter().zip(&fingerprints) {
        let name = step.name();
        let mode = if flags.redo.contains(name) {
            ReworkMode::Redo
        } else if flags.reprocess.contains(name) {
            ReworkMode::Reprocess
        } else if flags.redo_changed && fp.is_some() {
            ReworkMode::RedoChanged
        } else {
            continue;
        };
        steps.insert(name.to_string(), mode);
    }
    prepared.rework = Some(Arc::new(
        Rework::new(steps, since_ms).report_only(flags.reprocess_only),
    ));
    Ok(prepared)
}

/// Marks the rework finished (a run with it completed).
pub(crate) async fn finish(store: &dyn Store) -> Result<(), RunError> {
    if store.meta(REWORK_META_KEY)?.is_some_and(|v| !v.is_null()) {
        store
            .put_meta(REWORK_META_KEY, serde_json::Value::Null)
            .await?;
    }
    Ok(())
}

fn check_names(
    flags: &ReworkFlags,
    names: &[&str],
    meta: &BTreeMap<String, StepFingerprint>,
) -> Result<(), RunError> {
    let list = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for name in flags.redo.iter().chain(&flags.reprocess) {
        // A step of another chain of the pipeline (run before) is known from store meta.
        if !names.contains(&name.as_str()) && !meta.contains_key(name) {
            return Err(RunError::Config(format!(
                "no step is named `{name}`; the steps are {list}; nothing was sent"
            )));
        }
    }
    if let Some(both) = flags.redo.intersection(&flags.reprocess).next() {
        return Err(RunError::Config(format!(
            "step `{both}` is given to both --redo and --reprocess; choose one; nothing was sent"
        )));
    }
    Ok(())
}

/// `--reprocess STEP` needs a step that can rerun its processor, and the raw replies stored.
fn check_reprocess(store: &dyn Store, step: &dyn Step, names: &[&str]) -> Result<(), RunError> {
    let name = step.name();
    if !step.can_reprocess() {
        return Err(RunError::Config(format!(
            "step `{name}` cannot be reprocessed (it has no single stored reply per item: a vote, a fan-in or a \
             step made from a function); use --redo {name}. Steps of this chain: {}; nothing was sent",
            names.join(", ")
        )));
    }
    let (mut total, mut without) = (0u64, 0u64);
    for r in store.results(name) {
        let (_, record) = r?;
        total += 1;
        let made_without_call = matches!(record.outcome, Outcome::Dropped { .. })
            && record.prompt_tokens + record.completion_tokens == 0;
        if record.raw.is_none() && !made_without_call {
            without += 1;
        }
    }
    if without > 0 {
        return Err(RunError::Config(format!(
            "--reprocess {name}: {without} of its {total} stored results have no raw reply (they were stored by \
             an older atk, which kept replies only with meta datagen on); use --redo {name} to request them \
             again. Steps of this chain: {}; nothing was sent",
            names.join(", ")
        )));
    }
    Ok(())
}

/// "step `x`: 5 results were made with another prompt ..." and what to do (`--reprocess`
/// only for a step that can rerun its processor over a stored reply: not a vote or a fan-in).
fn warning(step: &dyn Step, other: &BTreeMap<Vec<Part>, u64>, flags: &ReworkFlags) -> String {
    let can_reprocess = step.can_reprocess();
    let step = step.name();
    let mut s = format!("step `{step}`: ");
    let groups: Vec<String> = other
        .iter()
        .map(|(parts, n)| {
            let what: Vec<&str> = parts.iter().map(|p| p.phrase()).collect();
            let what = match what.as_slice() {
                [] => "another fingerprint".to_string(),
                [one] => one.to_string(),
                [init @ .., last] => format!("{} and {last}", init.join(", ")),
            };
            let verb = if *n == 1 {
                "result was"
            } else {
                "results were"
            };
            format!("{n} {verb} made with {what}")
        })
        .collect();
    s.push_str(&groups.join("; "));
    let reworked =
        flags.redo.contains(step) || flags.reprocess.contains(step) || flags.redo_changed;
    if reworked {
        s.push_str(" (being remade in this run as asked)");
        return s;
    }
    let changed: BTreeSet<Part> = other.keys().flatten().copied().collect();
    s.push_str(
        ". They are reused as they are; nothing is sent for them. To remake them: \
         `--redo-changed` (only these, and the later steps of their items)",
    );
    let _ = write!(s, ", `--redo {step}` (every result of the step)");
    if !can_reprocess {
        // A vote or a fan-in keeps no single reply per item to rerun a processor over.
    } else if changed.iter().all(|p| *p == Part::Version) {
        let _ = write!(
            s,
            ", or `--reprocess {step}` (rerun its output processor and validator on the stored \
             replies; only replies that now fail are requested again)"
        );
    } else {
        let _ = write!(
            s,
            "; `--reprocess {step}` reruns only its output processor and validator on the stored replies"
        );
    }
    s
}

/// What a rework did, one line per step of `chain` (in chain order; empty when nothing was
/// reworked).
pub(crate) fn render_counts(
    chain: &[Arc<dyn Step>],
    counts: &BTreeMap<String, ReworkCounts>,
    report_only: bool,
) -> String {
    let mut s = String::new();
    for (step, c) in chain
        .iter()
        .filter_map(|st| counts.get_key_value(st.name()))
    {
        let reprocessed = c.unchanged + c.changed + c.rejected_total();
        if reprocessed > 0 {
            let _ = write!(
                s,
                "reprocess `{step}`: {reprocessed} stored replies rechecked, nothing sent for them: {} unchanged, {} with a new output, {} now fail",
                c.unchanged,
                c.changed,
                c.rejected_total()
            );
            if c.rejected_total() > 0 {
                let _ = write!(
                    s,
                    "{}",
                    if report_only {
                        " (only reported: --reprocess-only)"
                    } else {
                        " (requested again)"
                    }
                );
                for (reason, n) in c.rejected.iter().take(5) {
                    let _ = write!(s, "\n  {n} × {reason}");
                }
            }
            s.push('\n');
        }
        let requested = c.requested
            - if report_only {
                0
            } else {
                c.rejected_total().min(c.requested)
            };
        if requested > 0 {
            let _ = writeln!(s, "redo `{step}`: {requested} results requested again");
        }
    }
    s
}

#[cfg(test)]
mod tests;
