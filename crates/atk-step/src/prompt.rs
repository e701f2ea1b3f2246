//! Prompt files: chat prompts are YAML lists of `{role, content}`, completion prompts `.txt`.
//! A pipeline's defaults are compiled in; the config's `prompts` folder overrides them file by
//! file. Every prompt is parsed and checked when first loaded (the executor loads all of a
//! chain's prompts before the first request) and cached afterwards.
//!
//! Longer than 600 lines for one job: loading, parsing, checking and caching prompt files
//! share the library type; a third of the file is its tests.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atk_engine::{Message, Prompt};
use serde::Deserialize;

use crate::error::StepError;
use crate::template::{render_template, template_names};

/// Where a prompt was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    /// A file on disk (override or default folder).
    File(PathBuf),
    /// A default compiled into the binary, by file name.
    BuiltIn(String),
}

impl fmt::Display for PromptSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::BuiltIn(name) => write!(f, "built-in:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Chat(Vec<Message>),
    Completion(String),
}

/// A checked prompt, ready to render for an item.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    source: PromptSource,
    body: Body,
    /// The file's text as read (for line numbers in warnings).
    raw: Arc<str>,
    /// A short hash of the file's text.
    digest: String,
    /// Each chat message's `{name}`s, found once at load (`shared_prefix` runs per request).
    message_names: Vec<Vec<String>>,
}

/// The first 16 hex digits of SHA-256 of a prompt file's text.
fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: Role,
    content: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl PromptTemplate {
    /// Parses a chat prompt: a YAML list of `{role, content}` (roles `system`, `user`, `assistant`).
    pub fn parse_chat(source: PromptSource, text: &str) -> Result<Self, StepError> {
        let error = |line: Option<usize>, message: String| StepError::Prompt {
            file: source.to_string(),
            line,
            message,
        };
        if text.trim().is_empty() {
            return Err(error(
                None,
                "the file is empty; expected a YAML list of {role, content} messages".into(),
            ));
        }
        let raw: Vec<RawMessage> = serde_yaml::from_str(text).map_err(|e| {
            error(
                e.location().map(|l| l.line()),
                format!("{e} (expected a YAML list of {{role, content}} messages, role one of system/user/assistant)"),
            )
        })?;
        if raw.is_empty() {
            return Err(error(None, "the prompt has no messages".into()));
        }
        let messages: Vec<Message> = raw
            .into_iter()
            .map(|m| Message::new(m.role.as_str(), m.content))
            .collect();
        let message_names = messages
            .iter()
            .map(|m| template_names(&m.content))
            .collect();
        Ok(Self {
            source,
            body: Body::Chat(messages),
            raw: text.into(),
            digest: digest(text),
            message_names,
        })
    }

    /// A completion prompt (plain text).
    pub fn parse_completion(source: PromptSource, text: &str) -> Result<Self, StepError> {
        if text.trim().is_empty() {
            return Err(StepError::Prompt {
                file: source.to_string(),
                line: None,
                message: "the file is empty".into(),
            });
        }
        Ok(Self {
            source,
            body: Body::Completion(text.to_string()),
            raw: text.into(),
            digest: digest(text),
            message_names: Vec::new(),
        })
    }

    /// Where this prompt came from.
    pub fn source(&self) -> &PromptSource {
        &self.source
    }

    /// A short hash of the file's text (16 hex digits): names the prompt's version in
    /// dataset cards and step fingerprints.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// True for a chat prompt, false for a completion prompt.
    pub fn is_chat(&self) -> bool {
        matches!(self.body, Body::Chat(_))
    }

    /// Every `{name}` rendering looks up, each once, with the 1-based line of the file where
    /// it first appears (YAML comment lines skipped; `None` when not found as written, e.g.
    /// inside an escaped YAML string).
    pub fn names(&self) -> Vec<(String, Option<usize>)> {
        let names = match &self.body {
            Body::Chat(messages) => {
                let mut all: Vec<String> = Vec::new();
                for m in messages {
                    for n in template_names(&m.content) {
                        if !all.contains(&n) {
                            all.push(n);
                        }
                    }
                }
                all
            }
            Body::Completion(text) => template_names(text),
        };
        let chat = self.is_chat();
        let lines: Vec<(usize, Vec<String>)> = self
            .raw
            .lines()
            .enumerate()
            .filter(|(_, l)| !(chat && l.trim_start().starts_with('#')))
            .map(|(i, l)| (i + 1, template_names(l)))
            .collect();
        names
            .into_iter()
            .map(|n| {
                let line = lines
                    .iter()
                    .find(|(_, ns)| ns.contains(&n))
                    .map(|(i, _)| *i);
                (n, line)
            })
            .collect()
    }

    /// How many leading chat messages render the same for every item: those before the first
    /// message naming a `{name}` for which `per_item` holds (an item field). The system prompt
    /// and few-shot examples, usually: what an engine may mark for prompt caching. 0 for a
    /// completion prompt.
    pub fn shared_prefix(&self, per_item: &dyn Fn(&str) -> bool) -> usize {
        match &self.body {
            Body::Chat(_) => self
                .message_names
                .iter()
                .take_while(|names| !names.iter().any(|n| per_item(n)))
                .count(),
            Body::Completion(_) => 0,
        }
    }

    /// Fills in `{name}`s (see [`render_template`]) and returns the prompt to send.
    pub fn render(&self, vars: &dyn Fn(&str) -> Option<String>) -> Prompt {
        match &self.body {
            Body::Chat(messages) => Prompt::Chat(
                messages
                    .iter()
                    .map(|m| Message::new(m.role.clone(), render_template(&m.content, vars)))
                    .collect(),
            ),
            Body::Completion(text) => Prompt::Completion(render_template(text, vars)),
        }
    }
}

