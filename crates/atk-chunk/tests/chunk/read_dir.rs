//! `read_dir` end to end: one test per reader, ids, cache, bad input, snapshots.

use std::io::Write;
use std::path::Path;

use atk_chunk::{ChunkConfig, ChunkSet, Error, Subset, read_dir};

fn write(dir: &Path, rel: &str, bytes: impl AsRef<[u8]>) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn read(dir: &Path, size: usize) -> ChunkSet {
    read_dir(dir, &ChunkConfig::new(size)).unwrap()
}

fn all_text(set: &ChunkSet) -> String {
    set.chunks.iter().map(|c| c.text.as_str()).collect()
}

const PROSE: &str = "The lighthouse keeper wrote the weather in a ledger every evening, \
    noting the wind, the swell and the ships that passed the point.";

fn zip_bytes(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(*name, opts).unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A one-page PDF with one line of Helvetica text, offsets computed so the xref is valid.
fn pdf_bytes(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({line}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[test]
fn txt_and_md_read_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let md = format!("# Keeper\n\n{PROSE}\n\n- {PROSE}\n");
    write(dir.path(), "a.txt", PROSE);
    write(dir.path(), "b.md", &md);
    let set = read(dir.path(), 20);
    let a: String = set
        .chunks
        .iter()
        .filter(|c| c.metadata == "a.txt")
        .map(|c| c.text.as_str())
        .collect();
    let b: String = set
        .chunks
        .iter()
        .filter(|c| c.metadata == "b.md")
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(a, PROSE);
    assert_eq!(b, md.trim());
    assert!(set.chunks.iter().all(|c| c.tokens <= 20));
    assert_eq!(set.report.files_read, 2);
}

#[test]
fn json_items_are_records() {
    let dir = tempfile::tempdir().unwrap();
    let json =
        serde_json::json!([PROSE, {"text": format!("Second: {PROSE}")}, {"title": "no text"}]);
    write(dir.path(), "items.json", json.to_string());
    let set = read(dir.path(), 200);
    assert_eq!(
        set.chunks.len(),
        2,
        "one chunk per record, never spanning two"
    );
    assert!(set.chunks[1].text.starts_with("Second: "));
    assert_eq!(set.report.warnings.len(), 1);
    assert!(
        set.report.warnings[0].starts_with("items.json: item 2"),
        "{:?}",
        set.report.warnings
    );
}

#[test]
fn malformed_jsonl_line_is_skipped_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = format!(
        "{}\n{{\"text\": \"broken\n{}\n",
        serde_json::json!({"text": PROSE}),
        serde_json::json!({"text": PROSE})
    );
    write(dir.path(), "sub/data.jsonl", lines);
    let set = read(dir.path(), 200);
    assert_eq!(set.chunks.len(), 2);
    assert_eq!(set.chunks[0].metadata, "sub/data.jsonl");
    assert_eq!(set.report.warnings.len(), 1);
    let w = &set.report.warnings[0];
    assert!(w.starts_with("sub/data.jsonl: line 2:"), "{w}");
}

#[test]
fn html_gives_visible_text_in_paragraphs() {
    let dir = tempfile::tempdir().unwrap();
    let html = format!(
        "<html><head><title>Hidden title</title><style>body {{}}</style></head><body>\
         <h1>Keeper's log</h1><script>alert('no')</script><p>{PROSE}</p><p>Second <i>para</i>graph here, long enough to stand alone.</p></body></html>"
    );
    write(dir.path(), "page.HTML", html);
    let text = all_text(&read(dir.path(), 200));
    assert_eq!(
        text,
        format!("Keeper's log\n\n{PROSE}\n\nSecond paragraph here, long enough to stand alone.")
    );
}

#[test]
fn pdf_text_is_extracted() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "doc.pdf",
        pdf_bytes("Hello from a tiny PDF file written by hand for this test."),
    );
    let set = read(dir.path(), 200);
    let text = all_text(&set);
    assert!(text.contains("tiny PDF file written by hand"), "{text:?}");
}

#[test]
fn docx_paragraphs_are_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let doc = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>{PROSE}</w:t></w:r></w:p><w:p><w:r><w:t xml:space="preserve">Fish &amp; </w:t></w:r><w:r><w:t>chips were served at the keeper's table on Fridays.</w:t></w:r></w:p>
</w:body></w:document>"#
    );
    let bytes = zip_bytes(&[
        ("[Content_Types].xml", "<Types/>"),
        ("word/document.xml", &doc),
    ]);
    write(dir.path(), "report.docx", bytes);
    assert_eq!(
        all_text(&read(dir.path(), 200)),
        format!("{PROSE}\n\nFish & chips were served at the keeper's table on Fridays.")
    );
}

