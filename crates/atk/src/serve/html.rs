//! HTML pieces: escaping, the page frame, conversations, the dataset card.

use std::fmt::Write;

/// Text made safe inside HTML (element content and quoted attributes). Five replacements: a
/// template engine would add a dependency for this alone.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: title, navigation, body. Only the embedded stylesheet and script.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{t} · atk</title><link rel=stylesheet href=\"/assets/style.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <nav><a href=\"/\">Runs</a> <a href=\"/start\">Start / stop</a></nav>\
         <main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// A link to `path` with query `pairs` (values encoded).
pub(crate) fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", super::guard::encode(v)))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// One dataset line as a conversation (ShareGPT `conversations` / `from`+`value`, or
/// `messages` / `role`+`content`), or as pretty JSON when it is neither.
pub(crate) fn conversation(line: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return format!("<pre class=raw>{}</pre>", esc(line));
    };
    let turns = value
        .get("conversations")
        .or_else(|| value.get("messages"))
        .and_then(|t| t.as_array());
    let Some(turns) = turns else {
        let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
        return format!("<pre class=raw>{}</pre>", esc(&pretty));
    };
    let mut out = String::from("<div class=conv>");
    for turn in turns {
        let role = turn
            .get("from")
            .or_else(|| turn.get("role"))
            .and_then(|r| r.as_str())
            .unwrap_or("?");
        let text = turn
            .get("value")
            .or_else(|| turn.get("content"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default();
        let class = match role {
            "system" => "system",
            "human" | "user" => "user",
            _ => "assistant",
        };
        let _ = write!(
            out,
            "<div class=\"turn {class}\"><span class=role>{}</span><div class=text>{}</div></div>",
            esc(role),
            esc(&text)
        );
    }
    out.push_str("</div>");
    out
}

/// The dataset card (Markdown) as HTML; raw HTML in it is shown as text, links keep only
/// their text when they leave the machine (no page loads anything external).
pub(crate) fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let events = Parser::new(text).filter_map(|event| match event {
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        Event::Start(Tag::Link { .. }) | Event::End(TagEnd::Link) => None,
        other => Some(other),
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// A number of seconds as `1h 02m`, `3m 05s` or `12s`.
pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_a_dataset_cannot_become_markup() {
        let line = r#"{"conversations":[{"from":"human","value":"<script>alert(1)</script>"},{"from":"gpt","value":"a \"quoted\" & 'single' reply"}]}"#;
        let html = conversation(line);
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;")
                && html.contains("&quot;quoted&quot; &amp; &#39;single&#39;")
        );
        assert!(html.contains("turn user") && html.contains("turn assistant"));
        // Not a conversation: shown as escaped JSON, and a broken line as escaped text.
        assert!(conversation(r#"{"text":"<b>"}"#).contains("&lt;b&gt;"));
        assert!(conversation("not json <i>").contains("not json &lt;i&gt;"));
    }

    #[test]
    fn the_card_keeps_its_markdown_but_no_raw_html_and_no_external_link_or_image() {
        let html = markdown(
            "# Card\n\n<img src=\"https://x.example/p.png\">\n\n[site](https://x.example) ![i](https://x.example/i.png) **bold**",
        );
        assert!(
            html.contains("<h1>Card</h1>") && html.contains("<strong>bold</strong>"),
            "{html}"
        );
        assert!(!html.contains("<img") && !html.contains("href="), "{html}");
        assert!(html.contains("site"), "a link keeps its text: {html}");
    }
}
