//! The dataset line shapes: ShareGPT conversations and plain completion text, and the
//! conversion of a recorded exchange ([`Details`]) into each.

use atk_state::Details;
use serde::{Deserialize, Serialize};

/// One ShareGPT dataset line: `{"conversations": [{"from": ..., "value": ...}, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The turns, in order.
    pub conversations: Vec<Turn>,
}

/// One turn of a ShareGPT conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who speaks: `system`, `human` or `gpt`.
    pub from: String,
    /// What they say.
    pub value: String,
}

impl Turn {
    /// A turn from `from` saying `value`.
    pub fn new(from: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            value: value.into(),
        }
    }
}

impl Conversation {
    /// A conversation of `(from, value)` turns (`system`, `human`, `gpt`).
    pub fn new<F: Into<String>, V: Into<String>>(turns: impl IntoIterator<Item = (F, V)>) -> Self {
        Self {
            conversations: turns.into_iter().map(|(f, v)| Turn::new(f, v)).collect(),
        }
    }

    /// A conversation from `(question, answer)` turns: `human` asks, `gpt` answers, in order.
    pub fn from_turns(turns: impl IntoIterator<Item = (String, String)>) -> Self {
        Self::new(
            turns
                .into_iter()
                .flat_map(|(q, a)| [("human", q), ("gpt", a)]),
        )
    }

    /// The same conversation in OpenAI's messages shape: `{"messages": [{"role", "content"}]}`
    /// (`human` becomes `user`, `gpt` becomes `assistant`; other names are kept).
    pub fn to_openai_messages(&self) -> serde_json::Value {
        let messages: Vec<serde_json::Value> = self
            .conversations
            .iter()
            .map(|t| {
                let role = match t.from.as_str() {
                    "human" => "user",
                    "gpt" => "assistant",
                    other => other,
                };
                serde_json::json!({"role": role, "content": t.value})
            })
            .collect();
        serde_json::json!({ "messages": messages })
    }
}

/// One completion-form dataset line: `{"text": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The prompt followed by the reply.
    pub text: String,
}

/// Maps a chat role to its ShareGPT name (`user` -> `human`, `assistant` -> `gpt`).
fn sharegpt_role(role: &str) -> Option<&'static str> {
    match role {
        "system" => Some("system"),
        "user" => Some("human"),
        "assistant" => Some("gpt"),
        _ => None,
    }
}

/// The `(role, content)` pairs of the recorded messages.
fn messages(details: &Details) -> Result<Vec<(&str, &str)>, String> {
    details
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(|r| r.as_str());
            let content = m.get("content").and_then(|c| c.as_str());
            match (role, content) {
                (Some(role), Some(content)) => Ok((role, content)),
                _ => Err(format!(
                    "recorded message {i} is not a {{role, content}} pair of strings"
                )),
            }
        })
        .collect()
}

/// The exchange as a conversation: the messages sent, then the raw reply as the last `gpt` turn.
pub(crate) fn chat_line(details: &Details) -> Result<Conversation, String> {
    let mut turns = Vec::with_capacity(details.messages.len() + 1);
    if details.messages.is_empty() {
        match &details.prompt {
            Some(prompt) => turns.push(Turn::new("human", prompt.as_str())),
            None => return Err("neither messages nor a prompt were recorded".to_owned()),
        }
    }
    for (role, content) in messages(details)? {
        let from = sharegpt_role(role).ok_or_else(|| {
            format!("recorded message has role `{role}`; expected system, user or assistant")
        })?;
        turns.push(Turn::new(from, content));
    }
    turns.push(Turn::new("gpt", details.reply.as_str()));
    Ok(Conversation {
        conversations: turns,
    })
}

/// The exchange as one text: the completion prompt followed by the reply, or, for a chat
/// exchange, the messages written out plainly (system text first, then `Human:` / `AI:`
/// turns, each trimmed at the end and separated by one blank line) followed by `AI: ` and
/// the reply.
pub(crate) fn completion_line(details: &Details) -> Result<Completion, String> {
    if details.messages.is_empty() {
        let prompt = details
            .prompt
            .as_deref()
            .ok_or("neither messages nor a prompt were recorded")?;
        return Ok(Completion {
            text: format!("{prompt}{}", details.reply),
        });
    }
    let mut text = String::new();
    for (role, content) in messages(details)? {
        let label = match role {
            "system" => "",
            "user" => "Human: ",
            "assistant" => "AI: ",
            other => {
                return Err(format!(
                    "recorded message has role `{other}`; expected system, user or assistant"
                ));
            }
        };
        text.push_str(label);
        // Prompt files end their messages with a newline; one blank line between turns.
        text.push_str(content.trim_end());
        text.push_str("\n\n");
    }
    text.push_str("AI: ");
    text.push_str(&details.reply);
    Ok(Completion { text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details(messages: Vec<serde_json::Value>, prompt: Option<&str>) -> Details {
        Details {
            messages,
            prompt: prompt.map(str::to_owned),
            reply: "<poem>Rain</poem>".to_owned(),
            finish_reason: Some("stop".to_owned()),
            model: "m".to_owned(),
        }
    }

    #[test]
    fn chat_exchange_becomes_sharegpt_turns_ending_with_the_raw_reply() {
        let d = details(
            vec![
                json!({"role": "system", "content": "You write poems."}),
                json!({"role": "user", "content": "Sea\n"}),
                json!({"role": "assistant", "content": "<poem>Waves</poem>"}),
                json!({"role": "user", "content": "Rain"}),
            ],
            None,
        );
        let froms: Vec<_> = chat_line(&d)
            .unwrap()
            .conversations
            .into_iter()
            .map(|t| t.from)
            .collect();
        assert_eq!(froms, ["system", "human", "gpt", "human", "gpt"]);
        let text = completion_line(&d).unwrap().text;
        assert_eq!(
            text,
            "You write poems.\n\nHuman: Sea\n\nAI: <poem>Waves</poem>\n\nHuman: Rain\n\nAI: <poem>Rain</poem>"
        );
    }

    #[test]
    fn completion_exchange_is_prompt_then_reply() {
        let d = details(vec![], Some("Passage: x\nPoem:"));
        assert_eq!(
            completion_line(&d).unwrap().text,
            "Passage: x\nPoem:<poem>Rain</poem>"
        );
        let chat = chat_line(&d).unwrap();
        assert_eq!(
            chat.conversations,
            vec![
                Turn::new("human", "Passage: x\nPoem:"),
                Turn::new("gpt", "<poem>Rain</poem>")
            ]
        );
    }

    #[test]
    fn unknown_roles_and_empty_exchanges_are_refused() {
        let d = details(vec![json!({"role": "tool", "content": "x"})], None);
        assert!(chat_line(&d).unwrap_err().contains("`tool`"));
        assert!(completion_line(&details(vec![], None)).is_err());
    }
}