#[test]
fn epub_spine_order_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let container = r#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#;
    let opf = r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><manifest>
        <item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>
        <item id="c1" href="text/chapter%20one.xhtml" media-type="application/xhtml+xml"/></manifest>
        <spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>"#;
    let ch = |title: &str, body: &str| {
        format!(
            r#"<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head><body><h2>{title}</h2><p>{body}</p></body></html>"#
        )
    };
    let one = ch("Chapter One", PROSE);
    let two = ch(
        "Chapter Two",
        "The second chapter ends the book with a storm over the point.",
    );
    let bytes = zip_bytes(&[
        ("mimetype", "application/epub+zip"),
        ("META-INF/container.xml", container),
        ("OEBPS/content.opf", opf),
        ("OEBPS/text/two.xhtml", &two),
        ("OEBPS/text/chapter one.xhtml", &one),
    ]);
    write(dir.path(), "book.epub", bytes);
    let text = all_text(&read(dir.path(), 200));
    assert_eq!(
        text,
        format!(
            "Chapter One\n\n{PROSE}\n\nChapter Two\n\nThe second chapter ends the book with a storm over the point."
        )
    );
}

#[test]
fn latin1_file_is_decoded_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes =
        b"Le gardien du phare not\xe9 le temps: vent, houle, et les navires \xe0 l'\xe9t\xe9."
            .to_vec();
    bytes.extend(b" Caf\xe9 cr\xe8me.");
    write(dir.path(), "fr.txt", bytes);
    let set = read(dir.path(), 200);
    assert!(
        all_text(&set).contains("noté le temps"),
        "{:?}",
        all_text(&set)
    );
    assert!(all_text(&set).ends_with("Café crème."));
    assert!(
        set.report
            .warnings
            .iter()
            .any(|w| w.contains("windows-1252"))
    );
}

#[test]
fn binary_and_corrupt_files_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.txt", PROSE);
    write(
        dir.path(),
        "image.png",
        [0x89, b'P', b'N', b'G', 0, 0, 0, 13, 1, 2],
    );
    write(dir.path(), "fake.txt", b"abc\0def\0");
    write(dir.path(), "broken.docx", b"not a zip at all");
    write(dir.path(), "broken.pdf", b"%PDF-1.4 garbage");
    write(dir.path(), ".hidden/secret.txt", PROSE);
    write(dir.path(), ".dotfile.txt", PROSE);
    let set = read(dir.path(), 200);
    assert_eq!(set.report.files_read, 1);
    let skipped: Vec<String> = set
        .report
        .skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        skipped,
        ["broken.docx", "broken.pdf", "fake.txt", "image.png"]
    );
    assert!(set.report.skipped.iter().all(|s| !s.reason.is_empty()));
    assert!(set.chunks.iter().all(|c| c.metadata == "good.txt"));
}

#[test]
fn missing_dir_and_no_text_are_errors_naming_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = read_dir(&missing, &ChunkConfig::new(100)).unwrap_err();
    assert!(matches!(err, Error::MissingDir { .. }));
    assert!(err.to_string().contains("nope"));

    write(dir.path(), "bin.dat", [0u8, 1, 2, 3]);
    write(dir.path(), "short.txt", "tiny");
    let err = read_dir(dir.path(), &ChunkConfig::new(100)).unwrap_err();
    let Error::NoInput { skipped, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(skipped.len(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("bin.dat") && msg.contains("short.txt"),
        "{msg}"
    );
}

#[cfg(unix)]
#[test]
fn symlink_loop_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/good.txt", PROSE);
    std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("dangling.txt"))
        .unwrap();
    let set = read(dir.path(), 200);
    assert_eq!(set.chunks.len(), 1);
    assert!(
        set.report.skipped.iter().any(|s| s.reason.contains("loop")),
        "{:?}",
        set.report.skipped
    );
}

