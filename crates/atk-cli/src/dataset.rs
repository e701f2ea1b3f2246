//! Dataset files: JSON lines written atomically (temp file, fsync, rename), and the ShareGPT
//! shape most pipelines write.

use std::io::Write;
use std::path::Path;

pub use atk_metadatagen::{Conversation, Turn};

/// Writes `lines` (one JSON document each, without the newline) to `path` atomically: a
/// reader sees the old file or the new one, never half of one. Returns the number of lines.
pub fn write_jsonl_atomic<I, S>(path: &Path, lines: I) -> std::io::Result<u64>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut n = 0u64;
        for line in lines {
            out.write_all(line.as_ref().as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable where the platform allows opening a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A two-turn ShareGPT conversation: `human` asks, `gpt` answers.
pub fn sharegpt_pair(human: impl Into<String>, gpt: impl Into<String>) -> Conversation {
    Conversation {
        conversations: vec![Turn::new("human", human), Turn::new("gpt", gpt)],
    }
}

/// Writes ShareGPT conversations to `path` atomically, one `{"conversations": [...]}` per
/// line, in the order given. Returns the number of lines.
pub fn write_sharegpt<I>(path: &Path, conversations: I) -> std::io::Result<u64>
where
    I: IntoIterator<Item = Conversation>,
{
    let lines = conversations
        .into_iter()
        .map(|c| serde_json::to_string(&c).unwrap_or_default());
    write_jsonl_atomic(path, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_lines_atomically_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharegpt_format.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let n = write_sharegpt(
            &path,
            [
                sharegpt_pair("a poem about tides?", "<poem>"),
                sharegpt_pair("q", "a"),
            ],
        )
        .unwrap();
        assert_eq!(n, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"conversations":[{"from":"human","value":"a poem about tides?"},{"from":"gpt","value":"<poem>"}]}"#
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
