//! Reading a folder: walk, read and chunk files in parallel, assemble in path order.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use crate::cache;
use crate::chunk::{Chunked, chunk_records, name_chunks};
use crate::read::{Format, extract};
use crate::splitter::Splitter;
use crate::subset::{Picker, take_subset};
use crate::{ChunkConfig, ChunkSet, Error, ReadReport, Skipped};

/// One file found by the walk.
struct Source {
    path: PathBuf,
    /// Relative path, `/`-separated: the chunks' `metadata`.
    rel: String,
}

/// What became of one file.
enum Outcome<'p> {
    /// Chunked, or served from the cache; `cached` is its cache key and entry JSON.
    Read {
        chunked: Chunked,
        warnings: Vec<String>,
        cache_hit: bool,
        cached: Option<(String, Cow<'p, str>)>,
    },
    Skipped(String),
}

/// A file read and extracted, waiting to be chunked.
enum Stage<'p> {
    Done(Outcome<'p>),
    Extracted {
        records: Vec<String>,
        warnings: Vec<String>,
        key: Option<String>,
    },
}

/// Files read (in parallel) per batch by [`read_dir_batched`]: bounds the text and chunks
/// held at once.
pub const FILES_PER_BATCH: usize = 256;

/// Bytes of input files per batch at most (a batch still takes at least one file): 256 files
/// of 1000 JSONL records each held 256 k chunks at once, a 762 MB peak at 1 M items; 16 MiB
/// batches still peaked at 262 MB.
pub const BYTES_PER_BATCH: u64 = 4 << 20;

