//! The raw layer: the YAML file's sections flattened into one set of keys, each remembering
//! the section, line and origin it came from, so every later message can name them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::error::{ConfigError, KeyLocation, Origin};
use super::source::{PLACEHOLDER, SENTINEL, Seg, SourceIndex, hide_markers, path};

/// Sections every config may have; written empty (`cost:`) they are still sections.
const STANDARD_SECTIONS: &[&str] = &["api", "path", "system", "cost", "meta_datagen"];

/// One flattened key.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its current value (after overrides).
    pub value: Value,
    /// The flattened section it was written in; `None` for the top level and `no_flatten` maps.
    pub section: Option<String>,
    /// Where the current value came from.
    pub origin: Origin,
    /// True for a `no_flatten` section kept as a map.
    pub is_map: bool,
    /// For a `no_flatten` map: inner keys an override replaced, and by which flag.
    pub inner_origin: BTreeMap<String, Origin>,
    /// The text a `--set` gave, kept to retry it as a string if a string was wanted.
    pub set_text: Option<String>,
}

/// The whole config, flattened.
#[derive(Debug)]
pub(crate) struct Flat {
    /// The config file, as the caller named it (used in messages).
    pub file: PathBuf,
    /// Every key by its flattened name.
    pub entries: BTreeMap<String, Entry>,
    /// Sections listed under `no_flatten`.
    pub no_flatten: BTreeSet<String>,
    /// Sections that were flattened.
    pub sections: BTreeSet<String>,
    /// Lines of keys in the file.
    pub index: SourceIndex,
}

impl Flat {
    /// Parses `text` and flattens it. Fails on invalid YAML, a bad shape, or a key set in two
    /// flattened sections. Returns warnings (e.g. a `no_flatten` entry naming no section).
    pub(crate) fn parse(file: &Path, text: &str) -> Result<(Self, Vec<String>), ConfigError> {
        let text = hide_markers(text);
        let index = SourceIndex::build(&text).unwrap_or_else(|| {
            tracing::warn!(file = %file.display(), "config: could not index key lines; messages will lack line numbers");
            SourceIndex::default()
        });
        let mut root: Value =
            serde_yaml::from_str(&text).map_err(|e| yaml_error(file, &e, &index))?;
        restore_markers(&mut root);
        if root.is_null() {
            root = Value::Mapping(Mapping::new());
        }
        let shape = |line: Option<usize>, message: String| ConfigError::Shape {
            file: file.to_path_buf(),
            line,
            message,
        };
        let Value::Mapping(mut root) = root else {
            return Err(shape(
                Some(1),
                "the top level of a config must be a mapping of sections and keys".into(),
            ));
        };

        let mut flat = Flat {
            file: file.to_path_buf(),
            entries: BTreeMap::new(),
            no_flatten: BTreeSet::new(),
            sections: BTreeSet::new(),
            index,
        };
        if let Some(list) = root.remove("no_flatten") {
            let line = flat.index.line(&path(&["no_flatten"]));
            let names = match list {
                Value::Null => Vec::new(),
                Value::String(s) => vec![s],
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(shape(line, "`no_flatten` must list section names (strings)".into())),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(shape(line, "`no_flatten` must be a list of section names, e.g. `no_flatten: [example_heading]`".into())),
            };
            flat.no_flatten.extend(names);
        }

        let mut warnings = Vec::new();
        for (key, value) in root {
            let Value::String(name) = key else {
                let written = serde_yaml::to_string(&key).unwrap_or_default();
                let line = flat.index.line(&path(&[written.trim()]));
                return Err(shape(
                    line,
                    format!(
                        "top-level key {} is not a string; quote it",
                        short_yaml(&key)
                    ),
                ));
            };
            let is_section = match &value {
                Value::Mapping(_) => !flat.no_flatten.contains(&name),
                Value::Null => STANDARD_SECTIONS.contains(&name.as_str()),
                _ => false,
            };
            if !is_section {
                let is_map = value.is_mapping() && flat.no_flatten.contains(&name);
                let src = path(&[&name]);
                flat.insert_from_file(name, value, None, src, is_map)?;
                continue;
            }
            flat.sections.insert(name.clone());
            let Value::Mapping(inner) = value else {
                continue;
            };
            for (key, value) in inner {
                let Value::String(key) = key else {
                    let line = flat.index.line(&path(&[&name]));
                    return Err(shape(
                        line,
                        format!(
                            "section `{name}` has a key {} that is not a string",
                            short_yaml(&key)
                        ),
                    ));
                };
                let src = path(&[&name, &key]);
                flat.insert_from_file(key, value, Some(name.clone()), src, false)?;
            }
        }
        let no_flatten_line = flat.index.line(&path(&["no_flatten"]));
        for name in &flat.no_flatten {
            if !flat.entries.get(name).is_some_and(|e| e.is_map) {
                // The section meant is most likely one that was flattened instead.
                let hint = super::typed::did_you_mean(
                    name,
                    flat.sections.iter().map(String::as_str),
                )
                .map(|s| {
                    format!("; did you mean `{s}`? (it was flattened: its keys are top-level keys)")
                })
                .unwrap_or_default();
                let place = match no_flatten_line {
                    Some(line) => format!("{}:{line}", file.display()),
                    None => file.display().to_string(),
                };
                warnings.push(format!(
                    "{place}: `no_flatten` lists `{name}`, but the file has no top-level section `{name}`{hint}"
                ));
            }
        }
        Ok((flat, warnings))
    }

