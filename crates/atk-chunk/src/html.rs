//! Visible text of an HTML or XHTML document, block elements as paragraphs.

use ego_tree::iter::Edge;
use scraper::{Html, Node};

/// Elements whose content is never visible text.
const HIDDEN: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "title",
];

/// Elements that start and end a paragraph.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
];

/// Where the next text goes relative to what is already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Space,
    Line,
    Paragraph,
}

/// Visible text of `html`: no tags, scripts, styles or head; whitespace collapsed as a
/// browser does (kept inside `<pre>`); `<br>` is a line break; block elements are separated
/// by a blank line.
pub(crate) fn html_to_text(html: &str) -> String {
    let doc = Html::parse_document(html);
    let mut out = String::new();
    let mut gap = Gap::None;
    let mut hidden = 0usize; // depth inside hidden elements
    let mut pre = 0usize; // depth inside <pre>
    let raise = |gap: &mut Gap, to: Gap| *gap = (*gap).max(to);
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    let name = el.name();
                    if HIDDEN.contains(&name) {
                        hidden += 1;
                    } else if name == "br" {
                        raise(&mut gap, Gap::Line);
                    } else if BLOCKS.contains(&name) {
                        raise(&mut gap, Gap::Paragraph);
                        if name == "pre" {
                            pre += 1;
                        }
                    }
                }
                Node::Text(t) if hidden == 0 => {
                    let t: &str = t;
                    if pre > 0 {
                        write(&mut out, &mut gap, t);
                        continue;
                    }
                    for (i, word) in t.split(|c: char| c.is_ascii_whitespace()).enumerate() {
                        if i > 0 {
                            raise(&mut gap, Gap::Space);
                        }
                        if !word.is_empty() {
                            write(&mut out, &mut gap, word);
                        }
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(el) = node.value() {
                    let name = el.name();
                    if HIDDEN.contains(&name) {
                        hidden = hidden.saturating_sub(1);
                    } else if BLOCKS.contains(&name) {
                        raise(&mut gap, Gap::Paragraph);
                        if name == "pre" {
                            pre = pre.saturating_sub(1);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Appends `s` after the pending gap (gaps are never written at the start of the text).
fn write(out: &mut String, gap: &mut Gap, s: &str) {
    if !out.is_empty() {
        match *gap {
            Gap::None => {}
            Gap::Space => out.push(' '),
            Gap::Line => out.push('\n'),
            Gap::Paragraph => out.push_str("\n\n"),
        }
    }
    *gap = Gap::None;
    out.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_only_with_paragraphs() {
        let html = r#"<!doctype html><html><head><title>T</title><style>p{color:red}</style></head>
            <body><h1>Big   title</h1><script>var x = "hidden";</script>
            <p>First <b>bold</b>
               paragraph &amp; more.</p><div>Line one<br>Line two</div>
            <ul><li>item a</li><li>item b</li></ul><pre>  keep
   this</pre></body></html>"#;
        assert_eq!(
            html_to_text(html),
            "Big title\n\nFirst bold paragraph & more.\n\nLine one\nLine two\n\nitem a\n\nitem b\n\n  keep\n   this"
        );
    }
}
