//! Group commit: one dedicated OS thread makes writes durable in batches.
//!
//! sled 0.34's `insert` only reaches the OS when the log is flushed, so a SIGKILL loses
//! whatever was inserted since the last flush. Calling `flush_async` from many tasks
//! deadlocks (sled issue #1308) and a blocking flush per writer is slow, so writers instead
//! register here after inserting and wait. The commit thread takes every waiter registered so
//! far, *then* starts a blocking `Db::flush()`, and answers them when it ends: each writer's
//! insert is therefore covered by a flush that started after it registered.
//!
//! Hand-written rather than taken from a crate: it is a condvar, a vector of oneshot senders
//! and a loop, and no crate offers a group commit around sled's flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Result of one group flush, shared by every writer it covered.
type FlushResult = Result<(), String>;

/// The commit thread and the queue of writers waiting for it.
pub(crate) struct GroupCommit {
    /// State shared with the thread.
    shared: Arc<Shared>,
    /// The thread, joined on shutdown.
    thread: Option<JoinHandle<()>>,
}

/// What the writers and the commit thread share.
struct Shared {
    /// Waiters and the shutdown flag.
    state: Mutex<State>,
    /// Wakes the thread when the first waiter arrives or on shutdown.
    wake: Condvar,
    /// Group flushes completed.
    flushes: AtomicU64,
}

/// Waiters not yet covered by a started flush.
#[derive(Default)]
struct State {
    /// Senders to answer once the next flush completes.
    waiters: Vec<oneshot::Sender<FlushResult>>,
    /// Set once by [`GroupCommit::shutdown`].
    shutdown: bool,
}

impl Shared {
    /// Locks the state; a panic elsewhere cannot leave the vector half-written, so a poisoned
    /// lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GroupCommit {
    /// Starts the commit thread calling `flush`; `interval` is the least time between flush
    /// starts while writers are concurrent (after a flush that answered more than one
    /// writer); a lone writer is never held back.
    pub(crate) fn start(
        flush: impl Fn() -> FlushResult + Send + 'static,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("atk-state-commit".to_owned())
            .spawn(move || run(&flush, &thread_shared, interval))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until a flush that started after this call has completed.
    pub(crate) async fn durable(&self) -> FlushResult {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            state.waiters.push(tx);
            if state.waiters.len() == 1 {
                self.shared.wake.notify_one();
            }
        }
        rx.await
            .unwrap_or_else(|_| Err("the store's commit thread stopped".to_owned()))
    }

    /// Group flushes completed so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Stops the thread after a last flush and waits for it.
    pub(crate) fn shutdown(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's commit thread panicked");
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The commit loop: sleep while nobody waits; otherwise take all waiters, flush, answer them.
///
/// Pacing applies only after a flush that answered several writers: with many concurrent
/// writers (a run's results arriving ~1000/s) it gathers them into fewer, larger flushes (at
/// 3 ms, 1 800 flushes for a 3 000-item run became ~570); a writer that waits alone (seeding,
/// a sequential chain) is answered by the next flush at once, as before.
fn run(flush: &dyn Fn() -> FlushResult, shared: &Shared, interval: Duration) {
    let mut last_start: Option<Instant> = None;
    // Whether the last flush answered more than one writer.
    let mut concurrent = false;
    loop {
        let batch = {
            let mut state = shared.lock();
            loop {
                if state.waiters.is_empty() {
                    if state.shutdown {
                        break;
                    }
                    state = shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                // Optional pacing: gather more writers into one flush (never delays shutdown).
                let due = last_start
                    .filter(|_| concurrent)
                    .map(|at| at + interval)
                    .filter(|due| *due > Instant::now());
                match due {
                    Some(due) if !state.shutdown => {
                        let wait = due.saturating_duration_since(Instant::now());
                        state = shared
                            .wake
                            .wait_timeout(state, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    _ => break,
                }
            }
            if state.waiters.is_empty() && state.shutdown {
                break;
            }
            std::mem::take(&mut state.waiters)
        };
        last_start = Some(Instant::now());
        concurrent = batch.len() > 1;
        let result = flush();
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(message) = &result {
            tracing::error!(%message, "store flush failed");
        }
        for waiter in batch {
            // A writer whose future was dropped no longer listens; nothing to do.
            let _ = waiter.send(result.clone());
        }
    }
    if let Err(message) = flush() {
        tracing::error!(%message, "final store flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sled store that flushes only when asked, and its flush as the commit thread runs it.
    fn sled_store(dir: &std::path::Path) -> (sled::Db, impl Fn() -> FlushResult + Send + 'static) {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let flusher = db.clone();
        (db, move || {
            flusher.flush().map(drop).map_err(|e| e.to_string())
        })
    }

    #[tokio::test]
    async fn many_writers_are_answered_and_shutdown_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (db, flush) = sled_store(dir.path());
        let commit = Arc::new(GroupCommit::start(flush, Duration::ZERO).unwrap());
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (db, commit) = (db.clone(), Arc::clone(&commit));
                tokio::spawn(async move {
                    db.insert(format!("k{i}"), b"v".as_slice()).unwrap();
                    commit.durable().await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        let mut commit = Arc::into_inner(commit).unwrap();
        commit.shutdown();
        assert!(commit.thread.is_none(), "the thread was joined");
        assert!(
            (1..=50).contains(&commit.flushes()),
            "writers shared flushes: {}",
            commit.flushes()
        );
    }

    #[tokio::test]
    async fn a_lone_writer_is_not_held_back_by_the_pacing_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, flush) = sled_store(dir.path());
        // An hour between flushes: a sequential writer paced by it would never finish.
        let commit = GroupCommit::start(flush, Duration::from_secs(3600)).unwrap();
        for _ in 0..20 {
            assert_eq!(commit.durable().await, Ok(()));
        }
        assert_eq!(commit.flushes(), 20, "one flush per sequential write");
    }

    #[tokio::test]
    async fn pacing_interval_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, flush) = sled_store(dir.path());
        let commit = GroupCommit::start(flush, Duration::from_millis(2)).unwrap();
        for _ in 0..3 {
            assert_eq!(commit.durable().await, Ok(()));
        }
    }
}
