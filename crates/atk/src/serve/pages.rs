//! The read-only pages: Runs, one run live, Why, Outputs, downloads, and the assets.

use std::fmt::Write;
use std::sync::Arc;

use atk_cli::status::StatusSnapshot;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::guard::form_value;
use super::html::{conversation, duration, esc, href, markdown, page};
use super::runs::{self, RunDir};

/// Dataset rows per page.
pub(crate) const ROWS_PER_PAGE: usize = 20;

/// A 404 page.
pub(crate) fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", &format!("<p>{}</p>", esc(what)))),
    )
        .into_response()
}

/// The run named by `?dir=` among the found ones.
pub(crate) fn run_of(state: &AppState, query: &Option<String>) -> Result<RunDir, Box<Response>> {
    let id = form_value(query.as_deref().unwrap_or_default(), "dir").unwrap_or_default();
    runs::find_run(&state.roots, &id).ok_or_else(|| {
        Box::new(not_found(&format!(
            "no output dir `{id}` in the served folders"
        )))
    })
}

fn state_badge(s: &StatusSnapshot) -> String {
    let reason = s
        .state
        .reason()
        .map(|r| format!(" <span class=reason>{}</span>", esc(r)))
        .unwrap_or_default();
    format!(
        "<span class=\"state {n}\" data-state=\"{n}\">{n}</span>{reason}",
        n = s.state.name()
    )
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".into();
    }
    let ago = atk_state::now_ms().saturating_sub(ms) / 1000;
    format!("{} ago", duration(ago as f64))
}

/// The runs table (also served alone for live refresh).
fn runs_table(state: &AppState) -> String {
    let found = runs::find_runs(&state.roots);
    if found.is_empty() {
        return "<p>No output dir in the served folders yet (one appears here as soon as a run writes it).</p>".into();
    }
    let mut out = String::from(
        "<table class=runs><thead><tr><th>Output dir</th><th>Pipeline</th><th>State</th>\
         <th>Done / total</th><th>Cost so far</th><th>Last update</th></tr></thead><tbody>",
    );
    for run in found {
        let link = href("/run", &[("dir", &run.id)]);
        match state.status.status_of(&run.path) {
            Ok(s) => {
                let (done, total) = first_step_counts(&s);
                let _ = write!(
                    out,
                    "<tr><td><a href=\"{link}\">{id}</a></td><td>{p}</td><td>{st}</td>\
                     <td class=num>{done} / {total}</td><td class=num>${c:.4}</td><td>{u}</td></tr>",
                    id = esc(&run.id),
                    p = esc(&s.pipeline),
                    st = state_badge(&s),
                    c = s.cost_usd,
                    u = when(s.updated_at_ms),
                );
            }
            Err(e) => {
                let _ = write!(
                    out,
                    "<tr><td><a href=\"{link}\">{id}</a></td><td colspan=5>{e}</td></tr>",
                    id = esc(&run.id),
                    e = esc(&e)
                );
            }
        }
    }
    out.push_str("</tbody></table>");
    out
}

/// Items done and total: the last step's done (what reached the end) over the first's total.
fn first_step_counts(s: &StatusSnapshot) -> (u64, u64) {
    let total = s.steps.first().map_or(0, |st| st.total);
    let done = s.steps.last().map_or(0, |st| st.done);
    (done, total)
}

/// `GET /`: every output dir with its pipeline, state, counts, cost, last update.
pub(crate) async fn runs_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let roots: Vec<String> = state
        .roots
        .iter()
        .map(|r| esc(&r.display().to_string()))
        .collect();
    Html(page(
        "Runs",
        &format!(
            "<p class=muted>Serving {}</p><div data-live=\"/api/runs\">{}</div>",
            roots.join(", "),
            runs_table(&state)
        ),
    ))
}

/// `GET /api/runs`: the runs table alone.
pub(crate) async fn runs_fragment(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(runs_table(&state))
}

