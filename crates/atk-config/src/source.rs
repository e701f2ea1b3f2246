//! The line of every key, read from the source text, and the placeholder marker made
//! parseable.
//!
//! serde_yaml's `Value` keeps no positions; yaml-rust2's event parser gives one for each key.
//! `key: !!PLACEHOLDER!!` is YAML tag syntax that serde_yaml reads as an empty string with the
//! tag dropped (indistinguishable from `key: ""`), that it refuses before a `]` or `}`, and
//! that yaml-rust2 refuses outright (a `!` is not allowed inside a tag name). So before either
//! parser sees the text, every marker is swapped for a same-length sentinel that is a plain
//! scalar: both placeholder forms then read as strings holding it, and every line and column
//! stays where it was.

use std::collections::HashMap;

use yaml_rust2::Event;
use yaml_rust2::parser::Parser;

/// The marker that flags a value the user must fill in.
pub(crate) const PLACEHOLDER: &str = "!!PLACEHOLDER!!";
/// Same length as [`PLACEHOLDER`], valid in a plain scalar, unlikely in a real value.
pub(crate) const SENTINEL: &str = "_atk_unfilled__";

/// `text` with every placeholder marker swapped for the sentinel (same length).
pub(crate) fn hide_markers(text: &str) -> String {
    text.replace(PLACEHOLDER, SENTINEL)
}

/// One step of a path into the YAML tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence position.
    Index(usize),
}

/// Key lines of one config text.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    /// 1-based line of each mapping key, by its path from the root.
    lines: HashMap<Vec<Seg>, usize>,
    /// The first key written twice in one mapping: its path, first line, second line and column.
    duplicate: Option<Duplicate>,
}

/// A key written twice in one mapping.
#[derive(Debug, Clone)]
pub(crate) struct Duplicate {
    /// Path of the key.
    pub path: Vec<Seg>,
    /// 1-based line of its first occurrence.
    pub first_line: usize,
    /// 1-based line and column of its second occurrence.
    pub line: usize,
    pub col: usize,
}

enum Frame {
    Map { key: Option<Seg> },
    Seq { next: usize },
}

impl SourceIndex {
    /// Reads `text` (markers already hidden); `None` when the span parser cannot (the caller
    /// then has no line numbers).
    pub(crate) fn build(text: &str) -> Option<Self> {
        debug_assert_eq!(PLACEHOLDER.len(), SENTINEL.len());
        let mut parser = Parser::new_from_str(text);
        let mut index = Self::default();
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            let (event, mark) = parser.next_token().ok()?;
            match event {
                Event::StreamEnd => break,
                // Only the first document is a config.
                Event::DocumentEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { key: key @ None }) = stack.last_mut() {
                        let seg = Seg::Key(value);
                        *key = Some(seg);
                        let path = current_path(&stack);
                        if let Some(first_line) = index.lines.get(&path).copied() {
                            index.duplicate.get_or_insert(Duplicate {
                                path,
                                first_line,
                                line: mark.line(),
                                col: mark.col() + 1,
                            });
                        } else {
                            index.lines.insert(path, mark.line());
                        }
                        continue;
                    }
                    advance(&mut stack);
                }
                Event::Alias(_) => advance(&mut stack),
                Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { next: 0 }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    advance(&mut stack);
                }
                Event::Nothing | Event::StreamStart | Event::DocumentStart => {}
            }
        }
        Some(index)
    }

    /// The 1-based line of the key at `path` (mapping keys only), when known.
    pub(crate) fn line(&self, path: &[Seg]) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The first key written twice in one mapping, if any.
    pub(crate) fn duplicate(&self) -> Option<&Duplicate> {
        self.duplicate.as_ref()
    }
}

/// The path of the value about to be read: every open mapping's current key and sequence's
/// current position. A mapping still waiting for its key adds nothing.
fn current_path(stack: &[Frame]) -> Vec<Seg> {
    stack
        .iter()
        .filter_map(|f| match f {
            Frame::Map { key } => key.clone(),
            Frame::Seq { next } => Some(Seg::Index(*next)),
        })
        .collect()
}

/// A value (scalar or whole collection) was read: its mapping waits for the next key, its
/// sequence moves to the next position.
fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => *key = None,
        Some(Frame::Seq { next }) => *next += 1,
        None => {}
    }
}

/// Builds a path from string keys (test and lookup helper).
pub(crate) fn path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
api:
  small_model: gpt-4o-mini
  small_api_key: !!PLACEHOLDER!!
path:
  input_dir: ./inputs/!!PLACEHOLDER!!
  extras: [a.txt, !!PLACEHOLDER!!]
example_heading: {inner: 1, other: !!PLACEHOLDER!!}
top: 3
";

    #[test]
    fn key_lines_are_found_for_nested_keys() {
        let index = SourceIndex::build(&hide_markers(TEXT)).unwrap();
        assert_eq!(index.line(&path(&["api"])), Some(1));
        assert_eq!(index.line(&path(&["api", "small_api_key"])), Some(3));
        assert_eq!(index.line(&path(&["path", "input_dir"])), Some(5));
        assert_eq!(index.line(&path(&["example_heading", "other"])), Some(7));
        assert_eq!(index.line(&path(&["top"])), Some(8));
        assert!(index.duplicate().is_none());
    }

    #[test]
    fn hidden_markers_keep_positions_and_parse_as_strings() {
        let hidden = hide_markers(TEXT);
        assert_eq!(hidden.len(), TEXT.len());
        let value: serde_yaml::Value = serde_yaml::from_str(&hidden).unwrap();
        assert_eq!(value["api"]["small_api_key"].as_str(), Some(SENTINEL));
        assert_eq!(value["path"]["extras"][1].as_str(), Some(SENTINEL));
        assert_eq!(
            value["path"]["input_dir"].as_str(),
            Some("./inputs/_atk_unfilled__")
        );
    }

    #[test]
    fn a_duplicate_key_is_found_with_both_lines() {
        let index = SourceIndex::build("a:\n  b: 1\n  c: 2\n  b: 3\n").unwrap();
        let dup = index.duplicate().unwrap();
        assert_eq!(
            (dup.path.clone(), dup.first_line, dup.line, dup.col),
            (path(&["a", "b"]), 2, 4, 3)
        );
    }
}