/// Finds, checks and caches prompt files.
///
/// Lookup order for `NAME` (file `NAME.yaml` in chat mode, `NAME.txt` in completion mode):
/// the override folder (the config's `prompts`), then the default folder when one is set
/// (the config's `default_prompts`; it replaces the compiled-in defaults), else the defaults
/// compiled into the binary.
#[derive(Debug)]
pub struct PromptLibrary {
    defaults: &'static [(&'static str, &'static str)],
    default_dir: Option<PathBuf>,
    override_dir: Option<PathBuf>,
    cache: Mutex<HashMap<String, Arc<PromptTemplate>>>,
}

impl PromptLibrary {
    /// A library over compiled-in defaults: `(file name, contents)` pairs such as `("write_poem.yaml", include_str!(..))`.
    pub fn new(defaults: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            defaults,
            default_dir: None,
            override_dir: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Files in this folder win over the defaults, file by file.
    pub fn with_override_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.override_dir = dir;
        self
    }

    /// When set, this folder replaces the compiled-in defaults.
    pub fn with_default_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.default_dir = dir;
        self
    }

    /// Loads (once; cached afterwards) and checks the prompt `name` (without extension).
    pub fn load(
        &self,
        name: &str,
        completion_mode: bool,
    ) -> Result<Arc<PromptTemplate>, StepError> {
        let ext = if completion_mode { "txt" } else { "yaml" };
        let base = name.strip_suffix(&format!(".{ext}")).unwrap_or(name);
        check_name(base)?;
        let file_name = format!("{base}.{ext}");
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file_name)
        {
            return Ok(hit.clone());
        }
        let (source, text) = self.find(&file_name)?;
        let template = if completion_mode {
            PromptTemplate::parse_completion(source, &text)?
        } else {
            PromptTemplate::parse_chat(source, &text)?
        };
        let template = Arc::new(template);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(file_name, template.clone());
        Ok(template)
    }

    /// Every prompt loaded so far, by file name, sorted: `(file name, source, digest)`.
    pub fn loaded(&self) -> Vec<(String, String, String)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = cache
            .iter()
            .map(|(name, t)| (name.clone(), t.source.to_string(), t.digest.clone()))
            .collect();
        out.sort();
        out
    }

    /// Loads and checks every named prompt; the first problem is returned.
    pub fn check_all(&self, names: &[String], completion_mode: bool) -> Result<(), StepError> {
        names
            .iter()
            .try_for_each(|n| self.load(n, completion_mode).map(|_| ()))
    }

    /// What is worth a warning before a run sends anything: a `prompts` (or `default_prompts`)
    /// folder that does not exist, and each file in the `prompts` folder that matches no prompt
    /// of the pipeline (so it overrides nothing), with a "did you mean" when one is close.
    pub fn override_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, dir) in [
            ("prompts", &self.override_dir),
            ("default_prompts", &self.default_dir),
        ] {
            if let Some(dir) = dir
                && !dir.is_dir()
            {
                let effect = if key == "prompts" {
                    "nothing is overridden; the pipeline's own prompts are used"
                } else {
                    "every prompt the pipeline loads will be missing"
                };
                warnings.push(format!(
                    "`{key}` folder {} does not exist: {effect}",
                    dir.display()
                ));
            }
        }
        let Some(dir) = self.override_dir.as_ref().filter(|d| d.is_dir()) else {
            return warnings;
        };
        let known: Vec<String> = match &self.default_dir {
            Some(d) => file_names(d),
            None => self
                .defaults
                .iter()
                .map(|(n, _)| (*n).to_string())
                .collect(),
        };
        for name in file_names(dir) {
            if known.contains(&name) {
                continue;
            }
            let hint = crate::check::closest(&name, known.iter().map(String::as_str))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            warnings.push(format!(
                "{}: matches no prompt of the pipeline, so it overrides nothing{hint}",
                dir.join(&name).display()
            ));
        }
        warnings
    }

    fn find(&self, file_name: &str) -> Result<(PromptSource, String), StepError> {
        let mut looked = Vec::new();
        for dir in [&self.override_dir, &self.default_dir]
            .into_iter()
            .flatten()
        {
            let path = dir.join(file_name);
            if let Some(text) = read_if_exists(&path)? {
                return Ok((PromptSource::File(path), text));
            }
            looked.push(path.display().to_string());
        }
        if self.default_dir.is_none() {
            if let Some((_, text)) = self.defaults.iter().find(|(n, _)| *n == file_name) {
                return Ok((
                    PromptSource::BuiltIn(file_name.to_string()),
                    (*text).to_string(),
                ));
            }
            looked.push("the built-in prompts".to_string());
        }
        Err(StepError::Prompt {
            file: file_name.to_string(),
            line: None,
            message: format!("prompt file not found (looked in {})", looked.join(", ")),
        })
    }
}