/// The live panel of one run: state, funnel per step, engines, outlook.
fn live_panel(state: &AppState, run: &RunDir) -> String {
    let s = match state.status.status_of(&run.path) {
        Ok(s) => s,
        Err(e) => return format!("<p class=error>{}</p>", esc(&e)),
    };
    let o = runs::outlook(&s);
    let mut out = String::new();
    let _ = write!(
        out,
        "<p>{badge} · pipeline <b>{p}</b> · elapsed {el} · updated {up}</p>",
        badge = state_badge(&s),
        p = esc(&s.pipeline),
        el = duration(s.elapsed_ms as f64 / 1000.0),
        up = when(s.updated_at_ms),
    );
    if let Some((fraction, message)) = &s.milestone {
        let _ = write!(
            out,
            "<p class=milestone>Pipeline says: {} ({:.0}%)</p>",
            esc(message),
            fraction * 100.0
        );
    }
    let (done, total) = first_step_counts(&s);
    let _ = write!(
        out,
        "<p class=big>Done <b id=done data-done=\"{done}\">{done}</b> of {total} · \
         requests in flight {rif} (limit {lim}) · cost ${c:.4}{proj}{eta}</p>\
         <progress max=1 value=\"{f:.4}\"></progress>",
        rif = s.requests_in_flight,
        lim = s.request_limit,
        c = s.cost_usd,
        proj = o
            .projected_cost_usd
            .map(|p| format!(" · projected ${p:.4}"))
            .unwrap_or_default(),
        eta = o
            .eta_s
            .map(|e| format!(" · ETA {}", duration(e)))
            .unwrap_or_default(),
        f = o.fraction,
    );
    if let Some(b) = &s.budget {
        let _ = write!(
            out,
            "<p class=budget>max_cost: <b>${:.4}</b> of ${:.4} spent{}</p>",
            b.spent_usd,
            b.cap_usd,
            if b.reached {
                " — <span class=flag>reached: no new request is sent</span>"
            } else {
                ""
            }
        );
    }
    out.push_str(
        "<h2>Steps</h2><table><thead><tr><th>Step</th><th>Seen</th><th>Done</th><th>Kept</th>\
         <th>Dropped</th><th>Failed</th><th>In flight</th><th>Pending</th><th>Tokens in / out</th><th>Cost (this run)</th><th></th></tr></thead><tbody>",
    );
    for st in &s.steps {
        let settled = st.done + st.failed;
        let _ = write!(
            out,
            "<tr><td>{n}</td><td class=num>{t}</td><td class=num>{d}</td><td class=num>{k}</td>\
             <td class=num>{dr}</td><td class=num>{f}</td><td class=num>{i}</td><td class=num>{p}</td>\
             <td class=num>{pt} / {ct}</td><td class=num>${sc:.4}</td><td><progress max=\"{t}\" value=\"{settled}\"></progress></td></tr>",
            n = esc(&st.step),
            t = st.total,
            d = st.done,
            k = st.done.saturating_sub(st.dropped),
            dr = st.dropped,
            f = st.failed,
            i = st.in_flight,
            p = st.pending,
            pt = st.prompt_tokens,
            ct = st.completion_tokens,
            sc = st.cost_usd,
        );
    }
    out.push_str("</tbody></table>");
    let with_reasons: Vec<_> = s.steps.iter().filter(|st| !st.reasons.is_empty()).collect();
    if !with_reasons.is_empty() {
        let _ = write!(
            out,
            "<h2>Failed and dropped in this run, by reason</h2><p class=muted>Samples with the raw reply: <a href=\"{}\">Why</a>.</p><table class=reasons><thead><tr><th>Step</th><th>Items</th><th>Reason</th></tr></thead><tbody>",
            href("/why", &[("dir", &run.id)])
        );
        for st in with_reasons {
            let mut reasons: Vec<(&String, &u64)> = st.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (reason, n) in reasons {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=num>{n}</td><td>{}</td></tr>",
                    esc(&st.step),
                    esc(reason)
                );
            }
        }
        out.push_str("</tbody></table>");
    }
    if !s.engines.is_empty() {
        out.push_str(
            "<h2>Engines</h2><table><thead><tr><th>Engine</th><th>Model</th><th>Requests</th>\
             <th>Failed</th><th>Retries (429 = rate_limited)</th><th>Outage</th><th>Tokens in / out</th><th>Cost</th><th>Endpoints (calls / failures)</th></tr></thead><tbody>",
        );
        for e in &s.engines {
            let retries: Vec<String> = e
                .retries
                .iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect();
            let endpoints: Vec<String> = e
                .endpoints
                .iter()
                .map(|(k, [calls, failed])| format!("{} {calls} / {failed}", esc(k)))
                .collect();
            let _ = write!(
                out,
                "<tr><td>{l}</td><td>{m}</td><td class=num>{r}</td><td class=num>{fr}</td><td>{rt}</td><td>{og}</td>\
                 <td class=num>{pt} / {ct}</td><td class=num>${c:.4}</td><td>{ep}</td></tr>",
                l = esc(&e.label),
                m = esc(&e.model),
                r = e.requests,
                fr = e.failed_requests,
                rt = if retries.is_empty() {
                    "none".into()
                } else {
                    retries.join(", ")
                },
                og = outage_cell(&s, e),
                pt = e.prompt_tokens,
                ct = e.completion_tokens,
                c = e.cost_usd,
                ep = endpoints.join("<br>"),
            );
        }
        out.push_str("</tbody></table>");
    }
    if !s.damage.is_empty() {
        out.push_str("<p class=error>Results missing from the store since the last run:</p><ul>");
        for d in &s.damage {
            let _ = write!(
                out,
                "<li>step {}: {} recorded, {} found</li>",
                esc(&d.step),
                d.recorded,
                d.found
            );
        }
        out.push_str("</ul>");
    }
    out
}

