//! Every conversation row checked before it is written: ShareGPT (`{"conversations": [{"from",
//! "value"}]}`) and OpenAI messages (`{"messages": [{"role", "content"}]}`) rows must have the
//! turn order trainers accept: an optional system turn, then user and assistant turns
//! alternating, starting with the user and ending with the assistant. A trailing user turn is
//! cut off (the row is then valid); any other fault drops the row with a reason the summary
//! counts. Rows of other shapes are written as they are.

use serde_json::Value;

/// What the check made of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Checked {
    /// Write it as it is.
    Valid,
    /// Write this instead (a trailing user turn cut off).
    Fixed(Value),
    /// Do not write it, for this reason.
    Invalid(String),
}

/// The names a format gives its fields and speakers.
struct Format {
    name: &'static str,
    list: &'static str,
    speaker: &'static str,
    text: &'static str,
    system: &'static str,
    user: &'static str,
    assistant: &'static str,
}

const SHAREGPT: Format = Format {
    name: "ShareGPT",
    list: "conversations",
    speaker: "from",
    text: "value",
    system: "system",
    user: "human",
    assistant: "gpt",
};

const OPENAI: Format = Format {
    name: "OpenAI messages",
    list: "messages",
    speaker: "role",
    text: "content",
    system: "system",
    user: "user",
    assistant: "assistant",
};

/// Checks one row (see the module doc).
pub(crate) fn check_row(row: &Value) -> Checked {
    let Some(obj) = row.as_object() else {
        return Checked::Valid;
    };
    for format in [&SHAREGPT, &OPENAI] {
        if let Some(turns) = obj.get(format.list) {
            return check_turns(row, turns, format);
        }
    }
    Checked::Valid
}

fn check_turns(row: &Value, turns: &Value, f: &Format) -> Checked {
    let Some(turns) = turns.as_array() else {
        return Checked::Invalid(format!("{} row: `{}` is not a list", f.name, f.list));
    };
    let mut speakers = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let speaker = turn.get(f.speaker).and_then(Value::as_str);
        let Some(speaker) = speaker else {
            return Checked::Invalid(format!(
                "{} row: turn {} has no `{}`",
                f.name,
                i + 1,
                f.speaker
            ));
        };
        if !turn.get(f.text).is_some_and(Value::is_string) {
            return Checked::Invalid(format!(
                "{} row: turn {} has no text `{}`",
                f.name,
                i + 1,
                f.text
            ));
        }
        speakers.push(speaker);
    }
    let body = match speakers.first() {
        Some(s) if *s == f.system => &speakers[1..],
        _ => &speakers[..],
    };
    let offset = speakers.len() - body.len();
    for (i, speaker) in body.iter().enumerate() {
        let expected = if i % 2 == 0 { f.user } else { f.assistant };
        if *speaker != expected {
            let reason = if i == 0 {
                format!(
                    "{} row: the first turn is `{speaker}`, not `{}`",
                    f.name, f.user
                )
            } else {
                format!(
                    "{} row: turn {} is `{speaker}` where `{expected}` was due (turns must alternate)",
                    f.name,
                    i + offset + 1
                )
            };
            return Checked::Invalid(reason);
        }
    }
    match body.len() {
        0 => Checked::Invalid(format!(
            "{} row: no `{}` and `{}` turns",
            f.name, f.user, f.assistant
        )),
        1 => Checked::Invalid(format!(
            "{} row: a `{}` turn with no `{}` reply",
            f.name, f.user, f.assistant
        )),
        n if n % 2 == 1 => {
            // Ends with the user: cut the last turn, the rest is a whole conversation.
            let mut fixed = row.clone();
            if let Some(list) = fixed.get_mut(f.list).and_then(Value::as_array_mut) {
                list.pop();
            }
            Checked::Fixed(fixed)
        }
        _ => Checked::Valid,
    }
}

/// True when a ShareGPT or OpenAI row would pass [`check_row`] unchanged (for tests over whole
/// datasets).
#[cfg(test)]
pub(crate) fn is_valid(row: &Value) -> bool {
    check_row(row) == Checked::Valid
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sharegpt(turns: &[(&str, &str)]) -> Value {
        json!({"conversations": turns.iter().map(|(f, v)| json!({"from": f, "value": v})).collect::<Vec<_>>()})
    }

    #[test]
    fn alternating_turns_pass_and_others_are_dropped_with_a_reason() {
        assert!(is_valid(&sharegpt(&[("human", "q"), ("gpt", "a")])));
        assert!(is_valid(&sharegpt(&[
            ("system", "s"),
            ("human", "q"),
            ("gpt", "a"),
            ("human", "q2"),
            ("gpt", "a2")
        ])));
        assert!(is_valid(&json!({"text": "plain rows are not checked"})));
        let reason = |row: Value| match check_row(&row) {
            Checked::Invalid(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(sharegpt(&[("gpt", "an answer with no question")])),
            "ShareGPT row: the first turn is `gpt`, not `human`"
        );
        assert_eq!(
            reason(sharegpt(&[("human", "q"), ("human", "q"), ("gpt", "a")])),
            "ShareGPT row: turn 2 is `human` where `gpt` was due (turns must alternate)"
        );
        assert_eq!(
            reason(sharegpt(&[("system", "s")])),
            "ShareGPT row: no `human` and `gpt` turns"
        );
        assert_eq!(
            reason(json!({"messages": [{"role": "user", "content": "q"}]})),
            "OpenAI messages row: a `user` turn with no `assistant` reply"
        );
        assert_eq!(
            reason(json!({"messages": [{"role": "user", "content": 3}]})),
            "OpenAI messages row: turn 1 has no text `content`"
        );
    }

    #[test]
    fn a_trailing_user_turn_is_cut_off() {
        let row = sharegpt(&[("human", "q"), ("gpt", "a"), ("human", "more?")]);
        assert_eq!(
            check_row(&row),
            Checked::Fixed(sharegpt(&[("human", "q"), ("gpt", "a")]))
        );
    }
}