/// Splits `sources` into batches of at most [`FILES_PER_BATCH`] files and, past the first
/// file, [`BYTES_PER_BATCH`] bytes (sizes from the file system; an unreadable size counts 0
/// and the read reports the file).
fn batches(sources: &[Source]) -> Vec<&[Source]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0_u64);
    for (i, source) in sources.iter().enumerate() {
        let size = std::fs::metadata(&source.path).map_or(0, |m| m.len());
        if i > start && (i - start == FILES_PER_BATCH || bytes + size > BYTES_PER_BATCH) {
            out.push(&sources[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sources.len() {
        out.push(&sources[start..]);
    }
    out
}

/// Reads every file under `input_dir` (recursively, hidden files and folders skipped,
/// symlinks followed with loop detection), chunks it, and returns the chunks in sorted
/// relative-path order with a report of what was read, skipped and dropped.
///
/// Errors only when the directory is missing or unreadable, or when nothing in it yields
/// a chunk; a bad file is skipped with its reason in [`ReadReport::skipped`].
pub fn read_dir(input_dir: &Path, config: &ChunkConfig) -> Result<ChunkSet, Error> {
    let mut chunks = Vec::new();
    let report = read_batches(input_dir, config, &mut |batch| {
        chunks.extend(batch);
        true
    })?;
    Ok(finish(chunks, report, config))
}

/// [`read_dir`] in bounded memory: hands the chunks to `sink` in source order, a batch of
/// files ([`FILES_PER_BATCH`], at most [`BYTES_PER_BATCH`]) at a time, as they are made; returns the report once every
/// file is read. `sink` returns `false` to stop early (the report then covers what was read).
///
/// With a subset configured every chunk must be seen before the subset is known: the chunks
/// stream through a picker holding at most the subset's size of them, and the subset is
/// handed over in batches once every file is read (memory grows with the subset, not the
/// corpus).
pub fn read_dir_batched(
    input_dir: &Path,
    config: &ChunkConfig,
    sink: &mut dyn FnMut(Vec<crate::Chunk>) -> bool,
) -> Result<ReadReport, Error> {
    let Some(subset) = &config.subset else {
        return read_batches(input_dir, config, sink);
    };
    let mut picker = Picker::new(subset);
    let mut report = read_batches(input_dir, config, &mut |batch| {
        picker.offer(batch);
        true
    })?;
    let picked = picker.finish();
    report.chunks = picked.len();
    report.total_tokens = picked.iter().map(|c| c.tokens).sum();
    let mut chunks = picked.into_iter();
    loop {
        let batch: Vec<_> = chunks.by_ref().take(FILES_PER_BATCH * 4).collect();
        if batch.is_empty() || !sink(batch) {
            break;
        }
    }
    Ok(report)
}

/// Errors when `input_dir` is missing, unreadable or not a folder.
fn check_input_dir(input_dir: &Path) -> Result<(), Error> {
    let dir = || input_dir.to_path_buf();
    match std::fs::metadata(input_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::MissingDir { dir: dir() }),
        Err(source) => Err(Error::Unreadable { dir: dir(), source }),
        Ok(m) if !m.is_dir() => Err(Error::NotADir { dir: dir() }),
        Ok(_) => Ok(()),
    }
}

/// The files [`read_dir`] would read under `input_dir`: `(path, relative path)` in the order
/// they are read (the cache folder left out). Errors when the folder is missing or unreadable.
pub(crate) fn list_files(
    input_dir: &Path,
    config: &ChunkConfig,
) -> Result<Vec<(PathBuf, String)>, Error> {
    check_input_dir(input_dir)?;
    let exclude = config
        .cache_dir
        .as_deref()
        .and_then(|d| std::fs::canonicalize(d).ok());
    let mut sources = walk(input_dir, exclude.as_deref(), &mut ReadReport::default())?;
    sources.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(sources.into_iter().map(|s| (s.path, s.rel)).collect())
}

/// The walk, the cache and the batches behind [`read_dir`] and [`read_dir_batched`]; fills
/// in the chunk and token totals of what it handed to `sink` (no subset taken).
fn read_batches(
    input_dir: &Path,
    config: &ChunkConfig,
    sink: &mut dyn FnMut(Vec<crate::Chunk>) -> bool,
) -> Result<ReadReport, Error> {
    check_input_dir(input_dir)?;
    let mut report = ReadReport::default();
    let cache_dir = config
        .cache_dir
        .as_deref()
        .and_then(|d| match std::fs::create_dir_all(d) {
            Ok(()) => Some(d),
            Err(e) => {
                report.warnings.push(format!(
                    "chunk cache {} unusable ({e}); reading without it",
                    d.display()
                ));
                None
            }
        });
    // A cache inside the input folder must not be read back as input.
    let exclude = cache_dir.and_then(|d| std::fs::canonicalize(d).ok());
    let mut sources = walk(input_dir, exclude.as_deref(), &mut report)?;
    sources.sort_by(|a, b| a.rel.cmp(&b.rel));

    let pack = cache_dir.map(|d| cache::Pack::open(d, input_dir, config));
    let mut writer = match pack.as_ref().map(cache::Pack::writer).transpose() {
        Ok(w) => w,
        Err(e) => {
            report
                .warnings
                .push(format!("could not write the chunk cache: {e}"));
            None
        }
    };
    // Expected cache hits decide whether the BPE is loaded up front (see `process_all`).
    let expect_misses = pack.as_ref().is_none_or(|p| p.len() < sources.len());

    let mut empty = Vec::new();
    let mut stopped = false;
    for batch in batches(&sources) {
        let outcomes = process_all(batch, config, pack.as_ref(), expect_misses);
        let mut chunks = Vec::new();
        for (source, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Skipped(reason) => {
                    tracing::debug!(path = %source.path.display(), %reason, "skipped");
                    report.skipped.push(Skipped {
                        path: source.path.clone(),
                        reason,
                    });
                }
                Outcome::Read {
                    chunked,
                    warnings,
                    cache_hit,
                    cached,
                } => {
                    if let (Some(w), Some((k, json))) = (writer.as_mut(), &cached)
                        && let Err(e) = w.add(k, json, cache_hit)
                    {
                        report
                            .warnings
                            .push(format!("could not write the chunk cache: {e}"));
                        writer = None;
                    }
                    let file_index = report.files_read;
                    report.files_read += 1;
                    report.cache_hits += usize::from(cache_hit);
                    report.dropped_fragments += chunked.dropped;
                    report
                        .warnings
                        .extend(warnings.into_iter().map(|w| format!("{}: {w}", source.rel)));
                    if chunked.chunks.is_empty() {
                        let reason = if chunked.dropped > 0 {
                            format!("only text under {} characters (dropped)", config.min_chars)
                        } else {
                            "no text".to_string()
                        };
                        empty.push(Skipped {
                            path: source.path.clone(),
                            reason,
                        });
                    }
                    chunks.extend(name_chunks(&source.rel, file_index, chunked.chunks));
                }
            }
        }
        report.chunks += chunks.len();
        report.total_tokens += chunks.iter().map(|c| c.tokens).sum::<usize>();
        if !chunks.is_empty() && !sink(chunks) {
            stopped = true;
            break;
        }
    }
    if let Some(w) = writer.filter(|_| !stopped) {
        match w.finish() {
            Ok(written) => tracing::debug!(written, "chunk cache pack"),
            Err(e) => report
                .warnings
                .push(format!("could not write the chunk cache: {e}")),
        }
    }
    if report.chunks == 0 {
        let mut skipped = report.skipped;
        skipped.extend(empty);
        return Err(Error::NoInput {
            dir: input_dir.to_path_buf(),
            skipped,
        });
    }
    Ok(report)
}

/// Chunks texts a pipeline already has: `(source name, text)` pairs, each one source.
/// The name becomes the chunks' `metadata` and part of their ids. No cache, no files.
pub fn chunk_texts(texts: &[(String, String)], config: &ChunkConfig) -> ChunkSet {
    let splitter = Splitter::new(config.tokenizer, config.chunk_size);
    let chunked: Vec<Chunked> = texts
        .par_iter()
        .map(|(_, text)| chunk_records(std::slice::from_ref(text), &splitter, config.min_chars))
        .collect();
    let mut report = ReadReport {
        files_read: texts.len(),
        ..ReadReport::default()
    };
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
fn walk(
    root: &Path,
    exclude: Option<&Path>,
    report: &mut ReadReport,
) -> Result<Vec<Source>, Error> {
    let mut out = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            if e.file_name().to_string_lossy().starts_with('.') {
                return false;
            }
            match exclude {
                Some(x) if e.file_type().is_dir() => {
                    std::fs::canonicalize(e.path()).map_or(true, |p| p != x)
                }
                _ => true,
            }
        });
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                if e.depth() == 0 {
                    let source = e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed"));
                    return Err(Error::Unreadable {
                        dir: root.to_path_buf(),
                        source,
                    });
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
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push(Source {
            path: entry.into_path(),
            rel,
        });
    }
    Ok(out)
}

