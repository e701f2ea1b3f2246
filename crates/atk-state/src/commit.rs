//! Group commit: one dedicated OS thread makes writes durable in batches.
//!
//! sled 0.34's `insert` only reaches the OS when the log is flushed, so a SIGKILL loses
//! whatever was inserted since the last flush. Calling `flush_async` from many tasks
//! deadlocks (sled issue #1308) and a blocking flush per writer is slow, so writers instead
//! register here and wait. The commit thread takes every waiter registered so far, applies
//! the writes they handed over (if any), *then* starts a blocking `Db::flush()`, and answers
//! them when it ends: each writer's write is therefore covered by a flush that started after
//! it registered.
//!
//! Handing the write over instead of inserting it in the writer's task keeps sled's tree work
//! on one thread, in one run right before the flush: the tokio workers do none, and hundreds
//! of concurrent inserts no longer contend on sled's page cache.
//!
//! Hand-written rather than taken from a crate: it is a condvar, a vector of oneshot senders
//! and a loop, and no crate offers a group commit around sled's flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Result of one group flush, shared by every writer it covered.
pub(crate) type FlushResult = Result<(), String>;

/// What a writer is answered: for a handed-over write, whether it replaced a value.
type Answer = Result<bool, String>;

/// A registered writer: the write it handed over (if any) and where to answer it.
struct Waiter<W> {
    /// Applied by the commit thread before the flush that answers this writer.
    write: Option<W>,
    /// Answered once that flush completes.
    answer: oneshot::Sender<Answer>,
}

/// The commit thread and the queue of writers waiting for it; `W` is a write handed over.
pub(crate) struct GroupCommit<W> {
    /// State shared with the thread.
    shared: Arc<Shared<W>>,
    /// The thread, joined on shutdown.
    thread: Option<JoinHandle<()>>,
}

/// What the writers and the commit thread share.
struct Shared<W> {
    /// Waiters and the shutdown flag.
    state: Mutex<State<W>>,
    /// Wakes the thread when the first waiter arrives or on shutdown.
    wake: Condvar,
    /// Group flushes completed.
    flushes: AtomicU64,
}

/// Waiters not yet covered by a started flush.
struct State<W> {
    /// Writers to answer once the next flush completes, in registration order.
    waiters: Vec<Waiter<W>>,
    /// Set once by [`GroupCommit::shutdown`].
    shutdown: bool,
}

impl<W> Shared<W> {
    /// Locks the state; a panic elsewhere cannot leave the vector half-written, so a poisoned
    /// lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the commit thread does: apply a handed-over write, and flush.
pub(crate) trait Committer: Send + 'static {
    /// A write handed over by a writer.
    type Write: Send + 'static;
    /// Applies one write (not yet durable); says whether it replaced a value.
    fn apply(&self, write: Self::Write) -> Answer;
    /// Makes everything applied so far durable.
    fn flush(&self) -> FlushResult;
}

impl<W: Send + 'static> GroupCommit<W> {
    /// Starts the commit thread over `committer`; `interval` is the least time between flush
    /// starts while writers are concurrent (after a flush that answered more than one
    /// writer); a lone writer is never held back.
    pub(crate) fn start<C: Committer<Write = W>>(
        committer: C,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiters: Vec::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("atk-state-commit".to_owned())
            .spawn(move || run(&committer, &thread_shared, interval))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until a flush that started after this call has completed.
    pub(crate) async fn durable(&self) -> FlushResult {
        self.register(None).await.map(drop)
    }

    /// Hands `write` to the commit thread and waits until a flush that started after it was
    /// applied has completed; says whether it replaced a value.
    pub(crate) async fn write_durable(&self, write: W) -> Answer {
        self.register(Some(write)).await
    }

    /// Registers a writer and waits for its answer.
    async fn register(&self, write: Option<W>) -> Answer {
        let (answer, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            state.waiters.push(Waiter { write, answer });
            if state.waiters.len() == 1 {
                self.shared.wake.notify_one();
            }
        }
        rx.await
            .unwrap_or_else(|_| Err("the store's commit thread stopped".to_owned()))
    }
}

