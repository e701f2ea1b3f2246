//! Review: rows of a dataset marked accepted or rejected, kept beside the run in
//! `review.json` and exported as JSONL. A row is keyed by the dataset's name and the id of the
//! item it was made from, read from the dataset's `.NAME.items` sidecar (written by the run),
//! so a mark follows its item across reruns whatever its position. Datasets without the
//! sidecar (written by an older atk) and rows it names no item for are keyed by the SHA-256
//! of their line, as `review.json` files written before item keys were: those keys are still
//! honoured.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::guard::{form_value, url_pairs};
use super::html::{esc, href};
use super::pages::{ROWS_PER_PAGE, not_found, run_of};
use super::runs;

/// The file beside the run's datasets holding the marks.
pub(crate) const REVIEW_FILE: &str = "review.json";

/// A row's key when no item is known for it: SHA-256 (hex) of its line.
pub(crate) fn row_key(line: &str) -> String {
    hex::encode(Sha256::digest(line.trim_end().as_bytes()))
}

/// The item each row of `dataset` was made from, by row (from its `.NAME.items` sidecar;
/// empty when it has none).
pub(crate) fn row_items(dataset: &Path) -> Vec<Option<String>> {
    std::fs::read_to_string(atk_cli::layout::row_items_path(dataset))
        .map(|text| {
            text.lines()
                .map(|l| serde_json::from_str::<Option<String>>(l).ok().flatten())
                .collect()
        })
        .unwrap_or_default()
}

/// The key a mark of row `row` (its `line`) of the dataset `file` is saved under.
pub(crate) fn mark_key(file: &str, items: &[Option<String>], row: usize, line: &str) -> String {
    match items.get(row).and_then(Option::as_ref) {
        Some(item) => format!("item:{file}:{item}"),
        None => row_key(line),
    }
}

/// The mark of a row: under its item key, else (marks made before item keys) its line's hash.
pub(crate) fn mark_of<'a>(
    marks: &'a BTreeMap<String, String>,
    file: &str,
    items: &[Option<String>],
    row: usize,
    line: &str,
) -> Option<&'a String> {
    marks
        .get(&mark_key(file, items, row, line))
        .or_else(|| marks.get(&row_key(line)))
}

/// The marks of a run: row key → `accepted` | `rejected`.
pub(crate) fn load(run: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(run.join(REVIEW_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save(run: &Path, marks: &BTreeMap<String, String>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(marks).map_err(std::io::Error::other)?;
    let tmp = run.join(format!("{REVIEW_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, run.join(REVIEW_FILE))
}

/// The accept / reject buttons of one row (POST forms carrying the token).
pub(crate) fn buttons(token: &str, dir: &str, file: &str, row: usize, page: usize) -> String {
    let mut out = String::new();
    for (mark, label) in [("accepted", "Accept"), ("rejected", "Reject")] {
        out.push_str(&format!(
            "<form method=post action=\"/review\" class=inline>\
             <input type=hidden name=token value=\"{t}\"><input type=hidden name=dir value=\"{d}\">\
             <input type=hidden name=file value=\"{f}\"><input type=hidden name=row value=\"{row}\">\
             <input type=hidden name=page value=\"{page}\"><input type=hidden name=mark value=\"{mark}\">\
             <button type=submit class=\"{mark}\">{label}</button></form>",
            t = esc(token),
            d = esc(dir),
            f = esc(file),
        ));
    }
    out
}

/// `POST /review` (dir, file, row, mark): marks one row.
pub(crate) async fn mark(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body).into_owned();
    let query = Some(form.clone());
    let run = match run_of(&state, &query) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let name = form_value(&form, "file").unwrap_or_default();
    let Some(file) = runs::output_files(&run)
        .into_iter()
        .find(|f| f.name == name)
    else {
        return not_found(&format!("no output file `{name}` in this run"));
    };
    let Some(row) = form_value(&form, "row").and_then(|r| r.parse::<usize>().ok()) else {
        return (StatusCode::BAD_REQUEST, "row must be a number").into_response();
    };
    let mark = form_value(&form, "mark").unwrap_or_default();
    if mark != "accepted" && mark != "rejected" {
        return (StatusCode::BAD_REQUEST, "mark must be accepted or rejected").into_response();
    }
    let line = match runs::read_lines(&file.path, row, 1) {
        Ok((lines, _)) if !lines.is_empty() => lines[0].clone(),
        _ => return not_found(&format!("no row {row} in {name}")),
    };
    let mut marks = load(&run.path);
    let items = row_items(&file.path);
    // A mark made before item keys is replaced, not left to contradict the new one.
    marks.remove(&row_key(&line));
    marks.insert(mark_key(&name, &items, row, &line), mark);
    if let Err(e) = save(&run.path, &marks) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save the review: {e}"),
        )
            .into_response();
    }
    let page = form_value(&form, "page").unwrap_or_else(|| (row / ROWS_PER_PAGE).to_string());
    let back = href(
        "/outputs",
        &[("dir", &run.id), ("file", &name), ("page", &page)],
    );
    // Keep the row in view.
    let _ = url_pairs(&form);
    Redirect::to(&format!("{back}#row-{row}")).into_response()
}

/// `GET /review/export?dir=`: every accepted row of the run's datasets, as JSONL.
pub(crate) async fn export(State(state): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let marks = load(&run.path);
    let mut out = String::new();
    for file in runs::output_files(&run) {
        if !file.name.ends_with(".jsonl") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file.path) else {
            continue;
        };
        let items = row_items(&file.path);
        for (row, line) in text.lines().enumerate() {
            if mark_of(&marks, &file.name, &items, row, line).is_some_and(|m| m == "accepted") {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (
        [
            (header::CONTENT_TYPE, "application/jsonl".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"accepted.jsonl\"".to_string(),
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_follow_the_item_and_older_line_hash_marks_still_count() {
        let line = r#"{"conversations":[]}"#;
        let items = vec![None, Some("abc".to_string())];
        // Row 1 has an item: its key names the dataset and the item.
        assert_eq!(mark_key("d.jsonl", &items, 1, line), "item:d.jsonl:abc");
        // Row 0 has none (and rows past the sidecar): the line's hash, as before.
        assert_eq!(mark_key("d.jsonl", &items, 0, line), row_key(line));
        assert_eq!(mark_key("d.jsonl", &items, 7, line), row_key(line));
        // A review.json written before item keys: the hash still finds the mark.
        let old: BTreeMap<String, String> = [(row_key(line), "accepted".to_string())].into();
        assert_eq!(
            mark_of(&old, "d.jsonl", &items, 1, line).map(String::as_str),
            Some("accepted")
        );
        let new: BTreeMap<String, String> =
            [("item:d.jsonl:abc".to_string(), "rejected".to_string())].into();
        assert_eq!(
            mark_of(&new, "d.jsonl", &items, 1, line).map(String::as_str),
            Some("rejected")
        );
        assert_eq!(mark_of(&new, "other.jsonl", &items, 1, line), None);
    }
}
