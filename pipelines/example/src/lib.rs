//! The example pipeline (in progress).
