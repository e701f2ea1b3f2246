//! API keys: where they come from, and keeping them out of everything that is shown.

use atk_engine::Secret;
use serde_yaml::Value;

use super::error::{ConfigError, KeyLocation, Origin};
use super::flat::Flat;

/// What `redacted` shows in place of a secret.
pub(crate) const MASK: &str = "[redacted]";

/// True for keys whose values are secrets: `*api_key`, `*_token`, `token`, `*secret*`,
/// `*password*`. Their values are masked in `redacted` and left out of the fingerprint.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    key.ends_with("api_key")
        || key.ends_with("_token")
        || key == "token"
        || key.contains("secret")
        || key.contains("password")
}

/// Which engine an API key is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    Small,
    Large,
}

impl Which {
    fn prefix(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Large => "large",
        }
    }
}

/// Takes `<small|large>_api_key` out of the flattened keys (so it never reaches the typed
/// layer, `redacted` or the fingerprint) and resolves it: the config's value when not empty,
/// else `ATK_<SMALL|LARGE>_API_KEY`, else `OPENAI_API_KEY` (`ANTHROPIC_API_KEY` when the
/// engine's `<small|large>_api` is `anthropic`), else empty.
pub(crate) fn take_api_key(
    flat: &mut Flat,
    which: Which,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    let key = format!("{}_api_key", which.prefix());
    let at = flat.locate(&key);
    let from_config = match flat.entries.remove(&key).map(|e| e.value) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ConfigError::Type {
                file: flat.file.clone(),
                at: at.unwrap_or(KeyLocation {
                    section: None,
                    key,
                    origin: Origin::File { line: None },
                    in_map: false,
                }),
                message: "an API key must be a string (value hidden)".to_string(),
            });
        }
    };
    let env_name = format!("ATK_{}_API_KEY", which.prefix().to_ascii_uppercase());
    let anthropic = flat
        .entries
        .get(&format!("{}_api", which.prefix()))
        .and_then(|e| e.value.as_str())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("anthropic"));
    let provider = if anthropic {
        "ANTHROPIC_API_KEY"
    } else {
        "OPENAI_API_KEY"
    };
    let chosen = [from_config, env(&env_name), env(provider)]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    Ok(Secret::new(chosen))
}

/// Replaces every non-trivial secret value found in `text` by the mask.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// The string values of secret-named keys (anywhere in `value`), to scrub from messages.
pub(crate) fn collect_secret_values(key: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if is_secret_key(key) => out.push(s.clone()),
        Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    collect_secret_values(k, v, out);
                }
            }
        }
        Value::Sequence(items) => items
            .iter()
            .for_each(|v| collect_secret_values(key, v, out)),
        _ => {}
    }
}

/// A JSON copy of `value` with secret-named keys masked (`mask = true`) or dropped.
pub(crate) fn to_json(key: &str, value: &Value, mask: bool) -> Option<serde_json::Value> {
    if is_secret_key(key) && !matches!(value, Value::Mapping(_)) {
        return mask.then(|| {
            if is_empty(value) {
                serde_json::Value::Null
            } else {
                serde_json::Value::from(MASK)
            }
        });
    }
    Some(match value {
        Value::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                if let Some(v) = to_json(&name, v, mask) {
                    out.insert(name, v);
                }
            }
            serde_json::Value::Object(out)
        }
        Value::Sequence(items) => {
            serde_json::Value::Array(items.iter().filter_map(|v| to_json(key, v, mask)).collect())
        }
        other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
    })
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised() {
        for key in [
            "small_api_key",
            "large_api_key",
            "api_key",
            "hf_token",
            "client_secret",
            "db_password",
            "example.api_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "small_model",
            "max_tokens",
            "tokenizer",
            "tokens_per_minute",
            "token_budget",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn scrub_masks_every_occurrence() {
        assert_eq!(
            scrub(
                "bad sk-123456 and sk-123456",
                &["sk-123456".into(), "ab".into()]
            ),
            "bad [redacted] and [redacted]"
        );
    }
}
