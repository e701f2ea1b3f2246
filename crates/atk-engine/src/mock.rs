//! `MockEngine`: offline, deterministic replies derived from a hash of the prompt.
//!
//! Template placeholders: `{hash}` (16 hex chars of the prompt's SHA-256), `{words}` (8 to 16
//! words from a built-in list, picked by the hash), `{lines}` (4 short numbered lines), and
//! `{excerpt}` (the first 12 words of the last user message or of the completion prompt). Other
//! braces stay as written. `Request::mock_reply` wins over `MockConfig::reply_template`.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::config::{EngineConfig, MockConfig};
use crate::{Engine, Error, Prompt, Reply, Request, Timing, Usage};

/// The reply template used when neither the request nor the config sets one.
pub const DEFAULT_MOCK_TEMPLATE: &str = "Mock reply {hash} to \"{excerpt}\": {words}.";

const WORDS: &[&str] = &[
    "amber", "anchor", "basalt", "beacon", "birch", "bramble", "cedar", "cinder", "clover",
    "comet", "copper", "coral", "delta", "drift", "ember", "fern", "fjord", "flint", "garnet",
    "glacier", "granite", "harbor", "hazel", "heron", "indigo", "island", "juniper", "kestrel",
    "lantern", "lichen", "maple", "meadow", "mica", "moss", "nectar", "orchid", "osprey", "pebble",
    "pine", "quartz", "quill", "raven", "reed", "ridge", "river", "saffron", "sage", "slate",
    "sparrow", "spruce", "summit", "thistle", "thunder", "tide", "timber", "umber", "valley",
    "violet", "willow", "wren", "yarrow", "zephyr", "zinc", "lagoon",
];

/// Messages whose token count a mock engine remembers (the first ones it meets).
const COUNTS_KEPT: usize = 64;

