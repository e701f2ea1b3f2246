//! atk-chunk's integration tests, in one binary: one link and one copy of the
//! dependencies instead of one per file (each file is a module of its own).

mod props;
mod read_dir;
