//! Small reply readers most pipelines need, for output processors: the text of a tag, the
//! question/answer pairs of a reply, a yes/no verdict on its last line.

/// The trimmed text inside the last `<tag>…</tag>` of `reply` (models sometimes draft first).
/// A reply that starts inside the tag (completion prompts that end with `<tag>`) counts too.
///
/// ```
/// assert_eq!(atk_step::tag_text("draft <a>x</a> final <a> y </a>", "a").unwrap(), "y");
/// assert!(atk_step::tag_text("no tags", "a").is_err());
/// ```
pub fn tag_text(reply: &str, tag: &str) -> Result<String, String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = match reply.rfind(&open) {
        Some(i) => i + open.len(),
        None if reply.contains(&close) => 0,
        None => return Err(format!("the reply has no <{tag}> tag")),
    };
    let end = reply[start..]
        .find(&close)
        .ok_or_else(|| format!("the last <{tag}> is never closed"))?;
    Ok(reply[start..start + end].trim().to_string())
}

/// Every question/answer pair of a reply, in order: lines starting `Q:`/`Question:` (any case,
/// optionally numbered like `1.` or `**Q1:**`) open a question, `A:`/`Answer:` an answer; the
/// lines after a marker continue it. Pairs missing either half are left out.
///
/// ```
/// let pairs = atk_step::qa_pairs("1. Q: Why?\nA: Because.\nIt is so.\nQuestion: Who?\nAnswer: Me.");
/// assert_eq!(pairs, [("Why?".to_string(), "Because.\nIt is so.".to_string()), ("Who?".into(), "Me.".into())]);
/// ```
pub fn qa_pairs(reply: &str) -> Vec<(String, String)> {
    enum Part {
        None,
        Q,
        A,
    }
    let mut pairs = Vec::new();
    let (mut q, mut a) = (String::new(), String::new());
    let mut part = Part::None;
    let mut flush = |q: &mut String, a: &mut String| {
        if !q.trim().is_empty() && !a.trim().is_empty() {
            pairs.push((q.trim().to_string(), a.trim().to_string()));
        }
        q.clear();
        a.clear();
    };
    for line in reply.lines() {
        match marker(line) {
            Some((true, rest)) => {
                flush(&mut q, &mut a);
                q.push_str(rest);
                part = Part::Q;
            }
            Some((false, rest)) => {
                a.push_str(rest);
                part = Part::A;
            }
            None => {
                let target = match part {
                    Part::Q => &mut q,
                    Part::A => &mut a,
                    Part::None => continue,
                };
                target.push('\n');
                target.push_str(line);
            }
        }
    }
    flush(&mut q, &mut a);
    pairs
}

/// The fields of one child item per question/answer pair of a reply (`question`, `answer`),
/// at most `most`, for a [`FanOutStep`](crate::FanOutStep) split; no pair is an error (ask again).
///
/// ```
/// let children = atk_step::qa_children("Q: Why?\nA: Because.", 3).unwrap();
/// assert_eq!(children[0]["answer"], "Because.");
/// ```
pub fn qa_children(reply: &str, most: usize) -> Result<Vec<atk_state::Fields>, String> {
    let pairs = qa_pairs(reply);
    if pairs.is_empty() {
        return Err("no question/answer pair (Q: ... A: ...) in the reply".into());
    }
    let child = |(q, a): (String, String)| {
        atk_state::Fields::from_iter([("question".into(), q.into()), ("answer".into(), a.into())])
    };
    Ok(pairs.into_iter().take(most).map(child).collect())
}

/// `Some((is_question, rest))` when `line` starts with a question or answer marker.
fn marker(line: &str) -> Option<(bool, &str)> {
    let t = line.trim_start().trim_start_matches(['*', '#', '-', ' ']);
    let t = t
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches(['.', ')', ' ']);
    let lower = t.to_ascii_lowercase();
    for (word, is_q) in [
        ("question", true),
        ("answer", false),
        ("q", true),
        ("a", false),
    ] {
        if let Some(after) = lower.strip_prefix(word) {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if after[digits..].starts_with(':') {
                let rest = &t[word.len() + digits + 1..];
                return Some((is_q, rest.trim_start_matches(['*', ' '])));
            }
        }
    }
    None
}

