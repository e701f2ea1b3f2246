//! Rows of an existing dataset, for pipelines that rewrite data instead of reading documents
//! (`read_files_manually: false` with [`RunContext::seed_items`](crate::RunContext::seed_items)):
//! JSONL files streamed line by line, `.json` arrays, or a folder of both, each row with the
//! file and line a message about it should name.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::RunError;

/// One row: its file (relative to `input_dir`), its line (element of a `.json` array), and
/// its value or why it is not JSON.
pub type Row = (String, usize, Result<Value, String>);

/// Every row of `input`: a `.jsonl` or `.json` (array) file, or all of them under a folder, in
/// path order. JSONL is streamed (memory stays flat however long the file); a `.json` array is
/// read whole. A file that cannot be opened, or a `.json` file that is not an array, is an
/// input error naming it, before any row is used; a row that is not JSON comes back as such.
pub fn read_rows(input: &Path) -> Result<impl Iterator<Item = Row> + Send + use<>, RunError> {
    let cannot = |p: &Path, e: &dyn std::fmt::Display| {
        RunError::Input(format!("cannot read {}: {e}", p.display()))
    };
    let mut sources: Vec<Box<dyn Iterator<Item = Row> + Send>> = Vec::new();
    for entry in walkdir::WalkDir::new(input).sort_by_file_name() {
        let entry = entry.map_err(|e| cannot(input, &e))?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !entry.file_type().is_file() || (entry.depth() > 0 && ext != "jsonl" && ext != "json") {
            continue;
        }
        let rel = path.strip_prefix(input).ok().filter(|_| entry.depth() > 0);
        let name = rel
            .unwrap_or(Path::new(entry.file_name()))
            .to_string_lossy();
        let name = name.replace('\\', "/");
        let file = BufReader::new(std::fs::File::open(path).map_err(|e| cannot(path, &e))?);
        if ext == "json" {
            let array: Vec<Value> = serde_json::from_reader(file)
                .map_err(|e| cannot(path, &format!("not a JSON array of rows ({e})")))?;
            let rows = array.into_iter().enumerate();
            sources.push(Box::new(
                rows.map(move |(i, v)| (name.clone(), i + 1, Ok(v))),
            ));
        } else {
            let (path, mut lines, mut done) = (path.to_path_buf(), None, false);
            // Opened again when its turn comes, so that no file is held open meanwhile.
            let rows = (1..).map_while(move |n| {
                let fail = |e: std::io::Error, done: &mut bool| {
                    *done = true;
                    Some(Some((
                        name.clone(),
                        n,
                        Err(format!("{e}; the rest is not read")),
                    )))
                };
                if done {
                    return None;
                } else if lines.is_none() {
                    match std::fs::File::open(&path) {
                        Ok(f) => lines = Some(BufReader::new(f).lines()),
                        Err(e) => return fail(e, &mut done),
                    }
                }
                let row = match lines.as_mut()?.next()? {
                    Ok(l) if l.trim().is_empty() => return Some(None),
                    Ok(l) => serde_json::from_str(&l).map_err(|e| format!("not JSON ({e})")),
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(e.to_string()),
                    Err(e) => return fail(e, &mut done),
                };
                Some(Some((name.clone(), n, row)))
            });
            sources.push(Box::new(rows.flatten()));
        }
    }
    Ok(sources.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_in_path_order_with_their_line_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"[{"text": "x"}, {"text": "y"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.jsonl"),
            "{\"text\": \"one\"}\n\nnot json\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let rows: Vec<Row> = read_rows(dir.path()).unwrap().collect();
        let places: Vec<(&str, usize, bool)> = rows
            .iter()
            .map(|(f, l, r)| (f.as_str(), *l, r.is_ok()))
            .collect();
        assert_eq!(
            places,
            [
                ("a.jsonl", 1, true),
                ("a.jsonl", 3, false),
                ("b.json", 1, true),
                ("b.json", 2, true)
            ]
        );
        assert!(rows[1].2.as_ref().unwrap_err().starts_with("not JSON"));
        std::fs::write(dir.path().join("c.json"), "{}").unwrap();
        let err = read_rows(dir.path())
            .err()
            .expect("a .json file that is not an array");
        assert!(
            err.to_string().contains("c.json") && err.to_string().contains("not a JSON array"),
            "{err}"
        );
    }
}
