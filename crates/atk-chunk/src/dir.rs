//! Reading a folder: walk, read and chunk files in parallel, assemble in path order.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use crate::cache;
use crate::chunk::{chunk_records, name_chunks, Chunked};
use crate::read::{extract, Format};
use crate::splitter::Splitter;
use crate::subset::take_subset;
use crate::{ChunkConfig, ChunkSet, Error, ReadReport, Skipped};

/// One file found by the walk.
struct Source {
    path: PathBuf,
    /// Relative path, `/`-separated: the chunks' `metadata`.
    rel: String,
}

/// What became of one file.
enum Outcome {
    Read { chunked: Chunked, warnings: Vec<String>, cache_hit: bool },
    Skipped(String),
}

/// Reads every file under `input_dir` (recursively, hidden files and folders skipped,
/// symlinks followed with loop detection), chunks it, and returns the chunks in sorted
/// relative-path order with a report of what was read, skipped and dropped.
///
/// Errors only when the directory is missing or unreadable, or when nothing in it yields
/// a chunk; a bad file is skipped with its reason in [`ReadReport::skipped`].
pub fn read_dir(input_dir: &Path, config: &ChunkConfig) -> Result<ChunkSet, Error> {
    match std::fs::metadata(input_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingDir { dir: input_dir.to_path_buf() });
        }
        Err(source) => return Err(Error::Unreadable { dir: input_dir.to_path_buf(), source }),
        Ok(m) if !m.is_dir() => return Err(Error::NotADir { dir: input_dir.to_path_buf() }),
        Ok(_) => {}
    }
    let mut report = ReadReport::default();
    let cache_dir = config.cache_dir.as_deref().and_then(|d| match std::fs::create_dir_all(d) {
        Ok(()) => Some(d),
        Err(e) => {
            report.warnings.push(format!("chunk cache {} unusable ({e}); reading without it", d.display()));
            None
        }
    });
    // A cache inside the input folder must not be read back as input.
    let exclude = cache_dir.and_then(|d| std::fs::canonicalize(d).ok());
    let mut sources = walk(input_dir, exclude.as_deref(), &mut report)?;
    sources.sort_by(|a, b| a.rel.cmp(&b.rel));

    let splitter = Splitter::new(config.tokenizer.bpe(), config.chunk_size);
    let outcomes: Vec<Outcome> =
        sources.par_iter().map(|s| process(&s.path, config, &splitter, cache_dir)).collect();

    let mut chunks = Vec::new();
    let mut empty = Vec::new();
    for (source, outcome) in sources.iter().zip(outcomes) {
        match outcome {
            Outcome::Skipped(reason) => {
                tracing::debug!(path = %source.path.display(), %reason, "skipped");
                report.skipped.push(Skipped { path: source.path.clone(), reason });
            }
            Outcome::Read { chunked, warnings, cache_hit } => {
                let file_index = report.files_read;
                report.files_read += 1;
                report.cache_hits += usize::from(cache_hit);
                report.dropped_fragments += chunked.dropped;
                report.warnings.extend(warnings.into_iter().map(|w| format!("{}: {w}", source.rel)));
                if chunked.chunks.is_empty() {
                    let reason = if chunked.dropped > 0 {
                        format!("only text under {} characters (dropped)", config.min_chars)
                    } else {
                        "no text".to_string()
                    };
                    empty.push(Skipped { path: source.path.clone(), reason });
                }
                chunks.extend(name_chunks(&source.rel, file_index, chunked.chunks));
            }
        }
    }
    if chunks.is_empty() {
        let mut skipped = report.skipped;
        skipped.extend(empty);
        return Err(Error::NoInput { dir: input_dir.to_path_buf(), skipped });
    }
    Ok(finish(chunks, report, config))
}

/// Chunks texts a pipeline already has: `(source name, text)` pairs, each one source.
/// The name becomes the chunks' `metadata` and part of their ids. No cache, no files.
pub fn chunk_texts(texts: &[(String, String)], config: &ChunkConfig) -> ChunkSet {
    let splitter = Splitter::new(config.tokenizer.bpe(), config.chunk_size);
    let chunked: Vec<Chunked> = texts
        .par_iter()
        .map(|(_, text)| chunk_records(std::slice::from_ref(text), &splitter, config.min_chars))
        .collect();
    let mut report = ReadReport { files_read: texts.len(), ..ReadReport::default() };
    let mut chunks = Vec::new();
    for (i, ((name, _), c)) in texts.iter().zip(chunked).enumerate() {
        report.dropped_fragments += c.dropped;
        chunks.extend(name_chunks(name, i, c.chunks));
    }
    finish(chunks, report, config)
}

/// Applies the subset and fills in the chunk and token totals.
fn finish(chunks: Vec<crate::Chunk>, mut report: ReadReport, config: &ChunkConfig) -> ChunkSet {
    let chunks = match &config.subset {
        Some(s) => take_subset(chunks, s),
        None => chunks,
    };
    report.chunks = chunks.len();
    report.total_tokens = chunks.iter().map(|c| c.tokens).sum();
    ChunkSet { chunks, report }
}

/// The files under `root` (hidden entries and the `exclude` directory left out); walk
/// problems become skipped entries.
fn walk(root: &Path, exclude: Option<&Path>, report: &mut ReadReport) -> Result<Vec<Source>, Error> {
    let mut out = Vec::new();
    let walker = WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| {
        if e.depth() == 0 {
            return true;
        }
        if e.file_name().to_string_lossy().starts_with('.') {
            return false;
        }
        match exclude {
            Some(x) if e.file_type().is_dir() => std::fs::canonicalize(e.path()).map_or(true, |p| p != x),
            _ => true,
        }
    });
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                if e.depth() == 0 {
                    let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk failed"));
                    return Err(Error::Unreadable { dir: root.to_path_buf(), source });
                }
                let reason = match e.loop_ancestor() {
                    Some(a) => format!("symlink loop back to {}", a.display()),
                    None => format!("cannot read: {e}"),
                };
                report.skipped.push(Skipped { path, reason });
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        out.push(Source { path: entry.into_path(), rel });
    }
    Ok(out)
}

/// Reads, extracts and chunks one file, through the cache when there is one.
fn process(path: &Path, config: &ChunkConfig, splitter: &Splitter, cache_dir: Option<&Path>) -> Outcome {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Outcome::Skipped(format!("cannot read: {e}")),
    };
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let key = cache_dir.map(|_| cache::key(config, &ext, &bytes));
    if let (Some(dir), Some(key)) = (cache_dir, &key)
        && let Some((chunked, warnings)) = cache::load(dir, key)
    {
        return Outcome::Read { chunked, warnings, cache_hit: true };
    }
    let extracted = match extract(Format::from_extension(&ext), &bytes) {
        Ok(x) => x,
        Err(reason) => return Outcome::Skipped(reason),
    };
    let chunked = chunk_records(&extracted.records, splitter, config.min_chars);
    let mut warnings = extracted.warnings;
    if let (Some(dir), Some(key)) = (cache_dir, &key)
        && let Err(e) = cache::store(dir, key, &chunked, &warnings)
    {
        warnings.push(format!("could not write chunk cache entry: {e}"));
    }
    Outcome::Read { chunked, warnings, cache_hit: false }
}