    fn insert_from_file(
        &mut self,
        key: String,
        value: Value,
        section: Option<String>,
        src: Vec<Seg>,
        is_map: bool,
    ) -> Result<(), ConfigError> {
        let origin = Origin::File {
            line: self.index.line(&src),
        };
        if let Some(first) = self.locate(&key) {
            let second = KeyLocation {
                section,
                key: key.clone(),
                origin,
                in_map: false,
            };
            return Err(ConfigError::Conflict {
                file: self.file.clone(),
                key,
                first: Box::new(first),
                second: Box::new(second),
            });
        }
        let entry = Entry {
            value,
            section,
            origin,
            is_map,
            inner_origin: BTreeMap::new(),
            set_text: None,
        };
        self.entries.insert(key, entry);
        Ok(())
    }

    /// Where a flattened key is, for messages.
    pub(crate) fn locate(&self, key: &str) -> Option<KeyLocation> {
        let e = self.entries.get(key)?;
        Some(KeyLocation {
            section: e.section.clone(),
            key: key.to_string(),
            origin: e.origin.clone(),
            in_map: false,
        })
    }

    /// Where an inner key of a `no_flatten` map is, for messages.
    pub(crate) fn locate_inner(&self, map: &str, inner: &str) -> KeyLocation {
        let origin = self
            .entries
            .get(map)
            .and_then(|e| {
                e.inner_origin.get(inner).cloned().or_else(|| {
                    (!matches!(e.origin, Origin::File { .. })).then(|| e.origin.clone())
                })
            })
            .unwrap_or(Origin::File {
                line: self.index.line(&path(&[map, inner])),
            });
        KeyLocation {
            section: Some(map.to_string()),
            key: inner.to_string(),
            origin,
            in_map: true,
        }
    }

    /// Where the value at a deserialisation path (`key` or `map.inner...`) was written.
    pub(crate) fn locate_path(&self, dotted: &str) -> KeyLocation {
        let mut parts = dotted.split('.');
        let head = parts.next().unwrap_or_default();
        let head = head.split('[').next().unwrap_or(head);
        match (self.entries.get(head), parts.next()) {
            (Some(e), Some(inner)) if e.is_map => {
                self.locate_inner(head, inner.split('[').next().unwrap_or(inner))
            }
            _ => self.locate(head).unwrap_or_else(|| KeyLocation {
                section: None,
                key: head.to_string(),
                origin: Origin::File { line: None },
                in_map: false,
            }),
        }
    }

