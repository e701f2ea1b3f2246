//! `meta_datagen_extras`: YAML template files rendered over each final item into one
//! ShareGPT conversation per item.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use atk_state::ItemRecord;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Deserialize;

use crate::sharegpt::{Conversation, Turn};
use crate::{Error, valid_name};

/// The file format (see the crate README). Unknown keys are refused so a typo is not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: Option<String>,
    #[allow(dead_code)] // documentation for the reader of the file; not rendered
    description: Option<String>,
    system: Option<String>,
    human: Option<String>,
    gpt: Option<String>,
    turns: Option<Vec<TurnTemplate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnTemplate {
    from: String,
    value: String,
}

/// A loaded extras template: its name (which names the output file) and its turns.
#[derive(Debug)]
pub(crate) struct ExtraTemplate {
    /// Names the output file `extra_<name>.jsonl`.
    pub(crate) name: String,
    /// Where it was read from.
    pub(crate) path: PathBuf,
    /// `(from, template name in the environment)` per turn.
    turns: Vec<(String, String)>,
}

/// All extras templates compiled into one environment.
pub(crate) struct Extras {
    env: Environment<'static>,
    pub(crate) templates: Vec<ExtraTemplate>,
}

/// Why an item produced no example (grouped in the report).
pub(crate) type SkipReason = String;

impl Extras {
    /// Reads, checks and compiles every template file.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<Self, Error> {
        let mut env = Environment::new();
        // An `{% if field %}` test on a missing field is fine; printing one is an error,
        // which we turn into a counted skip.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        let mut templates = Vec::with_capacity(paths.len());
        for path in paths {
            templates.push(load_one(&mut env, path)?);
        }
        Ok(Self { env, templates })
    }

    /// Renders template `index` over an item: a conversation, or why the item was skipped.
    pub(crate) fn render(
        &self,
        index: usize,
        item: &ItemRecord,
    ) -> Result<Conversation, SkipReason> {
        let template = &self.templates[index];
        let ctx = minijinja::Value::from_serialize(&item.fields);
        let mut conversations = Vec::with_capacity(template.turns.len());
        for (from, tname) in &template.turns {
            let compiled = self.env.get_template(tname).map_err(|e| e.to_string())?;
            let value = match compiled.render(&ctx) {
                Ok(value) => value,
                Err(e) if e.kind() == ErrorKind::UndefinedError => {
                    let missing: Vec<String> = compiled
                        .undeclared_variables(false)
                        .into_iter()
                        .filter(|v| !item.fields.contains_key(v))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .map(|v| format!("`{v}`"))
                        .collect();
                    return Err(if missing.is_empty() {
                        format!("`{from}` turn uses an undefined value ({e})")
                    } else {
                        format!("missing field {}", missing.join(", "))
                    });
                }
                Err(e) => return Err(format!("`{from}` turn failed to render: {e}")),
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("`{from}` turn rendered empty"));
            }
            conversations.push(Turn::new(from.as_str(), value));
        }
        Ok(Conversation { conversations })
    }
}

fn load_one(env: &mut Environment<'static>, path: &Path) -> Result<ExtraTemplate, Error> {
    let err = |message: String| Error::Template {
        path: path.to_path_buf(),
        message,
    };
    let source = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let file: TemplateFile = serde_yaml::from_str(&source).map_err(|e| err(e.to_string()))?;
    let name = match file.name {
        Some(name) => name,
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned(),
    };
    if !valid_name(&name) {
        return Err(err(format!(
            "`{name}` cannot name a dataset file: use letters, digits, '_', '-' or '.'"
        )));
    }
    let mut turns: Vec<(String, String)> = Vec::new();
    if let Some(system) = file.system {
        turns.push(("system".to_owned(), system));
    }
    match (file.turns, file.human, file.gpt) {
        (Some(list), None, None) => {
            if list.is_empty() {
                return Err(err("`turns` is empty".to_owned()));
            }
            for turn in list {
                if !matches!(turn.from.as_str(), "system" | "human" | "gpt") {
                    return Err(err(format!(
                        "a turn is `from: {}`; use system, human or gpt",
                        turn.from
                    )));
                }
                turns.push((turn.from, turn.value));
            }
        }
        (None, Some(human), Some(gpt)) => {
            turns.push(("human".to_owned(), human));
            turns.push(("gpt".to_owned(), gpt));
        }
        (Some(_), _, _) => {
            return Err(err(
                "give either `turns` or `human` + `gpt`, not both".to_owned()
            ));
        }
        (None, _, _) => return Err(err("needs `human` and `gpt` (or a `turns` list)".to_owned())),
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("template");
    let mut named = Vec::with_capacity(turns.len());
    for (i, (from, source)) in turns.into_iter().enumerate() {
        let tname = format!("{file_name}[{i}:{from}]");
        env.add_template_owned(tname.clone(), source).map_err(|e| {
            let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
            err(format!(
                "the `{from}` template{line}: {}",
                e.detail().unwrap_or("syntax error")
            ))
        })?;
        named.push((from, tname));
    }
    Ok(ExtraTemplate {
        name,
        path: path.to_path_buf(),
        turns: named,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(fields: serde_json::Value) -> ItemRecord {
        ItemRecord {
            v: 1,
            id: "i1".into(),
            parent: None,
            order: vec![0],
            fields: fields.as_object().unwrap().clone(),
        }
    }

    fn check(yaml: &str) -> Result<Extras, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, yaml).unwrap();
        Extras::load(&[path])
    }

    #[test]
    fn human_gpt_shorthand_renders_item_fields_trimmed() {
        let extras =
            check("system: Poet.\nhuman: |\n  Poem about: {{ text }}\ngpt: '{{ poetry }}'\n")
                .unwrap();
        assert_eq!(extras.templates[0].name, "t");
        let conv = extras
            .render(0, &item(json!({"text": "the sea", "poetry": "waves"})))
            .unwrap();
        assert_eq!(
            conv.conversations,
            vec![
                Turn::new("system", "Poet."),
                Turn::new("human", "Poem about: the sea"),
                Turn::new("gpt", "waves")
            ]
        );
    }

    #[test]
    fn missing_field_is_a_named_skip_but_an_if_test_is_not() {
        let extras = check(
            "human: '{% if title %}{{ title }}: {% endif %}{{ text }}'\ngpt: '{{ poetry }}'\n",
        )
        .unwrap();
        assert_eq!(
            extras.render(0, &item(json!({"text": "t"}))).unwrap_err(),
            "missing field `poetry`"
        );
        let conv = extras
            .render(0, &item(json!({"text": "t", "poetry": "p"})))
            .unwrap();
        assert_eq!(conv.conversations[0].value, "t");
    }

    #[test]
    fn empty_turn_is_a_skip() {
        let extras = check("human: '{{ text }}'\ngpt: '{{ poetry }}'\n").unwrap();
        assert_eq!(
            extras
                .render(0, &item(json!({"text": "t", "poetry": "  "})))
                .unwrap_err(),
            "`gpt` turn rendered empty"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let msg = |yaml: &str| check(yaml).err().expect("refused").to_string();
        assert!(msg("human: x\n").contains("needs `human` and `gpt`"));
        assert!(msg("human: x\ngpt: y\nsytem: z\n").contains("unknown field `sytem`"));
        assert!(msg("human: '{{ text '\ngpt: y\n").contains("the `human` template line 1"));
        assert!(msg("turns: [{from: user, value: x}]\n").contains("use system, human or gpt"));
        assert!(msg("name: ../x\nhuman: a\ngpt: b\n").contains("cannot name a dataset file"));
    }
}
