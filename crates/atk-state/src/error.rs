//! Store errors.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process holds the store (a run is already using this output dir).
    #[error("the store at {path} is in use by another run ({}); wait for it to finish or use another output_dir", holder(.pid))]
    Locked {
        /// Store directory.
        path: PathBuf,
        /// The holder's pid, when known.
        pid: Option<u32>,
    },
    /// The store was written by an incompatible atk version.
    #[error(
        "the store at {path} was written in format version {found}; this atk reads version {expected}. Use a fresh output_dir (or the matching atk version)"
    )]
    Incompatible {
        /// Store directory.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A record could not be decoded.
    #[error("corrupt record {key}: {message}")]
    Corrupt {
        /// The key of the record.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// No store exists at the path (only from [`SledStore::try_open_read`](crate::SledStore::try_open_read)).
    #[error("no atk store at {path}")]
    NotFound {
        /// Store directory.
        path: PathBuf,
    },
    /// A step name that cannot key records (empty, or containing a NUL byte).
    #[error("invalid step name {name:?}: {reason}")]
    InvalidStep {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The store does not implement an operation (a test or dry-run store).
    #[error("this store cannot {operation}")]
    Unsupported {
        /// What was asked, e.g. `remove items`.
        operation: &'static str,
    },
    /// sled found the store damaged (a bad checksum): some of what it held is unreadable.
    #[error(
        "the store at {path} is damaged: {message}. Keep a copy of it (e.g. `cp -a {path} {path}.damaged`), then move it aside to start over; every result it held will be requested again"
    )]
    Damaged {
        /// Store directory.
        path: PathBuf,
        /// What sled reported.
        message: String,
    },
    /// sled or the file system failed.
    #[error("store I/O at {path}: {message}")]
    Io {
        /// Store directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Names the holder of a lock for [`Error::Locked`]'s message.
fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}
