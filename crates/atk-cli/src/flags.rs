//! The common flags every pipeline binary accepts (clap derive), parsed once by the runner.

use std::path::PathBuf;

use crate::progress::ProgressMode;

/// Flags shared by every pipeline binary: `<bin> --config FILE [--set KEY=VALUE]... [...]`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct CommonFlags {
    /// The pipeline's YAML config (paths in it resolve relative to the file).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        required_unless_present = "describe_config",
        default_value = "",
        hide_default_value = true,
        value_parser = config_path
    )]
    pub config: PathBuf,
    /// Prints every config key this pipeline reads as JSON (name, type, default, doc line;
    /// with --config also each key's value there, secrets only as set/placeholder) and exits.
    #[arg(long = "describe-config", conflicts_with_all = ["dry_run", "check_config"])]
    pub describe_config: bool,
    /// Checks the config file exactly as a run would (every error with its file, key and
    /// line; exit 2) and exits 0 when it is fine; sends nothing and writes nothing.
    #[arg(long = "check-config", conflicts_with = "dry_run")]
    pub check_config: bool,
    /// Overrides one flattened config key; the value is parsed as YAML (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Overrides config keys from a JSON object (applied after the file, before --set).
    #[arg(long = "override-json", value_name = "JSON")]
    pub override_json: Option<String>,
    /// More logs: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors, warnings and the dry run's estimate only: no banner, progress (unless
    /// --progress json), summary or `dataset written` lines.
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
    /// Runs the chain for real on N chunks (seeded: the same ones each time; their results
    /// are kept for the full run) and prints each step's pass rate, failure and drop reasons
    /// with a raw reply for each; writes no dataset.
    #[arg(long = "preview", value_name = "N", conflicts_with = "dry_run", value_parser = clap::value_parser!(u64).range(1..))]
    pub preview: Option<u64>,
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
    /// Works only on shard I of N (0 <= I < N): the items whose id hash falls in it. Stable
    /// across runs and machines; merge the shards' output dirs with `atk merge`.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Batch mode: submits the batches that can be submitted now (a chain's first step; later
    /// steps need its results), leaves them running at the provider and exits 0 saying how to
    /// collect them; any later run collects what has ended.
    #[arg(long = "no-wait", conflicts_with_all = ["dry_run", "preview"])]
    pub no_wait: bool,
    /// Cancels every batch this output dir's journal lists as still at the provider, records
    /// them cancelled and exits; the next run collects what they finished and sends the rest
    /// in new batches.
    #[arg(long = "cancel-batches", conflicts_with_all = ["dry_run", "preview", "no_wait"])]
    pub cancel_batches: bool,
    /// The command line the run was started with (program first), to say how to run it again.
    #[arg(skip)]
    pub command: Vec<String>,
    /// Items in a sled store past which the run suggests moving to redb (default 50 000; for
    /// tests).
    #[arg(long, value_name = "N", hide = true)]
    pub redb_advice_at: Option<u64>,
}

/// `--config`'s value as given; empty only when `--describe-config` left it out (clap's own
/// path parser refuses the empty default).
fn config_path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// One shard of a run split across machines: `--shard I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// How many shards the run is split into.
    pub count: u32,
}

impl Shard {
    /// Parses `I/N`; refuses anything else, `N = 0` and `I >= N`, saying which.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not I/N (e.g. 0/4)"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: I must be a whole number (I/N, e.g. 0/4)"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: N must be a whole number (I/N, e.g. 0/4)"))?;
        if count == 0 {
            return Err(format!("`{text}`: N must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "`{text}`: I must be below N (shards are numbered 0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether the item `id` belongs to this shard: FNV-1a (64 bit) of the id's bytes modulo N,
    /// the same on every machine and in every run.
    pub(crate) fn contains(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (of `count`) an item id falls in.
pub(crate) fn shard_of(id: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

impl CommonFlags {
    /// The progress mode after `-q` (quiet turns bars and plain lines off, not JSON).
    pub(crate) fn progress_mode(&self) -> ProgressMode {
        match self.progress {
            ProgressMode::Json => ProgressMode::Json,
            _ if self.quiet => ProgressMode::Off,
            other => other,
        }
    }

    /// True when stored results are asked for again (`--redo`, `--redo-changed`, `--reprocess`).
    pub(crate) fn reworks(&self) -> bool {
        !self.redo.is_empty() || self.redo_changed || !self.reprocess.is_empty()
    }

    /// Log verbosity: -1 quiet, 0 default, 1 debug, 2+ trace.
    pub(crate) fn verbosity(&self) -> i8 {
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
pub(crate) struct PipelineCli {
    /// The common flags.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Parses a pipeline binary's command line (`name` is shown in `--help` and usage).
pub(crate) fn parse_pipeline_args<I, T>(
    name: &'static str,
    args: I,
) -> Result<CommonFlags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let matches = PipelineCli::command()
        .name(name)
        .bin_name(name)
        .try_get_matches_from(&args)?;
    let mut flags = PipelineCli::from_arg_matches(&matches).map(|c| c.common)?;
    flags.command = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Ok(flags)
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
    fn shards_parse_strictly_and_split_ids_stably() {
        assert_eq!(
            parse(&["--config", "c.yaml", "--shard", "1/4"])
                .unwrap()
                .shard,
            Some(Shard { index: 1, count: 4 })
        );
        for bad in ["4/4", "1/0", "x/2", "1", "1/2/3", "-1/2"] {
            let err = parse(&["--config", "c.yaml", &format!("--shard={bad}")]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--shard"), "{bad}: {err}");
        }
        // Fixed values: a change here would split existing runs differently.
        assert_eq!(
            shard_of("", 7),
            0xcbf2_9ce4_8422_2325_u64.rem_euclid(7) as u32
        );
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:032x}")).collect();
        for n in [1, 2, 3, 8] {
            let shards: Vec<Shard> = (0..n).map(|index| Shard { index, count: n }).collect();
            for id in &ids {
                assert_eq!(
                    shards.iter().filter(|s| s.contains(id)).count(),
                    1,
                    "every id in exactly one shard"
                );
            }
            let first = ids.iter().filter(|id| shards[0].contains(id)).count();
            assert!(
                first * n as usize > 700 && first * (n as usize) < 1300,
                "roughly even: {first} of 1000 in 1/{n}"
            );
        }
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
