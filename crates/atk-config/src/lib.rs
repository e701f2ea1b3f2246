//! atk's config: sections, flattening, placeholders, overrides, typed deserialisation.
#![doc = include_str!("../README.md")]

mod common;
mod env;
mod error;
mod flat;
mod overrides;
mod rules;
mod secrets;
mod source;
mod typed;

use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use common::{CommonConfig, EnginesUsed};
pub use error::{ConfigError, KeyLocation, Origin};
pub use overrides::Overrides;

use common::Invalid;
use flat::Flat;
use secrets::Which;

/// A loaded config: the common keys, the pipeline's own keys, and what to show about it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The keys every pipeline shares, resolved.
    pub common: CommonConfig,
    /// The pipeline's own keys, deserialised from the same flattened keys.
    pub custom: T,
    /// Things worth telling the user that do not stop the run (unknown keys with a "did you
    /// mean", missing API keys, ...). Never contain a secret.
    pub warnings: Vec<String>,
    /// The config file, as given.
    pub path: PathBuf,
    /// SHA-256 (hex) of the resolved config with secrets left out: equal fingerprints mean the
    /// same settings (resolved paths included).
    pub fingerprint: String,
    /// The flattened, resolved config with secrets masked as `[redacted]`, for logs and run
    /// summaries.
    pub redacted: serde_json::Value,
}

/// The pipeline-specific part for a pipeline with no keys of its own: every key that is not
/// a common key is then reported as unknown.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoExtra {}

/// Loads the config file at `path`, applies `overrides`, and types it. Environment variables
/// come from the process environment.
///
/// Fails, with a message naming the file, key, section and line, on unreadable files, bad
/// YAML, keys still `!!PLACEHOLDER!!`, a key in two flattened sections, a wrong type, a
/// `${VAR}` that is not set, or a required key that is missing.
///
/// `T` sees every flattened key (the common ones too) and should not use
/// `#[serde(deny_unknown_fields)]`: keys that neither `T` nor [`CommonConfig`] reads become
/// warnings with a "did you mean" instead.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
) -> Result<Loaded<T>, ConfigError> {
    load_for(path, overrides, EnginesUsed::BOTH)
}

/// [`load`] for a pipeline that calls only the engines in `used`: the model and endpoint of the
/// others are not required (see [`EnginesUsed`]).
pub fn load_for<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
    used: EnginesUsed,
) -> Result<Loaded<T>, ConfigError> {
    load_with_env_for(path, overrides, used, |name| std::env::var(name).ok())
}

/// [`load`] for `--dry-run`, which sends nothing: API keys still `!!PLACEHOLDER!!` are taken
/// as empty and listed in the warnings as still to fill in; any other placeholder is refused
/// as in [`load`]. `used` as in [`load_for`].
pub fn load_for_dry_run<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
    used: EnginesUsed,
) -> Result<Loaded<T>, ConfigError> {
    read_and_load(
        path,
        overrides,
        used,
        &|name| std::env::var(name).ok(),
        true,
    )
}

/// [`load`], reading environment variables through `env` instead of the process environment
/// (for tests, and for callers that sandbox the environment).
pub fn load_with_env<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded<T>, ConfigError> {
    load_with_env_for(path, overrides, EnginesUsed::BOTH, env)
}

/// [`load_for`], reading environment variables through `env`.
pub fn load_with_env_for<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
    used: EnginesUsed,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded<T>, ConfigError> {
    read_and_load(path, overrides, used, &env, false)
}

/// Reads the file and loads it (paths in it relative to its folder).
fn read_and_load<T: DeserializeOwned>(
    path: &Path,
    overrides: &Overrides,
    used: EnginesUsed,
    env: &dyn Fn(&str) -> Option<String>,
    dry_run: bool,
) -> Result<Loaded<T>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| base.clone());
    let dirs = Dirs {
        config: &base,
        cwd: &cwd,
    };
    load_text_as(&text, path, dirs, overrides, used, env, dry_run)
}

/// Where relative paths are resolved: the config file's folder for paths in the file, the
/// working directory for paths given on the command line.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    config: &'a Path,
    cwd: &'a Path,
}