/// Reads, extracts and chunks every file, through the cache when there is one.
///
/// Two parallel passes: read, hash and extract (cache hits stop there), then chunk.
fn process_all<'p>(
    sources: &[Source],
    config: &ChunkConfig,
    pack: Option<&'p cache::Pack>,
    expect_misses: bool,
) -> Vec<Outcome<'p>> {
    // The tokenizer takes ~20 ms of CPU to load (release): when some file will need chunking, load
    // it while the files are read; when the pack likely serves every file, do not load it.
    let (staged, ()) = rayon::join(
        || -> Vec<Stage<'p>> {
            sources
                .par_iter()
                .map(|s| read_one(&s.path, config, pack))
                .collect()
        },
        || {
            if expect_misses {
                let _ = config.tokenizer.bpe();
            }
        },
    );
    if staged.iter().all(|s| matches!(s, Stage::Done(_))) {
        return staged
            .into_iter()
            .filter_map(|s| {
                if let Stage::Done(o) = s {
                    Some(o)
                } else {
                    None
                }
            })
            .collect();
    }
    let splitter = Splitter::new(config.tokenizer, config.chunk_size);
    staged
        .into_par_iter()
        .map(|stage| match stage {
            Stage::Done(outcome) => outcome,
            Stage::Extracted {
                records,
                warnings,
                key,
            } => {
                let chunked = chunk_records(&records, &splitter, config.min_chars);
                let cached = key.map(|k| {
                    let json = cache::entry_json(&k, &chunked, &warnings);
                    (k, Cow::Owned(json))
                });
                Outcome::Read {
                    chunked,
                    warnings,
                    cache_hit: false,
                    cached,
                }
            }
        })
        .collect()
}