impl<W> GroupCommit<W> {
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

impl<W> Drop for GroupCommit<W> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The commit loop: sleep while nobody waits; otherwise take all waiters, apply their writes,
/// flush, answer them.
///
/// Pacing applies only after a flush that answered several writers: with many concurrent
/// writers (a run's results arriving ~1000/s) it gathers them into fewer, larger flushes (at
/// 10 ms, ~1 800 flushes for a 3 000-item run become ~250); a writer that waits alone (seeding,
/// a sequential chain) is answered by the next flush at once, as before.
fn run<C: Committer>(committer: &C, shared: &Shared<C::Write>, interval: Duration) {
    let mut last_start: Option<Instant> = None;
    // Whether the last flush answered more than one writer.
    let mut concurrent = false;
    // Per waiter of the batch: its answer before the flush (whether it replaced a value).
    let mut applied: Vec<Answer> = Vec::new();
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
        let mut answers = Vec::with_capacity(batch.len());
        applied.clear();
        for waiter in batch {
            applied.push(match waiter.write {
                Some(write) => committer.apply(write),
                None => Ok(false),
            });
            answers.push(waiter.answer);
        }
        let result = committer.flush();
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(message) = &result {
            tracing::error!(%message, "store flush failed");
        }
        for (answer, replaced) in answers.into_iter().zip(applied.drain(..)) {
            let reply = match &result {
                Ok(()) => replaced,
                Err(message) => Err(message.clone()),
            };
            // A writer whose future was dropped no longer listens; nothing to do.
            let _ = answer.send(reply);
        }
    }
    if let Err(message) = committer.flush() {
        tracing::error!(%message, "final store flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sled store that flushes only when the commit thread asks; handed writes are inserts.
    struct SledCommitter(sled::Db);

    impl Committer for SledCommitter {
        type Write = (String, &'static [u8]);

        fn apply(&self, (key, value): Self::Write) -> Answer {
            self.0
                .insert(key, value)
                .map(|old| old.is_some())
                .map_err(|e| e.to_string())
        }

        fn flush(&self) -> FlushResult {
            self.0.flush().map(drop).map_err(|e| e.to_string())
        }
    }

    /// A sled database in `dir` and its committer.
    fn sled_store(dir: &std::path::Path) -> (sled::Db, SledCommitter) {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap();
        (db.clone(), SledCommitter(db))
    }

    #[tokio::test]
    async fn many_writers_are_answered_and_shutdown_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (db, committer) = sled_store(dir.path());
        let commit = Arc::new(GroupCommit::start(committer, Duration::ZERO).unwrap());
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
    async fn handed_writes_are_applied_before_the_flush_that_answers_them() {
        let dir = tempfile::tempdir().unwrap();
        let (db, committer) = sled_store(dir.path());
        let commit = Arc::new(GroupCommit::start(committer, Duration::from_millis(1)).unwrap());
        // 40 concurrent writers of new keys, then 20 that replace.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let commit = Arc::clone(&commit);
                tokio::spawn(async move { commit.write_durable((format!("k{i}"), b"v1")).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(false), "every key was new");
        }
        for i in 0..20 {
            let answer = commit.write_durable((format!("k{i}"), b"v2")).await;
            assert_eq!(answer, Ok(true), "key k{i} held a value");
        }
        let flushes = commit.flushes();
        drop(commit);
        assert!(flushes <= 60, "writers shared flushes: {flushes}");
        // Each answered write was flushed: it is in the log a reopened database reads.
        drop(db);
        let reopened = sled::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 40);
        assert_eq!(&*reopened.get("k3").unwrap().unwrap(), b"v2");
        assert_eq!(&*reopened.get("k33").unwrap().unwrap(), b"v1");
    }

    #[tokio::test]
    async fn a_lone_writer_is_not_held_back_by_the_pacing_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, committer) = sled_store(dir.path());
        // An hour between flushes: a sequential writer paced by it would never finish.
        let commit = GroupCommit::start(committer, Duration::from_secs(3600)).unwrap();
        for _ in 0..20 {
            assert_eq!(commit.durable().await, Ok(()));
        }
        assert_eq!(commit.flushes(), 20, "one flush per sequential write");
    }

    #[tokio::test]
    async fn pacing_interval_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, committer) = sled_store(dir.path());
        let commit = GroupCommit::start(committer, Duration::from_millis(2)).unwrap();
        for _ in 0..3 {
            assert_eq!(commit.durable().await, Ok(()));
        }
    }
}