/// `dry_run`: API keys still unfilled are taken as empty (nothing is sent) and listed.
fn load_text_as<T: DeserializeOwned>(
    text: &str,
    file: &Path,
    dirs: Dirs<'_>,
    overrides: &Overrides,
    used: EnginesUsed,
    env: &dyn Fn(&str) -> Option<String>,
    dry_run: bool,
) -> Result<Loaded<T>, ConfigError> {
    let (mut flat, mut warnings) = Flat::parse(file, text)?;
    overrides::apply(&mut flat, overrides)?;

    let mut unfilled = flat.placeholders();
    let mut keys = Vec::new();
    if dry_run {
        (keys, unfilled) = unfilled
            .into_iter()
            .partition(|at| !at.in_map && at.key.ends_with("_api_key"));
    }
    if !unfilled.is_empty() {
        return Err(ConfigError::Placeholders {
            file: file.to_path_buf(),
            keys: unfilled,
        });
    }
    for at in &keys {
        if let Some(entry) = flat.entries.get_mut(&at.key) {
            entry.value = serde_yaml::Value::String(String::new());
        }
        warnings.push(format!(
            "{}{}: `{}` is still !!PLACEHOLDER!!; fill it in before a real run (a dry run sends nothing)",
            file.display(),
            at.line().map(|l| format!(":{l}")).unwrap_or_default(),
            at.key
        ));
    }
    flat.try_for_each_value(|at, value| {
        env::expand_value(value, env).map_err(|var| ConfigError::Env {
            file: file.to_path_buf(),
            at,
            var,
        })
    })?;

    let small_api_key = secrets::take_api_key(&mut flat, Which::Small, env)?;
    let large_api_key = secrets::take_api_key(&mut flat, Which::Large, env)?;
    let mut secret_values = vec![
        small_api_key.expose().to_string(),
        large_api_key.expose().to_string(),
    ];
    for (key, entry) in &flat.entries {
        secrets::collect_secret_values(key, &entry.value, &mut secret_values);
    }
    resolve_paths(&mut flat, dirs);

    let common = deserialize_retyping::<CommonConfig>(&mut flat, CommonConfig::input)
        .map_err(|f| failure_to_error(&flat, f, &secret_values))?;
    let common_ignored = common.ignored;
    let invalid = |flat: &Flat, key: &str, message: &str| ConfigError::Type {
        file: file.to_path_buf(),
        at: flat.locate_path(key),
        message: secrets::scrub(message, &secret_values),
    };
    // Every required key that is missing, common and the pipeline's own, in one message.
    let mut missing: Vec<(String, String)> = Vec::new();
    let common = match common.value.check(used) {
        Ok(common) => Some(CommonConfig {
            small_api_key,
            large_api_key,
            ..common
        }),
        Err(Invalid::Missing(keys)) => {
            missing.extend(keys.into_iter().map(|(k, hint)| (k.to_string(), hint)));
            None
        }
        Err(Invalid::Value { key, message }) => return Err(invalid(&flat, key, &message)),
    };
    let custom = match deserialize_retyping::<T>(&mut flat, |mapping| mapping) {
        Ok(custom) => Some(custom),
        Err(f) if f.missing_field().is_some() => {
            missing.extend(missing_custom_keys::<T>(&flat, f));
            None
        }
        Err(f) => return Err(failure_to_error(&flat, f, &secret_values)),
    };
    let (Some(common), Some(custom)) = (common, custom) else {
        return Err(missing_error(&flat.file, missing));
    };
    if let Err(Invalid::Value { key, message }) = common.check_folders() {
        return Err(invalid(&flat, key, &message));
    }

    let candidates = known_keys::<T>(&flat, &custom.ignored);
    let mut unknown = typed::unknown_paths(&common_ignored, &custom.ignored);
    unknown.sort_by_cached_key(|path| {
        (
            flat.locate_path(path).line().unwrap_or(usize::MAX),
            path.clone(),
        )
    });
    warnings.extend(
        unknown
            .iter()
            .map(|path| unknown_key_warning(&flat, path, &candidates)),
    );
    for (label, in_use, mode, key) in [
        (
            "small",
            used.small,
            common.small_mode,
            &common.small_api_key,
        ),
        (
            "large",
            used.large,
            common.large_mode,
            &common.large_api_key,
        ),
    ] {
        if in_use && mode == atk_engine::Mode::Api && key.is_empty() {
            warnings.push(format!(
                "{}: no API key for the {label} engine (`{label}_api_key` is empty and neither ATK_{}_API_KEY nor OPENAI_API_KEY is set); \
                 requests will be sent without one",
                file.display(),
                label.to_ascii_uppercase()
            ));
        }
    }
    if common.dataset_license == "other" && common.dataset_license_name.trim().is_empty() {
        warnings.push(format!(
            "{}: `dataset_license` is `other` and `dataset_license_name` is empty: the dataset card names no licence \
             (the Hugging Face Hub asks for one); set `dataset_license` to a Hub licence id (e.g. cc-by-4.0) or name yours \
             in `dataset_license_name` (and `dataset_license_link`)",
            file.display()
        ));
    }
    let warnings = warnings
        .iter()
        .map(|w| secrets::scrub(w, &secret_values))
        .collect();

    let mut redacted = serde_json::Map::new();
    let mut hashed = serde_json::Map::new();
    for (key, entry) in &flat.entries {
        if let Some(v) = secrets::to_json(key, &entry.value, true) {
            redacted.insert(key.clone(), v);
        }
        if let Some(v) = secrets::to_json(key, &entry.value, false) {
            hashed.insert(key.clone(), v);
        }
    }
    for (key, secret) in [
        ("small_api_key", &common.small_api_key),
        ("large_api_key", &common.large_api_key),
    ] {
        let shown = if secret.is_empty() {
            serde_json::Value::Null
        } else {
            secrets::MASK.into()
        };
        redacted.insert(key.to_string(), shown);
    }
    let canonical = serde_json::to_vec(&serde_json::Value::Object(hashed)).unwrap_or_default();
    let fingerprint = hex::encode(
        Sha256::new_with_prefix(b"atk-config-v1\n")
            .chain_update(&canonical)
            .finalize(),
    );

    Ok(Loaded {
        common,
        custom: custom.value,
        warnings,
        path: file.to_path_buf(),
        fingerprint,
        redacted: serde_json::Value::Object(redacted),
    })
}