/// The offline engine: same prompt, same reply; optional simulated latency.
pub struct MockEngine {
    label: String,
    model: String,
    cfg: MockConfig,
    /// Token counts of the first messages met, by content: a chain's fixed messages (system
    /// prompt, examples) recur in every request and are counted once. A server counts tokens
    /// in its own process; without this the mock's counting was half a mock run's CPU.
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl MockEngine {
    /// A mock engine with this label, model name and options.
    pub fn new(label: impl Into<String>, model: impl Into<String>, cfg: MockConfig) -> Self {
        let model = model.into();
        Self {
            label: label.into(),
            model: if model.is_empty() {
                "mock".to_string()
            } else {
                model
            },
            cfg,
            counts: Default::default(),
        }
    }

    /// Tokens of a chat message's content, remembered for the first [`COUNTS_KEPT`] contents.
    fn count_message(&self, counter: &dyn atk_tokens::TokenCounter, content: &str) -> usize {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get(content) {
            return *n;
        }
        let n = counter.count(content);
        if counts.len() < COUNTS_KEPT {
            counts.insert(content.to_owned(), n);
        }
        n
    }

    /// A mock engine from an engine config (label, model and `mock` options).
    pub fn from_config(cfg: &EngineConfig) -> Self {
        Self::new(cfg.label.clone(), cfg.model.clone(), cfg.mock.clone())
    }
}

#[async_trait]
impl Engine for MockEngine {
    async fn call(&self, request: Request) -> Result<Reply, Error> {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        let template = request
            .mock_reply
            .as_deref()
            .or(self.cfg.reply_template.as_deref())
            .unwrap_or(DEFAULT_MOCK_TEMPLATE);
        let text = render_mock_reply(template, &request.prompt);
        // Counted with the run's tokenizer, as `--dry-run` counts: each chat message's content
        // plus 4 tokens of framing.
        let counter = self.cfg.tokenizer.counter();
        let prompt_tokens: usize = match &request.prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .map(|m| self.count_message(counter, &m.content) + 4)
                .sum(),
            Prompt::Completion(text) => counter.count(text),
        };
        let usage = Usage {
            prompt_tokens: prompt_tokens as u64,
            completion_tokens: counter.count(&text) as u64,
            estimated: true,
            ..Usage::default()
        };
        Ok(Reply {
            text,
            finish_reason: Some("stop".to_string()),
            usage,
            model: self.model.clone(),
            timing: Timing {
                first_byte: self.cfg.latency,
                total: self.cfg.latency,
                attempts: 1,
                ..Timing::default()
            },
        })
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn is_mock(&self) -> bool {
        true
    }
}

/// SHA-256 of a prompt: the completion text, or each message as `role\ncontent\n`.
pub fn prompt_hash(prompt: &Prompt) -> [u8; 32] {
    let mut h = Sha256::new();
    match prompt {
        Prompt::Chat(messages) => {
            for m in messages {
                h.update(m.role.as_bytes());
                h.update(b"\n");
                h.update(m.content.as_bytes());
                h.update(b"\n");
            }
        }
        Prompt::Completion(text) => h.update(text.as_bytes()),
    }
    h.finalize().into()
}

/// Fills a mock reply template for this prompt (see the module doc for the placeholders).
pub fn render_mock_reply(template: &str, prompt: &Prompt) -> String {
    let hash = prompt_hash(prompt);
    // splitmix64 seeded by the hash: a deterministic word picker with no extra dependency.
    let mut state = u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"));
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut word = || WORDS[(next() % WORDS.len() as u64) as usize];
    let mut out = template.to_string();
    if out.contains("{hash}") {
        out = out.replace("{hash}", &hex::encode(&hash[..8]));
    }
    if out.contains("{words}") {
        let n = 8 + (hash[8] % 9) as usize;
        let words: Vec<&str> = (0..n).map(|_| word()).collect();
        out = out.replace("{words}", &words.join(" "));
    }
    if out.contains("{lines}") {
        let lines: Vec<String> = (1..=4)
            .map(|i| format!("{i}. {} {} {}", word(), word(), word()))
            .collect();
        out = out.replace("{lines}", &lines.join("\n"));
    }
    if out.contains("{excerpt}") {
        let source = match prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .or(messages.last())
                .map_or("", |m| m.content.as_str()),
            Prompt::Completion(text) => text.as_str(),
        };
        let excerpt: Vec<&str> = source.split_whitespace().take(12).collect();
        out = out.replace("{excerpt}", &excerpt.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[tokio::test(start_paused = true)]
    async fn deterministic_templated_and_latent() {
        let engine = MockEngine::new(
            "m",
            "",
            MockConfig::default().with_latency(std::time::Duration::from_secs(5)),
        );
        let req = Request::chat(vec![
            Message::new("system", "be brief"),
            Message::new("user", "tell me about rivers and lakes"),
        ]);
        let t0 = tokio::time::Instant::now();
        let a = engine.call(req.clone()).await.unwrap();
        assert_eq!(t0.elapsed(), std::time::Duration::from_secs(5));
        let b = engine.call(req.clone()).await.unwrap();
        assert_eq!(a.text, b.text);
        assert!(
            a.text.starts_with("Mock reply ")
                && a.text.contains("\"tell me about rivers and lakes\""),
            "{}",
            a.text
        );
        assert!(engine.is_mock() && a.usage.estimated && a.model == "mock");
        let other = engine
            .call(Request::completion("something else"))
            .await
            .unwrap();
        assert_ne!(a.text, other.text);
        let mut req = req;
        req.mock_reply = Some("Q: {hash}\n{lines}\n{x}".to_string());
        let t = engine.call(req).await.unwrap().text;
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert_eq!(lines[0].len(), "Q: ".len() + 16);
        assert!(lines[1].starts_with("1. ") && lines[4].starts_with("4. "));
        assert_eq!(lines[5], "{x}");
    }

    #[tokio::test]
    async fn tokens_are_counted_with_the_runs_tokenizer() {
        let text = "Tokenization: antidisestablishmentarianism, naïveté, 東京.";
        for tokenizer in [atk_tokens::Tokenizer::Cl100k, atk_tokens::Tokenizer::O200k] {
            let cfg = MockConfig::default()
                .with_reply_template("{excerpt}")
                .with_tokenizer(tokenizer);
            let engine = MockEngine::new("m", "", cfg);
            let reply = engine
                .call(Request::chat(vec![Message::new("user", text)]))
                .await
                .unwrap();
            let count = |t: &str| tokenizer.counter().count(t) as u64;
            assert_eq!(reply.usage.prompt_tokens, count(text) + 4);
            assert_eq!(reply.usage.completion_tokens, count(&reply.text));
            assert_ne!(reply.usage.prompt_tokens, 5 + 4, "not words");
            let completion = engine.call(Request::completion(text)).await.unwrap();
            assert_eq!(completion.usage.prompt_tokens, count(text));
        }
    }

    #[tokio::test]
    async fn remembered_counts_are_the_counts_and_new_messages_are_still_counted() {
        let tokenizer = atk_tokens::Tokenizer::Cl100k;
        let count = |t: &str| tokenizer.counter().count(t) as u64;
        let engine = MockEngine::new("m", "", MockConfig::default().with_tokenizer(tokenizer));
        let system = "You are a poet who reads closely; write one short poem.";
        // More distinct messages than are remembered: the later ones are counted each time.
        for i in 0..(COUNTS_KEPT + 10) {
            let user = format!("Passage {i}: the keeper logged the weather every four hours.");
            let reply = engine
                .call(Request::chat(vec![
                    Message::new("system", system),
                    Message::new("user", &user),
                ]))
                .await
                .unwrap();
            assert_eq!(
                reply.usage.prompt_tokens,
                count(system) + 4 + count(&user) + 4,
                "call {i}"
            );
        }
    }

    #[test]
    fn words_count_is_between_8_and_16() {
        for i in 0..50 {
            let n = render_mock_reply("{words}", &Prompt::Completion(format!("p{i}")))
                .split(' ')
                .count();
            assert!((8..=16).contains(&n), "{n}");
        }
    }
}
