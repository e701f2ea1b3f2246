//! Docs that state what the code does: every list of readable formats in the user docs is
//! the readers' own list (`atk_chunk::READ_EXTENSIONS`), and says what happens to other files.

use std::path::Path;

#[test]
fn the_docs_list_exactly_the_formats_the_readers_read() {
    let expected = atk_chunk::READ_EXTENSIONS.join(", ");
    let docs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"));
    let mut lists = 0;
    for name in ["config.md", "quickstart.md", "writing-a-pipeline.md"] {
        // Paragraphs joined into single lines: a list may wrap.
        let text = std::fs::read_to_string(docs.join(name))
            .unwrap()
            .replace("\n", " ");
        for (at, _) in text.match_indices("pdf, docx") {
            let window = &text[at.saturating_sub(200)..(at + 200).min(text.len())];
            assert!(
                window.contains(&expected),
                "docs/{name}: a format list that is not the readers' own ({expected}):\n{window}"
            );
            assert!(
                window.contains("any other file"),
                "docs/{name}: say what happens to other files:\n{window}"
            );
            lists += 1;
        }
    }
    assert!(
        lists >= 3,
        "config.md, quickstart.md and writing-a-pipeline.md each list the formats ({lists} found)"
    );
}
