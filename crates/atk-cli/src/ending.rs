//! How a run ends, decided in one place: the pipeline's outcome and the summary give the exit
//! and the [`RunState`] recorded for `atk status`; only a run that completed moves its staged
//! datasets into place (a failed one removes them, leaving the previous datasets and card as
//! they were).

use std::path::{Path, PathBuf};

use crate::error::RunError;
use crate::layout::{row_items_path, row_sources_path, staging_dir};
use crate::status::RunState;
use crate::summary::RunSummary;

/// The run's final outcome and its state: an `Ok` pipeline run still fails when every item
/// failed or nothing was kept.
pub(crate) fn judge(
    outcome: Result<(), RunError>,
    summary: &RunSummary,
) -> (Result<(), RunError>, RunState) {
    let outcome = outcome.and_then(|()| {
        if summary.all_failed() {
            return Err(RunError::AllFailed);
        }
        match summary.nothing_kept() {
            Some(why) => Err(RunError::NothingKept(why)),
            None => Ok(()),
        }
    });
    let state = match &outcome {
        Ok(()) => RunState::Finished,
        // A preview stops on purpose before the chain is through: rerun to go on.
        Err(RunError::Interrupted | RunError::Preview(_)) => RunState::Interrupted,
        Err(e @ RunError::BudgetReached { .. }) => RunState::BudgetReached {
            reason: e.to_string(),
        },
        Err(RunError::AllFailed) => RunState::Failed {
            reason: summary.failure_reason(),
        },
        Err(e) => RunState::Failed {
            reason: e.to_string(),
        },
    };
    (outcome, state)
}

/// Where a dataset the run staged at `staged` is published.
pub(crate) fn final_path(output_dir: &Path, staged: &Path) -> PathBuf {
    match staged.strip_prefix(staging_dir(output_dir)) {
        Ok(rel) => output_dir.join(rel),
        Err(_) => staged.to_path_buf(),
    }
}

/// The rows the datasets left out, named by the datasets' final paths.
pub(crate) fn dropped_rows(
    output_dir: &Path,
    dropped: Vec<(PathBuf, String, u64)>,
) -> Vec<crate::summary::DroppedRows> {
    dropped
        .into_iter()
        .map(|(file, reason, count)| crate::summary::DroppedRows {
            file: final_path(output_dir, &file),
            reason,
            count,
        })
        .collect()
}

