//! Review: rows of a dataset marked accepted or rejected, kept beside the run in
//! `review.json` and exported as JSONL. A dataset line carries no item id, so a row is keyed
//! by the SHA-256 of its text: the same item with the same reply gives the same line in every
//! rerun (datasets are byte-identical for the same inputs and replies), so marks survive
//! reruns, and a row whose reply changed is unreviewed again.

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

/// A row's key: SHA-256 (hex) of its line.
pub(crate) fn row_key(line: &str) -> String {
    hex::encode(Sha256::digest(line.trim_end().as_bytes()))
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
    marks.insert(row_key(&line), mark);
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
        for line in text.lines() {
            if marks.get(&row_key(line)).is_some_and(|m| m == "accepted") {
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
