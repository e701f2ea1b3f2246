//! What a pipeline binary tells about the keys it reads (`--describe-config`): every common
//! key and every key of the pipeline's own struct, with its type, default and doc line, taken
//! from the structs themselves (their `JsonSchema`: field names as serde reads them, doc
//! comments, defaults from `Default`), and, given a config file, the value each key has there
//! (secrets only as `set` / `placeholder` / `from environment` / `not set`).

use std::path::Path;

use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::common::CommonConfig;
use crate::error::{ConfigError, Origin};
use crate::flat::{self, Flat};
use crate::overrides::{self, Overrides};
use crate::secrets;

/// One key a pipeline reads, as `--describe-config` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KeyDoc {
    /// The key as written in a config (after flattening).
    pub key: String,
    /// `common` (every pipeline reads it) or `pipeline` (this pipeline's own).
    pub group: String,
    /// The kind of value: `string`, `integer`, `number`, `boolean`, `list of string`, one of
    /// the allowed words (`api | mock`), `map`...
    #[serde(rename = "type")]
    pub ty: String,
    /// The value a key left out gets (`null` when it has none: a required key, or no value).
    pub default: Value,
    /// True when a run refuses to start without it.
    pub required: bool,
    /// One line saying what the key does.
    pub doc: String,
    /// True for an API key or another secret: its value is never shown.
    pub secret: bool,
    /// With a config file: the key's value there (a secret only as `set`, `placeholder`,
    /// `from environment` or `not set`); `null` when the file does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// With a config file: true when the value still holds `!!PLACEHOLDER!!`.
    #[serde(default)]
    pub placeholder: bool,
    /// With a config file: the 1-based line the key is set on, when it is in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// Every key a pipeline whose own keys are `T` reads: the common keys first, then `T`'s.
pub fn describe<T: JsonSchema>() -> Vec<KeyDoc> {
    let mut keys = keys_of(&schemars::schema_for!(CommonConfig), "common");
    let defaults = CommonConfig::default();
    for doc in &mut keys {
        if let Some(shown) = defaults.shown_default(&doc.key) {
            doc.default = shown;
        }
        doc.required = CommonConfig::REQUIRED.contains(&doc.key.as_str());
    }
    for (key, doc) in CommonConfig::API_KEY_DOCS {
        keys.push(KeyDoc {
            key: key.to_string(),
            group: "common".into(),
            ty: "string".into(),
            default: Value::Null,
            required: false,
            doc: doc.to_string(),
            secret: true,
            value: None,
            placeholder: false,
            line: None,
        });
    }
    let common: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
    // A pipeline struct may read a common key too (it sees every flattened key): listed once.
    keys.extend(
        keys_of(&schemars::schema_for!(T), "pipeline")
            .into_iter()
            .filter(|k| !common.contains(&k.key)),
    );
    keys
}

/// [`describe`] with each key's value in the config file at `path` (after `overrides`), and
/// the keys the file sets that the pipeline does not read (as `group: unknown`). Secrets are
/// never shown; `env` looks up environment variables (for API keys taken from there).
pub fn describe_file<T: JsonSchema>(
    path: &Path,
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<KeyDoc>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let (mut flat, _) = Flat::parse(path, &text)?;
    overrides::apply(&mut flat, overrides)?;
    let placeholders: Vec<String> = flat.placeholders().iter().map(|at| at.dotted()).collect();
    let mut keys = describe::<T>();
    for doc in &mut keys {
        fill_value(doc, &flat, &placeholders, &env);
    }
    let known: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
    for (key, entry) in &flat.entries {
        if known.contains(key) {
            continue;
        }
        let mut doc = KeyDoc {
            key: key.clone(),
            group: "unknown".into(),
            ty: String::new(),
            default: Value::Null,
            required: false,
            doc: "not read by this pipeline (a run warns about it)".into(),
            secret: secrets::is_secret_key(key),
            value: None,
            placeholder: false,
            line: None,
        };
        fill_value(&mut doc, &flat, &placeholders, &env);
        if doc.value.is_none() {
            doc.value = secrets::to_json(key, &entry.value, true);
        }
        keys.push(doc);
    }
    Ok(keys)
}