/// An engine's outage state as the runner recorded it: down (since when, why) while the run
/// goes, else how many outages it waited out.
fn outage_cell(s: &StatusSnapshot, e: &atk_cli::status::EngineStatus) -> String {
    match e.outage.as_ref().filter(|_| s.is_running()) {
        Some(o) => format!(
            "<span class=flag data-outage=down>endpoint down {}: calls wait, one probe at a time</span><br><small>{}</small>",
            when(o.since_ms),
            esc(&o.error)
        ),
        None if e.outages > 0 => format!("none now ({} waited out)", e.outages),
        None => "none".into(),
    }
}

/// `GET /run?dir=`: one run, refreshed without a reload.
pub(crate) async fn run_page(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let links = format!(
        "<p class=tabs><a href=\"{w}\">Why (failures and drops)</a> <a href=\"{o}\">Outputs</a></p>",
        w = href("/why", &[("dir", &run.id)]),
        o = href("/outputs", &[("dir", &run.id)]),
    );
    let body = format!(
        "{links}<div id=live data-live=\"{u}\">{panel}</div>",
        u = href("/api/live", &[("dir", &run.id)]),
        panel = live_panel(&state, &run)
    );
    Html(page(&run.id, &body)).into_response()
}

/// `GET /api/live?dir=`: the live panel alone.
pub(crate) async fn live_fragment(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    match run_of(&state, &q) {
        Ok(run) => Html(live_panel(&state, &run)).into_response(),
        Err(r) => *r,
    }
}

