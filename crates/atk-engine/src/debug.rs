//! `DebugObserver`: one YAML file per call (request + reply or error) under a directory.
//! Writes are small and synchronous; turn it on only when debugging. The key never reaches it:
//! requests carry no key and error messages are scrubbed by the HTTP layer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::observer::Observer;
use crate::{Error, Prompt, Reply, Request, Usage};

/// Observer writing `<dir>/<label>_<unix ms>_<seq>.yaml` for every call.
pub struct DebugObserver {
    dir: PathBuf,
    seq: AtomicU64,
}

#[derive(Serialize)]
struct DebugRecord<'a> {
    engine: &'a str,
    prompt: &'a Prompt,
    params: &'a serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<DebugReply<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct DebugReply<'a> {
    text: &'a str,
    finish_reason: Option<&'a str>,
    model: &'a str,
    usage: Usage,
    attempts: u32,
    total_ms: u64,
}

impl DebugObserver {
    /// An observer writing under `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    fn write(&self, label: &str, record: &DebugRecord<'_>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{safe}_{ms}_{seq:06}.yaml"));
        let result = serde_yaml::to_string(record)
            .map_err(std::io::Error::other)
            .and_then(|yaml| {
                std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&path, yaml))
            });
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "cannot write debug output");
        }
    }
}

impl Observer for DebugObserver {
    fn on_reply(&self, label: &str, request: &Request, reply: &Reply) {
        let r = DebugReply {
            text: &reply.text,
            finish_reason: reply.finish_reason.as_deref(),
            model: &reply.model,
            usage: reply.usage,
            attempts: reply.timing.attempts,
            total_ms: reply.timing.total.as_millis() as u64,
        };
        self.write(
            label,
            &DebugRecord {
                engine: label,
                prompt: &request.prompt,
                params: &request.params,
                reply: Some(r),
                error: None,
            },
        );
    }
    fn on_error(&self, label: &str, request: &Request, error: &Error) {
        if matches!(error, Error::Cancelled { .. }) {
            return; // stopped before it was sent: nothing to debug
        }
        self.write(
            label,
            &DebugRecord {
                engine: label,
                prompt: &request.prompt,
                params: &request.params,
                reply: None,
                error: Some(error.to_string()),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Timing};

    #[test]
    fn writes_one_yaml_file_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let obs = DebugObserver::new(dir.path().join("debug_outputs"));
        let req = Request::chat(vec![Message::new("user", "hello")]).with_param("temperature", 0.5);
        let reply = Reply {
            text: "hi there".into(),
            finish_reason: Some("stop".into()),
            usage: Usage::default(),
            model: "m".into(),
            timing: Timing::default(),
        };
        obs.on_reply("small", &req, &reply);
        obs.on_error("small", &req, &Error::Config("boom".into()));
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("debug_outputs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2);
        let first: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
        assert_eq!(first["reply"]["text"].as_str(), Some("hi there"));
        assert_eq!(first["params"]["temperature"].as_f64(), Some(0.5));
        assert!(std::fs::read_to_string(&files[1]).unwrap().contains("boom"));
    }
}
