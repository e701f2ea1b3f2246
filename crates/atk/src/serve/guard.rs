//! Who gets in: the `Host` check (DNS rebinding), the token (query once, then an HttpOnly
//! SameSite=Strict cookie), POSTs carrying the token in a header or form field (a cookie
//! alone changes nothing: no cross-site request forgery), headers that keep every page from
//! loading anything external, and API keys scrubbed from every response.

use std::sync::Arc;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The cookie holding the token.
const COOKIE: &str = "atk_token";
/// The header a script or tool may send the token in.
pub(crate) const TOKEN_HEADER: &str = "x-atk-token";
/// Largest request body read (forms are small).
const MAX_BODY: usize = 1 << 20;
/// Largest response scrubbed for secrets in memory (datasets pages are paginated).
const MAX_SCRUB: usize = 64 << 20;

/// A fresh random token (128 bits, hex).
pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without an early exit (the time taken tells nothing about how much matched).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of `name` in a query string or urlencoded form.
pub(crate) fn form_value(query: &str, name: &str) -> Option<String> {
    url_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The decoded `key=value` pairs of a query string or urlencoded form.
pub(crate) fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding with `+` as space (application/x-www-form-urlencoded).
fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}

fn cookie_token(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let body = format!("<!doctype html><meta charset=utf-8><title>atk serve</title><p>{why}</p>");
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut r);
    r
}

/// Headers on every response: nothing external, no framing, no referrer (URLs may hold
/// the token), no sniffing.
fn secure_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The middleware in front of every route.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !state.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This server answers only to the address it printed (Host header refused).",
        );
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD && method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only.");
    }
    let query = request.uri().query().unwrap_or_default().to_string();
    let from_query = form_value(&query, "token");
    let from_header = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_cookie = cookie_token(&request);
    let ok = |t: &Option<String>| t.as_deref().is_some_and(|t| same(t, &state.token));

    let request = if method == Method::POST {
        // A state change: the token must come with the request itself, not only the cookie.
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "Request too large.");
        };
        let from_form = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|b| form_value(b, "token"));
        if !(ok(&from_header) || ok(&from_form)) {
            let status = if from_header.is_none() && from_form.is_none() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            return refuse(
                status,
                "A change needs the token in the form or the x-atk-token header.",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        if ok(&from_query) {
            // Set the cookie and drop the token from the address bar (and from history).
            let path = request.uri().path();
            let rest: Vec<String> = url_pairs(&query)
                .into_iter()
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| format!("{}={}", encode(&k), encode(&v)))
                .collect();
            let location = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", rest.join("&"))
            };
            let mut r = Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, location)
                .header(
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                        state.token
                    ),
                )
                .body(Body::empty())
                .unwrap_or_default();
            secure_headers(&mut r);
            return r;
        }
        if !(ok(&from_cookie) || ok(&from_header)) {
            let status = if from_cookie.is_none() && from_header.is_none() && from_query.is_none() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            return refuse(
                status,
                "Open the URL atk serve printed (it carries the token).",
            );
        }
        request
    };
    let mut response = next.run(request).await;
    secure_headers(&mut response);
    if state.secrets.is_empty() {
        return response;
    }
    scrub(response, &state.secrets).await
}

/// The response with every secret value replaced.
async fn scrub(response: Response, secrets: &[String]) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_SCRUB).await else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "Response too large.");
    };
    let bytes = match std::str::from_utf8(&bytes) {
        Ok(text) if secrets.iter().any(|s| text.contains(s.as_str())) => {
            let mut text = text.to_string();
            for s in secrets {
                text = text.replace(s.as_str(), "[redacted]");
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(text)
        }
        _ => bytes,
    };
    Response::from_parts(parts, Body::from(bytes))
}

/// Percent-encoding for a query value.
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_queries_decode_and_tokens_compare_whole() {
        let q = "dir=out%2Fdemo&file=a+b.jsonl&token=t%3D1&empty=";
        assert_eq!(form_value(q, "dir").as_deref(), Some("out/demo"));
        assert_eq!(form_value(q, "file").as_deref(), Some("a b.jsonl"));
        assert_eq!(form_value(q, "token").as_deref(), Some("t=1"));
        assert_eq!(form_value(q, "empty").as_deref(), Some(""));
        assert_eq!(form_value(q, "missing"), None);
        assert!(
            same("abc", "abc") && !same("abc", "abd") && !same("abc", "abcd") && !same("", "a")
        );
        let t = random_token();
        assert_eq!(t.len(), 32);
        assert_ne!(t, random_token());
        assert_eq!(
            form_value(&format!("x={}", encode("a/b c&d")), "x").as_deref(),
            Some("a/b c&d")
        );
    }
}