/// The text after `label` on the first line that starts with it (trimmed; leading spaces and
/// list markers such as `-` or `*` before the label are allowed), e.g. the `Passage: 2` line of
/// a reply; `None` when no line has it.
///
/// ```
/// assert_eq!(atk_step::labelled_line("Thinking.\nPassage: 2\nAnswer: Yes.", "Passage:"), Some("2"));
/// assert_eq!(atk_step::labelled_line("no label", "Answer:"), None);
/// ```
pub fn labelled_line<'a>(reply: &'a str, label: &str) -> Option<&'a str> {
    reply.lines().find_map(|l| {
        l.trim_start_matches([' ', '\t', '-', '*'])
            .strip_prefix(label)
            .map(str::trim)
    })
}

/// One child (field `field`) per line starting with `label` (see [`labelled_line`]), for a
/// fan-out's split: exactly `n` of them, the first `n` when the reply has more; an error
/// (retried) when it has fewer or one is empty.
///
/// ```
/// let kids = atk_step::line_children("Q: Why?\nQ: Who?\nQ: How?", "Q:", "question", 2).unwrap();
/// assert_eq!((kids.len(), &kids[1]["question"]), (2, &serde_json::json!("Who?")));
/// assert!(atk_step::line_children("Q: Why?", "Q:", "question", 2).is_err());
/// ```
pub fn line_children(
    reply: &str,
    label: &str,
    field: &str,
    n: usize,
) -> Result<Vec<atk_state::Fields>, String> {
    let found: Vec<&str> = reply
        .lines()
        .filter_map(|l| labelled_line(l, label))
        .filter(|t| !t.is_empty())
        .take(n)
        .collect();
    children_of(found, n, field, || {
        format!("lines starting with \"{label}\"")
    })
}

/// The strings of list `list` in a schema step's output, one child item each with the string
/// (trimmed) under `field`: the first `n` non-empty ones; fewer than `n` is an error (the reply
/// is retried), like [`line_children`].
///
/// ```
/// let reply = serde_json::json!({"questions": ["Why?", " ", "Who?", "How?"]});
/// let kids = atk_step::list_children(&reply, "questions", "question", 2).unwrap();
/// assert_eq!((kids.len(), &kids[1]["question"]), (2, &serde_json::json!("Who?")));
/// assert!(atk_step::list_children(&reply, "questions", "question", 4).is_err());
/// ```
pub fn list_children(
    output: &serde_json::Value,
    list: &str,
    field: &str,
    n: usize,
) -> Result<Vec<atk_state::Fields>, String> {
    let found: Vec<&str> = output
        .get(list)
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| format!("wanted a list \"{list}\" in the reply"))?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .take(n)
        .collect();
    children_of(found, n, field, || format!("entries in \"{list}\""))
}

/// One child item per text (under `field`), or an error naming `what` when fewer than `n`
/// were found: the shared end of [`line_children`] and [`list_children`].
fn children_of(
    found: Vec<&str>,
    n: usize,
    field: &str,
    what: impl FnOnce() -> String,
) -> Result<Vec<atk_state::Fields>, String> {
    if found.len() < n {
        return Err(format!("wanted {n} {}, found {}", what(), found.len()));
    }
    Ok(found
        .into_iter()
        .map(|t| atk_state::Fields::from_iter([(field.to_string(), t.into())]))
        .collect())
}

/// The turns of a reply written as `<first>…</first>` followed by `<second>…</second>`, in
/// order (a conversation as `<user>`/`<assistant>` pairs, say). A first tag without its
/// second, or no pair at all, is an error (ask again).
///
/// ```
/// let turns = atk_step::tagged_turns("<user>Hi?</user><assistant>Hello.</assistant>", "user", "assistant");
/// assert_eq!(turns.unwrap(), [("Hi?".to_string(), "Hello.".to_string())]);
/// ```
pub fn tagged_turns(
    reply: &str,
    first: &str,
    second: &str,
) -> Result<Vec<(String, String)>, String> {
    let (open, close) = (format!("<{first}>"), format!("</{second}>"));
    let mut turns = Vec::new();
    let mut rest = reply;
    while let Some(start) = rest.find(&open) {
        let block = &rest[start..];
        let end = block
            .find(&close)
            .ok_or_else(|| format!("a <{first}> has no </{second}> after it"))?
            + close.len();
        turns.push((
            tag_text(&block[..end], first)?,
            tag_text(&block[..end], second)?,
        ));
        rest = &block[end..];
    }
    if turns.is_empty() {
        return Err(format!(
            "no <{first}>…</{first}><{second}>…</{second}> pair in the reply"
        ));
    }
    Ok(turns)
}

