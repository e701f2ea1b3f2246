//! Errors of reading an input folder.

use std::path::PathBuf;

use crate::Skipped;

/// Why [`read_dir`](crate::read_dir) produced no chunks at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input directory does not exist.
    #[error("input directory {} does not exist", dir.display())]
    MissingDir {
        /// The directory asked for.
        dir: PathBuf,
    },
    /// The input path exists but is not a directory.
    #[error("input path {} is not a directory", dir.display())]
    NotADir {
        /// The path asked for.
        dir: PathBuf,
    },
    /// The directory could not be listed.
    #[error("cannot read input directory {}: {source}", dir.display())]
    Unreadable {
        /// The directory asked for.
        dir: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Nothing in the directory yielded text.
    #[error("no text found in {}{}", dir.display(), skipped_list(skipped))]
    NoInput {
        /// The directory asked for.
        dir: PathBuf,
        /// Every file that was skipped, with its reason.
        skipped: Vec<Skipped>,
    },
}

fn skipped_list(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return " (no readable files)".into();
    }
    let mut s = format!("; skipped {} file(s):", skipped.len());
    for k in skipped {
        s.push_str(&format!("\n  {}: {}", k.path.display(), k.reason));
    }
    s
}
