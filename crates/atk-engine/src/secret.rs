//! `Secret`: an API key that never prints itself.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `Debug`, `Display` and `Serialize` print instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// An API key. `Debug`, `Display` and `Serialize` print `[redacted]`; only [`Secret::expose`]
/// gives the text, and the HTTP engine calls it once, to build its (sensitive) header.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The key itself: only for the Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no key was given (local servers often need none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Replaces every occurrence of the key in `text` by `[redacted]` (for server messages
    /// that echo the key back).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(self.0.as_str()) {
            return text.to_string();
        }
        text.replace(self.0.as_str(), REDACTED)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl From<String> for Secret {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for Secret {
    fn from(key: &str) -> Self {
        Self(key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_printed() {
        let s = Secret::new("sk-very-secret-123");
        assert_eq!(
            format!("{s:?} {s} {}", serde_json::to_string(&s).unwrap()),
            "[redacted] [redacted] \"[redacted]\""
        );
        assert_eq!(s.expose(), "sk-very-secret-123");
        assert_eq!(
            s.scrub("bad key sk-very-secret-123!"),
            "bad key [redacted]!"
        );
        assert!(Secret::default().is_empty());
    }
}