#[test]
fn ids_survive_adding_a_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "b.txt",
        format!("{PROSE}\n\n{PROSE}\n\nAnother paragraph that is long enough to be kept."),
    );
    write(dir.path(), "d.txt", PROSE);
    let before = read(dir.path(), 40);
    write(
        dir.path(),
        "a.txt",
        "A new first file, sorted before the others, long enough.",
    );
    write(
        dir.path(),
        "c.txt",
        "A new middle file, sorted between the others, long enough.",
    );
    let after = read(dir.path(), 40);
    let ids = |s: &ChunkSet, f: &str| {
        s.chunks
            .iter()
            .filter(|c| c.metadata == f)
            .map(|c| c.id.clone())
            .collect::<Vec<_>>()
    };
    for f in ["b.txt", "d.txt"] {
        assert_eq!(ids(&before, f), ids(&after, f), "{f}");
    }
    // Identical paragraphs in one file still get distinct ids.
    let b = ids(&after, "b.txt");
    let mut unique = b.clone();
    unique.dedup();
    assert_eq!(unique.len(), b.len());
}

#[test]
fn cache_serves_unchanged_files_and_rereads_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write(&input, "one.txt", PROSE);
    write(&input, "two.txt", format!("Two: {PROSE}"));
    let config = ChunkConfig::new(30).with_cache_dir(cache.path().join("chunks"));
    let first = read_dir(&input, &config).unwrap();
    assert_eq!(first.report.cache_hits, 0);
    let second = read_dir(&input, &config).unwrap();
    assert_eq!(second.report.cache_hits, 2);
    assert_eq!(first.chunks, second.chunks);

    write(&input, "two.txt", format!("Changed: {PROSE}"));
    let third = read_dir(&input, &config).unwrap();
    assert_eq!(third.report.cache_hits, 1, "the changed file is read again");
    assert!(all_text(&third).contains("Changed: "));
    assert!(
        !all_text(&third).contains("Two: "),
        "no stale chunk is served"
    );

    // Other settings never share entries.
    let other = read_dir(&input, &config.clone().with_min_chars(10)).unwrap();
    assert_eq!(other.report.cache_hits, 0);

    // A damaged entry is ignored and rewritten.
    for e in std::fs::read_dir(cache.path().join("chunks")).unwrap() {
        std::fs::write(e.unwrap().path(), b"{ damaged").unwrap();
    }
    let fourth = read_dir(&input, &config).unwrap();
    assert_eq!(fourth.report.cache_hits, 0);
    assert_eq!(fourth.chunks, third.chunks);
    assert_eq!(read_dir(&input, &config).unwrap().report.cache_hits, 2);
}

#[test]
fn the_cache_is_one_pack_per_folder_rebuilt_when_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = dir.path().join("in");
    for i in 0..20 {
        write(
            &input,
            &format!("d{i:02}.txt"),
            format!("Document {i}. {PROSE}"),
        );
    }
    let config = ChunkConfig::new(200).with_cache_dir(&cache);
    let cold = read_dir(&input, &config).unwrap();
    assert_eq!(cold.report.cache_hits, 0);
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one pack, not one file per input: {files:?}"
    );
    let pack = &files[0];

    // One changed file is chunked again, the rest hit.
    write(
        &input,
        "d07.txt",
        "Document seven was rewritten entirely. It now says something else.",
    );
    let changed = read_dir(&input, &config).unwrap();
    assert_eq!(changed.report.cache_hits, 19);
    assert!(all_text(&changed).contains("rewritten entirely"));
    assert!(
        !all_text(&changed).contains("Document 7."),
        "no stale chunk is served"
    );
    let warm = read_dir(&input, &config).unwrap();
    assert_eq!(warm.report.cache_hits, 20);
    assert_eq!(warm.chunks, changed.chunks);

    // A truncated pack loses only the entries it lost; garbage loses everything; both are rebuilt.
    let text = std::fs::read(pack).unwrap();
    std::fs::write(pack, &text[..text.len() / 2]).unwrap();
    let truncated = read_dir(&input, &config).unwrap();
    assert!(
        (1..20).contains(&truncated.report.cache_hits),
        "{}",
        truncated.report.cache_hits
    );
    assert_eq!(truncated.chunks, warm.chunks);
    std::fs::write(pack, b"\xff\x00 not a pack").unwrap();
    let garbage = read_dir(&input, &config).unwrap();
    assert_eq!(garbage.report.cache_hits, 0);
    assert_eq!(garbage.chunks, warm.chunks);
    assert_eq!(
        read_dir(&input, &config).unwrap().report.cache_hits,
        20,
        "rebuilt"
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "no temporary files left behind"
    );
}

#[test]
fn a_cache_inside_the_input_folder_is_not_read_as_input() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "doc.txt", PROSE);
    let config = ChunkConfig::new(200).with_cache_dir(dir.path().join("out/cache"));
    let first = read_dir(dir.path(), &config).unwrap();
    let second = read_dir(dir.path(), &config).unwrap();
    assert_eq!(second.report.files_read, 1);
    assert_eq!(second.report.cache_hits, 1);
    assert_eq!(first.chunks, second.chunks);
}

