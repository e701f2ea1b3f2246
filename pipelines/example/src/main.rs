//! `example-pipeline` binary.
fn main() {}
