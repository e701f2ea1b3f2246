//! End-to-end tests (filled in by the example-pipeline issue).
