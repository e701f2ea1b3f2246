//! Meta datagen errors.

use std::path::PathBuf;

/// Why meta datasets could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key in `meta_datagen_keys` that no step records details under.
    #[error(
        "meta_datagen_keys lists `{key}`, but no step records details under that key (known details keys: {known}); fix the key or remove it"
    )]
    UnknownKey {
        /// The key as configured.
        key: String,
        /// Details keys the pipeline's steps do record, comma-separated.
        known: String,
    },
    /// A key whose step has results, but none of them kept the prompt and reply.
    #[error(
        "meta_datagen_keys lists `{key}`, but the {results} stored result(s) of step(s) {steps} carry no details (the run had details off). Enable do_meta_datagen (which sets include_details) and rerun into a fresh output_dir, or remove `{key}` from meta_datagen_keys"
    )]
    NoDetails {
        /// The key as configured.
        key: String,
        /// Steps that record under the key, comma-separated.
        steps: String,
        /// How many results were found without details.
        results: u64,
    },
    /// A recorded exchange that cannot be turned into a conversation.
    #[error("meta_datagen key `{key}`, item {item}: {message}")]
    BadDetails {
        /// The details key.
        key: String,
        /// The item whose details are malformed.
        item: String,
        /// What is wrong.
        message: String,
    },
    /// An extras template file that cannot be read, parsed or compiled.
    #[error("meta_datagen_extras template {}: {message}", path.display())]
    Template {
        /// The template file.
        path: PathBuf,
        /// What is wrong (with the line when known).
        message: String,
    },
    /// Two datasets would be written to the same file.
    #[error("meta datagen would write {} twice (from `{first}` and `{second}`); rename one of them", path.display())]
    DuplicateOutput {
        /// The colliding file.
        path: PathBuf,
        /// The first key or template name.
        first: String,
        /// The second key or template name.
        second: String,
    },
    /// A key or template name that cannot be used as a file name.
    #[error(
        "`{name}` cannot name a dataset file: use letters, digits, '_', '-' or '.', not starting with '.'"
    )]
    BadName {
        /// The offending name.
        name: String,
    },
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] atk_state::Error),
    /// Writing a dataset failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