/// `GET /api/status?dir=`: the snapshot as JSON with the outlook (for scripts).
pub(crate) async fn status_json(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match state.status.status_of(&run.path) {
        Ok(s) => {
            let outlook = runs::outlook(&s);
            axum::Json(serde_json::json!({ "status": s, "outlook": outlook })).into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// `GET /why?dir=`: every failure and drop reason per step, each opening onto samples.
pub(crate) async fn why_page(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut body = format!(
        "<p class=tabs><a href=\"{}\">← live</a></p>",
        href("/run", &[("dir", &run.id)])
    );
    match runs::reasons(&run.path, &state.status) {
        Err(e) => {
            let _ = write!(body, "<p class=muted>{}</p>", esc(&e));
        }
        Ok(steps) => {
            if steps.values().all(Vec::is_empty) {
                body.push_str("<p>No item failed or was dropped.</p>");
            }
            for (step, reasons) in steps {
                if reasons.is_empty() {
                    continue;
                }
                let _ = write!(body, "<h2>Step {}</h2>", esc(&step));
                for r in reasons {
                    let _ = write!(
                        body,
                        "<details class=reason><summary><span class=\"kind {k}\">{k}</span> <b class=count>{c}</b> {why}</summary>",
                        k = r.kind,
                        c = r.count,
                        why = esc(&r.reason)
                    );
                    for sample in &r.samples {
                        let _ = write!(
                            body,
                            "<div class=sample><p class=muted>item {}</p>",
                            esc(&sample.item)
                        );
                        if let Some(input) = &sample.input {
                            let _ = write!(body, "<h4>Input</h4><pre>{}</pre>", esc(input));
                        }
                        match &sample.prompt {
                            Some(p) => {
                                let _ = write!(body, "<h4>Prompt sent (the last attempt)</h4><pre class=prompt>{}</pre>", esc(p));
                            }
                            None => body.push_str(
                                "<p class=muted>The prompt is not in the store (a drop by a step that keeps no details, or a failure recorded by an older atk; <code>debug_outputs</code> keeps every exchange).</p>",
                            ),
                        }
                        match &sample.reply {
                            Some(reply) => {
                                let _ = write!(
                                    body,
                                    "<h4>Raw reply</h4><pre class=reply>{}</pre>",
                                    esc(reply)
                                );
                            }
                            None => body.push_str("<p class=muted>No reply was received.</p>"),
                        }
                        body.push_str("</div>");
                    }
                    body.push_str("</details>");
                }
            }
        }
    }
    Html(page(&format!("Why — {}", run.id), &body)).into_response()
}

/// `GET /outputs?dir=[&file=&page=]`: the datasets, card and meta datasets; one of them
/// paginated and rendered as conversations.
pub(crate) async fn outputs_page(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let query = q.clone().unwrap_or_default();
    let files = runs::output_files(&run);
    let reviews = super::review::load(&run.path);
    let mut body = format!(
        "<p class=tabs><a href=\"{}\">← live</a> <a href=\"{}\">Export accepted rows (JSONL)</a></p>",
        href("/run", &[("dir", &run.id)]),
        href("/review/export", &[("dir", &run.id)]),
    );
    body.push_str("<table><thead><tr><th>File</th><th>Size</th><th></th></tr></thead><tbody>");
    for f in &files {
        let _ = write!(
            body,
            "<tr><td><a href=\"{v}\">{n}</a></td><td class=num>{b}</td><td><a href=\"{d}\" download>download</a></td></tr>",
            v = href("/outputs", &[("dir", &run.id), ("file", &f.name)]),
            n = esc(&f.name),
            b = f.bytes,
            d = href("/download", &[("dir", &run.id), ("file", &f.name)]),
        );
    }
    body.push_str("</tbody></table>");
    let chosen = form_value(&query, "file").or_else(|| {
        files
            .iter()
            .find(|f| f.name.ends_with(".jsonl") && !f.name.contains('/'))
            .map(|f| f.name.clone())
    });
    if let Some(name) = chosen {
        let Some(file) = files.iter().find(|f| f.name == name) else {
            return not_found(&format!("no output file `{name}` in this run"));
        };
        let _ = write!(body, "<h2>{}</h2>", esc(&file.name));
        if file.name.ends_with(".md") {
            let text = std::fs::read_to_string(&file.path).unwrap_or_default();
            let _ = write!(body, "<article class=card>{}</article>", markdown(&text));
        } else if file.name.ends_with(".json") {
            let text = std::fs::read_to_string(&file.path).unwrap_or_default();
            let _ = write!(body, "<pre>{}</pre>", esc(&text));
        } else {
            let page_no: usize = form_value(&query, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            match runs::read_lines(&file.path, page_no * ROWS_PER_PAGE, ROWS_PER_PAGE) {
                Err(e) => {
                    let _ = write!(body, "<p class=error>{}</p>", esc(&e.to_string()));
                }
                Ok((lines, more)) => {
                    let items = super::review::row_items(&file.path);
                    for (i, line) in lines.iter().enumerate() {
                        let n = page_no * ROWS_PER_PAGE + i;
                        let mark = super::review::mark_of(&reviews, &file.name, &items, n, line)
                            .map(String::as_str)
                            .unwrap_or("unreviewed");
                        let _ = write!(
                            body,
                            "<section class=\"row {mark}\" id=\"row-{n}\"><header>Row {n1} · <span class=mark>{mark}</span>{form}</header>{conv}</section>",
                            n1 = n + 1,
                            form = super::review::buttons(
                                &state.token,
                                &run.id,
                                &file.name,
                                n,
                                page_no
                            ),
                            conv = conversation(line),
                        );
                    }
                    body.push_str("<p class=pager>");
                    if page_no > 0 {
                        let prev = (page_no - 1).to_string();
                        let _ = write!(
                            body,
                            "<a href=\"{}\">← previous</a> ",
                            href(
                                "/outputs",
                                &[("dir", &run.id), ("file", &file.name), ("page", &prev)]
                            )
                        );
                    }
                    let _ = write!(body, "page {}", page_no + 1);
                    if more {
                        let next = (page_no + 1).to_string();
                        let _ = write!(
                            body,
                            " <a href=\"{}\">next →</a>",
                            href(
                                "/outputs",
                                &[("dir", &run.id), ("file", &file.name), ("page", &next)]
                            )
                        );
                    }
                    body.push_str("</p>");
                }
            }
        }
    }
    Html(page(&format!("Outputs — {}", run.id), &body)).into_response()
}

/// `GET /download?dir=&file=`: one listed output file, as an attachment.
pub(crate) async fn download(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = match run_of(&state, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let name = form_value(q.as_deref().unwrap_or_default(), "file").unwrap_or_default();
    let Some(file) = runs::output_files(&run)
        .into_iter()
        .find(|f| f.name == name)
    else {
        return not_found(&format!("no output file `{name}` in this run"));
    };
    // Listed files are regular files in the run dir; check again that it stays inside a
    // served folder once resolved (a folder swapped for a symlink since the listing).
    let inside = std::fs::canonicalize(&file.path)
        .is_ok_and(|p| state.roots.iter().any(|root| p.starts_with(root)));
    if !inside {
        return not_found("that file is outside the served folders");
    }
    match std::fs::read(&file.path) {
        Ok(bytes) => {
            let base = name
                .rsplit('/')
                .next()
                .unwrap_or("download")
                .replace('"', "");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{base}\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => not_found(&e.to_string()),
    }
}

/// `GET /assets/app.js`.
pub(crate) async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/app.js"),
    )
}

/// `GET /assets/style.css`.
pub(crate) async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/style.css"),
    )
}

#[cfg(test)]
mod tests {
    use atk_cli::status::{EngineStatus, RunState};

    use super::*;

    #[test]
    fn an_outage_shows_while_the_run_goes_and_is_counted_after() {
        let mut e = EngineStatus {
            label: "small".into(),
            outages: 1,
            outage: Some(atk_cli::status::OutageNow {
                since_ms: atk_state::now_ms(),
                error: "connection refused".into(),
            }),
            ..EngineStatus::default()
        };
        let mut s = StatusSnapshot {
            state: RunState::Running,
            ..StatusSnapshot::default()
        };
        let cell = outage_cell(&s, &e);
        assert!(
            cell.contains("endpoint down") && cell.contains("connection refused"),
            "{cell}"
        );
        // A run that ended is down no longer (its record is from then).
        s.state = RunState::Interrupted;
        assert_eq!(outage_cell(&s, &e), "none now (1 waited out)");
        e.outage = None;
        e.outages = 0;
        s.state = RunState::Running;
        assert_eq!(outage_cell(&s, &e), "none");
    }
}
