//! `{name}` templating for prompts.
//!
//! Hand-written on purpose: minijinja and the format-string crates give braces other meanings
//! (`{{ x }}` is a variable there, a lone `{` is an error), while atk's prompts must keep JSON
//! few-shot examples and unknown `{words}` exactly as written. The rules fit one pass:
//!
//! - `{name}` (name = ASCII letter or `_`, then letters, digits, `_`) is replaced when the
//!   lookup knows `name`; otherwise it stays as written.
//! - `{name.field}` reaches inside a result: each `.segment` (letters, digits, `_`) is an
//!   object key or an array index (`{key.list.0}`); a path that leads nowhere stays as written.
//! - `{{` gives `{` and `}}` gives `}`.
//! - Every other brace stays as written.
//! - A substituted value is copied verbatim and never scanned again.

/// Renders `template`, replacing each known `{name}` by `lookup(name)`.
///
/// ```
/// use atk_step::render_template;
/// let out = render_template("Hi {who}! {\"a\": 1} {{who}} {nope}", &|n| (n == "who").then(|| "{who}".to_string()));
/// assert_eq!(out, "Hi {who}! {\"a\": 1} {who} {nope}");
/// ```
pub fn render_template(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len() + template.len() / 2);
    let mut copied = 0; // template[copied..i] is still to be copied
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push_str(&template[copied..i]);
                out.push('{');
                i += 2;
                copied = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push_str(&template[copied..i]);
                out.push('}');
                i += 2;
                copied = i;
            }
            b'{' => match name_end(bytes, i + 1) {
                Some(end) => {
                    if let Some(value) = lookup(&template[i + 1..end]) {
                        out.push_str(&template[copied..i]);
                        out.push_str(&value);
                        copied = end + 1;
                    }
                    i = end + 1;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    out.push_str(&template[copied..]);
    out
}

/// The `{name}`s of `template` that [`render_template`] would look up, in order of first
/// appearance, each once (`{{name}}` is a literal and not listed).
///
/// ```
/// assert_eq!(atk_step::template_names("{a} {{b}} {\"c\": 1} {a} {d}"), ["a", "d"]);
/// ```
pub fn template_names(template: &str) -> Vec<String> {
    let bytes = template.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'}' if bytes.get(i + 1) == Some(&bytes[i]) => i += 2,
            b'{' => match name_end(bytes, i + 1) {
                Some(end) => {
                    let name = &template[i + 1..end];
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                    i = end + 1;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    names
}

/// If `bytes[start..]` is `name}` or `name.segment...}`, the index of that `}`.
fn name_end(bytes: &[u8], start: usize) -> Option<usize> {
    let first = *bytes.get(start)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let mut j = start + 1;
    while let Some(&b) = bytes.get(j) {
        match b {
            // A path ends on a segment: `{a.}` and `{a..b}` are not names.
            b'}' if bytes[j - 1] != b'.' => return Some(j),
            b'.' if bytes[j - 1] != b'.' => j += 1,
            b if b.is_ascii_alphanumeric() || b == b'_' => j += 1,
            _ => return None,
        }
    }
    None
}

/// Renders a JSON value for a template: strings as they are, everything else as JSON.
pub(crate) fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, vars: &[(&str, &str)], expected: &str) {
        let lookup = |n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            render_template(template, &lookup),
            expected,
            "template: {template:?}"
        );
    }

    #[test]
    fn known_names_are_replaced_and_unknown_ones_kept() {
        check(
            "Write about {text} in {style}.",
            &[("text", "cats")],
            "Write about cats in {style}.",
        );
    }

    #[test]
    fn json_in_few_shot_examples_survives() {
        check(
            r#"Answer like {"a": 1, "b": [1, 2]} for {text}"#,
            &[("text", "x")],
            r#"Answer like {"a": 1, "b": [1, 2]} for x"#,
        );
        check("{ text }", &[("text", "x")], "{ text }");
        check("{}", &[("text", "x")], "{}");
        check("{9lives}", &[("9lives", "x")], "{9lives}");
    }

    #[test]
    fn doubled_braces_are_literal() {
        check("{{text}} and {text}", &[("text", "v")], "{text} and v");
        check("{{{text}}}", &[("text", "v")], "{v}");
        check("}} {{", &[], "} {");
    }

    #[test]
    fn substituted_values_are_never_expanded_again() {
        check(
            "A: {text}",
            &[("text", "evil {text} {{x}} {other}"), ("other", "NO")],
            "A: evil {text} {{x}} {other}",
        );
    }

    #[test]
    fn unbalanced_and_unicode_text_is_kept() {
        check(
            "ünïcödé {text} 🎉 { {",
            &[("text", "日本語 {")],
            "ünïcödé 日本語 { 🎉 { {",
        );
        check("end {", &[], "end {");
        check("end {text", &[("text", "v")], "end {text");
        check("a}b", &[], "a}b");
    }

    #[test]
    fn non_string_values_render_as_json() {
        assert_eq!(value_text(&serde_json::json!("plain")), "plain");
        assert_eq!(value_text(&serde_json::json!(42)), "42");
        assert_eq!(value_text(&serde_json::json!(["a", 1])), r#"["a",1]"#);
    }

    #[test]
    fn names_are_the_ones_rendering_would_look_up() {
        assert_eq!(
            template_names("{text} {{literal}} {{{inner}}} { spaced } {9x} {text} {_ok1}"),
            ["text", "inner", "_ok1"]
        );
        assert!(template_names("{\"a\": 1} }} {{").is_empty());
    }

    #[test]
    fn a_dotted_name_reaches_inside_a_result() {
        let result = serde_json::json!({"keep": true, "reason": "facts", "ids": ["c1", "c2"]});
        let lookup = |name: &str| {
            let fields = atk_state::Fields::from_iter([("judge".to_string(), result.clone())]);
            crate::item::lookup_path(&fields, name).map(value_text)
        };
        insta::assert_snapshot!(
            render_template(
                "why: {judge.reason}; keep: {judge.keep}; first: {judge.ids.0}; all: {judge}; \
                 missing: {judge.nope} {judge.ids.9} {judge.reason.deeper}; not names: {judge.} {judge..keep} {.keep}",
                &lookup
            ),
            @r#"why: facts; keep: true; first: c1; all: {"ids":["c1","c2"],"keep":true,"reason":"facts"}; missing: {judge.nope} {judge.ids.9} {judge.reason.deeper}; not names: {judge.} {judge..keep} {.keep}"#
        );
        assert_eq!(
            template_names("{judge.reason} {{judge.keep}} {judge.} {text}"),
            ["judge.reason", "text"]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_value_is_substituted_verbatim(value in ".*", before in "[^{}]*", after in "[^{}]*") {
            let template = format!("{before}{{text}}{after}");
            let out = render_template(&template, &|n| (n == "text").then(|| value.clone()));
            proptest::prop_assert_eq!(out, format!("{before}{value}{after}"));
        }

        #[test]
        fn text_without_doubled_braces_or_known_names_is_unchanged(template in "[a-z{}\" :,0-9]*") {
            proptest::prop_assume!(!template.contains("{{") && !template.contains("}}"));
            proptest::prop_assert_eq!(render_template(&template, &|_| None), template);
        }
    }
}
