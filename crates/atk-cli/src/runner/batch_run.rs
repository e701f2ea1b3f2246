//! Batch mode at the run's level: `--cancel-batches`, what a run that leaves batches at the
//! provider says (the one command that collects them), and the progress line while a run
//! waits for its batches.

use std::path::Path;
use std::sync::Arc;

use atk_engine::{BatchControl, BatchProgress};
use atk_state::Store;

use super::RunOutcome;
use super::engines::{batch_config, engine_config};
use super::journal::RunBatches;
use crate::error::RunError;
use crate::flags::CommonFlags;
use crate::progress::Progress;
use crate::settings::Settings;
use crate::status::{BatchStatus, RunState, STATUS_META_KEY, StatusSnapshot};

/// The command that collects the batches a run left running: the run's own command line
/// without `--no-wait` / `--cancel-batches` (or `<pipeline> --config FILE` when it is not
/// known), quoted for a POSIX shell.
pub(super) fn collect_command(flags: &CommonFlags, pipeline: &str) -> String {
    let words: Vec<String> = if flags.command.is_empty() {
        vec![
            pipeline.to_string(),
            "--config".into(),
            flags.config.display().to_string(),
        ]
    } else {
        flags
            .command
            .iter()
            .filter(|a| *a != "--no-wait" && *a != "--cancel-batches")
            .cloned()
            .collect()
    };
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as a POSIX shell reads it back: as is when it holds only safe characters, else in
/// single quotes.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a run says about the batches it leaves at the provider: how many, and the command that
/// collects them (`no_wait`: it left them on purpose, and only what was ready went).
pub(super) fn left_message(left: &[BatchStatus], command: &str, no_wait: bool) -> String {
    let requests: u64 = left.iter().map(|b| b.total).sum();
    let n = left.len();
    let batches = if n == 1 { "batch" } else { "batches" };
    if no_wait {
        // A batch can end while the run still polls it: the requests sent away before that
        // are collected by the next run all the same (see `RunBatches::left_running`).
        let ended = match left.iter().filter(|b| b.ended).count() {
            0 => String::new(),
            1 if n == 1 => " (it has since ended: its results are ready for the next run)".into(),
            k if k == n => {
                " (all have since ended: their results are ready for the next run)".into()
            }
            k => {
                format!(" ({k} of them have since ended: their results are ready for the next run)")
            }
        };
        format!(
            "--no-wait: {n} {batches} ({requests} requests) submitted and left running at the provider{ended}; \
             only requests whose inputs were ready could go (a chain's first step: later steps need \
             these results and go in batches of their own from a later run)\n\
             collect them with: {command}\n"
        )
    } else {
        format!(
            "{n} {batches} ({requests} requests) left running at the provider (they are paid for); collect them with: {command}\n"
        )
    }
}

/// `--cancel-batches`: cancels every batch the journals list as still at the provider, records
/// them cancelled, and says what it cancelled. A batch whose id was never stored is looked
/// for by its tag where the provider's list allows (OpenAI).
pub(super) async fn cancel_batches(
    settings: &Settings,
    store: &Arc<dyn Store>,
    flags: &CommonFlags,
    pipeline: &str,
) -> Result<RunOutcome, RunError> {
    let batches = RunBatches::all(settings, store)?;
    let mut cancelled = 0;
    let mut failures = Vec::new();
    for journal in batches.journals() {
        let open: Vec<BatchStatus> = journal
            .statuses()
            .into_iter()
            .filter(BatchStatus::in_progress)
            .collect();
        if open.is_empty() {
            continue;
        }
        let Some(e) = settings
            .engines
            .iter()
            .find(|e| e.label == journal.engine())
        else {
            continue;
        };
        let control =
            BatchControl::new(&engine_config(settings, e).with_batch(batch_config(settings)))?;
        for b in open {
            let id = match &b.id {
                Some(id) => Some(id.clone()),
                None => control.find(&b.key).await,
            };
            let Some(id) = id else {
                // Never created, or created without its id stored where the provider's list
                // cannot be searched: nothing atk can cancel.
                let gone = BatchProgress {
                    state: "not found".into(),
                    ended: true,
                    total: b.total,
                    ..BatchProgress::default()
                };
                journal.cancelled(&b.key, None, Some(&gone)).await?;
                crate::out::info(&format!(
                    "batch {} ({}): no id stored and not found at the provider; nothing to cancel\n",
                    b.key, b.engine
                ));
                continue;
            };
            match control.cancel(&id).await {
                Ok(p) => {
                    journal.cancelled(&b.key, Some(&id), Some(&p)).await?;
                    cancelled += 1;
                    crate::out::result(&format!(
                        "cancelled batch {id} ({}, {}): {}, {} of {} requests done",
                        b.engine, b.provider, p.state, p.done, p.total
                    ));
                }
                Err(err) => failures.push(format!("batch {id} ({}): {err}", b.engine)),
            }
        }
    }
    // The run's status lists the batches as they are now.
    let output_dir = &settings.output_dir;
    let mut snapshot = StatusSnapshot::read(output_dir).unwrap_or_default();
    if snapshot.pipeline.is_empty() {
        snapshot.pipeline = pipeline.to_string();
    }
    if snapshot.state == RunState::WaitingForBatches || snapshot.is_running() {
        snapshot.state = RunState::Interrupted;
    }
    snapshot.batches = batches.statuses();
    snapshot.updated_at_ms = atk_state::now_ms();
    write_snapshot(output_dir, store, &snapshot).await;
    let command = collect_command(flags, pipeline);
    if cancelled == 0 && failures.is_empty() {
        crate::out::info("no batch is at the provider: nothing to cancel\n");
    } else if cancelled > 0 {
        crate::out::info(&format!(
            "{cancelled} batch{} cancelled; the next run collects what {} finished and sends the rest in new batches: {command}\n",
            if cancelled == 1 { "" } else { "es" },
            if cancelled == 1 { "it" } else { "they" },
        ));
    }
    if !failures.is_empty() {
        return Err(RunError::fatal(format!(
            "could not cancel {} batch(es): {}",
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(RunOutcome::BatchesCancelled)
}

async fn write_snapshot(output_dir: &Path, store: &Arc<dyn Store>, snapshot: &StatusSnapshot) {
    if let Ok(v) = serde_json::to_value(snapshot) {
        let _ = atk_state::write_status_snapshot(output_dir, &v);
        let _ = store.put_meta(STATUS_META_KEY, v).await;
    }
}

/// Shows "waiting for batch (n of m done)" as the progress milestone while the run polls
/// batches, and puts the milestone it replaced back when the wait is over. `shown` is the
/// replaced milestone while a wait is shown.
pub(super) fn show_wait(
    progress: &Progress,
    batches: &RunBatches,
    shown: &mut Option<(f64, String)>,
) {
    match batches.wait_message() {
        Some(message) => {
            let current = progress.snapshot().milestone;
            if current.as_ref().map(|(_, m)| m) == Some(&message) {
                return;
            }
            if shown.is_none() {
                *shown = Some(current.clone().unwrap_or((0.1, String::new())));
            }
            let at = shown.as_ref().map_or(0.1, |(p, _)| *p);
            progress.set_progress(at, &message);
        }
        None => {
            if let Some((at, before)) = shown.take()
                && !before.is_empty()
            {
                progress.set_progress(at, &before);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collect_command_is_the_run_again_without_no_wait_and_quoted() {
        let flags = CommonFlags {
            command: vec![
                "example-pipeline".into(),
                "--config".into(),
                "my config.yaml".into(),
                "--no-wait".into(),
                "--set".into(),
                "small_mode=batch".into(),
            ],
            ..CommonFlags::default()
        };
        assert_eq!(
            collect_command(&flags, "example-pipeline"),
            "example-pipeline --config 'my config.yaml' --set small_mode=batch"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let none = CommonFlags {
            config: "c.yaml".into(),
            ..CommonFlags::default()
        };
        assert_eq!(collect_command(&none, "p"), "p --config c.yaml");
    }

    #[test]
    fn the_waiting_line_counts_requests_done_over_the_batches_polled() {
        let left = vec![BatchStatus {
            total: 4,
            ..BatchStatus::default()
        }];
        let text = left_message(&left, "p --config c.yaml", false);
        assert_eq!(
            text,
            "1 batch (4 requests) left running at the provider (they are paid for); collect them with: p --config c.yaml\n"
        );
        assert!(left_message(&left, "p", true).contains("collect them with: p\n"));
        // A batch that ended during a --no-wait run, beside one still running.
        let ended = BatchStatus {
            total: 2,
            ended: true,
            ..BatchStatus::default()
        };
        let text = left_message(&[left[0].clone(), ended.clone()], "p", true);
        assert!(
            text.contains("2 batches (6 requests) submitted and left running at the provider (1 of them have since ended"),
            "{text}"
        );
        let text = left_message(&[ended], "p", true);
        assert!(
            text.contains("(it has since ended: its results are ready"),
            "{text}"
        );
        assert!(text.contains("collect them with: p\n"), "{text}");
    }
}
