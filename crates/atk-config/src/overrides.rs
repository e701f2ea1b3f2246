//! `--set KEY=VALUE` and `--override-json '{...}'`, applied over the flattened file.

use serde_yaml::Value;

use super::error::{ConfigError, Origin};
use super::flat::Flat;
use super::source::PLACEHOLDER;

/// Command-line overrides, applied after the file is flattened: `--override-json` first, then
/// each `--set` in order (so a later `--set` wins).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Raw `KEY=VALUE` strings from `--set` (repeatable). `KEY` is a flattened key, or
    /// `section.key` for a key inside a `no_flatten` section; `VALUE` is read as YAML, so
    /// `200` is a number, `true` a bool, `[a, b]` a list, and anything else a string.
    pub set: Vec<String>,
    /// A JSON object from `--override-json`, keyed by flattened key.
    pub json: Option<String>,
}

impl Overrides {
    /// No overrides.
    pub fn none() -> Self {
        Self::default()
    }
}

/// Applies `overrides` to `flat`. Never puts a value into an error message: a value may be an
/// API key.
pub(crate) fn apply(flat: &mut Flat, overrides: &Overrides) -> Result<(), ConfigError> {
    if let Some(json) = &overrides.json {
        let flag = "--override-json";
        let parsed: serde_json::Value = serde_json::from_str(json).map_err(|e| ConfigError::Override {
            flag: flag.to_string(),
            message: format!("not valid JSON ({}); expected an object such as '{{\"concurrency_limit\": 200}}'", json_error_summary(&e)),
        })?;
        let serde_json::Value::Object(object) = parsed else {
            return Err(ConfigError::Override {
                flag: flag.to_string(),
                message: "expected a JSON object such as '{\"concurrency_limit\": 200}'"
                    .to_string(),
            });
        };
        for (key, value) in object {
            let value = serde_yaml::to_value(value).map_err(|e| ConfigError::Override {
                flag: flag.to_string(),
                message: format!("the value of `{key}` cannot be used: {e}"),
            })?;
            flat.set(&key, value, Origin::Json, flag)?;
        }
    }
    for (n, raw) in overrides.set.iter().enumerate() {
        let flag = format!("--set #{}", n + 1);
        let Some((key, value)) = raw.split_once('=') else {
            return Err(ConfigError::Override {
                flag,
                message: "expected KEY=VALUE (e.g. --set concurrency_limit=200); found no `=`"
                    .to_string(),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.starts_with('.') || key.ends_with('.') {
            return Err(ConfigError::Override {
                flag,
                message:
                    "expected KEY=VALUE with a key before `=` (e.g. --set concurrency_limit=200)"
                        .to_string(),
            });
        }
        // A secret is taken verbatim: YAML would cut a key at ` #` or retype a numeric one.
        let typed = if super::secrets::is_secret_key(key) {
            Value::String(value.to_string())
        } else {
            parse_value(value)
        };
        flat.set_with_text(key, typed, Some(value), Origin::Set, &flag)?;
    }
    Ok(())
}

/// Reads a `--set` value as YAML (`200` -> number, `true` -> bool, `[a, b]` -> list); what
/// YAML cannot read is kept as the literal string. The placeholder marker stays visible (YAML
/// would read a leading `!!PLACEHOLDER!!` as a tag and drop it).
pub(crate) fn parse_value(raw: &str) -> Value {
    if raw.contains(PLACEHOLDER) {
        return Value::String(raw.to_string());
    }
    match serde_yaml::from_str::<Value>(raw) {
        Ok(Value::Tagged(_)) | Err(_) => Value::String(raw.to_string()),
        Ok(value) => value,
    }
}

/// serde_json's message names a line and column, never the input's text.
fn json_error_summary(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
    .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_typed_as_yaml() {
        assert_eq!(parse_value("200"), Value::from(200));
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("0.5"), Value::from(0.5));
        assert_eq!(parse_value("gpt-4o-mini"), Value::from("gpt-4o-mini"));
        assert_eq!(
            parse_value("[a, b]"),
            serde_yaml::from_str::<Value>("[a, b]").unwrap()
        );
        assert_eq!(parse_value(""), Value::Null);
        assert_eq!(parse_value("a: b: c"), Value::from("a: b: c"));
        assert_eq!(
            parse_value("!!PLACEHOLDER!!"),
            Value::from("!!PLACEHOLDER!!")
        );
    }
}
