//! Readers: the records of one file, chosen by its extension.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::decode::{NotText, decode};
use crate::html::html_to_text;

/// The text found in one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Extracted {
    /// Texts chunked independently (one for most formats; one per JSON item / JSONL line).
    pub records: Vec<String>,
    /// Problems that did not stop the read (bad JSONL line, guessed encoding, ...).
    pub warnings: Vec<String>,
}

/// Which reader handles a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
    Jsonl,
    Html,
    Pdf,
    Docx,
    Epub,
    /// Unknown extension: kept only if it is valid UTF-8 text.
    Unknown,
}

/// Every extension with a reader of its own, in the order docs list them. A file with any
/// other extension (or none) is read as plain text when it is UTF-8 and not binary.
pub const READ_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "rst", "json", "jsonl", "ndjson", "html", "htm", "xhtml",
    "pdf", "docx", "epub",
];

impl Format {
    /// The reader for a (lower-cased) extension.
    pub(crate) fn from_extension(ext: &str) -> Self {
        match ext {
            "txt" | "text" | "md" | "markdown" | "rst" => Self::Text,
            "json" => Self::Json,
            "jsonl" | "ndjson" => Self::Jsonl,
            "html" | "htm" | "xhtml" => Self::Html,
            "pdf" => Self::Pdf,
            "docx" => Self::Docx,
            "epub" => Self::Epub,
            _ => Self::Unknown,
        }
    }
}

/// Extracts the records of a file; `Err` is the reason the file is skipped.
pub(crate) fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, String> {
    match format {
        Format::Text => text(bytes),
        Format::Json => json(bytes),
        Format::Jsonl => jsonl(bytes),
        Format::Html => {
            let mut e = text(bytes)?;
            e.records = e.records.iter().map(|h| html_to_text(h)).collect();
            Ok(e)
        }
        Format::Pdf => pdf(bytes),
        Format::Docx => docx(bytes),
        Format::Epub => epub(bytes),
        Format::Unknown => match std::str::from_utf8(bytes) {
            Ok(s) if !crate::decode::looks_binary(bytes) => Ok(Extracted {
                records: vec![s.to_string()],
                warnings: Vec::new(),
            }),
            _ => Err("binary or non-UTF-8 file with an unknown extension".into()),
        },
    }
}

fn decoded(bytes: &[u8]) -> Result<(String, Vec<String>), String> {
    match decode(bytes) {
        Ok(d) => {
            let warnings = d
                .encoding
                .map(|e| vec![format!("not UTF-8; decoded as {e}")])
                .unwrap_or_default();
            Ok((d.text, warnings))
        }
        Err(NotText::Binary) => Err("binary file (NUL bytes in the first KB)".into()),
    }
}

fn text(bytes: &[u8]) -> Result<Extracted, String> {
    let (text, warnings) = decoded(bytes)?;
    Ok(Extracted {
        records: vec![text],
        warnings,
    })
}

/// The text of one JSON item: a string, or an object's `text` string.
fn item_text(v: &serde_json::Value) -> Option<&str> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(o) => o.get("text").and_then(|t| t.as_str()),
        _ => None,
    }
}

fn json(bytes: &[u8]) -> Result<Extracted, String> {
    let (text, mut warnings) = decoded(bytes)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match &value {
        serde_json::Value::Array(items) => items.as_slice(),
        v @ serde_json::Value::Object(_) => std::slice::from_ref(v),
        _ => return Err("JSON is neither an array nor an object with `text`".into()),
    };
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item_text(item) {
            Some(t) => records.push(t.to_string()),
            None => warnings.push(format!(
                "item {i}: not a string or an object with a `text` string; skipped"
            )),
        }
    }
    Ok(Extracted { records, warnings })
}

fn jsonl(bytes: &[u8]) -> Result<Extracted, String> {
    let (text, mut warnings) = decoded(bytes)?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => match item_text(&v) {
                Some(t) => records.push(t.to_string()),
                None => warnings.push(format!("line {}: no `text` string; skipped", i + 1)),
            },
            Err(e) => warnings.push(format!("line {}: malformed JSON ({e}); skipped", i + 1)),
        }
    }
    Ok(Extracted { records, warnings })
}

fn pdf(bytes: &[u8]) -> Result<Extracted, String> {
    // pdf-extract panics on some malformed files; a bad file must not end the run.
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(Extracted {
            records: vec![text],
            warnings: Vec::new(),
        }),
        Ok(Err(e)) => Err(format!("unreadable PDF: {e}")),
        Err(_) => Err("unreadable PDF (the PDF reader gave up on it)".into()),
    }
}

type Zip<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;

fn open_zip(bytes: &[u8]) -> Result<Zip<'_>, String> {
    zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("corrupt zip container: {e}"))
}

fn zip_entry(zip: &mut Zip<'_>, name: &str) -> Result<String, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("missing `{name}`: {e}"))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| format!("cannot read `{name}`: {e}"))?;
    String::from_utf8(buf).map_err(|_| format!("`{name}` is not UTF-8"))
}

fn docx(bytes: &[u8]) -> Result<Extracted, String> {
    let mut zip = open_zip(bytes)?;
    let xml = zip_entry(&mut zip, "word/document.xml")?;
    Ok(Extracted {
        records: vec![docx_text(&xml)?],
        warnings: Vec::new(),
    })
}

