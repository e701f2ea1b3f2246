//! A JSONL file staged only where it differs from the published one: lines are compared with
//! the published file as they come (one line in memory), nothing is written while they match,
//! and at the first difference the equal part is copied from the published file and the rest
//! written to the staged file. A rerun whose output did not change then writes nothing and
//! leaves the published file as it was (same inode, same mtime).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;

/// Block size of the comparing reads.
const BLOCK: usize = 64 * 1024;

/// One staged file, compared with its published counterpart as its lines come.
pub(crate) struct StagedLines {
    /// Where the file is staged (written only from the first difference).
    staged: PathBuf,
    /// Where it is published (compared against).
    target: PathBuf,
    sink: Sink,
    lines: u64,
}

/// Where lines go.
enum Sink {
    /// Every line so far equals the published file's first `matched` bytes: nothing written.
    Same {
        old: BufReader<File>,
        matched: u64,
        scratch: Vec<u8>,
    },
    /// The staged file (a temp file until [`StagedLines::finish`]).
    Writing(BufWriter<AtomicWriteFile>),
}

impl StagedLines {
    /// Starts the file staged at `staged` and published at `target`. A file left at `staged`
    /// by an earlier run that was killed before publishing is removed first.
    pub(crate) fn open(staged: PathBuf, target: PathBuf) -> std::io::Result<Self> {
        match std::fs::remove_file(&staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let sink = match File::open(&target) {
            Ok(file) => Sink::Same {
                old: BufReader::with_capacity(BLOCK, file),
                matched: 0,
                scratch: Vec::new(),
            },
            Err(_) => Sink::Writing(BufWriter::new(AtomicWriteFile::open(&staged)?)),
        };
        Ok(Self {
            staged,
            target,
            sink,
            lines: 0,
        })
    }

    /// Lines taken so far.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// Takes one line (its bytes with the trailing newline).
    pub(crate) fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.lines += 1;
        if let Sink::Same {
            old,
            matched,
            scratch,
        } = &mut self.sink
        {
            scratch.resize(line.len(), 0);
            if old.read_exact(scratch).is_ok() && scratch.as_slice() == line {
                *matched += line.len() as u64;
                return Ok(());
            }
            self.diverge()?;
        }
        match &mut self.sink {
            Sink::Writing(out) => out.write_all(line),
            Sink::Same { .. } => unreachable!("diverge starts writing"),
        }
    }

    /// The lines stopped matching the published file: the staged file starts with the part
    /// that matched, copied from it.
    fn diverge(&mut self) -> std::io::Result<()> {
        let Sink::Same { matched, .. } = &self.sink else {
            return Ok(());
        };
        let matched = *matched;
        let mut out = BufWriter::new(AtomicWriteFile::open(&self.staged)?);
        let old = File::open(&self.target)?;
        let copied = std::io::copy(&mut old.take(matched), &mut out)?;
        if copied != matched {
            return Err(std::io::Error::other(format!(
                "{} changed while it was compared",
                self.target.display()
            )));
        }
        self.sink = Sink::Writing(out);
        Ok(())
    }

    /// Ends the file: commits the staged file when the lines differ from the published file,
    /// writes nothing when they are the same. Returns whether a file was staged.
    pub(crate) fn finish(mut self) -> std::io::Result<bool> {
        if let Sink::Same { old, .. } = &mut self.sink {
            let mut more = [0u8; 1];
            if matches!(old.read(&mut more), Ok(0)) {
                return Ok(false);
            }
            // The published file is longer: the new one is a prefix of it.
            self.diverge()?;
        }
        let Sink::Writing(out) = self.sink else {
            unreachable!("diverge starts writing");
        };
        out.into_inner().map_err(|e| e.into_error())?.commit()?;
        Ok(true)
    }
}

/// Whether the files at `a` and `b` hold the same bytes (compared in blocks, never whole in
/// memory); false when either cannot be read.
pub(crate) fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    match (fa.metadata(), fb.metadata()) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => {}
        _ => return false,
    }
    let (mut ra, mut rb) = (
        BufReader::with_capacity(BLOCK, fa),
        BufReader::with_capacity(BLOCK, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = match ra.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return matches!(rb.read(&mut bb[..1]), Ok(0));
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Writes `text` plus a newline to `path` atomically unless the file already holds exactly
/// that (then it is left as it was: same inode, same mtime). Returns whether it wrote.
pub(crate) fn write_text_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    let wanted = format!("{text}\n");
    if std::fs::read(path).is_ok_and(|old| old == wanted.as_bytes()) {
        return Ok(false);
    }
    super::write_jsonl_atomic(path, [text])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(staged: &Path, target: &Path, lines: &[&str]) -> (bool, u64) {
        let mut f = StagedLines::open(staged.to_path_buf(), target.to_path_buf()).unwrap();
        for l in lines {
            f.write_line(format!("{l}\n").as_bytes()).unwrap();
        }
        let n = f.lines();
        (f.finish().unwrap(), n)
    }

    #[test]
    fn lines_equal_to_the_published_file_stage_nothing_and_a_difference_stages_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("d.jsonl");
        let staged = dir.path().join("staged").join("d.jsonl");
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&target, "a\nb\nc\n").unwrap();
        assert_eq!(write(&staged, &target, &["a", "b", "c"]), (false, 3));
        assert!(!staged.exists());
        // A line differs, one is missing at the end, one more at the end: each staged whole.
        for (lines, expected) in [
            (&["a", "x", "c"][..], "a\nx\nc\n"),
            (&["a", "b"][..], "a\nb\n"),
            (&["a", "b", "c", "d"][..], "a\nb\nc\nd\n"),
            (&[][..], ""),
        ] {
            assert_eq!(write(&staged, &target, lines), (true, lines.len() as u64));
            assert_eq!(std::fs::read_to_string(&staged).unwrap(), expected);
        }
        // A stale staged file (a killed run) is not left to be published.
        std::fs::write(&staged, "stale\n").unwrap();
        assert_eq!(write(&staged, &target, &["a", "b", "c"]), (false, 3));
        assert!(!staged.exists());
        // No published file: everything is staged.
        std::fs::remove_file(&target).unwrap();
        assert_eq!(write(&staged, &target, &["a"]), (true, 1));
        assert_eq!(std::fs::read_to_string(&staged).unwrap(), "a\n");
    }

    #[test]
    fn same_bytes_compares_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &big).unwrap();
        std::fs::write(&b, &big).unwrap();
        assert!(same_bytes(&a, &b));
        let mut other = big.clone();
        other[150_000] ^= 1;
        std::fs::write(&b, &other).unwrap();
        assert!(!same_bytes(&a, &b));
        std::fs::write(&b, &big[..1000]).unwrap();
        assert!(!same_bytes(&a, &b));
        assert!(!same_bytes(&a, &dir.path().join("missing")));
    }

    #[test]
    fn text_is_written_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("README.md");
        assert!(write_text_if_changed(&path, "# card").unwrap());
        assert!(!write_text_if_changed(&path, "# card").unwrap());
        assert!(write_text_if_changed(&path, "# card 2").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# card 2\n");
    }
}