/// Deserialises `T` from the flattened keys (as `input` gives them to it); a `--set` value
/// YAML read as a number or bool where `T` wants a string is retried as the string the user
/// typed.
fn deserialize_retyping<T: DeserializeOwned>(
    flat: &mut Flat,
    input: impl Fn(Value) -> Value,
) -> Result<typed::Tracked<T>, typed::Failure> {
    loop {
        match typed::deserialize::<T>(input(flat.to_mapping())) {
            Err(failure) if flat.retype_as_string(&failure.path, &failure.message) => continue,
            result => return result,
        }
    }
}

/// Makes the common path keys absolute: relative to the config file's folder when written in
/// the file, to the working directory when given by an override.
fn resolve_paths(flat: &mut Flat, dirs: Dirs<'_>) {
    for key in CommonConfig::PATH_KEYS {
        let Some(entry) = flat.entries.get_mut(*key) else {
            continue;
        };
        let root = match entry.origin {
            Origin::File { .. } => dirs.config,
            Origin::Set | Origin::Json => dirs.cwd,
        };
        let resolve = |v: &mut Value| {
            // A folder named `2024` is a number to YAML; a path key wants its text.
            if let Value::Number(n) = v {
                *v = Value::String(n.to_string());
            }
            if let Value::String(s) = v
                && !s.is_empty()
            {
                *s = absolute_in(root, Path::new(s))
                    .to_string_lossy()
                    .into_owned();
            }
        };
        match &mut entry.value {
            Value::Sequence(items) => items.iter_mut().for_each(resolve),
            other => resolve(other),
        }
    }
}