#[test]
fn subsets_are_seeded_and_in_source_order() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write(
            dir.path(),
            &format!("f{i}.txt"),
            format!("{PROSE}\n\n").repeat(3 + i * 3),
        );
    }
    let config = ChunkConfig::new(40).with_subset(Subset::new(5, 42).spread_across_files(true));
    let a = read_dir(dir.path(), &config).unwrap();
    let b = read_dir(dir.path(), &config).unwrap();
    assert_eq!(a.chunks, b.chunks);
    assert_eq!(a.chunks.len(), 5);
    let files: std::collections::BTreeSet<_> =
        a.chunks.iter().map(|c| c.metadata.clone()).collect();
    assert!(files.len() >= 4, "spread over every file: {files:?}");
    let order: Vec<_> = a
        .chunks
        .iter()
        .map(|c| (c.position.file_index, c.position.chunk_index))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}

/// Compact summaries (id, source, tokens, first and last words) of a small folder.
#[test]
fn snapshot_of_a_small_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "notes/harbour.md",
        format!(
            "# Harbour\n\n{PROSE}\n\nThe harbour master kept a second ledger for debts, tides and rumours of smuggling along the coast.\n"
        ),
    );
    write(
        dir.path(),
        "records.jsonl",
        format!(
            "{}\n{}\n",
            serde_json::json!({"text": PROSE}),
            serde_json::json!({"text": "short"})
        ),
    );
    write(
        dir.path(),
        "page.html",
        format!("<p>{PROSE}</p><p>{PROSE}</p>"),
    );
    let set = read(dir.path(), 32);
    let lines: Vec<String> = set
        .chunks
        .iter()
        .map(|c| {
            let words: Vec<&str> = c.text.split_whitespace().collect();
            format!(
                "{} {} #{} {}t [{} .. {}]",
                c.id,
                c.metadata,
                c.position.chunk_index,
                c.tokens,
                words.first().unwrap_or(&""),
                words.last().unwrap_or(&"")
            )
        })
        .collect();
    insta::assert_yaml_snapshot!(lines);
    insta::assert_snapshot!(set.report.summary(), @"read 3 files: 5 chunks, 131 tokens; 1 short fragment dropped");
}

#[test]
fn batched_reading_hands_over_the_same_chunks_in_bounded_batches() {
    let input = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let files = atk_chunk::FILES_PER_BATCH + 44;
    for i in 0..files {
        write(
            input.path(),
            &format!("doc_{i:04}.txt"),
            format!("Document {i}. {PROSE}"),
        );
    }
    let cfg = ChunkConfig::new(200).with_cache_dir(cache.path());
    let whole = read_dir(input.path(), &cfg).unwrap();
    for pass in ["cache hits", "again"] {
        let mut batches = Vec::new();
        let report = atk_chunk::read_dir_batched(input.path(), &cfg, &mut |b| {
            batches.push(b);
            true
        })
        .unwrap();
        assert_eq!(
            batches.len(),
            2,
            "{pass}: one batch per {} files",
            atk_chunk::FILES_PER_BATCH
        );
        assert_eq!(batches.concat(), whole.chunks, "{pass}");
        assert_eq!(
            (report.chunks, report.total_tokens),
            (whole.report.chunks, whole.report.total_tokens)
        );
        assert_eq!(report.cache_hits, files, "{pass}: served by the pack");
    }
    // A subset streamed across both batches of files is the subset of the whole read.
    for spread in [false, true] {
        let cfg = cfg
            .clone()
            .with_subset(Subset::new(37, 5).spread_across_files(spread));
        let whole = read_dir(input.path(), &cfg).unwrap();
        let mut batches = Vec::new();
        let report = atk_chunk::read_dir_batched(input.path(), &cfg, &mut |b| {
            batches.push(b);
            true
        })
        .unwrap();
        assert_eq!(whole.chunks.len(), 37);
        assert_eq!(batches.concat(), whole.chunks, "spread {spread}");
        assert_eq!(
            (report.chunks, report.total_tokens),
            (whole.report.chunks, whole.report.total_tokens)
        );
    }
    // Stopping early reads no further batch.
    let mut seen = 0;
    atk_chunk::read_dir_batched(input.path(), &cfg, &mut |_| {
        seen += 1;
        false
    })
    .unwrap();
    assert_eq!(seen, 1);
}
