//! The common flags every pipeline binary accepts (clap derive), parsed once by the runner.

use std::path::PathBuf;

use crate::progress::ProgressMode;

/// Flags shared by every pipeline binary: `<bin> --config FILE [--set KEY=VALUE]... [...]`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct CommonFlags {
    /// The pipeline's YAML config (paths in it resolve relative to the file).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides one flattened config key; the value is parsed as YAML (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Overrides config keys from a JSON object (applied after the file, before --set).
    #[arg(long = "override-json", value_name = "JSON")]
    pub override_json: Option<String>,
    /// More logs: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors only, no progress display (unless --progress json).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// How progress is shown: bars on a terminal, plain lines otherwise (both on stderr), or JSON
    /// lines on stdout for a UI.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, value_name = "MODE")]
    pub progress: ProgressMode,
    /// Reads and chunks the inputs, renders the first step's prompts and prints the estimated
    /// cost per engine; sends nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Requests step STEP again for every item that has its result, and every later step for
    /// those items; old results stay until the new ones replace them (repeatable).
    #[arg(long = "redo", value_name = "STEP")]
    pub redo: Vec<String>,
    /// Requests again the results made with another prompt, params, model or step version
    /// than the current ones (in every step), and the later steps of those items.
    #[arg(long = "redo-changed")]
    pub redo_changed: bool,
    /// Reruns STEP's output processor and validator over its stored raw replies, sending
    /// nothing for replies that still pass; replies that now fail are requested again
    /// (repeatable).
    #[arg(long = "reprocess", value_name = "STEP")]
    pub reprocess: Vec<String>,
    /// With --reprocess: only report the replies that now fail; request nothing.
    #[arg(long = "reprocess-only", requires = "reprocess")]
    pub reprocess_only: bool,
}

impl CommonFlags {
    /// The progress mode after `-q` (quiet turns bars and plain lines off, not JSON).
    pub fn progress_mode(&self) -> ProgressMode {
        match self.progress {
            ProgressMode::Json => ProgressMode::Json,
            _ if self.quiet => ProgressMode::Off,
            other => other,
        }
    }

    /// True when stored results are asked for again (`--redo`, `--redo-changed`, `--reprocess`).
    pub fn reworks(&self) -> bool {
        !self.redo.is_empty() || self.redo_changed || !self.reprocess.is_empty()
    }

    /// Log verbosity: -1 quiet, 0 default, 1 debug, 2+ trace.
    pub fn verbosity(&self) -> i8 {
        if self.quiet {
            -1
        } else {
            i8::try_from(self.verbose).unwrap_or(i8::MAX)
        }
    }
}

/// The command line of a pipeline binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    about = "Runs an atk pipeline over the inputs named in its config.",
    version
)]
pub struct PipelineCli {
    /// The common flags.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Parses a pipeline binary's command line (`name` is shown in `--help` and usage).
pub fn parse_pipeline_args<I, T>(name: &'static str, args: I) -> Result<CommonFlags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = PipelineCli::command()
        .name(name)
        .bin_name(name)
        .try_get_matches_from(args)?;
    PipelineCli::from_arg_matches(&matches).map(|c| c.common)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CommonFlags, clap::Error> {
        parse_pipeline_args(
            "example-pipeline",
            std::iter::once("example-pipeline").chain(args.iter().copied()),
        )
    }

    #[test]
    fn parses_every_common_flag() {
        let f = parse(&[
            "--config",
            "c.yaml",
            "--set",
            "concurrency_limit=5",
            "--set",
            "small_mode=mock",
            "--override-json",
            "{\"seed\": 1}",
            "-vv",
            "--progress",
            "json",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(f.config, PathBuf::from("c.yaml"));
        assert_eq!(f.set, ["concurrency_limit=5", "small_mode=mock"]);
        assert_eq!(f.override_json.as_deref(), Some("{\"seed\": 1}"));
        assert_eq!(f.verbosity(), 2);
        assert_eq!(f.progress_mode(), ProgressMode::Json);
        assert!(f.dry_run);
    }

    #[test]
    fn rework_flags_repeat_and_reprocess_only_needs_reprocess() {
        let f = parse(&[
            "-c",
            "c.yaml",
            "--redo",
            "a",
            "--redo",
            "b",
            "--reprocess",
            "c",
            "--reprocess-only",
            "--redo-changed",
        ])
        .unwrap();
        assert_eq!(
            (f.redo.as_slice(), f.reprocess.as_slice()),
            (
                &["a".to_string(), "b".to_string()][..],
                &["c".to_string()][..]
            )
        );
        assert!(f.redo_changed && f.reprocess_only && f.reworks());
        assert!(!parse(&["-c", "c.yaml"]).unwrap().reworks());
        let err = parse(&["-c", "c.yaml", "--reprocess-only"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn quiet_turns_progress_off_but_not_json() {
        let f = parse(&["--config", "c.yaml", "-q"]).unwrap();
        assert_eq!((f.verbosity(), f.progress_mode()), (-1, ProgressMode::Off));
        let f = parse(&["--config", "c.yaml", "-q", "--progress", "json"]).unwrap();
        assert_eq!(f.progress_mode(), ProgressMode::Json);
    }

    #[test]
    fn config_is_required_and_help_lists_the_flags() {
        let err = parse(&[]).unwrap_err();
        assert_eq!(
            err.exit_code(),
            2,
            "a usage error is a config error: exit 2"
        );
        let help = parse(&["--help"]).unwrap_err().to_string();
        for flag in [
            "--config",
            "--set",
            "--override-json",
            "--verbose",
            "--quiet",
            "--progress",
            "--dry-run",
            "--redo",
            "--redo-changed",
            "--reprocess",
            "--reprocess-only",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        }
        assert!(help.contains("example-pipeline"), "{help}");
    }
}