/// `path` made absolute against `root`, with `.` components dropped (`..` kept: it may cross
/// a symlink).
fn absolute_in(root: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Names a user might have meant: the common keys, the pipeline struct's fields, and the keys
/// it read.
fn known_keys<T: DeserializeOwned>(flat: &Flat, custom_ignored: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = CommonConfig::keys()
        .iter()
        .map(|k| (*k).to_string())
        .collect();
    keys.extend(typed::field_names::<T>().iter().map(|k| (*k).to_string()));
    keys.extend(
        flat.entries
            .keys()
            .filter(|k| !custom_ignored.contains(k))
            .cloned(),
    );
    keys.sort();
    keys.dedup();
    keys
}

fn unknown_key_warning(flat: &Flat, path: &str, candidates: &[String]) -> String {
    let at = flat.locate_path(path);
    let nested = path.contains('.');
    let place = match (&at.origin, at.line()) {
        (Origin::File { .. }, Some(line)) => format!("{}:{line}", flat.file.display()),
        (Origin::File { .. }, None) => flat.file.display().to_string(),
        (Origin::Set, _) => "--set".to_string(),
        (Origin::Json, _) => "--override-json".to_string(),
    };
    let within = match (&at.section, nested) {
        (_, true) => format!(
            " in `{}`",
            path.rsplit_once('.').map_or(path, |(parent, _)| parent)
        ),
        (Some(section), false) => format!(" in section `{section}`"),
        (None, false) => String::new(),
    };
    let name = if nested {
        path.rsplit('.').next().unwrap_or(path)
    } else {
        path
    };
    let hint = if nested {
        None
    } else {
        typed::did_you_mean(name, candidates.iter().map(String::as_str))
    };
    let hint = hint
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    format!("{place}: unknown key `{name}`{within} is ignored{hint}")
}

/// serde names Rust types (`expected usize`); a config's author thinks in numbers.
fn plain_type_names(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let plain = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)",
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number",
        "f64" | "f32" => "a number",
        "path string" => "a path (string)",
        other => other,
    };
    format!("{head}, expected {plain}")
}

/// The hint for a missing key of the pipeline's own.
fn custom_key_hint(field: &str, key: &str) -> String {
    format!("this pipeline needs it; add `{field}: ...` to the config or pass --set {key}=VALUE")
}

/// Every missing field of `T`, starting from serde's first: each found is given a stand-in
/// value (the first of a few shapes `T` accepts there) so the next one shows.
fn missing_custom_keys<T: DeserializeOwned>(
    flat: &Flat,
    first: typed::Failure,
) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut mapping = flat.to_mapping();
    let mut failure = first;
    while let Some(field) = failure.missing_field().map(str::to_string) {
        let key = if failure.path.is_empty() {
            field.clone()
        } else {
            format!("{}.{field}", failure.path)
        };
        if found.iter().any(|(k, _)| *k == key) || found.len() >= 64 {
            break;
        }
        found.push((key.clone(), custom_key_hint(&field, &key)));
        let Value::Mapping(map) = &mapping else { break };
        if !failure.path.is_empty() {
            break; // inside a nested map: the first is named
        }
        let stand_ins = [
            Value::String(String::new()),
            Value::Number(0.into()),
            Value::Bool(false),
            Value::Sequence(Vec::new()),
            Value::Mapping(serde_yaml::Mapping::new()),
        ];
        let mut next = None;
        for stand_in in stand_ins {
            let mut with = map.clone();
            with.insert(Value::String(field.clone()), stand_in);
            let with = Value::Mapping(with);
            match typed::deserialize::<T>(with.clone()) {
                Ok(_) => return found,
                Err(f) if f.path == field || f.path.starts_with(&format!("{field}.")) => continue,
                Err(f) => {
                    mapping = with;
                    next = Some(f);
                    break;
                }
            }
        }
        match next {
            Some(f) => failure = f,
            None => break,
        }
    }
    found
}

/// One error naming every missing key.
fn missing_error(file: &Path, mut missing: Vec<(String, String)>) -> ConfigError {
    if missing.len() == 1
        && let Some((key, hint)) = missing.pop()
    {
        return ConfigError::Missing {
            file: file.to_path_buf(),
            key,
            hint,
        };
    }
    ConfigError::MissingKeys {
        file: file.to_path_buf(),
        keys: missing,
    }
}

/// A typed-layer failure as the user should see it.
fn failure_to_error(flat: &Flat, failure: typed::Failure, secret_values: &[String]) -> ConfigError {
    if let Some(field) = failure.missing_field() {
        let key = if failure.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", failure.path)
        };
        return ConfigError::Missing {
            file: flat.file.clone(),
            hint: custom_key_hint(field, &key),
            key,
        };
    }
    let at = flat.locate_path(&failure.path);
    let message = if secrets::is_secret_key(&failure.path) {
        "wrong type for this key (its value is a secret and is not shown)".to_string()
    } else {
        plain_type_names(&secrets::scrub(&failure.message, secret_values))
    };
    ConfigError::Type {
        file: flat.file.clone(),
        at,
        message,
    }
}

#[cfg(test)]
mod tests;