/// Reads one file and either serves it from the cache or extracts its text.
fn read_one<'p>(path: &Path, config: &ChunkConfig, pack: Option<&'p cache::Pack>) -> Stage<'p> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Stage::Done(Outcome::Skipped(format!("cannot read: {e}"))),
    };
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let key = pack.map(|_| cache::key(config, &ext, &bytes));
    if let (Some(pack), Some(key)) = (pack, &key)
        && let Some((chunked, warnings, json)) = pack.get(key)
    {
        return Stage::Done(Outcome::Read {
            chunked,
            warnings,
            cache_hit: true,
            cached: Some((key.clone(), json)),
        });
    }
    let format = Format::from_extension(&ext);
    let extracted = if matches!(format, Format::Pdf | Format::Docx | Format::Epub) {
        // Parsers of whole documents can hang on a pathological file: bounded.
        let name = path.display().to_string();
        match with_timeout(config.read_timeout, move || extract(format, &bytes)) {
            Some(result) => result,
            None => {
                tracing::warn!(path = %name, secs = config.read_timeout.as_secs(), "reading a file timed out; skipped");
                Err(format!(
                    "reading it took longer than {} s (a pathological document?); skipped",
                    config.read_timeout.as_secs()
                ))
            }
        }
    } else {
        extract(format, &bytes)
    };
    match extracted {
        Ok(x) => Stage::Extracted {
            records: x.records,
            warnings: x.warnings,
            key,
        },
        Err(reason) => Stage::Done(Outcome::Skipped(reason)),
    }
}

/// Runs `f` on its own thread and waits at most `limit` for it; `None` when it took longer
/// (the thread is left to finish on its own: Rust cannot stop it, and its result is dropped).
fn with_timeout<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("atk-chunk-read".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(limit).ok(),
        // No thread to spare: no bound either.
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_files_and_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes in quarter MiB (sparse files): big ones close a batch early; one file always
        // goes.
        let sizes = [1, 1, 10, 10, 20, 0, 0];
        let mut sources: Vec<Source> = sizes
            .iter()
            .enumerate()
            .map(|(i, mb)| {
                let path = dir.path().join(format!("f{i}"));
                let file = std::fs::File::create(&path).unwrap();
                file.set_len(mb << 18).unwrap();
                Source {
                    path,
                    rel: format!("f{i}"),
                }
            })
            .collect();
        let lens =
            |sources: &[Source]| batches(sources).iter().map(|b| b.len()).collect::<Vec<_>>();
        // 1+1+10 = 12 quarters; +10 would pass 16; 10 alone; 20 alone (over, but one file
        // goes); then the two empty files.
        assert_eq!(lens(&sources), [3, 1, 1, 2]);
        for i in 0..FILES_PER_BATCH + 3 {
            let path = dir.path().join(format!("small{i}"));
            std::fs::write(&path, "x").unwrap();
            sources.push(Source {
                path,
                rel: format!("small{i}"),
            });
        }
        let all = lens(&sources);
        assert_eq!(all.iter().sum::<usize>(), sources.len());
        assert!(all.iter().all(|n| *n <= FILES_PER_BATCH), "{all:?}");
    }

    #[test]
    fn a_reader_that_hangs_is_given_up_on() {
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let got = with_timeout(std::time::Duration::from_millis(50), move || {
            hang.recv().is_ok()
        });
        assert_eq!(got, None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(release);
        assert_eq!(
            with_timeout(std::time::Duration::from_secs(5), || 7),
            Some(7)
        );
    }
}
