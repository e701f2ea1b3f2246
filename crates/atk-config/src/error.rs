//! `ConfigError`: everything that stops a config from loading, each naming the file, key,
//! section and line a user needs to fix it. No variant ever carries a secret's value.

use std::fmt;
use std::path::PathBuf;

/// Where a key came from: a line of the config file, or a command-line override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file, at this line (1-based) when the line is known.
    File {
        /// 1-based line of the key in the file, when known.
        line: Option<usize>,
    },
    /// A `--set KEY=VALUE` flag.
    Set,
    /// The `--override-json` flag.
    Json,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { line: Some(line) } => write!(f, "line {line}"),
            Self::File { line: None } => f.write_str("line unknown"),
            Self::Set => f.write_str("from --set"),
            Self::Json => f.write_str("from --override-json"),
        }
    }
}

/// A key in the config: the section it sits in (`None` at the top level), its name and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    /// The section the key was written in (`api`, `system`, a `no_flatten` map...), if any.
    pub section: Option<String>,
    /// The key's name (inside its section).
    pub key: String,
    /// Where its current value came from.
    pub origin: Origin,
    /// True when `section` is a `no_flatten` map (the key is set as `--set section.key=..`),
    /// false when it is a flattened section (set as `--set key=..`).
    pub in_map: bool,
}

impl KeyLocation {
    /// The 1-based line of the key in the config file, when known.
    pub fn line(&self) -> Option<usize> {
        match self.origin {
            Origin::File { line } => line,
            _ => None,
        }
    }

    /// `section.key`, or `key` at the top level.
    pub fn dotted(&self) -> String {
        match &self.section {
            Some(section) => format!("{section}.{}", self.key),
            None => self.key.clone(),
        }
    }
}

impl fmt::Display for KeyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.dotted(), self.origin)
    }
}

/// Why a config could not be loaded. Every message names the file and, where there is one,
/// the key, section and line, and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{}:{line}:{col}: invalid YAML: {message}", file.display())]
    Yaml {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        col: usize,
        /// The parser's description.
        message: String,
    },
    /// Valid YAML, but not the shape of a config (top level not a mapping, `no_flatten` not a list...).
    #[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Shape {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Keys still marked `!!PLACEHOLDER!!` after overrides; every one of them is listed.
    #[error("{}", placeholders_message(file, keys))]
    Placeholders {
        /// The config file.
        file: PathBuf,
        /// Every unfilled key, in file order.
        keys: Vec<KeyLocation>,
    },
    /// The same key in two flattened sections (or a section and the top level).
    #[error(
        "{}: key `{key}` is set in two places once sections are flattened: {} ({}) and {} ({}); \
         keep one, or list one of the sections under `no_flatten` to keep it as a map",
        file.display(), section_name(&first.section), first.origin, section_name(&second.section), second.origin
    )]
    Conflict {
        /// The config file.
        file: PathBuf,
        /// The key set twice.
        key: String,
        /// Its first occurrence.
        first: Box<KeyLocation>,
        /// Its second occurrence.
        second: Box<KeyLocation>,
    },
    /// A value of the wrong type (or out of range) for its key.
    #[error("{}{}: `{}`{}: {message}", file.display(), at_line(at), at.dotted(), origin_note(at))]
    Type {
        /// The config file.
        file: PathBuf,
        /// The key (and its section and origin).
        at: KeyLocation,
        /// What was expected, and what was found (secrets are masked).
        message: String,
    },
    /// An unknown key close to a known one: a typo whose value would be ignored.
    #[error(
        "{}{}: unknown key `{}`{} (did you mean `{suggestion}`?); refused, since its value would be ignored",
        file.display(), at_line(at), at.dotted(), origin_note(at)
    )]
    Misspelt {
        /// The config file.
        file: PathBuf,
        /// The key (and its section and origin).
        at: KeyLocation,
        /// The known key it is close to.
        suggestion: String,
    },
    /// A `--set` or `--override-json` flag that could not be understood.
    #[error("{flag}: {message}")]
    Override {
        /// The flag (`--set` #N, `--override-json`).
        flag: String,
        /// What is wrong and the expected form.
        message: String,
    },
    /// A `${VAR}` reference to an environment variable that is not set.
    #[error(
        "{}{}: `{}`{} refers to environment variable `{var}`, which is not set; \
         export it or change the value",
        file.display(), at_line(at), at.dotted(), origin_note(at)
    )]
    Env {
        /// The config file.
        file: PathBuf,
        /// The key whose value names the variable.
        at: KeyLocation,
        /// The variable's name.
        var: String,
    },
    /// Several required keys with no value, every one named.
    #[error("{}: {} required keys are missing; add every one before running:{}", file.display(), keys.len(), list_missing(keys))]
    MissingKeys {
        /// The config file.
        file: PathBuf,
        /// Each missing (flattened) key, with when it is required and how to give it.
        keys: Vec<(String, String)>,
    },
    /// A required key with no value.
    #[error("{}: required key `{key}` is missing: {hint}", file.display())]
    Missing {
        /// The config file.
        file: PathBuf,
        /// The missing (flattened) key.
        key: String,
        /// When it is required and how to give it.
        hint: String,
    },
}

fn list_missing(keys: &[(String, String)]) -> String {
    keys.iter()
        .map(|(key, hint)| format!("\n  - `{key}`: {hint}"))
        .collect()
}

fn section_name(section: &Option<String>) -> String {
    match section {
        Some(s) => format!("section `{s}`"),
        None => "the top level".to_string(),
    }
}

fn at_line(at: &KeyLocation) -> String {
    at.line().map(|l| format!(":{l}")).unwrap_or_default()
}

fn origin_note(at: &KeyLocation) -> &'static str {
    match at.origin {
        Origin::File { .. } => "",
        Origin::Set => " (from --set)",
        Origin::Json => " (from --override-json)",
    }
}

fn placeholders_message(file: &std::path::Path, keys: &[KeyLocation]) -> String {
    use fmt::Write as _;
    let n = keys.len();
    let mut out = format!(
        "{}: {n} key{} still marked !!PLACEHOLDER!!; fill in every one before running:",
        file.display(),
        if n == 1 { " is" } else { "s are" }
    );
    for k in keys {
        let _ = write!(out, "\n  - {} ({})", k.dotted(), k.origin);
    }
    if let Some(first) = keys.first() {
        let _ = write!(
            out,
            "\nEdit the file, or override on the command line, e.g. --set {}=VALUE",
            override_key(first)
        );
    }
    out
}

/// How a key is named in `--set`: the flattened name, or `map.key` inside a `no_flatten` map.
fn override_key(k: &KeyLocation) -> String {
    match (&k.section, k.in_map) {
        (Some(section), true) => format!("{section}.{}", k.key),
        _ => k.key.clone(),
    }
}
