//! `${VAR}` expansion in string values.
//!
//! Hand-written (a dozen lines) rather than `shellexpand`: that crate also expands `$VAR` and
//! `~`, which would change prompts and paths that contain a plain `$` or `~`.

use serde_yaml::Value;

/// Expands every `${NAME}` in the strings of `value` (recursively). `$${` is a literal `${`.
/// On a variable that `env` does not know, returns its name.
pub(crate) fn expand_value(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains("${") => {
            *s = expand_str(s, env)?;
            Ok(())
        }
        Value::Sequence(items) => items.iter_mut().try_for_each(|v| expand_value(v, env)),
        Value::Mapping(map) => map.values_mut().try_for_each(|v| expand_value(v, env)),
        Value::Tagged(t) => expand_value(&mut t.value, env),
        _ => Ok(()),
    }
}

/// Expands `${NAME}` in one string; `NAME` is letters, digits and `_`. A `${` not followed by
/// such a name and `}` is left as written.
pub(crate) fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let name = tail
            .strip_prefix("${")
            .and_then(|t| t.split_once('}'))
            .map(|(name, _)| name)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match name {
            Some(name) => {
                out.push_str(&env(name).ok_or_else(|| name.to_string())?);
                rest = &tail[name.len() + 3..];
            }
            None => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_expand_and_other_dollars_stay() {
        let cases = [
            ("${HOME_DIR}/data", "/home/me/data"),
            ("a${EMPTY}b", "ab"),
            ("costs $5 and ${HOME_DIR}", "costs $5 and /home/me"),
            ("$${HOME_DIR} is literal", "${HOME_DIR} is literal"),
            ("${not a name} {x}", "${not a name} {x}"),
            ("trailing $", "trailing $"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                expand_str(input, &env).unwrap(),
                expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn a_missing_variable_is_named() {
        assert_eq!(
            expand_str("x ${NOPE_NOT_SET} y", &env),
            Err("NOPE_NOT_SET".to_string())
        );
    }
}