    /// Sets a key from an override: `key` (flattened), `map.key` (inside a `no_flatten` map,
    /// dots going deeper), or `section.key` for a flattened section (same as `key`).
    pub(crate) fn set(
        &mut self,
        raw_key: &str,
        value: Value,
        origin: Origin,
        flag: &str,
    ) -> Result<(), ConfigError> {
        self.set_with_text(raw_key, value, None, origin, flag)
    }

    /// [`Flat::set`], remembering the text a `--set` gave (see [`Flat::retype_as_string`]).
    pub(crate) fn set_with_text(
        &mut self,
        raw_key: &str,
        value: Value,
        text: Option<&str>,
        origin: Origin,
        flag: &str,
    ) -> Result<(), ConfigError> {
        if let Some((head, rest)) = raw_key.split_once('.') {
            if self.no_flatten.contains(head) {
                let entry = self
                    .entries
                    .entry(head.to_string())
                    .or_insert_with(|| Entry {
                        value: Value::Mapping(Mapping::new()),
                        section: None,
                        origin: origin.clone(),
                        is_map: true,
                        inner_origin: BTreeMap::new(),
                        set_text: None,
                    });
                let mut target = &mut entry.value;
                let mut parts = rest.split('.').peekable();
                let first = rest.split('.').next().unwrap_or(rest).to_string();
                while let Some(part) = parts.next() {
                    let Value::Mapping(map) = target else {
                        return Err(ConfigError::Override {
                            flag: flag.to_string(),
                            message: format!(
                                "cannot set `{raw_key}`: the value above `{part}` is not a map"
                            ),
                        });
                    };
                    if parts.peek().is_none() {
                        map.insert(Value::String(part.to_string()), value);
                        break;
                    }
                    target = map
                        .entry(Value::String(part.to_string()))
                        .or_insert_with(|| Value::Mapping(Mapping::new()));
                }
                entry.inner_origin.insert(first, origin);
                return Ok(());
            }
            if self.sections.contains(head) && !rest.contains('.') {
                return self.set_with_text(rest, value, text, origin, flag);
            }
        }
        match self.entries.get_mut(raw_key) {
            Some(entry) => {
                entry.is_map = entry.is_map && value.is_mapping();
                entry.value = value;
                entry.origin = origin;
                entry.inner_origin.clear();
                entry.set_text = text.map(str::to_string);
            }
            None => {
                let is_map = value.is_mapping() && self.no_flatten.contains(raw_key);
                let entry = Entry {
                    value,
                    section: None,
                    origin,
                    is_map,
                    inner_origin: BTreeMap::new(),
                    set_text: text.map(str::to_string),
                };
                self.entries.insert(raw_key.to_string(), entry);
            }
        }
        Ok(())
    }

    /// A `--set` value read as a number or bool where the struct wanted a string (`--set
    /// key3=42`): makes it the string as typed and returns true, so the caller retries once.
    pub(crate) fn retype_as_string(&mut self, path: &str, message: &str) -> bool {
        if !message.contains("string") {
            return false;
        }
        let Some(entry) = self.entries.get_mut(path) else {
            return false;
        };
        match entry.set_text.take() {
            Some(text) if !entry.value.is_string() => {
                entry.value = Value::String(text);
                true
            }
            _ => false,
        }
    }