/// Names of the regular, non-hidden files directly in `dir`, sorted (empty if unreadable).
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn read_if_exists(path: &Path) -> Result<Option<String>, StepError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| StepError::Prompt {
                file: path.display().to_string(),
                line: None,
                message: format!("not valid UTF-8: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepError::Prompt {
            file: path.display().to_string(),
            line: None,
            message: e.to_string(),
        }),
    }
}

/// A prompt name is a plain file stem: never a path that could leave the prompt folders.
fn check_name(name: &str) -> Result<(), StepError> {
    let bad = name.is_empty()
        || name.contains(['/', '\\', '\0', ':'])
        || name.contains("..")
        || Path::new(name).is_absolute();
    if bad {
        return Err(StepError::Prompt {
            file: name.to_string(),
            line: None,
            message: "a prompt name must be a plain file name without folders or `..`".into(),
        });
    }
    Ok(())
}

/// The prompt files of a pipeline crate, compiled in: for each name, `prompts/NAME.yaml` (chat)
/// and `prompts/NAME.txt` (completion) under the calling crate's folder, as the
/// `(file name, contents)` pairs [`PromptLibrary::new`] takes.
///
/// ```ignore
/// pub const PROMPTS: &[(&str, &str)] = atk_step::prompts!("judge_chunk", "generate_qa");
/// ```
#[macro_export]
macro_rules! prompts {
    ($($name:literal),+ $(,)?) => {
        &[$(
            (concat!($name, ".yaml"), include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/", $name, ".yaml"))),
            (concat!($name, ".txt"), include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/", $name, ".txt"))),
        )+]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: &[(&str, &str)] = &[
        (
            "write_poem.yaml",
            "- role: system\n  content: You write poems.\n- role: user\n  content: \"Text: {text}\"\n",
        ),
        ("write_poem.txt", "Poem about {text}:\n"),
        ("other.yaml", "- role: user\n  content: hi\n"),
    ];

    fn prompt_error(
        result: Result<Arc<PromptTemplate>, StepError>,
    ) -> (String, Option<usize>, String) {
        match result {
            Err(StepError::Prompt {
                file,
                line,
                message,
            }) => (file, line, message),
            other => panic!("expected a prompt error, got {other:?}"),
        }
    }

    #[test]
    fn the_shared_prefix_ends_before_the_first_message_with_an_item_field() {
        let few_shot = "- role: system\n  content: You write poems in {style}.\n\
                        - role: user\n  content: \"Text: the sea\"\n\
                        - role: assistant\n  content: Waves.\n\
                        - role: user\n  content: \"Text: {text}\"\n\
                        - role: assistant\n  content: fixed\n";
        let t =
            PromptTemplate::parse_chat(PromptSource::BuiltIn("p.yaml".into()), few_shot).unwrap();
        // `style` is a run argument (the same for every item), `text` an item field.
        assert_eq!(t.shared_prefix(&|n| n == "text"), 3);
        assert_eq!(t.shared_prefix(&|n| n == "style" || n == "text"), 0);
        assert_eq!(t.shared_prefix(&|_| false), 5);
        let completion =
            PromptTemplate::parse_completion(PromptSource::BuiltIn("p.txt".into()), "{text}")
                .unwrap();
        assert_eq!(completion.shared_prefix(&|_| false), 0);
    }

    #[test]
    fn built_in_defaults_load_in_both_modes() {
        let lib = PromptLibrary::new(DEFAULTS);
        let chat = lib.load("write_poem", false).unwrap();
        assert!(chat.is_chat());
        assert_eq!(chat.source().to_string(), "built-in:write_poem.yaml");
        let completion = lib.load("write_poem", true).unwrap();
        assert!(!completion.is_chat());
    }

    #[test]
    fn override_dir_wins_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("write_poem.yaml"),
            "- role: user\n  content: overridden {text}\n",
        )
        .unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_override_dir(Some(dir.path().to_path_buf()));
        let poem = lib.load("write_poem", false).unwrap();
        assert_eq!(
            poem.source(),
            &PromptSource::File(dir.path().join("write_poem.yaml"))
        );
        assert_eq!(
            poem.render(&|_| None),
            Prompt::Chat(vec![Message::new("user", "overridden {text}")])
        );
        assert_eq!(
            lib.load("other", false).unwrap().source().to_string(),
            "built-in:other.yaml"
        );
    }

    #[test]
    fn default_dir_replaces_compiled_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("other.yaml"),
            "- role: user\n  content: from dir\n",
        )
        .unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_default_dir(Some(dir.path().to_path_buf()));
        assert!(matches!(
            lib.load("other", false).unwrap().source(),
            PromptSource::File(_)
        ));
        let (file, _, message) = prompt_error(lib.load("write_poem", false));
        assert_eq!(file, "write_poem.yaml");
        assert!(message.contains("not found"), "{message}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let (file, line, message) = prompt_error(PromptLibrary::new(DEFAULTS).load("nope", false));
        assert_eq!((file.as_str(), line), ("nope.yaml", None));
        assert!(message.contains("not found"));
    }

    #[test]
    fn bad_yaml_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "- role: user\n  content: ok\n- role: user\n  content: [unclosed\n",
        )
        .unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_override_dir(Some(dir.path().to_path_buf()));
        let (file, line, _) = prompt_error(lib.load("bad", false));
        assert!(file.ends_with("bad.yaml"), "{file}");
        assert!(line.is_some_and(|l| l >= 4), "line {line:?}");
        let shown = StepError::Prompt {
            file,
            line,
            message: "m".into(),
        }
        .to_string();
        assert!(shown.contains("bad.yaml, line "), "{shown}");
    }

    #[test]
    fn wrong_role_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("role.yaml"),
            "- role: user\n  content: ok\n- role: bot\n  content: hi\n",
        )
        .unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_override_dir(Some(dir.path().to_path_buf()));
        let (_, line, message) = prompt_error(lib.load("role", false));
        assert_eq!(line, Some(3), "{message}");
        assert!(message.contains("bot"), "{message}");
    }

    #[test]
    fn empty_list_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.yaml"), "[]\n").unwrap();
        std::fs::write(
            dir.path().join("extra.yaml"),
            "- role: user\n  content: x\n  colour: red\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("blank.yaml"), "\n").unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_override_dir(Some(dir.path().to_path_buf()));
        assert!(
            prompt_error(lib.load("empty", false))
                .2
                .contains("no messages")
        );
        assert!(prompt_error(lib.load("extra", false)).2.contains("colour"));
        assert!(prompt_error(lib.load("blank", false)).2.contains("empty"));
    }

    #[test]
    fn names_come_with_their_line_in_the_file() {
        let text = "# {commented} out\n- role: system\n  content: |\n    Write {style}.\n- role: user\n  content: \"{text} and {style} {{lit}}\"\n";
        let t = PromptTemplate::parse_chat(PromptSource::BuiltIn("p.yaml".into()), text).unwrap();
        assert_eq!(
            t.names(),
            [
                ("style".to_string(), Some(4)),
                ("text".to_string(), Some(6))
            ]
        );
        let t =
            PromptTemplate::parse_completion(PromptSource::BuiltIn("p.txt".into()), "a\n# {x}\n")
                .unwrap();
        assert_eq!(
            t.names(),
            [("x".to_string(), Some(2))],
            "a .txt prompt has no comments"
        );
    }

    #[test]
    fn a_misspelt_override_file_and_a_missing_folder_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("write_pome.yaml"),
            "- role: user\n  content: x\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("other.yaml"),
            "- role: user\n  content: x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        let lib = PromptLibrary::new(DEFAULTS).with_override_dir(Some(dir.path().to_path_buf()));
        let w = lib.override_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("write_pome.yaml: matches no prompt")
                && w[0].contains("did you mean `write_poem.yaml`?"),
            "{w:?}"
        );

        let gone = dir.path().join("no_such_folder");
        let w = PromptLibrary::new(DEFAULTS)
            .with_override_dir(Some(gone.clone()))
            .override_warnings();
        assert_eq!(
            w,
            [format!(
                "`prompts` folder {} does not exist: nothing is overridden; the pipeline's own prompts are used",
                gone.display()
            )]
        );
        assert!(PromptLibrary::new(DEFAULTS).override_warnings().is_empty());
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        let lib = PromptLibrary::new(DEFAULTS);
        for name in ["../secret", "a/b", "a\\b", "/etc/passwd", "", "..", "C:x"] {
            let (_, _, message) = prompt_error(lib.load(name, false));
            assert!(message.contains("plain file name"), "{name}: {message}");
        }
        assert!(
            lib.load("write_poem.yaml", false).is_ok(),
            "a matching extension is tolerated"
        );
    }
}
