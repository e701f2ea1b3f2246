//! Deterministic replies: the prompt read from a request body, its hash, and the template.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ReplyMode;

/// The template used when none is set.
pub const DEFAULT_TEMPLATE: &str = "Reply {hash}: {words}";

/// Words the `{words}` and `{lines}` placeholders pick from.
const WORDS: [&str; 48] = [
    "river", "lantern", "copper", "meadow", "quiet", "harbor", "ember", "willow", "signal",
    "orbit", "granite", "velvet", "thunder", "pebble", "compass", "saffron", "drift", "hollow",
    "beacon", "tide", "marble", "cinder", "echo", "frost", "garden", "horizon", "island",
    "juniper", "kettle", "ledger", "mirror", "needle", "oak", "paper", "quartz", "ribbon",
    "sparrow", "timber", "umber", "valley", "wander", "yarrow", "zephyr", "amber", "bramble",
    "candle", "dusk", "fern",
];

/// The prompt of a chat, Messages or completion request body as one string: `role: content`
/// per message (one per line, a Messages `system` first) for chat, the prompt text for
/// completions.
pub fn prompt_text(body: &Value) -> String {
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        let mut out = String::new();
        // Anthropic's Messages API: the system prompt apart (a string or text blocks).
        if let Some(system) = body.get("system") {
            out.push_str("system: ");
            out.push_str(&content_text(Some(system)));
            out.push('\n');
        }
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            out.push_str(role);
            out.push_str(": ");
            out.push_str(&content_text(m.get("content")));
            out.push('\n');
        }
        return out;
    }
    match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of a message `content`: a string, or the `text` of each part.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// 16 hex chars of the SHA-256 of [`prompt_text`]: the key of `Stats::per_prompt` and `{hash}`.
pub fn prompt_hash(body: &Value) -> String {
    hash16(&prompt_text(body))
}

/// 16 hex chars of the SHA-256 of `text`.
pub(crate) fn hash16(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

/// Whitespace-separated words in the prompt: the server's token count.
pub(crate) fn prompt_words(body: &Value) -> u64 {
    count_words(&prompt_text(body))
}

/// Whitespace-separated words in `text`.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The first 12 words of the last user message, or of the completion prompt.
fn excerpt(body: &Value) -> String {
    let source = match body.get("messages").and_then(Value::as_array) {
        Some(messages) => messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default(),
        None => prompt_text(body),
    };
    source
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A generator seeded by the hash, so replies depend on the prompt alone.
fn rng_for(hash: &str, salt: u64) -> StdRng {
    let seed =
        u64::from_str_radix(hash, 16).unwrap_or(0) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    StdRng::seed_from_u64(seed)
}

/// 8 to 16 words picked by the hash.
fn words(hash: &str) -> String {
    let mut rng = rng_for(hash, 1);
    let n = rng.random_range(8..=16);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Four short lines (4 to 6 words each) picked by the hash.
fn lines(hash: &str) -> String {
    let mut rng = rng_for(hash, 2);
    (0..4)
        .map(|_| {
            let n = rng.random_range(4..=6);
            let mut line = (0..n)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(first) = line.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fills `{hash}`, `{words}`, `{lines}` and `{excerpt}` in one pass; every other brace stays
/// as written and substituted text is never expanded again.
pub fn render_template(template: &str, body: &Value) -> String {
    let hash = prompt_hash(body);
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let known = ["{hash}", "{words}", "{lines}", "{excerpt}"]
            .into_iter()
            .find(|p| after.starts_with(p));
        match known {
            Some(p) => {
                match p {
                    "{hash}" => out.push_str(&hash),
                    "{words}" => out.push_str(&words(&hash)),
                    "{lines}" => out.push_str(&lines(&hash)),
                    _ => out.push_str(&excerpt(body)),
                }
                rest = &after[p.len()..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reply text for a request body.
pub(crate) fn reply_text(mode: &ReplyMode, body: &Value) -> String {
    match mode {
        ReplyMode::Template(t) => render_template(t, body),
        ReplyMode::Fixed(t) => t.clone(),
        ReplyMode::Func(f) => f(body),
    }
}

/// Cuts `text` into `n` pieces of about equal length (on char boundaries); never empty.
pub(crate) fn split_pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (i * chars.len() / n, (i + 1) * chars.len() / n);
        out.push(chars[a..b].iter().collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(text: &str) -> Value {
        json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]})
    }

    #[test]
    fn template_is_deterministic_per_prompt() {
        let t = "<poem>\n{lines}\n</poem> {hash} {words}";
        let a = render_template(t, &chat("one two three"));
        assert_eq!(a, render_template(t, &chat("one two three")));
        assert_ne!(a, render_template(t, &chat("one two four")));
        assert!(a.starts_with("<poem>\n") && a.contains("\n</poem> "));
        assert_eq!(lines(&prompt_hash(&chat("x"))).lines().count(), 4);
        let n = words(&prompt_hash(&chat("x"))).split(' ').count();
        assert!((8..=16).contains(&n));
    }

    #[test]
    fn excerpt_takes_last_user_message_and_other_braces_stay() {
        let body = chat("a b c d e f g h i j k l m n");
        assert_eq!(
            render_template("{excerpt}|{other}|{", &body),
            "a b c d e f g h i j k l|{other}|{"
        );
        let completion = json!({"prompt": "Once upon a time"});
        assert_eq!(
            render_template("{excerpt}", &completion),
            "Once upon a time"
        );
        assert_eq!(prompt_hash(&completion), hash16("Once upon a time"));
    }

    #[test]
    fn substituted_text_is_not_expanded_again() {
        let body = chat("{hash} {words}");
        assert_eq!(render_template("{excerpt}", &body), "{hash} {words}");
    }

    #[test]
    fn pieces_rejoin_to_the_text() {
        for n in [1, 3, 7, 100] {
            let p = split_pieces("héllo wörld, a reply", n);
            assert_eq!(p.concat(), "héllo wörld, a reply");
            assert!(p.iter().all(|s| !s.is_empty()));
        }
        assert_eq!(split_pieces("", 4), vec![String::new()]);
    }
}