/// The text of WordprocessingML: `w:p` paragraphs separated by blank lines, `w:t` runs,
/// `w:tab` as a tab, `w:br`/`w:cr` as a line break.
fn docx_text(xml: &str) -> Result<String, String> {
    let mut reader = Reader::from_str(xml);
    let mut paragraphs: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_text = false;
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("corrupt document.xml: {e}"))?
        {
            Event::Start(e) => match e.local_name().as_ref() {
                "t" => in_text = true,
                "tab" => cur.push('\t'),
                "br" | "cr" => cur.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => cur.push('\t'),
                "br" | "cr" => cur.push('\n'),
                "p" => paragraphs.push(String::new()),
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => paragraphs.push(std::mem::take(&mut cur)),
                _ => {}
            },
            Event::Text(t) if in_text => cur.push_str(&t.xml10_content()),
            Event::CData(t) if in_text => cur.push_str(&t),
            Event::GeneralRef(r) if in_text => cur.push_str(&resolve_ref(&r)),
            Event::Eof => break,
            _ => {}
        }
    }
    if !cur.is_empty() {
        paragraphs.push(cur);
    }
    let paragraphs: Vec<&str> = paragraphs
        .iter()
        .map(|p| p.trim_end())
        .filter(|p| !p.trim().is_empty())
        .collect();
    Ok(paragraphs.join("\n\n"))
}

/// The text of an XML entity or character reference.
fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> String {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return c.to_string();
    }
    let name: &str = r;
    match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => "\u{a0}",
        _ => "",
    }
    .to_string()
}

fn epub(bytes: &[u8]) -> Result<Extracted, String> {
    let mut zip = open_zip(bytes)?;
    let container = zip_entry(&mut zip, "META-INF/container.xml")?;
    let opf_path =
        first_attr(&container, "rootfile", "full-path").ok_or("container.xml names no rootfile")?;
    let opf = zip_entry(&mut zip, &opf_path)?;
    let base = opf_path
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_default();
    let (manifest, spine) = opf_manifest_and_spine(&opf)?;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for idref in spine {
        let Some(href) = manifest.iter().find(|(id, _)| *id == idref).map(|(_, h)| h) else {
            warnings.push(format!(
                "spine item `{idref}` is not in the manifest; skipped"
            ));
            continue;
        };
        let path = resolve_path(
            &base,
            &percent_decode(href.split('#').next().unwrap_or(href)),
        );
        match zip_entry(&mut zip, &path) {
            Ok(xhtml) => records.push(html_to_text(&xhtml)),
            Err(e) => warnings.push(format!("chapter {path}: {e}; skipped")),
        }
    }
    // Chapters are parts of one text: join them so short chapters are not dropped as records.
    let text = crate::chunk::extracted_text(&records);
    Ok(Extracted {
        records: vec![text],
        warnings,
    })
}

/// The value of attribute `attr` on the first element named `element` (local names).
fn first_attr(xml: &str, element: &str, attr: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == element => {
                return e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == attr)
                    .and_then(|a| {
                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .ok()
                            .map(|v| v.into_owned())
                    });
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Manifest `(id, href)` pairs and spine `idref`s of an OPF package document.
type Manifest = Vec<(String, String)>;

fn opf_manifest_and_spine(opf: &str) -> Result<(Manifest, Vec<String>), String> {
    let mut reader = Reader::from_str(opf);
    let mut manifest = Vec::new();
    let mut spine = Vec::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("corrupt OPF package: {e}"))?
        {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == name)
                        .and_then(|a| {
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .ok()
                                .map(|v| v.into_owned())
                        })
                };
                match e.local_name().as_ref() {
                    "item" => {
                        if let (Some(id), Some(href)) = (attr("id"), attr("href")) {
                            manifest.push((id, href));
                        }
                    }
                    "itemref" => {
                        if let Some(idref) = attr("idref") {
                            spine.push(idref);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((manifest, spine))
}

/// `base` + `href`, with `.` and `..` segments resolved (zip paths use `/`).
fn resolve_path(base: &str, href: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in base.split('/').chain(href.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Decodes `%XX` escapes in an href (EPUB hrefs are URLs).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listed_extensions_are_exactly_those_with_a_reader() {
        for ext in super::READ_EXTENSIONS {
            assert_ne!(
                super::Format::from_extension(ext),
                super::Format::Unknown,
                "{ext}"
            );
        }
        for other in ["csv", "py", "", "yaml", "rtf"] {
            assert_eq!(
                super::Format::from_extension(other),
                super::Format::Unknown,
                "{other}"
            );
        }
    }

    use super::*;

    #[test]
    fn json_and_jsonl_records_with_warnings() {
        let j = extract(
            Format::Json,
            br#"["one", {"text": "two"}, {"title": "x"}, 3]"#,
        )
        .unwrap();
        assert_eq!(j.records, ["one", "two"]);
        assert_eq!(j.warnings.len(), 2);
        let l = extract(
            Format::Jsonl,
            b"{\"text\": \"a\"}\n{broken\n\n{\"text\": \"b\"}\n",
        )
        .unwrap();
        assert_eq!(l.records, ["a", "b"]);
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].starts_with("line 2:"), "{:?}", l.warnings);
    }

    #[test]
    fn docx_xml_paragraphs_runs_and_entities() {
        let xml = r#"<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>Hello</w:t></w:r><w:r><w:t xml:space="preserve"> world &amp; co</w:t></w:r></w:p><w:p/><w:p><w:r><w:t>Second</w:t><w:tab/><w:t>para</w:t></w:r></w:p></w:body></w:document>"#;
        assert_eq!(docx_text(xml).unwrap(), "Hello world & co\n\nSecond\tpara");
    }

    #[test]
    fn paths_resolve_and_unknown_binary_is_refused() {
        assert_eq!(
            resolve_path("OEBPS/", "../Text/ch%201.xhtml"),
            "Text/ch%201.xhtml"
        );
        assert_eq!(percent_decode("ch%201.xhtml"), "ch 1.xhtml");
        assert!(extract(Format::Unknown, b"\x00\x01\x02").is_err());
        assert!(extract(Format::Unknown, b"plain words").is_ok());
    }
}