/// A yes/no verdict from the last non-empty line of a reply: `yes`, `pass`, `keep`, `true`,
/// `supported`, `suitable`, `correct` say yes; `no`, `fail`, `drop`, `false`, `unsupported`,
/// `unsuitable`, `incorrect`, `reject` say no; both or neither is an error (ask again).
///
/// ```
/// assert_eq!(atk_step::verdict("The text says so.\nVerdict: YES"), Ok(true));
/// assert_eq!(atk_step::verdict("Not in the text.\n**No**"), Ok(false));
/// assert!(atk_step::verdict("maybe").is_err());
/// ```
pub fn verdict(reply: &str) -> Result<bool, String> {
    const YES: &[&str] = &[
        "yes",
        "pass",
        "keep",
        "true",
        "supported",
        "suitable",
        "correct",
    ];
    const NO: &[&str] = &[
        "no",
        "fail",
        "drop",
        "false",
        "unsupported",
        "unsuitable",
        "incorrect",
        "reject",
        "not",
    ];
    last_line_verdict(reply, YES, NO).ok_or_else(|| {
        let last = reply
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        format!(
            "no clear yes/no verdict on the last line: {:?}",
            last.trim().to_lowercase()
        )
    })
}

/// `Some(true)` when the last non-empty line of `text` holds a word of `yes` and none of `no`,
/// `Some(false)` for the reverse, `None` for both or neither (case-insensitive, whole words).
pub(crate) fn last_line_verdict(text: &str, yes: &[&str], no: &[&str]) -> Option<bool> {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_lowercase();
    let words: Vec<&str> = last
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |set: &[&str]| words.iter().any(|w| set.contains(w));
    match (has(yes), has(no)) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_text_takes_the_last_closed_tag() {
        assert_eq!(
            tag_text("<poem>a</poem> then <poem>\n b \n</poem>", "poem").unwrap(),
            "b"
        );
        assert_eq!(tag_text("inside</poem>", "poem").unwrap(), "inside");
        assert!(
            tag_text("<poem>never closed", "poem")
                .unwrap_err()
                .contains("never closed")
        );
    }

    #[test]
    fn qa_pairs_reads_common_shapes() {
        let reply = "Here are the pairs.\n**Q1:** What is brine?\n**A1:** Salt water.\n\n2) question: How old?\n   answer: Ten years,\n   or so.\nQ: orphan question";
        assert_eq!(
            qa_pairs(reply),
            [
                ("What is brine?".to_string(), "Salt water.".to_string()),
                ("How old?".into(), "Ten years,\n   or so.".into())
            ]
        );
        assert!(qa_pairs("no pairs at all").is_empty());
        assert!(qa_pairs("A: an answer first\nQ: then a question").is_empty());
    }

    #[test]
    fn tagged_turns_come_in_order_and_incomplete_ones_are_refused() {
        let reply = "Sure.\n<user>Why salt?</user>\n<assistant>It keeps.</assistant>\n<user>How long?</user><assistant>A year.</assistant>";
        let turns = tagged_turns(reply, "user", "assistant").unwrap();
        assert_eq!(
            turns,
            [
                ("Why salt?".into(), "It keeps.".into()),
                ("How long?".into(), "A year.".into())
            ]
        );
        assert!(tagged_turns("<user>q</user> and no answer", "user", "assistant").is_err());
        assert!(tagged_turns("plain", "user", "assistant").is_err());
    }

    #[test]
    fn verdict_reads_the_last_line_only() {
        assert_eq!(verdict("No doubt it is fine.\nYes"), Ok(true));
        assert_eq!(verdict("yes it looked fine\nbut: UNSUPPORTED"), Ok(false));
        assert_eq!(
            verdict("Answer: not supported"),
            Err("no clear yes/no verdict on the last line: \"answer: not supported\"".into())
        );
        assert!(verdict("").is_err());
    }
}