    /// Calls `f` on every value with its location: each flattened key, and each inner key of a
    /// `no_flatten` map.
    pub(crate) fn try_for_each_value<E>(
        &mut self,
        mut f: impl FnMut(KeyLocation, &mut Value) -> Result<(), E>,
    ) -> Result<(), E> {
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        for key in keys {
            let is_map = self.entries[&key].is_map;
            if is_map {
                let inner: Vec<String> = match &self.entries[&key].value {
                    Value::Mapping(m) => m
                        .keys()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                for name in inner {
                    let at = self.locate_inner(&key, &name);
                    if let Some(Value::Mapping(m)) =
                        self.entries.get_mut(&key).map(|e| &mut e.value)
                        && let Some(v) = m.get_mut(name.as_str())
                    {
                        f(at, v)?;
                    }
                }
            } else {
                let at = self.locate(&key).expect("key exists");
                if let Some(entry) = self.entries.get_mut(&key) {
                    f(at, &mut entry.value)?;
                }
            }
        }
        Ok(())
    }

    /// Every key whose value still holds `!!PLACEHOLDER!!`, in file order (overrides last).
    pub(crate) fn placeholders(&mut self) -> Vec<KeyLocation> {
        let mut found = Vec::new();
        let _ = self.try_for_each_value::<()>(|at, value| {
            if holds_placeholder(value) {
                found.push(at);
            }
            Ok(())
        });
        found.sort_by_key(|at| (at.line().unwrap_or(usize::MAX), at.dotted()));
        found
    }

    /// The flattened keys as one YAML mapping, the input of the typed layer.
    pub(crate) fn to_mapping(&self) -> Value {
        let mut map = Mapping::new();
        for (key, entry) in &self.entries {
            map.insert(Value::String(key.clone()), entry.value.clone());
        }
        Value::Mapping(map)
    }
}

/// True when the value, or anything inside it, holds the marker.
pub(crate) fn holds_placeholder(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(PLACEHOLDER),
        Value::Sequence(items) => items.iter().any(holds_placeholder),
        Value::Mapping(map) => map.values().any(holds_placeholder),
        Value::Tagged(t) => {
            t.tag.to_string().contains("PLACEHOLDER") || holds_placeholder(&t.value)
        }
        _ => false,
    }
}

/// Puts the visible marker back where the sentinel stood (values and keys).
fn restore_markers(value: &mut Value) {
    match value {
        Value::String(s) if s.contains(SENTINEL) => *s = s.replace(SENTINEL, PLACEHOLDER),
        Value::Sequence(items) => items.iter_mut().for_each(restore_markers),
        Value::Mapping(map) => {
            if map
                .keys()
                .any(|k| k.as_str().is_some_and(|k| k.contains(SENTINEL)))
            {
                let old = std::mem::take(map);
                for (mut k, v) in old {
                    restore_markers(&mut k);
                    map.insert(k, v);
                }
            }
            map.values_mut().for_each(restore_markers);
        }
        Value::Tagged(t) => restore_markers(&mut t.value),
        _ => {}
    }
}

/// serde_yaml's error as a [`ConfigError::Yaml`]; a duplicate key is pointed at its second
/// occurrence (serde_yaml points at the start of the mapping).
fn yaml_error(file: &Path, e: &serde_yaml::Error, index: &SourceIndex) -> ConfigError {
    let (mut line, mut col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut message = strip_location(&e.to_string());
    if message.contains("duplicate entry")
        && let Some(dup) = index.duplicate()
    {
        (line, col) = (dup.line, dup.col);
        let names: Vec<&str> = dup
            .path
            .iter()
            .filter_map(|s| {
                if let Seg::Key(k) = s {
                    Some(k.as_str())
                } else {
                    None
                }
            })
            .collect();
        let (key, parent) = names.split_last().map_or(("", &[][..]), |(k, p)| (*k, p));
        let within = if parent.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{}`", parent.join("."))
        };
        message = format!(
            "key `{key}` is written twice {within} (first at line {})",
            dup.first_line
        );
    }
    ConfigError::Yaml {
        file: file.to_path_buf(),
        line,
        col,
        message,
    }
}

/// serde_yaml appends " at line L column C" to its messages; the error shows those already.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn short_yaml(value: &Value) -> String {
    let text = serde_yaml::to_string(value).unwrap_or_default();
    let text = text.trim();
    if text.chars().count() > 40 {
        format!("`{}...`", text.chars().take(40).collect::<String>())
    } else {
        format!("`{text}`")
    }
}