/// Moves every staged dataset and its sources sidecar into place (each by one rename: a reader
/// sees the old file or the new one), then removes the staging folder. A file with nothing
/// staged (its writer found it equal to the published one), or staged with the same bytes as
/// the published one (a meta dataset a rerun wrote again), is left as it was: same inode, same
/// mtime.
pub(crate) fn publish(output_dir: &Path, staged: &[(PathBuf, u64)]) -> Result<(), RunError> {
    for (path, _) in staged {
        let target = final_path(output_dir, path);
        if target == *path {
            continue;
        }
        let moves = [
            (path.clone(), target.clone()),
            (row_sources_path(path), row_sources_path(&target)),
            (row_items_path(path), row_items_path(&target)),
        ];
        for (from, to) in moves {
            if !from.is_file() || crate::dataset::same_bytes(&from, &to) {
                continue;
            }
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| RunError::fatal(format!("creating {}: {e}", dir.display())))?;
            }
            std::fs::rename(&from, &to).map_err(|e| {
                RunError::fatal(format!(
                    "moving {} into place as {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
        }
    }
    discard(output_dir);
    Ok(())
}

/// Removes what a run staged (a failed run, or one killed before it could publish).
pub(crate) fn discard(output_dir: &Path) {
    let dir = staging_dir(output_dir);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the staged datasets");
    }
}

/// Records `state` in `status.json` without the run's counters (the process is about to
/// exit: a second Ctrl-C).
pub(crate) fn mark(output_dir: &Path, state: RunState) {
    let Ok(mut s) = crate::status::StatusSnapshot::read(output_dir) else {
        return;
    };
    s.state = state;
    s.requests_in_flight = 0;
    s.updated_at_ms = atk_state::now_ms();
    if let Ok(v) = serde_json::to_value(&s) {
        let _ = atk_state::write_status_snapshot(output_dir, &v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(datasets: Vec<(PathBuf, u64)>, finished: u64) -> RunSummary {
        let mut s = RunSummary::new("p", std::time::Duration::ZERO, &[], &[], datasets, None);
        s.finished = finished;
        s
    }

    #[test]
    fn an_empty_dataset_or_an_error_is_a_failure_with_its_reason() {
        let ok = summary(vec![("out/a.jsonl".into(), 3)], 3);
        assert_eq!(judge(Ok(()), &ok).1, RunState::Finished);
        let empty = summary(vec![("out/a.jsonl".into(), 0)], 0);
        let (outcome, state) = judge(Ok(()), &empty);
        assert_eq!(outcome.unwrap_err().exit_code(), 1);
        assert!(
            matches!(&state, RunState::Failed { reason } if reason.contains("empty")),
            "{state:?}"
        );
        let (outcome, state) = judge(Err(RunError::Interrupted), &ok);
        assert_eq!(outcome.unwrap_err().exit_code(), 130);
        assert_eq!(state, RunState::Interrupted);
        let (_, state) = judge(Err(RunError::fatal("the key was refused")), &ok);
        assert_eq!(
            state,
            RunState::Failed {
                reason: "the key was refused".into()
            }
        );
    }

    #[test]
    fn publishing_moves_staged_files_into_place_and_discarding_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("a.jsonl"), "old\n").unwrap();
        let stage = |name: &str, text: &str| {
            let p = staging_dir(out).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            (p, 1u64)
        };
        stage("a.jsonl", "new\n");
        discard(out);
        assert_eq!(
            std::fs::read_to_string(out.join("a.jsonl")).unwrap(),
            "old\n"
        );
        assert!(!staging_dir(out).exists());

        let staged = vec![stage("a.jsonl", "new\n"), stage("meta/b.jsonl", "b\n")];
        publish(out, &staged).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("a.jsonl")).unwrap(),
            "new\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("meta/b.jsonl")).unwrap(),
            "b\n"
        );
        assert!(!staging_dir(out).exists());
        assert_eq!(final_path(out, &staged[1].0), out.join("meta/b.jsonl"));
    }

    #[cfg(unix)]
    #[test]
    fn publishing_leaves_files_with_nothing_staged_or_the_same_bytes_as_they_were() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let ino = |name: &str| std::fs::metadata(out.join(name)).unwrap().ino();
        for name in ["a.jsonl", ".a.jsonl.sources", "m.jsonl", "c.jsonl"] {
            std::fs::write(out.join(name), "same\n").unwrap();
        }
        let before = [ino("a.jsonl"), ino(".a.jsonl.sources"), ino("m.jsonl")];
        let stage = |name: &str, text: &str| {
            let p = staging_dir(out).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            (p, 1u64)
        };
        // a.jsonl: its writer staged nothing; m.jsonl: staged with the same bytes; c.jsonl:
        // the same dataset but a changed sidecar.
        let staged = vec![
            (staging_dir(out).join("a.jsonl"), 1),
            stage("m.jsonl", "same\n"),
            stage(".c.jsonl.sources", "\"doc.txt\"\n"),
            (staging_dir(out).join("c.jsonl"), 1),
        ];
        publish(out, &staged).unwrap();
        assert_eq!(
            [ino("a.jsonl"), ino(".a.jsonl.sources"), ino("m.jsonl")],
            before
        );
        assert_eq!(
            std::fs::read_to_string(out.join(".c.jsonl.sources")).unwrap(),
            "\"doc.txt\"\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("c.jsonl")).unwrap(),
            "same\n"
        );
        assert!(!staging_dir(out).exists());
    }
}