/// Sets `value`, `placeholder` and `line` of one key from the parsed file.
fn fill_value(
    doc: &mut KeyDoc,
    flat: &Flat,
    placeholders: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) {
    let entry = flat.entries.get(&doc.key);
    doc.placeholder = entry.is_some_and(|e| flat::holds_placeholder(&e.value))
        || placeholders
            .iter()
            .any(|p| p == &doc.key || p.ends_with(&format!(".{}", doc.key)));
    doc.line = entry.and_then(|e| match e.origin {
        Origin::File { line } => line,
        _ => None,
    });
    if doc.secret {
        let written = entry
            .and_then(|e| e.value.as_str())
            .is_some_and(|s| !s.trim().is_empty());
        let shown = if doc.placeholder {
            "placeholder"
        } else if written {
            "set"
        } else if secret_in_env(&doc.key, env) {
            "from environment"
        } else {
            "not set"
        };
        doc.value = Some(shown.into());
        return;
    }
    doc.value = entry.and_then(|e| secrets::to_json(&doc.key, &e.value, true));
}

/// Whether an API key left empty would be found in the environment (its name, never its value).
fn secret_in_env(key: &str, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let Some(prefix) = key.strip_suffix("_api_key") else {
        return false;
    };
    [
        format!("ATK_{}_API_KEY", prefix.to_ascii_uppercase()),
        "OPENAI_API_KEY".to_string(),
    ]
    .iter()
    .any(|name| env(name).is_some_and(|v| !v.trim().is_empty()))
}

/// The keys of one struct's schema, in field order.
fn keys_of(schema: &Schema, group: &str) -> Vec<KeyDoc> {
    let root = schema.as_object().cloned().unwrap_or_default();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = root
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = root.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(key, prop)| KeyDoc {
            key: key.clone(),
            group: group.to_string(),
            ty: type_name(prop, &defs),
            default: prop.get("default").cloned().unwrap_or(Value::Null),
            required: required.contains(&key.as_str()),
            doc: doc_line(prop, &defs),
            secret: secrets::is_secret_key(key),
            value: None,
            placeholder: false,
            line: None,
        })
        .collect()
}

/// The first line of the field's doc comment (or of its type's, when the field has none).
fn doc_line(prop: &Value, defs: &Map<String, Value>) -> String {
    let own = prop.get("description").and_then(Value::as_str);
    let of_type = resolve(prop, defs)
        .get("description")
        .and_then(Value::as_str);
    own.or(of_type)
        .and_then(|d| d.lines().next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A `$ref` followed into `$defs`.
fn resolve<'a>(prop: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    prop.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .unwrap_or(prop)
}

/// A short name of a schema's type, as a config's author reads it.
fn type_name(prop: &Value, defs: &Map<String, Value>) -> String {
    let prop = resolve(prop, defs);
    if let Some(words) = prop.get("enum").and_then(Value::as_array) {
        let words: Vec<String> = words
            .iter()
            .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_string))
            .collect();
        return words.join(" | ");
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(alts) = prop.get(alt).and_then(Value::as_array) {
            let names: Vec<String> = alts
                .iter()
                .map(|a| type_name(a, defs))
                .filter(|n| n != "null")
                .collect();
            return names.join(" or ");
        }
    }
    match prop.get("type") {
        Some(Value::String(t)) => single_type(t, prop, defs),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(|t| single_type(t, prop, defs))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    }
}

fn single_type(t: &str, prop: &Value, defs: &Map<String, Value>) -> String {
    match t {
        "array" => match prop.get("items") {
            Some(items) => format!("list of {}", type_name(items, defs)),
            None => "list".to_string(),
        },
        "object" => "map".to_string(),
        other => other.to_string(),
    }
}

/// Schema-only stand-ins for the value types the config names (their rules live in `rules`).
pub(crate) mod schema {
    use schemars::JsonSchema;

    /// An engine's mode.
    #[derive(JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    pub(crate) enum ModeName {
        Api,
        Batch,
        Mock,
    }

    /// An engine's API dialect.
    #[derive(JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    pub(crate) enum DialectName {
        Openai,
        Anthropic,
    }

    /// A tokenizer's name.
    #[derive(JsonSchema)]
    #[allow(dead_code, non_camel_case_types)]
    pub(crate) enum TokenizerName {
        cl100k_base,
        o200k_base,
    }

    /// A store's database.
    #[derive(JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    pub(crate) enum BackendName {
        Sled,
        Redb,
    }

    /// One endpoint URL, or a list of them (URLs or `{url, api_key, concurrency}` maps).
    #[derive(JsonSchema)]
    #[serde(untagged)]
    #[allow(dead_code)]
    pub(crate) enum UrlOrList {
        One(String),
        Many(Vec<serde_json::Value>),
    }
}
