//! The line of every key, and where `!!PLACEHOLDER!!` tags sit, read from the source text.
//!
//! serde_yaml's `Value` keeps no positions, and it reads `key: !!PLACEHOLDER!!` as an empty
//! string with the tag dropped, so the two cannot be told apart from `key: ""`. yaml-rust2's
//! event parser gives both a position for each key and the scalars as written. It refuses
//! `!!PLACEHOLDER!!` as a tag (a `!` is not allowed inside a tag name), so the marker is first
//! swapped for a same-length sentinel, which keeps every line and column where it was.

use std::collections::HashMap;

use yaml_rust2::Event;
use yaml_rust2::parser::Parser;

/// The marker that flags a value the user must fill in.
pub(crate) const PLACEHOLDER: &str = "!!PLACEHOLDER!!";
/// Same length as [`PLACEHOLDER`], valid in a plain scalar, unlikely in a real value.
const SENTINEL: &str = "_atk_unfilled__";

/// One step of a path into the YAML tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence position.
    Index(usize),
}

/// Key lines and placeholder positions of one config text.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    /// 1-based line of each mapping key, by its path from the root.
    lines: HashMap<Vec<Seg>, usize>,
    /// Paths of the scalars that held the marker, in file order.
    placeholders: Vec<Vec<Seg>>,
}

enum Frame {
    Map { key: Option<Seg> },
    Seq { next: usize },
}

impl SourceIndex {
    /// Reads `text`; `None` when the span parser cannot (the caller then has no line numbers).
    pub(crate) fn build(text: &str) -> Option<Self> {
        debug_assert_eq!(PLACEHOLDER.len(), SENTINEL.len());
        let text = text.replace(PLACEHOLDER, SENTINEL);
        let mut parser = Parser::new_from_str(&text);
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
                        index.lines.insert(path, mark.line());
                        continue;
                    }
                    if value.contains(SENTINEL) {
                        index.placeholders.push(current_path(&stack));
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

    /// Paths of every scalar that held `!!PLACEHOLDER!!`, in file order.
    pub(crate) fn placeholders(&self) -> &[Vec<Seg>] {
        &self.placeholders
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
        let index = SourceIndex::build(TEXT).unwrap();
        assert_eq!(index.line(&path(&["api"])), Some(1));
        assert_eq!(index.line(&path(&["api", "small_api_key"])), Some(3));
        assert_eq!(index.line(&path(&["path", "input_dir"])), Some(5));
        assert_eq!(index.line(&path(&["example_heading", "other"])), Some(7));
        assert_eq!(index.line(&path(&["top"])), Some(8));
    }

    #[test]
    fn both_placeholder_forms_are_located() {
        let index = SourceIndex::build(TEXT).unwrap();
        let mut extras = path(&["path", "extras"]);
        extras.push(Seg::Index(1));
        assert_eq!(
            index.placeholders(),
            &[
                path(&["api", "small_api_key"]),
                path(&["path", "input_dir"]),
                extras,
                path(&["example_heading", "other"]),
            ]
        );
    }
}
